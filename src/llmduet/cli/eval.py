"""``duet eval`` runs a dataset on several models side by side; ``duet report`` reprints
the summary of a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from llmduet.cli.app import app, console, err_console, fail, friendly_errors, registry

DEFAULT_OUT = Path(".duet/eval")


def print_summary(summary: dict[str, Any]) -> None:
    from llmduet.evals.report import OPERATIONS_HEADER, operations_rows, quality_rows

    models = list(summary["models"])
    quality = Table(title="Quality: mean [bootstrap 95% interval]")
    for column in ("metric", *models):
        quality.add_column(column)
    for row in quality_rows(summary):
        quality.add_row(*map(escape, row))
    console.print(quality)
    operations = Table(title="Latency and cost")
    for column in OPERATIONS_HEADER:
        operations.add_column(column)
    for row in operations_rows(summary):
        operations.add_row(*map(escape, row))
    console.print(operations)
    for comparison in summary.get("comparisons", []):
        console.print(
            f"{escape(comparison['a'])} - {escape(comparison['b'])} on {comparison['metric']}: "
            f"{comparison['mean_difference']:+.3f} "
            f"[{comparison['low']:+.3f}, {comparison['high']:+.3f}], "
            f"p = {comparison['p_value']:.4f}, n = {comparison['n']}"
        )
    pairwise = summary.get("pairwise")
    if pairwise:
        for pair in pairwise["pairs"]:
            rate = pair["win_rate_a"]
            console.print(
                f"head to head {escape(pair['a'])} vs {escape(pair['b'])}: "
                f"{escape(pair['a'])} wins {rate['mean']:.2f} [{rate['low']:.2f}, "
                f"{rate['high']:.2f}] of {rate['n']} (ties half; both orders agreed on "
                f"{pair['consistent_share']:.0%})"
            )
        for model, score in pairwise["bradley_terry"].items():
            console.print(
                f"Bradley-Terry {escape(model)}: {score['mean']:.0f} "
                f"[{score['low']:.0f}, {score['high']:.0f}]"
            )
    for even in summary.get("break_even", []):
        volume = even["break_even_requests_per_month"]
        console.print(
            f"break-even {escape(even['self_hosted'])} vs {escape(even['api'])}: "
            + (f"{volume:,.0f} requests a month" if volume else "self-hosting never cheaper")
        )


@app.command("eval")
@friendly_errors
def eval_command(
    dataset: Path = typer.Argument(..., help="JSONL cases: id, input or messages, reference"),
    pipeline: str = typer.Option("chat", help="chat, rag, or module:factory (your own chain)"),
    model: list[str] = typer.Option(
        None, "--model", "-m", help="model to evaluate (repeat; default: llama, chatgpt)"
    ),
    index: Path | None = typer.Option(None, "--index", help="the index for --pipeline rag"),
    k: int = typer.Option(5, "-k", min=1, max=20, help="passages for --pipeline rag"),
    metric: list[str] = typer.Option(
        None,
        "--metric",
        help="for cases without their own metrics: exact_match, token_f1, contains=TEXT, "
        "regex=PATTERN, json_valid, semantic_similarity, judge[=RUBRIC], retrieval_recall, "
        "retrieval_mrr (repeat)",
    ),
    judge: str | None = typer.Option(None, help="the model that judges (for the judge metric)"),
    pairwise: bool = typer.Option(
        False, help="also judge every pair of models head to head, both orders (needs --judge)"
    ),
    concurrency: int = typer.Option(4, min=1, max=256, help="cases in flight per model"),
    limit: int | None = typer.Option(None, min=1, help="only the first N cases"),
    max_tokens: int | None = typer.Option(256, "--max-tokens", min=1),
    temperature: float | None = typer.Option(0.0, min=0.0, max=2.0),
    seed: int | None = typer.Option(0),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="folder for the report and the cache"),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="run the cases as Ray tasks: 'local' starts a Ray instance here, 'auto' joins "
        "the running cluster, or give its address (needs llmduet[ray])",
    ),
) -> None:
    """Evaluate a dataset on several models; resumable; writes an HTML report."""
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from llmduet.embeddings import MiniLMEmbedder
    from llmduet.evals.cache import ResultCache
    from llmduet.evals.dataset import load_dataset
    from llmduet.evals.pipelines import Pipeline, PipelineRecipe
    from llmduet.evals.report import write_report
    from llmduet.evals.runner import EvalRunner, model_identity
    from llmduet.evals.scoring import Scorer, parse_metric_flag
    from llmduet.evals.summary import pairwise_summary, summarise

    if pairwise and not judge:
        raise fail("--pairwise needs a judge model: add --judge MODEL")
    data = load_dataset(dataset)
    for problem in data.problems:
        err_console.print(f"[yellow]skipped[/] {escape(str(dataset))} {escape(problem)}")
    cases = data.cases[:limit] if limit else data.cases
    models = registry()
    names = list(dict.fromkeys(name.lower() for name in (model or ["llama", "chatgpt"])))
    for name in [*names, *([judge] if judge else [])]:
        models.backend(name)  # unknown or misconfigured models fail before anything runs
    options = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    recipe = PipelineRecipe(pipeline, options, str(index) if index else None, k)
    chosen: Pipeline = recipe.build(models)
    if ray:
        from llmduet.evals.distributed import RayPipeline

        chosen = RayPipeline(recipe, models.settings, chosen, None if ray == "local" else ray)
    cache = ResultCache(out / "cache.jsonl")
    judge_backend = models.backend(judge) if judge else None
    scorer = Scorer(
        cases,
        [parse_metric_flag(flag) for flag in metric or []],
        rag=pipeline == "rag",
        embedder=MiniLMEmbedder,
        judge_backend=judge_backend,
        judge_identity=model_identity(models, judge) if judge else None,
        cache=cache,
        concurrency=concurrency,
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[cached]} cached"),
        console=err_console,
    )
    bars = {name: progress.add_task(name, total=len(cases), cached=0) for name in names}

    def advance(name: str, cached: bool) -> None:
        progress.update(bars[name], advance=1)
        if cached:
            progress.update(bars[name], cached=progress.tasks[bars[name]].fields["cached"] + 1)

    runner = EvalRunner(models, chosen, names, cache, concurrency=concurrency, on_progress=advance)

    async def evaluate() -> Any:
        try:
            result = await runner.run(cases)
            by_id = {case.id: case for case in cases}
            await scorer.score([(by_id[r["case_id"]], r) for r in result.records])
            ran = [name for name in names if name not in result.skipped_models]
            if pairwise and len(ran) > 1:
                result.pairwise = await scorer.pairwise(cases, result.records, ran)
            return result
        finally:
            await models.aclose()

    with progress:
        result = asyncio.run(evaluate())
    cache.close()
    ran = [name for name in names if name not in result.skipped_models]
    for name, why in result.skipped_models.items():
        err_console.print(f"[yellow]skipped model[/] {escape(name)}: {escape(why)}")
    if not ran:
        raise fail("no model could run: " + "; ".join(result.skipped_models.values()))
    locations = {name: models.backend(name).location for name in ran}
    hardware: dict[str, float | None] = {
        name: models.backend(name).cost_model.usd_per_hour for name in ran
    }
    summary = summarise(result.records, ran, locations, hardware)
    if result.pairwise is not None:
        summary["pairwise"] = pairwise_summary(result.pairwise)
    summary.update(
        dataset=str(dataset),
        pipeline=chosen.name,
        skipped_models=result.skipped_models,
        skipped_lines=data.problems,
        cached_cases=result.cached,
    )
    title = f"duet eval: {dataset.name} ({chosen.name})"
    paths = write_report(out, summary, result.records, title, result.pairwise or [])
    print_summary(json.loads(paths["summary"].read_text()))
    errors = sum(1 for r in result.records if r.get("error"))
    if errors:
        err_console.print(f"[yellow]{errors} case(s) failed[/] (recorded in results.jsonl)")
    console.print(f"report: {paths['html']} (and summary.md, summary.json, results.jsonl)")


@app.command("report")
@friendly_errors
def report_command(
    folder: Path = typer.Argument(DEFAULT_OUT, help="the --out folder of a duet eval run"),
) -> None:
    """Print the summary of a finished evaluation."""
    path = folder / "summary.json"
    if not path.exists():
        raise fail(f"no evaluation at {folder}: run `duet eval DATASET --out {folder}` first")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise fail(f"{path} is corrupt: run the evaluation again") from None
    print_summary(summary)
    console.print(f"report: {folder / 'report.html'}")
