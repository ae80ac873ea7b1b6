"""Running teams: hand-offs, tools, budgets and privacy on scripted models; a real
grammar-constrained tool call on the bundled model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmduet.agents.builtin_tools import calculator_tool
from llmduet.agents.runner import TeamRunner
from llmduet.agents.team import parse_team
from llmduet.models.base import ChatBackend
from llmduet.models.pricing import CostModel
from llmduet.testing import Reply, ScriptedBackend, ToolCallReply


def team(**overrides: Any) -> Any:
    data: dict[str, Any] = {
        "team": {"name": "t", "kind": "supervisor", "supervisor": "lead", "max_steps": 10},
        "agents": {
            "lead": {"model": "api", "instructions": "Route the work."},
            "math": {"model": "local", "instructions": "Compute.", "tools": ["calculator"]},
        },
    }
    data["team"].update(overrides)
    return parse_team(data)


def calls(*pairs: tuple[str, dict[str, Any]]) -> Reply:
    return Reply(
        chunks=[],
        tool_calls=[
            ToolCallReply(name, json.dumps(args), f"call_{i}")
            for i, (name, args) in enumerate(pairs)
        ],
    )


async def run(runner: TeamRunner, task: str = "What is 6 * 7?") -> list[dict[str, Any]]:
    return [event async for event in runner.events(task)]


def backends(**by_model: ChatBackend) -> Any:
    return lambda model: by_model[model]


async def test_supervisor_hands_off_a_specialist_uses_its_tool_and_the_answer_comes_back() -> None:
    lead = ScriptedBackend(
        [
            calls(("transfer_to_math", {"task": "multiply 6 by 7"})),
            calls(("final_answer", {"answer": "It is 42."})),
        ],
        location="external",
        cost_model=CostModel(usd_per_hour=36.0),
    )
    math = ScriptedBackend([calls(("calculator", {"expression": "6 * 7"})), "The product is 42."])
    events = await run(
        TeamRunner(team(), backends(api=lead, local=math), {"calculator": calculator_tool()})
    )
    kinds = [e["event"] for e in events]
    assert kinds[0] == "step_start" and kinds[-1] == "final"
    assert {"handoff", "tool_call", "tool_result", "token"} <= set(kinds)
    handoff = next(e for e in events if e["event"] == "handoff")
    assert (handoff["source"], handoff["target"]) == ("lead", "math")
    result = next(e for e in events if e["event"] == "tool_result")
    assert (result["content"], result["error"]) == ("42", False)
    final = events[-1]
    assert final["answer"] == "It is 42." and final["status"] == "done"
    assert [(s["agent"], s["location"]) for s in final["steps"]] == [
        ("lead", "external"), ("math", "local"), ("math", "local"), ("lead", "external")
    ]  # fmt: skip
    assert final["tool_calls"] == 1 and final["tokens"] > 0 and final["cost_usd"] > 0
    # The specialist saw the task; the tool result went back to it as a tool message.
    assert "[lead to math] multiply 6 by 7" in math.requests[0].messages[-1]["content"]
    assert math.requests[1].messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": "42",
    }
    assert "[math] The product is 42." in lead.requests[1].messages[-1]["content"]
    sent_out = sum(
        len(
            json.dumps([{"role": "system", "content": "Route the work."}, *r.messages[1:]]).encode()
        )
        for r in lead.requests
    )
    assert final["external_prompt_bytes"] == sent_out
    assert [t["function"]["name"] for t in lead.requests[0].tools or []] == [
        "transfer_to_math",
        "final_answer",
    ]


async def test_bad_tool_calls_are_reported_back_and_the_run_goes_on() -> None:
    lead = ScriptedBackend(
        [
            calls(("transfer_to_math", {"task": "x"})),
            "prose instead of a tool call",
            calls(("transfer_to_nobody", {"task": "y"})),
            calls(("final_answer", {"answer": "done: 3"})),
        ]
    )
    math = ScriptedBackend(
        [calls(("shell", {"cmd": "rm -rf /"})), calls(("calculator", {"expr": "1+2"})), "3"]
    )
    events = await run(
        TeamRunner(team(), backends(api=lead, local=math), {"calculator": calculator_tool()})
    )
    results = [e for e in events if e["event"] == "tool_result"]
    assert results[0]["error"] and "there is no tool 'shell'" in results[0]["content"]
    assert results[1]["error"] and "expression: Field required" in results[1]["content"]
    assert events[-1]["answer"] == "done: 3" and events[-1]["status"] == "done"
    routing = [
        e["content"] for e in events if e["event"] == "tool_result" and e["name"] == "(routing)"
    ]
    assert routing == ["no tool call", "'transfer_to_nobody' is not one of your tools"]
    assert (
        "error: no tool call. Reply with exactly one tool call"
        in lead.requests[2].messages[-1]["content"]
    )
    assert all(r.tool_choice == "required" for r in lead.requests)


async def test_budgets_stop_the_run_with_a_clear_status() -> None:
    looping = ScriptedBackend(default=calls(("transfer_to_math", {"task": "again"})))
    math = ScriptedBackend(default="partial result")
    events = await run(
        TeamRunner(
            team(max_steps=5), backends(api=looping, local=math), {"calculator": calculator_tool()}
        )
    )
    final = events[-1]
    assert final["status"] == "step limit 5 reached" and len(final["steps"]) == 5
    assert final["answer"] == "partial result"
    slow_handoff = calls(("transfer_to_math", {"task": "go"}))
    slow_handoff.first_delay_s = 0.05  # 3600 $/h x 0.05 s = $0.05 for the first call
    priced = ScriptedBackend(default=slow_handoff, cost_model=CostModel(usd_per_hour=3600.0))
    tools = {"calculator": calculator_tool()}
    events = await run(
        TeamRunner(team(max_cost_usd=0.0001), backends(api=priced, local=math), tools)
    )
    assert events[-1]["status"] == "cost budget $0.0001 spent" and len(events[-1]["steps"]) == 1


async def test_a_private_agent_is_never_sent_to_an_external_model_at_run_time() -> None:
    spec = parse_team(
        {
            "team": {"kind": "sequential", "order": ["reader"], "max_steps": 3},
            "agents": {"reader": {"model": "m", "instructions": "Read.", "private": True}},
        }
    )
    outside = ScriptedBackend(default="leaked", location="external")
    events = await run(TeamRunner(spec, backends(m=outside), {}))
    assert "refused: private agent reader" in events[-1]["status"] and outside.requests == []


async def test_a_sequential_team_speaks_in_order_and_the_last_reply_is_the_answer() -> None:
    spec = parse_team(
        {
            "team": {"kind": "sequential", "order": ["writer", "critic", "writer"], "max_steps": 6},
            "agents": {
                "writer": {"model": "w", "instructions": "Write."},
                "critic": {"model": "c", "instructions": "Criticise."},
            },
        }
    )
    writer = ScriptedBackend(["draft one", "draft two, fixed"])
    critic = ScriptedBackend(["too vague"])
    events = await run(TeamRunner(spec, backends(w=writer, c=critic), {}), "Write a haiku.")
    assert [s["agent"] for s in events[-1]["steps"]] == ["writer", "critic", "writer"]
    assert events[-1]["answer"] == "draft two, fixed"
    assert events[-1]["artefacts"] == {"writer": "draft two, fixed", "critic": "too vague"}
    assert writer.requests[1].messages[-1]["content"] == "[critic] too vague"


@pytest.mark.model
async def test_the_bundled_model_makes_a_valid_grammar_constrained_tool_call(llama: Any) -> None:
    spec = parse_team(
        {
            "team": {"kind": "sequential", "order": ["math"], "max_steps": 3},
            "agents": {
                "math": {
                    "model": "llama",
                    "instructions": "Use the calculator tool to compute the expression.",
                    "tools": ["calculator"],
                    "first_call": "required",
                }
            },
        }
    )
    events = await run(
        TeamRunner(
            spec, backends(llama=llama), {"calculator": calculator_tool()}, max_tokens_per_call=64
        ),
        "Compute 6 * 7 with the calculator.",
    )
    tool_calls = [e for e in events if e["event"] == "tool_call"]
    assert tool_calls, events[-1]
    arguments = json.loads(tool_calls[0]["arguments"])
    assert tool_calls[0]["name"] == "calculator" and isinstance(arguments.get("expression"), str)
    assert any(e["event"] == "tool_result" for e in events) and events[-1]["event"] == "final"


def test_a_runner_refuses_a_team_whose_tools_it_was_not_given() -> None:
    from llmduet.errors import ConfigError

    with pytest.raises(ConfigError, match="agent math: no tool named calculator"):
        TeamRunner(team(), backends(), {})


@pytest.mark.model
async def test_the_bundled_model_hands_off_with_a_grammar_forced_call(llama: Any) -> None:
    spec = parse_team(
        {
            "team": {"kind": "supervisor", "supervisor": "lead", "max_steps": 2},
            "agents": {
                "lead": {
                    "model": "llama",
                    "instructions": "You never answer yourself: always transfer the task to the "
                    "helper with transfer_to_helper.",
                },
                "helper": {"model": "llama", "instructions": "Answer briefly."},
            },
        }
    )
    runner = TeamRunner(spec, backends(llama=llama), {}, max_tokens_per_call=96)
    events = await run(runner, "Say hello to the team.")
    handoffs = [e for e in events if e["event"] == "handoff"]
    assert handoffs and handoffs[0]["target"] == "helper", events[-1]
    assert [s["agent"] for s in events[-1]["steps"]][:2] == ["lead", "helper"]
