"""BM25 as sparse vectors, for stores whose lexical search is a sparse dot product (Qdrant).

A document's weight for a term is BM25's saturated, length-normalised term frequency;
the store multiplies in the inverse document frequency itself (Qdrant's ``idf`` vector
modifier, which keeps it right as documents come and go). A query is its distinct terms
with weight 1, so the dot product is the document's BM25 score. Term ids are a stable
32-bit hash of the stemmed term: no vocabulary to keep in step with the collection.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from functools import lru_cache

import Stemmer

K1 = 1.2
B = 0.75
AVERAGE_TERMS = 80  # about what a 200-token chunk keeps after stop words are dropped

_WORD = re.compile(r"\w+")
_STEMMER = Stemmer.Stemmer("english")
_STOPWORDS = """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves"""
STOPWORDS = frozenset(_STOPWORDS.split())


@lru_cache(maxsize=1 << 16)
def _term(word: str) -> str:
    return str(_STEMMER.stemWord(word))


def terms(text: str) -> list[str]:
    """Lower-cased, stemmed words without English stop words."""
    return [_term(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def term_id(term: str) -> int:
    return zlib.crc32(term.encode())


def document_vector(text: str) -> tuple[list[int], list[float]]:
    counts = Counter(term_id(t) for t in terms(text))
    norm = K1 * (1 - B + B * sum(counts.values()) / AVERAGE_TERMS)
    ids = sorted(counts)
    return ids, [counts[i] * (K1 + 1) / (counts[i] + norm) for i in ids]


def query_vector(text: str) -> tuple[list[int], list[float]]:
    ids = sorted({term_id(t) for t in terms(text)})
    return ids, [1.0] * len(ids)
