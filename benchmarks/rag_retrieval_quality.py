"""Retrieval quality on the shipped handbook: recall@5, MRR@10 and nDCG@10 for BM25,
dense and hybrid retrieval (both fusions), with the labeled questions' gold documents.

Also printed: a bootstrap 95% interval for hybrid (RRF) minus the better single retriever,
and relative-score fusion with its ``alpha`` tuned honestly: picked on one half of the
questions, scored on the other half, over 200 random splits.

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
from collections import Counter
from pathlib import Path

import numpy as np

from llmduet.data import HANDBOOK_DOCS, HANDBOOK_QUESTIONS
from llmduet.embeddings import MiniLMEmbedder
from llmduet.rag.chunking import Chunker
from llmduet.rag.index import DocumentIndex
from llmduet.rag.retrieval import DEFAULT_ALPHA, Fusion, Mode, Retriever
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


Scores = list[tuple[float, float, float]]  # per question: recall@5, RR@10, nDCG@10


def mean(scores: Scores, metric: int = 2) -> float:
    return sum(row[metric] for row in scores) / len(scores)


def cross_validated_alpha(
    by_alpha: dict[float, Scores], rounds: int = 200, seed: int = 0
) -> tuple[float, list[float]]:
    """Mean nDCG@10 of relative fusion when alpha is picked on one half of the questions
    and scored on the other (2-fold, over ``rounds`` random splits), and the picks."""
    rng = np.random.default_rng(seed)
    count = len(next(iter(by_alpha.values())))
    means, picks = [], []
    for _ in range(rounds):
        order = rng.permutation(count)
        halves = (order[: count // 2], order[count // 2 :])
        held_out = 0.0
        for tune, test in (halves, halves[::-1]):
            best = max(by_alpha, key=lambda a: sum(by_alpha[a][i][2] for i in tune))
            held_out += sum(by_alpha[best][i][2] for i in test)
            picks.append(best)
        means.append(held_out / count)
    return float(np.mean(means)), picks


def bootstrap_difference(a: Scores, b: Scores, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of mean nDCG@10 of ``a`` minus ``b`` over the same questions."""
    rng = np.random.default_rng(seed)
    diff = np.array([x[2] - y[2] for x, y in zip(a, b, strict=True)])
    samples = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(10_000)]
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


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

    def run(mode: Mode, fusion: Fusion = "rrf", alpha: float = DEFAULT_ALPHA) -> Scores:
        return [
            metrics(
                [
                    h.chunk.source
                    for h in retriever.search(q["question"], 10, mode, None, fusion, alpha)
                ],
                set(q["sources"]),
            )
            for q in answerable
        ]

    runs: dict[str, Scores] = {}
    results = {}
    for name, mode, fusion in [
        ("bm25", "bm25", "rrf"),
        ("dense", "dense", "rrf"),
        ("hybrid rrf", "hybrid", "rrf"),
        (f"hybrid relative a={DEFAULT_ALPHA}", "hybrid", "relative"),
    ]:
        started = time.perf_counter()
        runs[name] = run(mode, fusion)  # type: ignore[arg-type]
        elapsed = (time.perf_counter() - started) / len(answerable) * 1000
        results[name] = {
            "recall@5": round(mean(runs[name], 0), 3),
            "MRR@10": round(mean(runs[name], 1), 3),
            "nDCG@10": round(mean(runs[name], 2), 3),
            "ms_per_query": round(elapsed, 1),
        }
    print(
        f"{args.store}: {len(answerable)} answerable questions, {index.store.count()} chunks "
        f"({len(report.ingested)} files ingested in {report.seconds:.1f} s)"
    )
    print(f"{'mode':26}{'recall@5':>10}{'MRR@10':>9}{'nDCG@10':>9}{'ms/query':>10}")
    for name, row in results.items():
        print(
            f"{name:26}{row['recall@5']:>10.3f}{row['MRR@10']:>9.3f}{row['nDCG@10']:>9.3f}"
            f"{row['ms_per_query']:>10.1f}"
        )
    best = max(("bm25", "dense"), key=lambda name: mean(runs[name]))
    low, high = bootstrap_difference(runs["hybrid rrf"], runs[best])
    print(
        f"hybrid rrf nDCG@10 / best single ({best}): "
        f"{mean(runs['hybrid rrf']) / mean(runs[best]):.3f}; "
        f"difference {mean(runs['hybrid rrf']) - mean(runs[best]):+.3f}, "
        f"95% CI [{low:+.3f}, {high:+.3f}]"
    )
    by_alpha = {a / 20: run("hybrid", "relative", a / 20) for a in range(21)}
    tuned, picks = cross_validated_alpha(by_alpha)
    common = Counter(picks).most_common(3)
    print(
        f"hybrid relative, alpha tuned on half the questions, scored on the other half: "
        f"nDCG@10 {tuned:.3f} = {tuned / mean(runs[best]):.3f} x {best}; "
        f"alphas picked most: {', '.join(f'{a:.2f} ({n})' for a, n in common)}"
    )
    out = Path(args.out or f"benchmarks/results/rag_retrieval_quality_{args.store}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "store": args.store,
                "questions": len(answerable),
                "chunks": index.store.count(),
                "results": results,
                "hybrid_rrf_minus_best_ci95": [low, high],
                "relative_cross_validated_nDCG@10": tuned,
                "relative_nDCG@10_by_alpha": {a: mean(scores) for a, scores in by_alpha.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
