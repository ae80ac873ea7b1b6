"""One contract for every chunk store: LanceDB and Qdrant (local mode) pass the same tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llmduet.errors import ConfigError
from llmduet.rag.chunking import Chunk
from llmduet.rag.stores import open_store, store_spec
from llmduet.rag.stores.base import ChunkStore
from llmduet.rag.stores.qdrant import QdrantStore

DIMENSIONS = 8
KINDS = ["lancedb", "qdrant"]

TEXTS = {
    "policies/travel.md": [
        "Book trains for trips under four hours; flights need approval.",
        "Hotel costs are refunded up to 180 euros a night in capital cities.",
    ],
    "policies/leave.md": [
        "Every employee gets 27 vacation days a year, 30 after five years.",
        "Parental leave is sixteen weeks at full pay.",
    ],
    "security/laptops.md": [
        "Laptops use full-disk encryption and lock after five minutes.",
    ],
}


def vector_for(number: int) -> np.ndarray:
    """Distinct, deterministic unit vectors: chunk n points mostly along axis n."""
    vector = np.full(DIMENSIONS, 0.05, dtype=np.float32)
    vector[number % DIMENSIONS] = 1.0
    return vector / np.linalg.norm(vector)


def chunks_of(source: str, texts: list[str], first: int) -> tuple[list[Chunk], np.ndarray]:
    chunks = [
        Chunk(f"{source}#{i}", source, source.title(), f"Title > Part {i}", i or None, i, i + 9, t)
        for i, t in enumerate(texts)
    ]
    vectors = np.stack([vector_for(first + i) for i in range(len(texts))])
    return chunks, vectors


def fill(store: ChunkStore) -> dict[str, int]:
    """Store the three files; returns each source's first vector number."""
    first, numbers = 0, {}
    for source, texts in TEXTS.items():
        numbers[source] = first
        store.replace_source(source, *chunks_of(source, texts, first))
        first += len(texts)
    store.finish_ingest()
    return numbers


@pytest.fixture(params=KINDS)
def folder_and_kind(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    return tmp_path, request.param


@pytest.fixture
def store(folder_and_kind: tuple[Path, str]) -> Iterator[ChunkStore]:
    folder, kind = folder_and_kind
    opened = open_store(folder, store_spec(kind), DIMENSIONS)
    yield opened
    opened.close()


def test_dense_search_ranks_by_cosine_and_keeps_metadata(store: ChunkStore) -> None:
    fill(store)
    assert store.count() == 5
    hits = store.dense(vector_for(2), 3)
    assert hits[0].chunk.id == "policies/leave.md#0"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].score > hits[1].score >= hits[2].score
    chunk = store.dense(vector_for(1), 1)[0].chunk
    assert chunk == Chunk(
        "policies/travel.md#1",
        "policies/travel.md",
        "Policies/Travel.Md",
        "Title > Part 1",
        1,
        1,
        10,
        TEXTS["policies/travel.md"][1],
    )
    assert store.dense(vector_for(0), 1)[0].chunk.page is None


def test_lexical_search_is_bm25(store: ChunkStore) -> None:
    fill(store)
    hits = store.lexical("how many vacation days", 3)
    assert hits[0].chunk.id == "policies/leave.md#0" and hits[0].score > 0
    assert all(h.score <= hits[0].score for h in hits)
    assert store.lexical("encryption", 5)[0].chunk.source == "security/laptops.md"
    assert store.lexical("   ", 5) == []
    assert store.lexical("zeppelin", 5) == []


def test_replacing_a_source_drops_its_old_chunks(store: ChunkStore) -> None:
    fill(store)
    new_text = ["Vacation is now unlimited, with a minimum of 25 days."]
    store.replace_source("policies/leave.md", *chunks_of("policies/leave.md", new_text, 7))
    store.finish_ingest()
    assert store.count() == 4
    leave = [h.chunk.text for h in store.dense(vector_for(7), 5) if "leave" in h.chunk.source]
    assert leave == new_text
    assert store.lexical("parental", 5) == []
    store.replace_source("policies/leave.md", *chunks_of("policies/leave.md", new_text, 7))
    assert store.count() == 4  # idempotent: re-sending a file does not duplicate it


def test_deleting_a_source(store: ChunkStore) -> None:
    fill(store)
    store.delete_source("policies/travel.md")
    store.delete_source("never-indexed.md")
    store.finish_ingest()
    assert store.count() == 3
    assert all(h.chunk.source != "policies/travel.md" for h in store.dense(vector_for(0), 5))
    assert store.lexical("hotel trains", 5) == []


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_path_glob_filters_before_ranking(store: ChunkStore, mode: str) -> None:
    numbers = fill(store)

    def search(glob: str | None) -> list[str]:
        if mode == "dense":
            hits = store.dense(vector_for(numbers["security/laptops.md"]), 5, glob)
        else:
            hits = store.lexical("laptops vacation hotel", 5, glob)
        return [h.chunk.source for h in hits]

    assert set(search("policies/*")) == {"policies/travel.md", "policies/leave.md"}
    assert set(search("*/leave.md")) == {"policies/leave.md"}
    assert search("nothing/*") == []
    assert "security/laptops.md" in search(None)


def test_a_store_reopens_with_its_chunks(folder_and_kind: tuple[Path, str]) -> None:
    folder, kind = folder_and_kind
    first = open_store(folder, store_spec(kind), DIMENSIONS)
    fill(first)
    first.close()
    again = open_store(folder, store_spec(kind), DIMENSIONS)
    try:
        assert again.count() == 5
        assert again.dense(vector_for(4), 1)[0].chunk.source == "security/laptops.md"
        assert again.lexical("parental leave", 1)[0].chunk.source == "policies/leave.md"
    finally:
        again.close()


def test_qdrant_refuses_vectors_of_another_size(tmp_path: Path) -> None:
    QdrantStore(DIMENSIONS, path=tmp_path).close()
    with pytest.raises(ConfigError, match="vectors of size 8, not 384"):
        QdrantStore(384, path=tmp_path)


def test_qdrant_local_folder_is_locked_by_its_first_user(tmp_path: Path) -> None:
    first = QdrantStore(DIMENSIONS, path=tmp_path)
    try:
        with pytest.raises(ConfigError, match="cannot open the Qdrant store"):
            QdrantStore(DIMENSIONS, path=tmp_path)
    finally:
        first.close()


def test_an_unreachable_qdrant_server_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"cannot reach Qdrant at http://127.0.0.1:9.*QDRANT_API_KEY"
    ):
        QdrantStore(DIMENSIONS, url="http://127.0.0.1:9")


def test_store_choices_are_validated() -> None:
    assert store_spec() == {"kind": "lancedb"}
    assert store_spec("qdrant", "http://q:6333", "handbook") == {
        "kind": "qdrant",
        "url": "http://q:6333",
        "collection": "handbook",
    }
    with pytest.raises(ConfigError, match="unknown store 'chroma': choose lancedb or qdrant"):
        store_spec("chroma")
    with pytest.raises(ConfigError, match="qdrant store only"):
        store_spec("lancedb", url="http://q:6333")
