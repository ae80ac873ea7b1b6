from __future__ import annotations

import pytest

from llmduet.models.result import ResultBuilder
from llmduet.models.types import Finish, TextDelta, ToolCallDelta, Usage


def test_timing_follows_the_benchmark_definitions() -> None:
    builder = ResultBuilder("m", "local", started=10.0)
    builder.add(TextDelta("", t=10.05))  # empty role chunk: not the first token
    builder.add(TextDelta("a", t=10.2))
    builder.add(TextDelta("b", t=10.3))
    builder.add(TextDelta("c", t=10.5))
    builder.add(Usage(7, 3, t=10.5))
    builder.add(Finish("stop", t=10.5))
    result = builder.finish()
    result.finished = 11.0
    assert result.text == "abc"
    assert result.ttft_s == pytest.approx(0.2)
    assert result.itl_s == pytest.approx([0.1, 0.2])
    assert result.tpot_s == pytest.approx((1.0 - 0.2) / 2)
    assert result.tokens_per_s == pytest.approx(3.0)
    assert result.finish_reason == "stop"
    data = result.to_dict()
    assert data["ttft_ms"] == pytest.approx(200.0)
    assert data["output_tokens"] == 3
    assert data["prompt_tokens"] == 7


def test_tool_call_fragments_are_assembled_by_index() -> None:
    builder = ResultBuilder("m", "external", started=0.0)
    builder.add(ToolCallDelta(0, id="call_a", name="add", arguments="", t=1.0))
    builder.add(ToolCallDelta(1, id="call_b", name="now", arguments="{}", t=1.1))
    builder.add(ToolCallDelta(0, arguments='{"a": 1,', t=1.2))
    builder.add(ToolCallDelta(0, arguments=' "b": 2}', t=1.3))
    result = builder.finish()
    assert [c.name for c in result.tool_calls] == ["add", "now"]
    assert result.tool_calls[0].parsed_arguments() == {"a": 1, "b": 2}
    assert result.tool_calls[0].id == "call_a"
    assert result.ttft_s == pytest.approx(1.0)


def test_no_output_means_no_ttft() -> None:
    result = ResultBuilder("m", "local", started=0.0).finish()
    assert result.ttft_s is None
    assert result.tokens_per_s is None
    assert result.to_dict()["ttft_ms"] is None
