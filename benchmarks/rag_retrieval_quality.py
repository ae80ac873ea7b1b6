"""Retrieval quality on the shipped handbook: recall@5, MRR@10 and nDCG@10 for BM25,
dense and hybrid retrieval, with the labeled questions' gold source documents.

A question counts as found at rank r when the chunk at r comes from one of its gold
documents; relevance is per document (several chunks of one gold document count once).
Unanswerable questions (no gold source) are left out.

    python benchmarks/rag_retrieval_quality.py [--store lancedb|qdrant] [--index DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from llmduet.data import HANDBOOK_DOCS, HANDBOOK_QUESTIONS
from llmduet.embeddings import MiniLMEmbedder
from llmduet.rag.chunking import Chunker
from llmduet.rag.index import DocumentIndex
from llmduet.rag.retrieval import Retriever
from llmduet.rag.stores import KINDS, store_spec


def metrics(ranked_sources: list[str], gold: set[str]) -> tuple[float, float, float]:
    """(recall@5, reciprocal rank within 10, nDCG@10) with per-document relevance."""
    seen: set[str] = set()
    gains = []
    for source in ranked_sources[:10]:
        relevant = source in gold and source not in seen
        seen.add(source)
        gains.append(1.0 if relevant else 0.0)
    recall5 = len(gold & set(ranked_sources[:5])) / len(gold)
    first = next(
        (rank for rank, source in enumerate(ranked_sources[:10], 1) if source in gold), None
    )
    dcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(gold), 10) + 1))
    return recall5, (1 / first if first else 0.0), dcg / ideal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None)
    parser.add_argument("--store", choices=KINDS, default="lancedb")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    directory = args.index or Path(tempfile.mkdtemp(prefix="duet-rag-bench-"))
    embedder = MiniLMEmbedder()
    chunker = Chunker(embedder.count_tokens, 200, 40)
    index = DocumentIndex(directory, embedder, chunker, store_spec(args.store))
    report = index.ingest([HANDBOOK_DOCS])
    retriever = Retriever(index.store, embedder)
    questions = [json.loads(line) for line in HANDBOOK_QUESTIONS.read_text().splitlines()]
    answerable = [q for q in questions if q["sources"]]
    results = {}
    for mode in ("bm25", "dense", "hybrid"):
        totals = [0.0, 0.0, 0.0]
        started = time.perf_counter()
        for question in answerable:
            hits = retriever.search(question["question"], 10, mode)  # type: ignore[arg-type]
            scores = metrics([hit.chunk.source for hit in hits], set(question["sources"]))
            totals = [total + score for total, score in zip(totals, scores, strict=True)]
        elapsed = (time.perf_counter() - started) / len(answerable) * 1000
        results[mode] = {
            "recall@5": round(totals[0] / len(answerable), 3),
            "MRR@10": round(totals[1] / len(answerable), 3),
            "nDCG@10": round(totals[2] / len(answerable), 3),
            "ms_per_query": round(elapsed, 1),
        }
    print(
        f"{args.store}: {len(answerable)} answerable questions, {index.store.count()} chunks "
        f"({len(report.ingested)} files ingested in {report.seconds:.1f} s)"
    )
    print(f"{'mode':8}{'recall@5':>10}{'MRR@10':>9}{'nDCG@10':>9}{'ms/query':>10}")
    for mode, row in results.items():
        print(
            f"{mode:8}{row['recall@5']:>10.3f}{row['MRR@10']:>9.3f}{row['nDCG@10']:>9.3f}"
            f"{row['ms_per_query']:>10.1f}"
        )
    best_single = max(results["bm25"]["nDCG@10"], results["dense"]["nDCG@10"])
    print(f"hybrid nDCG@10 / best of bm25, dense: {results['hybrid']['nDCG@10'] / best_single:.3f}")
    out = Path(args.out or f"benchmarks/results/rag_retrieval_quality_{args.store}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "store": args.store,
                "questions": len(answerable),
                "chunks": index.store.count(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
