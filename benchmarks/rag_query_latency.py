"""Retrieval latency (no generation) and memory at 10k and 100k chunks, per store.

The corpus is generated from the shipped handbook: every chunk is 3-6 handbook sentences
drawn at random, and its vector is the normalised sum of those sentences' MiniLM vectors
plus a little noise, so vectors cluster by topic the way real chunk embeddings do (random
vectors would be the worst case for an ANN index, real embedding of 100k chunks takes an
hour here). Queries are the 69 labelled handbook questions, embedded for real.

Each store runs in its own process, so its peak memory (max RSS) is its own. Measured per
store: build time (insert + index), p50/p95 of dense, BM25 and hybrid search (hybrid =
the whole ``Retriever.search``, query embedding included), and the dense recall@10 of the
store against exact search. The baseline in the same run is exact dense search with numpy
over the same vectors (a matrix-vector product and argpartition).

    python benchmarks/rag_query_latency.py [--sizes 10000 100000] [--stores lancedb qdrant]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmduet.data import HANDBOOK_DOCS, HANDBOOK_QUESTIONS
from llmduet.embeddings import MiniLMEmbedder
from llmduet.rag.chunking import Chunk
from llmduet.rag.retrieval import Retriever
from llmduet.rag.stores import open_store, store_spec

BATCH = 5_000
ROUNDS = 3  # each question is asked up to this many times per search mode ...
BUDGET_S = 30.0  # ... or for this long (at least MIN_SAMPLES), whichever ends first
MIN_SAMPLES = 30
TOP = 10


def sentences() -> list[str]:
    found: set[str] = set()
    for path in sorted(HANDBOOK_DOCS.glob("*.md")):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith(("#", "|")):
                found.update(s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if len(s) > 30)
    return sorted(found)


def corpus(size: int, embedder: MiniLMEmbedder, seed: int = 11) -> tuple[list[Chunk], np.ndarray]:
    pool = sentences()
    pool_vectors = embedder.embed(pool).vectors
    rng = np.random.default_rng(seed)
    chunks, vectors = [], np.empty((size, pool_vectors.shape[1]), dtype=np.float32)
    for number in range(size):
        picks = rng.choice(len(pool), size=int(rng.integers(3, 7)), replace=False)
        text = " ".join(pool[i] for i in picks)
        vector = pool_vectors[picks].sum(axis=0) + rng.normal(0, 0.05, pool_vectors.shape[1])
        vectors[number] = vector / np.linalg.norm(vector)
        source = f"generated/doc{number // 50:05}.md"
        chunks.append(Chunk(f"{source}#{number}", source, "", "", None, 0, len(text), text))
    return chunks, vectors


def queries(embedder: MiniLMEmbedder) -> tuple[list[str], np.ndarray]:
    lines = HANDBOOK_QUESTIONS.read_text().splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()]
    return questions, embedder.embed(questions).vectors


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def timed(call: Any, queries: list[Any]) -> dict[str, float]:
    call(queries[0])  # warm caches and lazy loads
    samples: list[float] = []
    deadline = time.perf_counter() + BUDGET_S
    for query in queries * ROUNDS:
        started = time.perf_counter()
        call(query)
        samples.append(time.perf_counter() - started)
        if len(samples) >= MIN_SAMPLES and started > deadline:
            break
    return {**percentiles(samples), "samples": len(samples)}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(kind: str, size: int) -> dict[str, Any]:
    """In a child process: build one store of ``size`` chunks and time its searches."""
    embedder = MiniLMEmbedder()
    chunks, vectors = corpus(size, embedder)
    questions, query_vectors = queries(embedder)
    before_store_mb = rss_mb()
    folder = Path(tempfile.mkdtemp(prefix="duet-latency-"))
    store = open_store(folder, store_spec(kind), vectors.shape[1])
    started = time.perf_counter()
    for start in range(0, size, BATCH):
        by_source: dict[str, list[int]] = {}
        for i in range(start, min(start + BATCH, size)):
            by_source.setdefault(chunks[i].source, []).append(i)
        for source, rows in by_source.items():
            store.replace_source(source, [chunks[i] for i in rows], vectors[rows])
    inserted = time.perf_counter() - started
    store.finish_ingest()
    built = time.perf_counter() - started

    exact = [set(np.argsort(-(vectors @ q))[:TOP].tolist()) for q in query_vectors]
    recall = np.mean(
        [
            len({int(h.chunk.id.rsplit("#", 1)[1]) for h in store.dense(q, TOP)} & truth) / TOP
            for q, truth in zip(query_vectors, exact, strict=True)
        ]
    )
    retriever = Retriever(store, embedder)
    result = {
        "store": kind,
        "chunks": store.count(),
        "insert_s": inserted,
        "build_s": built,
        "dense": timed(lambda q: store.dense(q, TOP), list(query_vectors)),
        "bm25": timed(lambda q: store.lexical(q, TOP), questions),
        "hybrid": timed(lambda q: retriever.search(q, 5), questions),
        "dense_recall_at_10": float(recall),
        "rss_before_store_mb": before_store_mb,
        "rss_peak_mb": rss_mb(),
    }
    store.close()
    return result


def numpy_baseline(size: int) -> dict[str, Any]:
    embedder = MiniLMEmbedder()
    _, vectors = corpus(size, embedder)
    _, query_vectors = queries(embedder)

    def search(q: np.ndarray) -> np.ndarray:
        scores = vectors @ q
        top = np.argpartition(-scores, TOP)[:TOP]
        return top[np.argsort(-scores[top])]

    return {"store": "numpy exact", "chunks": size, "dense": timed(search, list(query_vectors))}


def child(kind: str, size: int) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stores", nargs="+", default=["lancedb", "qdrant"])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/rag_query_latency.json")
    args = parser.parse_args()
    if args.child:
        kind, size = args.child
        run = numpy_baseline if kind == "numpy" else lambda n: measure_one(kind, n)
        print(json.dumps(run(int(size))))
        return
    results = []
    for size in args.sizes:
        baseline = child("numpy", size)
        results.append(baseline)
        base_p50 = baseline["dense"]["p50_ms"]
        print(f"\n{size:,} chunks; numpy exact dense p50 {base_p50:.2f} ms")
        print(
            f"{'store':10} {'build s':>8} {'dense p50/p95':>15} {'bm25 p50/p95':>15} "
            f"{'hybrid p50/p95':>15} {'recall@10':>9} {'dense/numpy':>11} {'peak MB':>8}"
        )
        for kind in args.stores:
            row = child(kind, size)
            results.append(row)

            def pair(mode: str, row: dict[str, Any] = row) -> str:
                return f"{row[mode]['p50_ms']:.1f}/{row[mode]['p95_ms']:.1f}"

            print(
                f"{kind:10} {row['build_s']:8.1f} {pair('dense'):>15} {pair('bm25'):>15} "
                f"{pair('hybrid'):>15} {row['dense_recall_at_10']:9.3f} "
                f"{row['dense']['p50_ms'] / base_p50:11.2f} {row['rss_peak_mb']:8.0f}"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
