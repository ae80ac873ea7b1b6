"""Grounded answering as a LangChain Runnable: retrieve, prompt, stream, cite.

``grounded_answer_chain(retriever, chat_model)`` takes a question (a string, or a dict
with ``question``) and works with any LangChain chat model: ours from
:func:`llmduet.as_chat_model`, ``ChatOpenAI``, or a user's own. Streamed, it yields
``AddableDict`` chunks: first the retrieval (``retrieved``, ``relevant``,
``retrieval_ms``), then ``answer`` text deltas, then ``citations`` once the whole answer is
known; ``invoke`` returns them merged into one dict. When nothing relevant was retrieved
no model is called and the answer is :data:`~llmduet.rag.answer.NOT_FOUND`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableGenerator
from langchain_core.runnables.utils import AddableDict

from llmduet.rag.answer import DEFAULT_MIN_SIMILARITY, NOT_FOUND, GroundedPrompt, ground
from llmduet.rag.retrieval import DEFAULT_ALPHA, Fusion, Retriever


def _question(inputs: list[Any]) -> str:
    if not inputs:
        raise ValueError("the chain needs a question")
    value = inputs[-1]
    question = value.get("question") if isinstance(value, dict) else value
    if not isinstance(question, str) or not question.strip():
        raise ValueError("give the question as a non-empty string or {'question': ...}")
    return question


def _retrieval_chunk(prompt: GroundedPrompt) -> AddableDict:
    return AddableDict(
        question=prompt.question,
        relevant=prompt.relevant,
        retrieval_ms=round(prompt.retrieval_ms, 2),
        retrieved=[
            {
                "n": n,
                "source": hit.chunk.source,
                "heading": hit.chunk.heading,
                "page": hit.chunk.page,
                "score": round(hit.score, 6),
            }
            for n, hit in enumerate(prompt.hits, 1)
        ],
    )


def _citations_chunk(prompt: GroundedPrompt, answer: str) -> AddableDict:
    return AddableDict(citations=[c.to_dict() for c in prompt.citations(answer)])


def grounded_answer_chain(
    retriever: Retriever,
    chat_model: BaseChatModel,
    *,
    k: int = 5,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    path_glob: str | None = None,
    fusion: Fusion = "rrf",
    alpha: float = DEFAULT_ALPHA,
) -> Runnable[Any, dict[str, Any]]:
    """A Runnable answering from the index with citations (see the module docstring)."""

    def retrieve(question: str) -> GroundedPrompt:
        return ground(retriever, question, k, min_similarity, path_glob, fusion, alpha)

    def answer(inputs: Iterator[Any]) -> Iterator[AddableDict]:
        prompt = retrieve(_question(list(inputs)))
        yield _retrieval_chunk(prompt)
        if not prompt.relevant:
            yield AddableDict(answer=NOT_FOUND, citations=[])
            return
        text = ""
        for chunk in chat_model.stream(prompt.messages):
            delta = str(chunk.content)
            if delta:
                text += delta
                yield AddableDict(answer=delta)
        yield _citations_chunk(prompt, text)

    async def aanswer(inputs: AsyncIterator[Any]) -> AsyncIterator[AddableDict]:
        prompt = await asyncio.to_thread(retrieve, _question([item async for item in inputs]))
        yield _retrieval_chunk(prompt)
        if not prompt.relevant:
            yield AddableDict(answer=NOT_FOUND, citations=[])
            return
        text = ""
        async for chunk in chat_model.astream(prompt.messages):
            delta = str(chunk.content)
            if delta:
                text += delta
                yield AddableDict(answer=delta)
        yield _citations_chunk(prompt, text)

    return RunnableGenerator(answer, aanswer, name="grounded_answer")
