"""The shipped agent task set on the research team, per model assignment.

Each task needs facts from the handbook (the researcher's document search) and
arithmetic (the calculator); a task succeeds when its reference number appears in the
team's final answer. Per variant (all-local, all-api, hybrid: see ``duet agents
compare``): success rate, mean steps, tool calls, tokens, cost, wall time and bytes of
prompt sent to external models. Variants whose models cannot run here (no API key) are
reported as skipped.

    python benchmarks/agents_tasks.py [--limit N] [--variants all-local,hybrid]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from llmduet.agents.team import load_team
from llmduet.cli.agents import prepared, variant
from llmduet.data import AGENT_TASKS as TASKS
from llmduet.data import HANDBOOK_DOCS, TEAMS
from llmduet.errors import DuetError
from llmduet.models.registry import ModelRegistry


def solved(answer: str, reference: str) -> bool:
    wanted = float(reference)
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", answer)
    return any(abs(float(n.replace(",", "")) - wanted) < 0.005 for n in numbers)


async def run_task(runner: Any, task: str) -> dict[str, Any]:
    final: dict[str, Any] = {}
    async for event in runner.events(task):
        final = event
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--variants", default="all-local,all-api,hybrid")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", default="benchmarks/results/agents_tasks.json")
    args = parser.parse_args()
    tasks = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]
    tasks = tasks[: args.limit] if args.limit else tasks
    index = Path(tempfile.mkdtemp(prefix="duet-agents-bench-"))
    from llmduet.rag.index import open_index

    open_index(index).ingest([HANDBOOK_DOCS])
    team = load_team(TEAMS / "research.toml")
    models = ModelRegistry()
    results = []
    for name in args.variants.split(","):
        try:
            runner = prepared(
                variant(team, name, "llama", "chatgpt"), models, index, args.max_tokens
            )
        except DuetError as exc:
            print(f"{name}: skipped ({exc})")
            results.append({"variant": name, "skipped": str(exc)})
            continue
        rows = []
        for task in tasks:
            started = time.perf_counter()
            final = asyncio.run(run_task(runner, task["task"]))
            rows.append(
                {
                    "id": task["id"],
                    "solved": solved(final["answer"], task["answer"]),
                    "status": final["status"],
                    "steps": len(final["steps"]),
                    "tool_calls": final["tool_calls"],
                    "tokens": final["tokens"],
                    "cost_usd": final["cost_usd"],
                    "wall_s": time.perf_counter() - started,
                    "external_prompt_bytes": final["external_prompt_bytes"],
                }
            )
        count = len(rows)
        summary = {
            "variant": name,
            "tasks": count,
            "success_rate": sum(r["solved"] for r in rows) / count,
            **{
                f"mean_{key}": sum(r[key] for r in rows) / count
                for key in (
                    "steps",
                    "tool_calls",
                    "tokens",
                    "cost_usd",
                    "wall_s",
                    "external_prompt_bytes",
                )
            },
            "rows": rows,
        }
        results.append(summary)
        print(
            f"{name}: {summary['success_rate']:.0%} of {count} solved; mean steps "
            f"{summary['mean_steps']:.1f}, tool calls {summary['mean_tool_calls']:.1f}, tokens "
            f"{summary['mean_tokens']:.0f}, cost ${summary['mean_cost_usd']:.5f}, wall "
            f"{summary['mean_wall_s']:.1f} s, bytes out {summary['mean_external_prompt_bytes']:.0f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
