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
    from llmduet.rag.retrieval import Fusion, Mode

rag_app = typer.Typer(
    help="Retrieval-augmented generation over your documents.", no_args_is_help=True
)
app.add_typer(rag_app, name="rag")

DEFAULT_INDEX = Path(".duet/index")
FUSION_OPTION = typer.Option("rrf", help="how hybrid search fuses the legs: rrf or relative")
ALPHA_OPTION = typer.Option(
    0.75, min=0.0, max=1.0, help="the dense weight in --fusion relative (BM25 gets 1 - alpha)"
)


def checked_fusion(fusion: str) -> Fusion:
    if fusion not in ("rrf", "relative"):
        raise fail(f"--fusion {fusion}: choose rrf or relative")
    return cast("Fusion", fusion)


@rag_app.command("ingest")
@friendly_errors
def ingest_command(
    paths: list[Path] = typer.Argument(..., help="files or folders to index"),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", help="index folder"),
    chunk_tokens: int = typer.Option(200, min=16, max=250, help="target chunk size, tokens"),
    overlap_tokens: int = typer.Option(40, min=0, help="tokens repeated between chunks"),
    embedder: str | None = typer.Option(
        None,
        help="an OpenAI embeddings model (e.g. text-embedding-3-small) instead of the "
        "bundled all-MiniLM-L6-v2",
    ),
    embedder_url: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint for --embedder (e.g. a duet serve /v1)"
    ),
    store: str | None = typer.Option(
        None,
        help="where a new index keeps its chunks: lancedb (default, in the index folder) "
        "or qdrant (local mode in the index folder, or a server with --qdrant-url)",
    ),
    qdrant_url: str | None = typer.Option(
        None, help="a Qdrant server, e.g. http://127.0.0.1:6333 (API key: QDRANT_API_KEY)"
    ),
    qdrant_collection: str | None = typer.Option(
        None, help="the Qdrant collection for this index (default: chunks)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Index Markdown, text, HTML and PDF files; re-runs process only what changed."""
    from llmduet.rag.stores import store_spec

    spec = None
    if store or qdrant_url or qdrant_collection:
        kind = store or "qdrant"
        spec = store_spec(kind, qdrant_url, qdrant_collection)
    from llmduet.rag.index import open_index

    document_index = open_index(index, chunk_tokens, overlap_tokens, embedder, embedder_url, spec)
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
    fusion: str = FUSION_OPTION,
    alpha: float = ALPHA_OPTION,
    as_json: bool = typer.Option(False, "--json", help="one JSON object per chunk"),
) -> None:
    """Return the best-matching chunks, without generation."""

    if mode not in ("hybrid", "dense", "bm25"):
        raise fail(f"--mode {mode}: choose hybrid, dense or bm25")
    if not query.strip():
        raise fail("the query is empty")
    from llmduet.rag.index import open_retriever

    retriever = open_retriever(index)
    hits = retriever.search(query, k, cast("Mode", mode), path, checked_fusion(fusion), alpha)
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


@rag_app.command("ask")
@friendly_errors
def ask_command(
    question: str = typer.Argument(..., help="the question"),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", help="index folder"),
    model: list[str] = typer.Option(
        None, "--model", "-m", help="model to answer with (repeat; default: llama, chatgpt)"
    ),
    k: int = typer.Option(5, "-k", min=1, max=20, help="passages given to the models"),
    path: str | None = typer.Option(None, "--path", help="only sources matching this glob"),
    fusion: str = FUSION_OPTION,
    alpha: float = ALPHA_OPTION,
    min_similarity: float = typer.Option(
        0.3, min=0.0, max=1.0, help="below this best-passage similarity: 'the documents do not say'"
    ),
    temperature: float | None = typer.Option(None, min=0.0, max=2.0),
    max_tokens: int | None = typer.Option(256, "--max-tokens", min=1),
    seed: int | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per model"),
) -> None:
    """Answer from the indexed documents with citations, on several models side by side."""
    import asyncio

    from rich.live import Live

    from llmduet.cli.app import registry
    from llmduet.cli.ask import DEFAULT_MODELS, SideBySideView, require_an_answer, summary_table
    from llmduet.models.side_by_side import EventSink, Outcome, run_side_by_side
    from llmduet.rag.answer import NOT_FOUND, ground

    if not question.strip():
        raise fail("the question is empty")
    from llmduet.rag.index import open_retriever

    retriever = open_retriever(index)
    names = list(dict.fromkeys(name.lower() for name in (model or DEFAULT_MODELS)))
    models = registry()
    for name in names:
        models.spec(name)
    prompt = ground(retriever, question, k, min_similarity, path, checked_fusion(fusion), alpha)
    request = prompt.request(temperature=temperature, max_tokens=max_tokens, seed=seed)

    async def answer(on_event: EventSink | None) -> list[Outcome]:
        if not prompt.relevant:  # nothing relevant: no model is asked to guess
            return [Outcome(name, models.backend(name).location) for name in names]
        try:
            return await run_side_by_side(models, names, request, on_event)
        finally:
            await models.aclose()

    if as_json:
        outcomes = asyncio.run(answer(None))
    else:
        view = SideBySideView(names)
        with Live(view, console=console, refresh_per_second=12) as live:
            outcomes = asyncio.run(answer(view.on_event))
            if not prompt.relevant:
                for name in names:
                    view.texts[name].append(NOT_FOUND)
            view.finish(outcomes)
            live.refresh()
        if not console.is_terminal:
            console.print()
    retrieved = [
        {
            "source": h.chunk.source,
            "heading": h.chunk.heading,
            "page": h.chunk.page,
            "score": round(h.score, 6),
        }
        for h in prompt.hits
    ]
    rows = []
    for outcome in outcomes:
        result = outcome.result
        text = result.text if result else (NOT_FOUND if not prompt.relevant else "")
        summary = outcome.to_dict()
        rows.append(
            {
                "model": outcome.model,
                "answer": text,
                "citations": [c.to_dict() for c in prompt.citations(text)],
                "retrieved": retrieved,
                "retrieval_ms": round(prompt.retrieval_ms, 2),
                "ttft_ms": summary["ttft_ms"],
                "total_ms": summary["total_ms"],
                "tokens_per_s": summary["tokens_per_s"],
                "cost_usd": summary["cost_usd"]
                if result
                else (0.0 if not prompt.relevant else None),
                "location": outcome.location,
                "error": outcome.error,
            }
        )
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        sources = Table(title=f"Sources (retrieval {prompt.retrieval_ms:.0f} ms)")
        for column in ("#", "source", "heading", "page", "cited by"):
            sources.add_column(column)
        for n, hit in enumerate(prompt.hits, 1):
            cited = [row["model"] for row in rows if any(c["n"] == n for c in row["citations"])]
            sources.add_row(
                str(n),
                escape(hit.chunk.source),
                escape(hit.chunk.heading),
                str(hit.chunk.page or ""),
                ", ".join(cited),
            )
        console.print(sources)
        if prompt.relevant:
            console.print(summary_table(outcomes))
        else:
            console.print(
                f"[yellow]nothing relevant found (best similarity "
                f"{prompt.best_similarity or 0:.2f} < {min_similarity}); "
                "no model was asked[/]"
            )
    if prompt.relevant:
        require_an_answer(outcomes)
