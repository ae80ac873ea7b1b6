"""Ingest throughput against its ceiling: the embedder alone on onnxruntime.

Writes a generated corpus (Markdown files of ~1,000-character paragraphs), ingests it
into a fresh index (extract, chunk, embed, store, manifest), and in the same run embeds
the very same chunk texts with the bundled MiniLM directly (tokenise + onnxruntime
only). Prints chunks/s for both and the ratio (goal >= 0.8).

    python benchmarks/rag_ingest_throughput.py [--files 40] [--paragraphs 10]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from llmduet.embeddings import MiniLMEmbedder
from llmduet.rag.chunking import Chunker
from llmduet.rag.extract import extract
from llmduet.rag.index import DocumentIndex

WORDS = [
    "policy",
    "employee",
    "office",
    "travel",
    "expense",
    "laptop",
    "security",
    "review",
    "release",
    "incident",
    "leave",
    "holiday",
    "budget",
    "training",
    "contract",
    "manager",
    "team",
    "customer",
    "data",
    "access",
    "badge",
    "report",
    "payment",
    "invoice",
    "schedule",
    "meeting",
    "remote",
    "benefit",
    "pension",
    "insurance",
    "claim",
]


def write_corpus(folder: Path, files: int, paragraphs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for number in range(files):
        sections = [f"# Document {number}"]
        for paragraph in range(paragraphs):
            sentences = [" ".join(rng.choices(WORDS, k=12)).capitalize() + "." for _ in range(11)]
            sections.append(f"## Part {paragraph}\n\n" + " ".join(sentences))
        (folder / f"doc{number:03}.md").write_text("\n\n".join(sections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--paragraphs", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/rag_ingest_throughput.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="duet-ingest-bench-"))
    write_corpus(work / "docs", args.files, args.paragraphs)
    embedder = MiniLMEmbedder()
    chunker = Chunker(embedder.count_tokens, 200, 40)
    embedder.embed(["warm up"])

    index = DocumentIndex(work / "index", embedder, chunker)
    started = time.perf_counter()
    report = index.ingest([work / "docs"])
    ingest_s = time.perf_counter() - started

    texts = [
        chunk.embedding_text
        for path in sorted((work / "docs").iterdir())
        for chunk in chunker.chunk(extract(path, path.name))
    ]
    started = time.perf_counter()
    embedder.embed(texts)
    embed_s = time.perf_counter() - started

    ingest_rate, ceiling = report.chunks / ingest_s, len(texts) / embed_s
    result = {
        "files": args.files,
        "chunks": report.chunks,
        "ingest_chunks_per_s": round(ingest_rate, 1),
        "embedder_only_chunks_per_s": round(ceiling, 1),
        "ratio": round(ingest_rate / ceiling, 3),
    }
    print(f"{report.chunks} chunks from {args.files} files")
    print(f"full ingest:        {ingest_rate:7.1f} chunks/s ({ingest_s:.1f} s)")
    print(f"embedder alone:     {ceiling:7.1f} chunks/s ({embed_s:.1f} s)")
    print(f"ratio: {ingest_rate / ceiling:.3f}   (goal >= 0.8)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
