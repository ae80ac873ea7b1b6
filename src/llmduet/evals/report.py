"""The evaluation's files: ``results.jsonl``, ``summary.json``, ``summary.md`` and one
self-contained ``report.html`` (plots embedded as PNG data, no network needed to view)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def _number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def quality_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for metric in summary["metrics"]:
        row = [metric]
        for stats in summary["models"].values():
            q = stats["quality"].get(metric, {})
            mean = q.get("mean")
            row.append(
                "–"
                if mean is None
                else f"{mean:.3f} [{_number(q.get('low'))}, {_number(q.get('high'))}] n={q['n']}"
            )
        rows.append(row)
    return rows


def operations_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for model, stats in summary["models"].items():
        lat, cost = stats["latency"], stats["cost"]
        rows.append(
            [
                model,
                str(stats["location"]),
                f"{stats['cases']} ({stats['errors']} errors)",
                f"{_number(lat['ttft_ms']['p50'], 0)} / {_number(lat['ttft_ms']['p95'], 0)}",
                f"{_number(lat['itl_ms']['p50'], 1)} / {_number(lat['itl_ms']['p95'], 1)}",
                f"{_number(lat['e2e_ms']['p50'], 0)} / {_number(lat['e2e_ms']['p99'], 0)}",
                _number(cost["per_request_usd"], 6),
                _number(cost["total_usd"], 4),
            ]
        )
    return rows


def pairwise_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for pair in summary["pairwise"]["pairs"]:
        rate = pair["win_rate_a"]
        rows.append(
            [
                f"{pair['a']} vs {pair['b']}",
                f"{_number(rate['mean'], 2)} [{_number(rate['low'], 2)}, "
                f"{_number(rate['high'], 2)}] n={rate['n']}",
                f"{pair['consistent_share']:.0%}",
            ]
        )
    return rows


def bradley_terry_rows(summary: dict[str, Any]) -> list[list[str]]:
    return [
        [model, f"{_number(s['mean'], 0)} [{_number(s['low'], 0)}, {_number(s['high'], 0)}]"]
        for model, s in summary["pairwise"]["bradley_terry"].items()
    ]


OPERATIONS_HEADER = [
    "model",
    "where",
    "cases",
    "TTFT p50/p95 ms",
    "ITL p50/p95 ms",
    "E2E p50/p99 ms",
    "$/request",
    "total $",
]


def markdown(summary: dict[str, Any], title: str) -> str:
    models = list(summary["models"])

    def table(header: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)

    parts = [f"# {title}", "", "## Quality (mean, bootstrap 95% interval)", ""]
    parts.append(table(["metric", *models], quality_rows(summary)))
    parts += ["", "## Latency and cost", "", table(OPERATIONS_HEADER, operations_rows(summary))]
    if summary["comparisons"]:
        parts += ["", "## Paired differences (a - b on the same cases)", ""]
        rows = [
            [
                f"{c['a']} - {c['b']}",
                c["metric"],
                f"{c['mean_difference']:+.3f} [{_number(c['low'])}, {_number(c['high'])}]",
                _number(c["p_value"], 4),
                _number(c["win_rate_a"], 2),
                str(c["n"]),
            ]
            for c in summary["comparisons"]
        ]
        parts.append(table(["models", "metric", "difference", "p", "win rate a", "n"], rows))
    if summary.get("pairwise"):
        parts += ["", "## Head to head (judge, both orders; ties count half)", ""]
        parts.append(
            table(["pair", "win rate of first", "both orders agreed"], pairwise_rows(summary))
        )
        parts += [
            "",
            table(["model", "Bradley-Terry score [95% interval]"], bradley_terry_rows(summary)),
        ]
    for even in summary["break_even"]:
        volume = even["break_even_requests_per_month"]
        parts += [
            "",
            f"Break-even {even['self_hosted']} vs {even['api']}: "
            + (
                f"self-hosting is cheaper from {volume:,.0f} requests a month "
                f"(one machine: ${even['machine_usd_per_month']:,.2f} a month)."
                if volume
                else "self-hosting is never cheaper at the measured speed and prices."
            ),
        ]
    if summary.get("skipped_models"):
        parts += [
            "",
            "Skipped models: "
            + "; ".join(f"{m} ({why})" for m, why in summary["skipped_models"].items()),
        ]
    return "\n".join(parts) + "\n"


def bound(stats: dict[str, Any], key: str, mean: float, sign: int) -> float:
    """The error bar's length from the mean to the interval's ``key`` end (0 if unknown)."""
    end = stats.get(key)
    return 0.0 if end is None or mean != mean else sign * (end - mean)


def _figure_png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def plots(summary: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models, metrics = list(summary["models"]), summary["metrics"]
    images = {}
    if metrics:
        figure, axes = plt.subplots(figsize=(max(5, 1.4 * len(metrics) * len(models)), 3.6))
        width = 0.8 / max(1, len(models))
        for i, model in enumerate(models):
            quality = summary["models"][model]["quality"]
            means = [
                quality[m]["mean"] if quality[m]["mean"] is not None else np.nan for m in metrics
            ]
            lows = [bound(quality[m], "low", q, -1) for q, m in zip(means, metrics, strict=True)]
            highs = [bound(quality[m], "high", q, 1) for q, m in zip(means, metrics, strict=True)]
            x = np.arange(len(metrics)) + i * width
            axes.bar(x, means, width, yerr=[lows, highs], capsize=3, label=model)
        axes.set_xticks(
            np.arange(len(metrics)) + width * (len(models) - 1) / 2, metrics, rotation=20
        )
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("score (95% CI)")
        axes.legend()
        images["quality"] = _figure_png(figure)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, name in ((axes[0], "ttft_s", "TTFT"), (axes[1], "total_s", "end-to-end")):
        data = [
            [r[key] * 1000 for r in records if r["model"] == m and r.get(key) is not None]
            for m in models
        ]
        if any(data):
            ax.boxplot([d or [np.nan] for d in data], tick_labels=models)
        ax.set_title(f"{name} (ms)")
    images["latency"] = _figure_png(figure)
    for even in summary["break_even"]:
        figure, axes = plt.subplots(figsize=(6, 3.6))
        curve = even["curve"]
        volumes = [p["requests_per_month"] for p in curve]
        axes.loglog(volumes, [p["api_usd"] for p in curve], label=f"{even['api']} (API)")
        axes.loglog(
            volumes,
            [p["self_hosted_usd"] for p in curve],
            label=f"{even['self_hosted']} (self-hosted)",
        )
        if even["break_even_requests_per_month"]:
            axes.axvline(even["break_even_requests_per_month"], color="grey", linestyle="--")
        axes.set_xlabel("requests per month")
        axes.set_ylabel("USD per month")
        axes.legend()
        images[f"cost {even['self_hosted']} vs {even['api']}"] = _figure_png(figure)
    return images


def html_report(summary: dict[str, Any], records: list[dict[str, Any]], title: str) -> str:
    escape = html.escape
    models = list(summary["models"])

    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_case.setdefault(record["case_id"], {})[record["model"]] = record
    case_rows = []
    for case_id, answers in by_case.items():
        cells = [f"<td>{escape(case_id)}</td>"]
        for model in models:
            r = answers.get(model)
            if r is None:
                cells.append("<td></td>")
                continue
            scores = ", ".join(f"{k} {_number(v, 2)}" for k, v in (r.get("metrics") or {}).items())
            reason = (
                f"<div class='reason'>judge: {escape(r['judge_reason'])}</div>"
                if r.get("judge_reason")
                else ""
            )
            body = escape(r["error"]) if r.get("error") else escape(r["text"])
            cells.append(
                f"<td><pre>{body}</pre><div class='scores'>{escape(scores)}</div>{reason}</td>"
            )
        case_rows.append("<tr>" + "".join(cells) + "</tr>")
    images = "".join(
        f"<figure><img alt='{escape(name)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{escape(name)}</figcaption></figure>"
        for name, data in plots(summary, records).items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
        "pre{white-space:pre-wrap;margin:0;max-width:40em}"
        ".scores{color:#555;font-size:90%}.reason{color:#735;font-size:90%}"
        "figure{display:inline-block;margin:0 1em 1em 0}"
    )
    heading = "".join(f"<th>{escape(m)}</th>" for m in models)
    head_to_head = (
        "<h2>Head to head (judge, both orders; ties count half)</h2>"
        + table(["pair", "win rate of first", "both orders agreed"], pairwise_rows(summary))
        + table(["model", "Bradley-Terry score [95% interval]"], bradley_terry_rows(summary))
        if summary.get("pairwise")
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{style}</style></head><body>"
        f"<h1>{escape(title)}</h1><h2>Quality (mean, bootstrap 95% interval)</h2>"
        f"{table(['metric', *models], quality_rows(summary))}"
        f"<h2>Latency and cost</h2>{table(OPERATIONS_HEADER, operations_rows(summary))}"
        f"{head_to_head}"
        f"<h2>Plots</h2>{images}"
        f"<h2>Cases</h2><table><tr><th>case</th>{heading}</tr>{''.join(case_rows)}</table>"
        "</body></html>"
    )


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_report(
    out: Path,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    title: str,
    verdicts: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write the files; ``verdicts`` (head-to-head judgements) go to ``pairwise.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    summary, records = clean(summary), clean(records)
    paths = {
        "results": out / "results.jsonl",
        "summary": out / "summary.json",
        "markdown": out / "summary.md",
        "html": out / "report.html",
    }
    if verdicts:
        paths["pairwise"] = out / "pairwise.jsonl"
        paths["pairwise"].write_text(_jsonl(clean(verdicts)))
    paths["results"].write_text(_jsonl(records))
    paths["summary"].write_text(json.dumps({"title": title, **summary}, indent=1))
    paths["markdown"].write_text(markdown(summary, title))
    paths["html"].write_text(html_report(summary, records, title))
    return paths
