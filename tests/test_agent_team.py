"""Team files: the shipped teams load, and every bad team fails before anything runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from llmduet.agents.team import check_team, load_team, parse_team
from llmduet.data import TEAMS
from llmduet.errors import ConfigError, UnknownModelError

TOOLS = {"calculator", "current_datetime", "search_documents"}
LOCATIONS = {"llama": "local", "chatgpt": "external"}


def location_of(model: str) -> str:
    if model not in LOCATIONS:
        raise UnknownModelError(f"unknown model '{model}'")
    return LOCATIONS[model]


def test_the_shipped_teams_load_and_pass_the_checks() -> None:
    research = load_team(TEAMS / "research.toml")
    assert research.kind == "supervisor" and research.supervisor == "lead"
    assert research.agents["researcher"].private and research.budgets.max_steps == 8
    assert research.agents["researcher"].tools == ("search_documents", "calculator")
    review = load_team(TEAMS / "review.toml")
    assert review.kind == "sequential" and review.order == ("writer", "critic", "writer")
    assert review.rounds == 1 and review.budgets.max_cost_usd is None
    for team in (research, review):
        check_team(team, TOOLS, location_of)
    hybrid = research.with_models({"lead": "chatgpt", "writer": "chatgpt"})
    assert hybrid.agents["lead"].model == "chatgpt" and hybrid.agents["researcher"].model == "llama"
    check_team(hybrid, TOOLS, location_of)
    with pytest.raises(ConfigError, match="researcher is private but its model 'chatgpt'"):
        check_team(research.with_models({"researcher": "chatgpt"}), TOOLS, location_of)


def research() -> dict[str, Any]:
    return tomllib.loads((TEAMS / "research.toml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("team"), "missing the [team] table"),
        (lambda d: d["team"].pop("max_steps"), "max_steps is required"),
        (lambda d: d["team"].update(max_steps=0), "max_steps must be a positive number"),
        (lambda d: d["team"].update(max_steps=2.5), "must be a whole number"),
        (lambda d: d["team"].update(max_cost_usd=-1), "max_cost_usd must be a positive"),
        (lambda d: d["team"].update(kind="mob"), "kind must be supervisor or sequential"),
        (lambda d: d["team"].update(supervisor="boss"), "supervisor 'boss' is not an agent"),
        (lambda d: d["agents"]["writer"].pop("model"), "agents.writer.model must be"),
        (lambda d: d["agents"]["writer"].update(tool=["x"]), "unknown field(s) tool"),
        (lambda d: d["agents"]["writer"].update(private="yes"), "private must be true or false"),
        (lambda d: d["team"].update(kind="sequential"), "needs team.order"),
        (lambda d: d["team"].update(kind="sequential", order=["ghost"]), "'ghost', which is not"),
    ],
)
def test_bad_team_files_are_refused_with_the_field(change: Any, message: str) -> None:
    data = research()
    change(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_team(data, "team.toml")


def test_unknown_tools_and_models_are_refused_before_running(tmp_path: Path) -> None:
    data = research()
    data["agents"]["writer"]["tools"] = ["shell"]
    with pytest.raises(ConfigError, match="unknown tool 'shell': choose from calculator"):
        check_team(parse_team(data), TOOLS, location_of)
    data = research()
    data["agents"]["writer"]["model"] = "gpt-9"
    with pytest.raises(ConfigError, match=re.escape("agents.writer.model: unknown model 'gpt-9'")):
        check_team(parse_team(data), TOOLS, location_of)
    with pytest.raises(ConfigError, match="not found"):
        load_team(tmp_path / "absent.toml")
    (tmp_path / "broken.toml").write_text("[team\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_team(tmp_path / "broken.toml")
