"""``duet rag``: ingest documents into a persistent index and search it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmduet.cli.app import app, console, fail, friendly_errors

if TYPE_CHECKING:
    from llmduet.rag.index import DocumentIndex
    from llmduet.rag.retrieval import Mode

rag_app = typer.Typer(
    help="Retrieval-augmented generation over your documents.", no_args_is_help=True
)
app.add_typer(rag_app, name="rag")

DEFAULT_INDEX = Path(".duet/index")


def open_index(directory: Path, target_tokens: int, overlap_tokens: int) -> DocumentIndex:
    from llmduet.embeddings import MiniLMEmbedder
    from llmduet.rag.chunking import Chunker
    from llmduet.rag.index import DocumentIndex

    embedder = MiniLMEmbedder()
    try:
        chunker = Chunker(embedder.count_tokens, target_tokens, overlap_tokens)
    except ValueError as exc:
        raise fail(str(exc)) from None
    return DocumentIndex(directory, embedder, chunker)


@rag_app.command("ingest")
@friendly_errors
def ingest_command(
    paths: list[Path] = typer.Argument(..., help="files or folders to index"),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", help="index folder"),
    chunk_tokens: int = typer.Option(200, min=16, max=250, help="target chunk size, tokens"),
    overlap_tokens: int = typer.Option(40, min=0, help="tokens repeated between chunks"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Index Markdown, text, HTML and PDF files; re-runs process only what changed."""
    document_index = open_index(index, chunk_tokens, overlap_tokens)
    from llmduet.rag.index import discover

    total = len(discover(paths))
    started = time.perf_counter()
    chunks = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[chunks]} chunks, {task.fields[rate]} chunks/s"),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
        disable=as_json,
    ) as progress:
        task = progress.add_task("ingesting", total=total, chunks=0, rate="-")

        def on_progress(source: str, count: int) -> None:
            nonlocal chunks
            chunks += count
            rate = chunks / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, chunks=chunks, rate=f"{rate:.1f}")

        report = document_index.ingest(paths, on_progress)
        progress.update(task, completed=total)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    console.print(
        f"[green]{len(report.ingested)} ingested[/] ({report.chunks} chunks), "
        f"{len(report.unchanged)} unchanged, {len(report.removed)} removed, "
        f"[yellow]{len(report.skipped)} skipped[/] in {report.seconds:.1f} s"
    )
    for source, reason in report.skipped.items():
        console.print(f"  [yellow]skipped[/] {escape(source)}: {escape(reason)}")


@rag_app.command("search")
@friendly_errors
def search_command(
    query: str = typer.Argument(..., help="what to look for"),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", help="index folder"),
    mode: str = typer.Option("hybrid", help="hybrid, dense or bm25"),
    k: int = typer.Option(5, "-k", min=1, max=100, help="how many chunks"),
    path: str | None = typer.Option(None, "--path", help="only sources matching this glob"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per chunk"),
) -> None:
    """Return the best-matching chunks, without generation."""
    from llmduet.rag.index import MANIFEST
    from llmduet.rag.retrieval import Retriever

    if mode not in ("hybrid", "dense", "bm25"):
        raise fail(f"--mode {mode}: choose hybrid, dense or bm25")
    if not query.strip():
        raise fail("the query is empty")
    if not (index / MANIFEST).exists():
        raise fail(f"no index at {index}: run `duet rag ingest PATH --index {index}` first")
    manifest = json.loads((index / MANIFEST).read_text())
    chunking = manifest.get("chunking", {})
    document_index = open_index(
        index, chunking.get("target_tokens", 200), chunking.get("overlap_tokens", 40)
    )
    retriever = Retriever(document_index.store, document_index.embedder)
    hits = retriever.search(query, k, cast("Mode", mode), path)
    if as_json:
        for hit in hits:
            print(json.dumps(hit.to_dict()))
        return
    show_page = any(hit.chunk.page for hit in hits)
    table = Table(title=f"{mode} search: {escape(query)}", expand=True)
    table.add_column("#", no_wrap=True)
    table.add_column("score", no_wrap=True)
    table.add_column("source", max_width=28)
    table.add_column("heading", max_width=32)
    if show_page:
        table.add_column("page", no_wrap=True)
    table.add_column("text", ratio=1)
    for rank, hit in enumerate(hits, 1):
        chunk = hit.chunk
        cells = [str(rank), f"{hit.score:.4f}", escape(chunk.source), escape(chunk.heading)]
        if show_page:
            cells.append(str(chunk.page or ""))
        cells.append(escape(" ".join(chunk.text.split())[:200]))
        table.add_row(*cells)
    console.print(table)
