"""Incremental ingest into LanceDB, hybrid retrieval, and the `duet rag` commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmduet.data import HANDBOOK_DOCS, HANDBOOK_QUESTIONS
from llmduet.embeddings import MiniLMEmbedder
from llmduet.errors import ConfigError
from llmduet.rag.chunking import Chunker
from llmduet.rag.index import MANIFEST, DocumentIndex
from llmduet.rag.retrieval import Retriever
from llmduet.testing import ScriptedOpenAIServer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=2)


def new_index(directory: Path, embedder: MiniLMEmbedder) -> DocumentIndex:
    return DocumentIndex(directory, embedder, Chunker(embedder.count_tokens, 200, 40))


@pytest.fixture(scope="module")
def handbook_index(
    tmp_path_factory: pytest.TempPathFactory, embedder: MiniLMEmbedder
) -> DocumentIndex:
    index = new_index(tmp_path_factory.mktemp("index"), embedder)
    report = index.ingest([HANDBOOK_DOCS])
    assert len(report.ingested) == len(list(HANDBOOK_DOCS.iterdir())) and not report.skipped
    return index


def test_hybrid_retrieval_finds_the_gold_document(
    handbook_index: DocumentIndex, embedder: MiniLMEmbedder
) -> None:
    retriever = Retriever(handbook_index.store, embedder)
    questions = [json.loads(line) for line in HANDBOOK_QUESTIONS.read_text().splitlines()]
    answerable = [q for q in questions if q["sources"]]
    recall = {}
    for mode in ("bm25", "dense", "hybrid"):
        found = sum(
            any(
                hit.chunk.source in q["sources"] for hit in retriever.search(q["question"], 5, mode)
            )  # type: ignore[arg-type]
            for q in answerable
        )
        recall[mode] = found / len(answerable)
    assert recall["hybrid"] >= 0.9, recall
    assert recall["hybrid"] >= max(recall["bm25"], recall["dense"]) - 0.02, recall


def test_path_glob_filters_sources(handbook_index: DocumentIndex, embedder: MiniLMEmbedder) -> None:
    retriever = Retriever(handbook_index.store, embedder)
    for mode in ("hybrid", "dense", "bm25"):
        hits = retriever.search("vacation days", 5, mode, path_glob="*leave*")  # type: ignore[arg-type]
        assert hits and all("leave" in hit.chunk.source for hit in hits)


def test_reingest_is_incremental(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(HANDBOOK_DOCS, docs)
    (docs / "notes.bin").write_bytes(b"\x00\x01\x02")
    (docs / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 nonsense")
    index = new_index(tmp_path / "index", embedder)
    first = index.ingest([docs])
    assert set(first.skipped) == {"notes.bin", "latin.txt", "broken.pdf"}
    assert "unsupported file type" in first.skipped["notes.bin"]
    assert "not UTF-8" in first.skipped["latin.txt"]
    assert "corrupt" in first.skipped["broken.pdf"]
    total = index.store.count()
    assert total == first.chunks

    again = new_index(tmp_path / "index", embedder).ingest([docs])
    assert again.ingested == [] and len(again.unchanged) == len(first.ingested)

    (docs / "sick-leave.md").write_text("# Sick leave\n\nTake up to 99 paid sick days.\n")
    (docs / "learning-budget.md").unlink()
    third = index.ingest([docs])
    assert third.ingested == ["sick-leave.md"] and third.removed == ["learning-budget.md"]
    retriever = Retriever(index.store, embedder)
    assert all(
        hit.chunk.source != "learning-budget.md"
        for hit in retriever.search("learning budget conference", 10)
    )
    top = retriever.search("how many paid sick days", 1, "bm25")[0]
    assert top.chunk.source == "sick-leave.md" and "99" in top.chunk.text


def test_the_index_refuses_another_embedder(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    index = new_index(tmp_path, embedder)
    index.ingest([HANDBOOK_DOCS / "paid-time-off.md"])
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["embedder"] = "text-embedding-3-small"
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="built with the embedder 'text-embedding-3-small'"):
        new_index(tmp_path, embedder)


def test_an_ingest_killed_midway_leaves_a_usable_index(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    sample = sorted(HANDBOOK_DOCS.glob("*.md"))[:8]
    for copy in range(2):
        (docs / f"copy{copy}").mkdir(parents=True)
        for path in sample:
            shutil.copy(path, docs / f"copy{copy}" / path.name)
    files = 2 * len(sample)
    command = [
        sys.executable,
        "-m",
        "llmduet.cli.main",
        "rag",
        "ingest",
        str(docs),
        "--index",
        str(tmp_path / "index"),
        "--json",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = tmp_path / "index" / MANIFEST
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until some files are in, then kill -9
        if manifest.exists() and len(json.loads(manifest.read_text())["files"]) >= 3:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = len(json.loads(manifest.read_text())["files"])
    assert 3 <= partial < files
    search = subprocess.run(
        [
            *command[:3],
            "rag",
            "search",
            "parental leave",
            "--index",
            str(tmp_path / "index"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert search.returncode == 0, search.stderr  # usable while incomplete
    finish = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    report = json.loads(finish.stdout)
    assert len(report["unchanged"]) == partial and len(report["ingested"]) == files - partial
    embedder = MiniLMEmbedder(threads=2)
    index = new_index(tmp_path / "index", embedder)
    clean = new_index(tmp_path / "clean", embedder)
    clean.ingest([docs])
    assert index.store.count() == clean.store.count()  # nothing duplicated, nothing lost


def test_rag_cli(tmp_path: Path, duet_exe: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [duet_exe, "rag", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    ingest = run("ingest", str(HANDBOOK_DOCS / "travel-policy.md"), "--json")
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["ingested"] == ["travel-policy.md"]
    assert (tmp_path / ".duet" / "index" / MANIFEST).exists()  # the default index folder
    search = run("search", "per diem", "--json", "-k", "2", "--mode", "bm25")
    rows = [json.loads(line) for line in search.stdout.splitlines()]
    assert len(rows) == 2 and rows[0]["source"] == "travel-policy.md"
    assert {"source", "heading", "page", "score", "text"} <= set(rows[0])
    relative = run("search", "per diem", "--json", "-k", "2", "--fusion", "relative")
    rows = [json.loads(line) for line in relative.stdout.splitlines()]
    assert rows[0]["source"] == "travel-policy.md" and 0.0 < rows[0]["score"] <= 1.0
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / MANIFEST).write_text("{half a manifest")
    for args, message in [
        (("search", "x", "--index", "nowhere"), "no index at nowhere"),
        (("search", "x", "--mode", "fuzzy"), "choose hybrid, dense or bm25"),
        (("search", "x", "--fusion", "average"), "choose rrf or relative"),
        (("ingest", "missing-folder"), "missing-folder does not exist"),
        (("search", "x", "--index", "corrupt"), "manifest.json is corrupt"),
        (("ask", "x", "--index", "corrupt"), "manifest.json is corrupt"),
    ]:
        result = run(*args)
        assert result.returncode == 1 and message in result.stderr
        assert "Traceback" not in result.stderr


def test_rag_cli_on_the_qdrant_store(tmp_path: Path, duet_exe: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [duet_exe, "rag", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    ingest = run("ingest", str(HANDBOOK_DOCS), "--index", "q", "--store", "qdrant", "--json")
    assert ingest.returncode == 0, ingest.stderr
    manifest = json.loads((tmp_path / "q" / MANIFEST).read_text())
    assert manifest["store"] == {"kind": "qdrant", "url": None, "collection": "chunks"}
    assert (tmp_path / "q" / "qdrant").is_dir() and not (tmp_path / "q" / "lancedb").exists()
    for mode in ("hybrid", "dense", "bm25"):  # the store comes from the manifest
        search = run(
            "search",
            "How long is parental leave?",
            "--index",
            "q",
            "--mode",
            mode,
            "--json",
            "-k",
            "3",
            "--path",
            "*leave*",
        )
        rows = [json.loads(line) for line in search.stdout.splitlines()]
        assert rows and rows[0]["source"] == "parental-leave.md", (mode, search.stderr)
        assert all("leave" in row["source"] for row in rows)
    again = run("ingest", str(HANDBOOK_DOCS), "--index", "q", "--json")
    assert json.loads(again.stdout)["ingested"] == []
    switch = run("ingest", str(HANDBOOK_DOCS), "--index", "q", "--store", "lancedb")
    assert switch.returncode == 1 and "Traceback" not in switch.stderr
    assert "keeps its chunks in Qdrant (local mode, collection 'chunks'), not LanceDB" in (
        switch.stderr
    )
    unknown = run("ingest", str(HANDBOOK_DOCS), "--index", "x", "--store", "chroma")
    assert unknown.returncode == 1 and "choose lancedb or qdrant" in unknown.stderr
    down = run("ingest", str(HANDBOOK_DOCS), "--index", "y", "--qdrant-url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach Qdrant at http://127.0.0.1:9" in down.stderr
    assert "Traceback" not in down.stderr


def test_rag_ask_cites_passages_and_refuses_when_nothing_is_relevant(
    tmp_path: Path, duet_exe: str, server: ScriptedOpenAIServer
) -> None:
    (tmp_path / "duet.toml").write_text(
        f"[models.served]\nprovider = 'openai'\nmodel = 'm'\nbase_url = '{server.base_url}'\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [duet_exe, "rag", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )

    assert run("ingest", str(HANDBOOK_DOCS)).returncode == 0
    server.queue("Employees with 5+ years get 26 days [1], see also [9] and [1].")
    result = run(
        "ask", "How many vacation days after five years?", "-m", "served", "--json", "-k", "3"
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["answer"].startswith("Employees with 5+ years")
    assert [c["n"] for c in row["citations"]] == [1]  # [9] is not a passage: dropped
    assert row["citations"][0]["source"] == row["retrieved"][0]["source"] == "paid-time-off.md"
    assert row["retrieval_ms"] > 0 and row["ttft_ms"] > 0 and row["error"] is None
    sent = server.requests[-1]["messages"]
    assert "only the numbered passages" in sent[0]["content"]
    assert "[1] paid-time-off.md" in sent[1]["content"] and "```" in sent[1]["content"]
    asked = len(server.requests)
    refused = run("ask", "What is the capital of Mongolia?", "-m", "served", "--json")
    assert refused.returncode == 0, refused.stderr
    assert json.loads(refused.stdout)["answer"] == "The documents do not say."
    assert len(server.requests) == asked  # no model was asked to guess


def test_langchain_retriever_in_a_chain(
    handbook_index: DocumentIndex, embedder: MiniLMEmbedder
) -> None:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from llmduet.models.langchain import DuetChatModel
    from llmduet.rag.langchain import DuetRetriever
    from llmduet.testing import ScriptedBackend

    retriever = DuetRetriever(retriever=Retriever(handbook_index.store, embedder), k=3)
    documents = retriever.invoke("How long is parental leave?")
    assert len(documents) == 3 and documents[0].metadata["source"] == "parental-leave.md"
    assert {"source", "heading", "page", "score"} <= set(documents[0].metadata)
    backend = ScriptedBackend(default="From the passages.")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Context:\n{context}"), ("human", "{question}")]
    )
    chain = (
        {
            "context": retriever | (lambda docs: "\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | DuetChatModel(backend=backend)
        | StrOutputParser()
    )
    assert chain.invoke("How long is parental leave?") == "From the passages."
    assert "parental" in backend.requests[0].messages[0]["content"].lower()


def test_grounded_answer_chain_streams_then_cites(
    handbook_index: DocumentIndex, embedder: MiniLMEmbedder
) -> None:
    from llmduet.models.langchain import DuetChatModel
    from llmduet.rag.chain import grounded_answer_chain
    from llmduet.testing import Reply, ScriptedBackend

    backend = ScriptedBackend(default=Reply.text("Sixteen weeks at full pay [1], not [8]."))
    chain = grounded_answer_chain(
        Retriever(handbook_index.store, embedder), DuetChatModel(backend=backend), k=3
    )
    chunks = list(chain.stream("How long is parental leave?"))
    assert set(chunks[0]) == {"question", "relevant", "retrieval_ms", "retrieved"}
    deltas = [c["answer"] for c in chunks if "answer" in c]
    assert len(deltas) > 3 and "".join(deltas) == "Sixteen weeks at full pay [1], not [8]."
    assert list(chunks[-1]) == ["citations"]  # cited only once the whole answer is known
    assert chunks[-1]["citations"] == [
        {"n": 1, **{k: chunks[0]["retrieved"][0][k] for k in ("source", "heading", "page")}}
    ]
    assert chunks[0]["retrieved"][0]["source"] == "parental-leave.md"
    sent = backend.requests[0].messages
    assert "only the numbered passages" in sent[0]["content"]
    assert sent[1]["content"].startswith("Passages:\n\n[1] parental-leave.md")

    merged = chain.invoke({"question": "How long is parental leave?"})
    assert merged["answer"] == "Sixteen weeks at full pay [1], not [8]."
    assert [c["n"] for c in merged["citations"]] == [1] and merged["relevant"] is True


async def test_grounded_answer_chain_refuses_without_calling_the_model(
    handbook_index: DocumentIndex, embedder: MiniLMEmbedder
) -> None:
    from llmduet.models.langchain import DuetChatModel
    from llmduet.rag.answer import NOT_FOUND
    from llmduet.rag.chain import grounded_answer_chain
    from llmduet.testing import ScriptedBackend

    backend = ScriptedBackend(default="a guess")
    chain = grounded_answer_chain(
        Retriever(handbook_index.store, embedder), DuetChatModel(backend=backend)
    )
    result = await chain.ainvoke("What is the capital of Mongolia?")
    assert result["answer"] == NOT_FOUND and result["citations"] == []
    assert result["relevant"] is False and backend.requests == []
    with pytest.raises(ValueError, match="non-empty string"):
        await chain.ainvoke({"query": "wrong key"})


async def test_grounded_answer_chain_on_the_bundled_model(
    handbook_index: DocumentIndex, embedder: MiniLMEmbedder, llama: object
) -> None:
    from llmduet.models.langchain import DuetChatModel
    from llmduet.rag.chain import grounded_answer_chain

    model = DuetChatModel(backend=llama, max_tokens=48, seed=3, temperature=0.0)  # type: ignore[arg-type]
    chain = grounded_answer_chain(Retriever(handbook_index.store, embedder), model, k=3)
    chunks = [chunk async for chunk in chain.astream("How long is parental leave?")]
    answer = "".join(c.get("answer", "") for c in chunks)
    assert answer.strip() and len([c for c in chunks if "answer" in c]) > 1
    assert chunks[-1].keys() == {"citations"}
    assert all(1 <= c["n"] <= 3 for c in chunks[-1]["citations"])
