"""Teams of agents, declared in TOML and checked before anything runs.

```toml
[team]
name = "research"
kind = "supervisor"        # or "sequential"
supervisor = "lead"        # supervisor teams: the agent that hands work out
order = ["writer", "critic"]  # sequential teams: who speaks, in turn
rounds = 2                 # sequential teams: how many times the order repeats
max_steps = 12             # every team stops after this many agent turns
max_tokens = 20000         # optional budgets per run
max_cost_usd = 0.05

[agents.researcher]
model = "llama"
instructions = "Find the facts in the company documents."
tools = ["search_documents"]
first_call = "required"    # use a tool before answering (default: auto)
private = true             # sees private data: may run on local models only
```

Every problem — an unknown agent, tool or model, a private agent on an external model, a
budget that is not a positive number, a team with no step limit — is a
:class:`~llmduet.errors.ConfigError` naming the file and the field, raised at load time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmduet.errors import ConfigError, DuetError

Kind = Literal["supervisor", "sequential"]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    model: str
    instructions: str
    tools: tuple[str, ...] = ()
    private: bool = False
    first_call: Literal["auto", "required"] = "auto"  # "required": use a tool before answering


@dataclass(frozen=True, slots=True)
class Budgets:
    max_steps: int
    max_tokens: int | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class TeamSpec:
    name: str
    kind: Kind
    agents: dict[str, AgentSpec]
    budgets: Budgets
    supervisor: str | None = None
    order: tuple[str, ...] = ()
    rounds: int = 1
    source: str = field(default="", compare=False)

    def with_models(self, models: dict[str, str]) -> TeamSpec:
        """The same team with some agents' models replaced (for side-by-side variants)."""
        agents = {
            name: AgentSpec(
                a.name, models.get(name, a.model), a.instructions, a.tools, a.private, a.first_call
            )
            for name, a in self.agents.items()
        }
        return TeamSpec(
            self.name, self.kind, agents, self.budgets, self.supervisor, self.order,
            self.rounds, self.source,
        )  # fmt: skip


def _positive(value: Any, where: str, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, not {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where} must be a whole number, not {value!r}")
    return kind(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def parse_team(data: dict[str, Any], source: str = "the team") -> TeamSpec:
    """Validate the shape of a team (agents, kind, budgets) without looking at models."""
    team = data.get("team")
    if not isinstance(team, dict):
        raise ConfigError(f"{source}: missing the [team] table")
    raw_agents = data.get("agents")
    if not isinstance(raw_agents, dict) or not raw_agents:
        raise ConfigError(f"{source}: declare at least one agent under [agents.NAME]")
    agents = {}
    for name, raw in raw_agents.items():
        where = f"{source}: agents.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(raw) - {"model", "instructions", "tools", "private", "first_call"}
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        tools = raw.get("tools", [])
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            raise ConfigError(f"{where}.tools must be a list of tool names")
        private = raw.get("private", False)
        if not isinstance(private, bool):
            raise ConfigError(f"{where}.private must be true or false")
        first_call = raw.get("first_call", "auto")
        if first_call not in ("auto", "required") or (first_call == "required" and not tools):
            raise ConfigError(f"{where}.first_call must be auto, or required with tools")
        agents[name] = AgentSpec(
            name,
            _string(raw.get("model"), f"{where}.model"),
            _string(raw.get("instructions"), f"{where}.instructions"),
            tuple(tools),
            private,
            first_call,
        )
    kind = team.get("kind", "supervisor")
    if kind not in ("supervisor", "sequential"):
        raise ConfigError(f"{source}: team.kind must be supervisor or sequential, not {kind!r}")
    if team.get("max_steps") is None:
        raise ConfigError(f"{source}: team.max_steps is required, so every run stops")
    budgets = Budgets(
        _positive(team.get("max_steps"), f"{source}: team.max_steps", int),
        _positive(team.get("max_tokens"), f"{source}: team.max_tokens", int),
        _positive(team.get("max_cost_usd"), f"{source}: team.max_cost_usd", float),
    )
    supervisor, order, rounds = None, (), 1
    if kind == "supervisor":
        supervisor = _string(team.get("supervisor"), f"{source}: team.supervisor")
        if supervisor not in agents:
            raise ConfigError(f"{source}: team.supervisor '{supervisor}' is not an agent")
        if len(agents) < 2:
            raise ConfigError(f"{source}: a supervisor team needs at least one other agent")
    else:
        raw_order = team.get("order")
        if not isinstance(raw_order, list) or not raw_order:
            raise ConfigError(f"{source}: a sequential team needs team.order, a list of agents")
        for name in raw_order:
            if name not in agents:
                raise ConfigError(f"{source}: team.order names '{name}', which is not an agent")
        order = tuple(raw_order)
        rounds = _positive(team.get("rounds", 1), f"{source}: team.rounds", int)
    return TeamSpec(
        _string(team.get("name", Path(source).stem), f"{source}: team.name"),
        kind,
        agents,
        budgets,
        supervisor,
        order,
        rounds,
        source,
    )


def load_team(path: Path) -> TeamSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"team file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"team file {path} is not valid TOML: {exc}") from None
    return parse_team(data, str(path))


def check_team(team: TeamSpec, tools: Collection[str], location_of: Callable[[str], str]) -> None:
    """The checks that need the world: every tool exists and every model is registered,
    and private agents run on local models only. ``location_of(model)`` raises a
    DuetError for an unknown model and returns ``local`` or ``external`` otherwise."""
    for agent in team.agents.values():
        where = f"{team.source}: agents.{agent.name}"
        for name in agent.tools:
            if name not in tools:
                raise ConfigError(
                    f"{where}: unknown tool '{name}': choose from {', '.join(sorted(tools))}"
                )
        try:
            location = location_of(agent.model)
        except DuetError as exc:
            raise ConfigError(f"{where}.model: {exc}") from None
        if agent.private and location != "local":
            raise ConfigError(
                f"{where} is private but its model '{agent.model}' runs outside (external): "
                "give it a local model or set private = false"
            )
