"""Structure-aware chunking measured in the embedder's tokens.

Chunks never cross a section boundary (a heading or a PDF page), so each carries one
heading path and page. Inside a section, paragraphs are packed up to ``target_tokens``;
a paragraph that is too long on its own is split at sentences, then at words. The last
``overlap_tokens`` of a chunk are repeated at the start of the next one in the same
section, so a fact that straddles the cut is still whole in one chunk.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from llmduet.rag.extract import Document, Section

TokenCounter = Callable[[list[str]], list[int]]

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    source: str
    title: str
    heading: str  # "Title > Section > Subsection"
    page: int | None
    start: int  # character offsets in the document's extracted text
    end: int
    text: str

    @property
    def embedding_text(self) -> str:
        """What gets embedded: the heading path gives a short chunk its context."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int  # offset inside the section text
    end: int
    tokens: int


def _spans(text: str, pattern: re.Pattern[str], base: int = 0) -> list[tuple[int, int]]:
    spans, position = [], 0
    for match in pattern.finditer(text):
        if text[position : match.start()].strip():
            spans.append((base + position, base + match.start()))
        position = match.end()
    if text[position:].strip():
        spans.append((base + position, base + len(text)))
    return spans


class Chunker:
    def __init__(
        self, count_tokens: TokenCounter, target_tokens: int = 200, overlap_tokens: int = 40
    ) -> None:
        if target_tokens < 16:
            raise ValueError("target_tokens must be at least 16")
        if not 0 <= overlap_tokens < target_tokens // 2:
            raise ValueError("overlap_tokens must be between 0 and half of target_tokens")
        self.count_tokens = count_tokens
        self.target = target_tokens
        self.overlap = overlap_tokens

    def _pieces(self, text: str) -> list[_Piece]:
        """Paragraphs, with over-long ones split at sentences and then at words."""
        spans = _spans(text, _PARAGRAPH)
        counts = self.count_tokens([text[a:b] for a, b in spans])
        pieces: list[_Piece] = []
        for (start, end), tokens in zip(spans, counts, strict=True):
            if tokens <= self.target:
                pieces.append(_Piece(start, end, tokens))
                continue
            for pattern in (_SENTENCE, re.compile(r"\s+")):
                parts = _spans(text[start:end], pattern, base=start)
                if len(parts) > 1:
                    break
            part_counts = self.count_tokens([text[a:b] for a, b in parts])
            for (a, b), count in zip(parts, part_counts, strict=True):
                if count <= self.target or len(parts) == 1:
                    pieces.append(_Piece(a, b, count))
                else:  # a sentence still too long: fall back to words
                    words = _spans(text[a:b], re.compile(r"\s+"), base=a)
                    word_counts = self.count_tokens([text[x:y] for x, y in words])
                    pieces += [
                        _Piece(x, y, c) for (x, y), c in zip(words, word_counts, strict=True)
                    ]
        return pieces

    def _section_chunks(self, section: Section) -> list[tuple[int, int]]:
        pieces = self._pieces(section.text)
        chunks: list[tuple[int, int]] = []
        current: list[_Piece] = []
        size = 0
        for piece in pieces:
            if current and size + piece.tokens > self.target:
                chunks.append((current[0].start, current[-1].end))
                carried: list[_Piece] = []
                carried_size = 0
                for previous in reversed(current):
                    if carried_size + previous.tokens > self.overlap:
                        break
                    carried.insert(0, previous)
                    carried_size += previous.tokens
                while carried and carried_size + piece.tokens > self.target:
                    carried_size -= carried.pop(0).tokens  # overlap never overfills
                current, size = carried, carried_size
            current.append(piece)
            size += piece.tokens
        if current:
            chunks.append((current[0].start, current[-1].end))
        return chunks

    def chunk(self, document: Document) -> list[Chunk]:
        result: list[Chunk] = []
        for section in document.sections:
            heading = " > ".join(section.heading_path)
            for start, end in self._section_chunks(section):
                text = section.text[start:end]
                begin = section.start + start
                digest = hashlib.sha1(f"{document.source}\0{begin}\0{text}".encode()).hexdigest()[
                    :20
                ]
                result.append(
                    Chunk(
                        id=digest,
                        source=document.source,
                        title=document.title,
                        heading=heading,
                        page=section.page,
                        start=begin,
                        end=section.start + end,
                        text=text,
                    )
                )
        return result
