"""Running a team on LangGraph: each agent turn is a graph node, hand-offs are edges.

A supervisor team routes by tool calls: the supervisor sees one ``transfer_to_<agent>``
tool per specialist and a ``final_answer`` tool; a specialist works (calling its own tools
until it replies in text) and hands back to the supervisor. A sequential team runs its
``order`` ``rounds`` times; the last reply is the answer.

Every model call goes through the model layer, so each step records the agent, model,
where it ran, tokens, cost and latency. Budgets (steps, tokens, cost) are checked before
every call; a run that hits one stops with ``status`` saying which, never an exception. A
private agent's call to a model that is not local is refused at run time as well as at
load time. Progress streams as events (``step_start``, ``token``, ``tool_call``,
``tool_result``, ``handoff``, ``final``) through LangGraph's custom stream.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from llmduet.agents.team import TeamSpec
from llmduet.agents.tools import Tool
from llmduet.errors import ConfigError, DuetError
from llmduet.models.base import ChatBackend
from llmduet.models.types import ChatRequest, TextDelta

FINAL = "final_answer"
MAX_TOOL_ROUNDS = 4  # tool calls an agent may chain within one turn
REPAIR_TRIES = 2  # times a supervisor is told its reply was not a usable hand-off


class BudgetExceeded(Exception):
    """Internal: a budget is spent; the run ends with it as its status."""


@dataclass(slots=True)
class RunLedger:
    """What a run spent and did, shared by every node of one run."""

    team: TeamSpec
    started: float = field(default_factory=time.perf_counter)
    steps: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0
    external_prompt_bytes: int = 0
    tool_calls: int = 0
    events: Callable[[dict[str, Any]], None] = lambda event: None

    def emit(self, kind: str, **data: Any) -> None:
        self.events({"event": kind, "t": round(time.perf_counter() - self.started, 4), **data})

    def check(self) -> None:
        budgets = self.team.budgets
        if len(self.steps) >= budgets.max_steps:
            raise BudgetExceeded(f"step limit {budgets.max_steps} reached")
        if budgets.max_tokens is not None and self.tokens >= budgets.max_tokens:
            raise BudgetExceeded(f"token budget {budgets.max_tokens} spent")
        if budgets.max_cost_usd is not None and self.cost_usd >= budgets.max_cost_usd:
            raise BudgetExceeded(f"cost budget ${budgets.max_cost_usd:g} spent")


def _merge(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    return {**old, **new}


class TeamState(TypedDict, total=False):
    messages: Annotated[list[dict[str, Any]], operator.add]
    artefacts: Annotated[dict[str, str], _merge]  # each agent's latest output, by agent
    next: str
    final: str
    status: str


def handoff_tools(team: TeamSpec) -> list[dict[str, Any]]:
    specialists = [name for name in team.agents if name != team.supervisor]
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"transfer_to_{name}",
                "description": f"Hand the work to {name}: {team.agents[name].instructions[:160]}",
                "parameters": {
                    "type": "object",
                    "properties": {"task": {"type": "string", "description": "what to do"}},
                    "required": ["task"],
                },
            },
        }
        for name in specialists
    ]
    tools.append(
        {
            "type": "function",
            "function": {
                "name": FINAL,
                "description": "Give the team's final answer to the user and stop.",
                "parameters": {
                    "type": "object",
                    "properties": {"answer": {"type": "string"}},
                    "required": ["answer"],
                },
            },
        }
    )
    return tools


class TeamRunner:
    def __init__(
        self,
        team: TeamSpec,
        backends: Callable[[str], ChatBackend],
        tools: dict[str, Tool],
        *,
        max_tokens_per_call: int = 256,
        seed: int | None = 0,
    ) -> None:
        for agent in team.agents.values():
            missing = [name for name in agent.tools if name not in tools]
            if missing:
                raise ConfigError(f"agent {agent.name}: no tool named {', '.join(missing)}")
        self.team = team
        self.backends = backends
        self.tools = tools
        self.max_tokens_per_call = max_tokens_per_call
        self.seed = seed

    async def _call(
        self,
        ledger: RunLedger,
        agent: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str = "auto",
    ) -> tuple[str, list[Any]]:
        """One model call for ``agent``: streams tokens, records the step."""
        ledger.check()
        spec = self.team.agents[agent]
        backend = self.backends(spec.model)
        if spec.private and backend.location != "local":
            raise BudgetExceeded(  # never send private data out, even if settings changed
                f"refused: private agent {agent} would run on external model {spec.model}"
            )
        ledger.emit("step_start", agent=agent, model=spec.model, location=backend.location)
        request = ChatRequest(
            messages=[{"role": "system", "content": spec.instructions}, *messages],
            tools=tools or None,
            tool_choice=tool_choice if tools else None,
            max_tokens=self.max_tokens_per_call,
            seed=self.seed,
        )

        def on_event(event: Any) -> None:
            if isinstance(event, TextDelta) and event.text:
                ledger.emit("token", agent=agent, text=event.text)

        result = await backend.complete(request, on_event)
        usage = result.usage
        tokens = (usage.prompt_tokens + usage.completion_tokens) if usage else result.output_tokens
        ledger.tokens += tokens
        ledger.cost_usd += result.cost_usd or 0.0
        if backend.location != "local":
            ledger.external_prompt_bytes += len(json.dumps(request.messages).encode())
        ledger.steps.append(
            {
                "agent": agent,
                "model": spec.model,
                "location": backend.location,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "output_tokens": result.output_tokens,
                "cost_usd": result.cost_usd,
                "ttft_ms": round(result.ttft_s * 1000, 2) if result.ttft_s is not None else None,
                "total_ms": round(result.total_s * 1000, 2),
                "tool_calls": [c.name for c in result.tool_calls],
            }
        )
        return result.text, result.tool_calls

    async def _work(self, ledger: RunLedger, agent: str, messages: list[dict[str, Any]]) -> str:
        """A specialist's turn: call its tools until it answers in text."""
        own = [self.tools[name] for name in self.team.agents[agent].tools]
        schemas = [t.to_openai() for t in own]
        by_name = {t.name: t for t in own}
        history = list(messages)
        for round_number in range(MAX_TOOL_ROUNDS):
            choice = self.team.agents[agent].first_call if round_number == 0 else "auto"
            text, calls = await self._call(ledger, agent, history, schemas, choice)
            if not calls:
                return text
            history.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [c.to_openai() for c in calls],
                }
            )
            for call in calls:
                ledger.tool_calls += 1
                ledger.emit("tool_call", agent=agent, name=call.name, arguments=call.arguments)
                target = by_name.get(call.name)
                if target is None:
                    content = f"error: there is no tool '{call.name}'; use one of {sorted(by_name)}"
                    failed = True
                else:
                    outcome = await target.run(call.arguments)
                    content, failed = outcome.content, outcome.error
                ledger.emit(
                    "tool_result", agent=agent, name=call.name, content=content, error=failed
                )
                history.append({"role": "tool", "tool_call_id": call.id, "content": content})
        text, _ = await self._call(ledger, agent, history, None)  # tools off: it must answer
        return text

    def graph(self, ledger: RunLedger) -> Any:
        from langgraph.graph import END, START, StateGraph

        team = self.team
        builder: Any = StateGraph(TeamState)

        def specialist(name: str) -> Callable[[TeamState], Any]:
            async def node(state: TeamState) -> TeamState:
                try:
                    text = await self._work(ledger, name, state["messages"])
                except (BudgetExceeded, DuetError) as exc:
                    return {"status": str(exc), "next": END}
                message = {"role": "user", "content": f"[{name}] {text}"}
                return {"messages": [message], "final": text, "artefacts": {name: text}}

            return node

        if team.kind == "sequential":
            previous = START
            for turn, name in enumerate(list(team.order) * team.rounds):
                node_name = f"{turn}-{name}"
                builder.add_node(node_name, specialist(name))
                if previous == START:
                    builder.add_edge(START, node_name)
                else:
                    builder.add_conditional_edges(
                        previous, lambda s, n=node_name: END if s.get("status") else n
                    )
                previous = node_name
            builder.add_edge(previous, END)
            return builder.compile()

        supervisor = team.supervisor
        assert supervisor is not None
        tools = handoff_tools(team)

        async def lead(state: TeamState) -> TeamState:
            messages = list(state["messages"])
            for _ in range(REPAIR_TRIES + 1):
                try:
                    # Every move of the supervisor is a tool (hand off or final_answer), so
                    # its calls are forced to one: grammar-constrained on local models.
                    text, calls = await self._call(ledger, supervisor, messages, tools, "required")
                except (BudgetExceeded, DuetError) as exc:
                    return {"status": str(exc), "next": END}
                for call in calls:
                    arguments = call.parsed_arguments() if call.arguments else {}
                    arguments = arguments if isinstance(arguments, dict) else {}
                    if call.name == FINAL:
                        return {"final": str(arguments.get("answer") or text), "next": END}
                    target = call.name.removeprefix("transfer_to_")
                    if call.name.startswith("transfer_to_") and target in team.agents:
                        ledger.emit("handoff", source=supervisor, target=target)
                        task = str(arguments.get("task") or "")
                        message = {"role": "user", "content": f"[{supervisor} to {target}] {task}"}
                        return {"messages": [message], "next": target}
                # Not a usable call (cut off, or an unknown tool): say so and let it retry.
                problem = f"'{calls[0].name}' is not one of your tools" if calls else "no tool call"
                ledger.emit(
                    "tool_result", agent=supervisor, name="(routing)", content=problem, error=True
                )
                messages.append(
                    {
                        "role": "user",
                        "content": f"error: {problem}. Reply with exactly one tool call: "
                        + ", ".join(t["function"]["name"] for t in tools),
                    }
                )
            return {"final": text, "status": "the supervisor made no valid hand-off", "next": END}

        builder.add_node(supervisor, lead)
        builder.add_edge(START, supervisor)
        routes = {name: name for name in team.agents if name != supervisor}
        builder.add_conditional_edges(
            supervisor, lambda s: s.get("next") or END, {**routes, END: END}
        )
        for name in routes:
            builder.add_node(name, specialist(name))
            builder.add_conditional_edges(
                name,
                lambda s: END if s.get("status") else supervisor,
                {supervisor: supervisor, END: END},
            )
        return builder.compile()

    async def events(self, task: str) -> AsyncIterator[dict[str, Any]]:
        """Run the team on ``task``; yields the events, the last one ``final``."""
        import asyncio

        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        ledger = RunLedger(self.team, events=queue.put_nowait)
        graph = self.graph(ledger)
        limit = self.team.budgets.max_steps * (MAX_TOOL_ROUNDS + 2) + 10

        async def run() -> dict[str, Any]:
            try:
                return dict(
                    await graph.ainvoke(
                        {"messages": [{"role": "user", "content": task}]},
                        {"recursion_limit": limit},
                    )
                )
            finally:
                queue.put_nowait(None)

        running = asyncio.create_task(run())
        while (event := await queue.get()) is not None:
            yield event
        state = await running
        yield {
            "event": "final",
            "t": round(time.perf_counter() - ledger.started, 4),
            "answer": state.get("final", ""),
            "status": state.get("status") or "done",
            "artefacts": state.get("artefacts", {}),
            "steps": ledger.steps,
            "tool_calls": ledger.tool_calls,
            "tokens": ledger.tokens,
            "cost_usd": ledger.cost_usd,
            "external_prompt_bytes": ledger.external_prompt_bytes,
        }
