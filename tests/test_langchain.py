"""The LangChain adapter in real LCEL chains."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

from llmduet import as_chat_model, load_settings
from llmduet.models.langchain import DuetChatModel
from llmduet.models.llamacpp import LlamaCppBackend
from llmduet.models.registry import ModelRegistry
from llmduet.testing import Reply, ScriptedBackend, ScriptedOpenAIServer, ToolCallReply

PROMPT = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "{question}")])


def test_invoke_in_an_lcel_chain_sends_the_rendered_messages() -> None:
    backend = ScriptedBackend(["forty two"])
    chain = PROMPT | DuetChatModel(backend=backend, temperature=0.1) | StrOutputParser()
    assert chain.invoke({"question": "meaning?"}) == "forty two"
    sent = backend.requests[0]
    assert sent.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "meaning?"},
    ]
    assert sent.temperature == 0.1


def test_stream_batch_usage_and_metadata() -> None:
    backend = ScriptedBackend(default=Reply(chunks=["a", "b", "c"], prompt_tokens=4))
    model = DuetChatModel(backend=backend)
    chunks = list(model.stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "abc"
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert isinstance(merged, AIMessageChunk)
    assert merged.usage_metadata == {"input_tokens": 4, "output_tokens": 3, "total_tokens": 7}
    assert merged.response_metadata["finish_reason"] == "stop"
    assert merged.response_metadata["ttft_ms"] is not None
    answers = model.batch(["one", "two", "three"])
    assert [a.content for a in answers] == ["abc"] * 3
    assert len(backend.requests) == 4


async def test_astream_and_ainvoke() -> None:
    backend = ScriptedBackend(default=Reply(chunks=["x", "y"]))
    chain = PROMPT | DuetChatModel(backend=backend) | StrOutputParser()
    pieces = [piece async for piece in chain.astream({"question": "q"})]
    assert "".join(pieces) == "xy" and len(pieces) >= 2
    assert await chain.ainvoke({"question": "q"}) == "xy"


def test_tool_calls_round_trip() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    backend = ScriptedBackend(
        [
            Reply(chunks=[], tool_calls=[ToolCallReply("add", '{"a": 2, "b": 3}', id="call_1")]),
            "The sum is 5.",
        ]
    )
    model = DuetChatModel(backend=backend).bind_tools([add], tool_choice="add")
    message = model.invoke([HumanMessage("2+3?")])
    assert isinstance(message, AIMessage)
    assert message.tool_calls == [
        {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1", "type": "tool_call"}
    ]
    sent = backend.requests[0]
    assert sent.tools and sent.tools[0]["function"]["name"] == "add"
    assert sent.tool_choice == {"type": "function", "function": {"name": "add"}}
    result = add.invoke(message.tool_calls[0]["args"])
    final = model.invoke(
        [HumanMessage("2+3?"), message, ToolMessage(str(result), tool_call_id="call_1")]
    )
    assert final.content == "The sum is 5."
    assert backend.requests[1].messages[-1] == {
        "role": "tool",
        "content": "5",
        "tool_call_id": "call_1",
    }


def test_as_chat_model_over_an_openai_compatible_endpoint(
    server: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    (tmp_path / "duet.toml").write_text(
        f"[models.served]\nprovider = 'openai'\nmodel = 'smol'\nbase_url = '{server.base_url}'\n"
    )
    server.queue("served answer")
    model = as_chat_model("served", ModelRegistry(load_settings()))
    assert (PROMPT | model | StrOutputParser()).invoke({"question": "q"}) == "served answer"
    assert model.invoke("hi").response_metadata["location"] == "local"


@pytest.mark.model
def test_llama_in_process_in_a_chain(llama: LlamaCppBackend) -> None:
    model = DuetChatModel(backend=llama, max_tokens=16, seed=11, temperature=0.0)
    chain = PROMPT | model | StrOutputParser()
    first = chain.invoke({"question": "Say hello."})
    assert first and first == chain.invoke({"question": "Say hello."})
    streamed = "".join(chain.stream({"question": "Say hello."}))
    assert streamed == first
    message = model.invoke("Say hello.")
    assert message.usage_metadata is not None
    assert 0 < message.usage_metadata["output_tokens"] <= 16
    assert message.response_metadata["location"] == "local"
