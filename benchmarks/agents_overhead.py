"""Orchestration overhead per agent step: a team run on LangGraph against the same model
calls made directly.

The scripted backend answers instantly, so only the orchestration remains: the graph,
state merging, budgets, step records, event streaming and tool dispatch. A supervisor team
hands off to a worker that calls the calculator once and answers, and the supervisor
finishes: 4 model calls a run. The baseline makes the same 4 calls with the same
requests through ``ChatBackend.complete`` and runs the same tool. Goal: <= 10 ms a step.

    python benchmarks/agents_overhead.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from llmduet.agents.builtin_tools import calculator_tool
from llmduet.agents.runner import TeamRunner
from llmduet.agents.team import parse_team
from llmduet.models.types import ChatRequest
from llmduet.testing import Reply, ScriptedBackend, ToolCallReply

TEAM = parse_team(
    {
        "team": {"kind": "supervisor", "supervisor": "lead", "max_steps": 10},
        "agents": {
            "lead": {"model": "m", "instructions": "Route."},
            "worker": {"model": "m", "instructions": "Compute.", "tools": ["calculator"]},
        },
    }
)
STEPS = 4


def script() -> list[Reply]:
    def call(name: str, arguments: str) -> Reply:
        return Reply(chunks=[], tool_calls=[ToolCallReply(name, arguments)])

    return [
        call("transfer_to_worker", '{"task": "6 * 7"}'),
        call("calculator", '{"expression": "6 * 7"}'),
        Reply.text("It is 42."),
        call("final_answer", '{"answer": "42"}'),
    ]


async def team_run(tools: dict) -> float:
    backend = ScriptedBackend(script())
    runner = TeamRunner(TEAM, lambda model: backend, tools)
    started = time.perf_counter()
    async for event in runner.events("What is 6 * 7?"):
        final = event
    elapsed = time.perf_counter() - started
    assert final["answer"] == "42" and len(final["steps"]) == STEPS
    return elapsed


async def direct_run(tools: dict) -> float:
    backend = ScriptedBackend(script())
    messages = [{"role": "user", "content": "What is 6 * 7?"}]
    started = time.perf_counter()
    for step in range(STEPS):
        result = await backend.complete(ChatRequest(messages=messages, max_tokens=256))
        if step == 1:
            await tools["calculator"].run(result.tool_calls[0].arguments)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/agents_overhead.json")
    args = parser.parse_args()
    tools = {"calculator": calculator_tool()}
    await team_run(tools)  # warm-up: imports, graph compilation paths
    team_times, direct_times = [], []
    for _ in range(args.runs):  # interleaved, so drift hits both alike
        team_times.append(await team_run(tools))
        direct_times.append(await direct_run(tools))
    team_ms = sorted(team_times)[len(team_times) // 2] * 1000
    direct_ms = sorted(direct_times)[len(direct_times) // 2] * 1000
    per_step = (team_ms - direct_ms) / STEPS
    print(f"median run: team {team_ms:.2f} ms, direct calls {direct_ms:.2f} ms ({STEPS} steps)")
    print(f"orchestration overhead per step: {per_step:.2f} ms (goal <= 10 ms)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"team_ms": team_ms, "direct_ms": direct_ms, "per_step_ms": per_step})
    )


if __name__ == "__main__":
    asyncio.run(main())
