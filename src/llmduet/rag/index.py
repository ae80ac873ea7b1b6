"""A persistent, incremental index of a document folder.

``manifest.json`` records the embedder and chunking the index was built with and a
content hash per file. Ingest re-processes only new or changed files, removes the chunks
of files that disappeared, and refuses to mix embedders. The manifest is rewritten
atomically after each file, so an ingest killed at any point leaves a usable index and
the next run finishes the job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmduet.embeddings import Embedder
from llmduet.errors import ConfigError
from llmduet.rag.chunking import Chunker
from llmduet.rag.extract import SUFFIXES, ExtractionError, extract
from llmduet.rag.stores import describe, open_store, store_spec

if TYPE_CHECKING:
    from llmduet.rag.retrieval import Retriever

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason
    chunks: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingested": self.ingested,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": self.skipped,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discover(paths: Iterable[Path]) -> dict[str, Path]:
    """Files to index by their source name (relative to the folder given, or the file name)."""
    found: dict[str, Path] = {}
    for root in paths:
        if root.is_file():
            found[root.name] = root
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and not any(p.startswith(".") for p in path.parts):
                    found[path.relative_to(root).as_posix()] = path
        else:
            raise ConfigError(f"{root} does not exist: give files or folders to ingest")
    return found


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} is corrupt: delete the index folder and ingest again")
    return manifest


class DocumentIndex:
    """``store``: where the chunks live (see :func:`store_spec`); LanceDB in the folder
    unless given. An existing index keeps the store it was built with."""

    def __init__(
        self,
        directory: Path,
        embedder: Embedder,
        chunker: Chunker,
        store: dict[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.embedder = embedder
        self.chunker = chunker
        directory.mkdir(parents=True, exist_ok=True)
        self.manifest = self._load_manifest(store)
        self.store = open_store(directory, self.manifest["store"], embedder.dimensions)

    def close(self) -> None:
        self.store.close()

    @property
    def _identity(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "embedder": self.embedder.name,
            "dimensions": self.embedder.dimensions,
            "chunking": {
                "target_tokens": self.chunker.target,
                "overlap_tokens": self.chunker.overlap,
            },
        }

    def _load_manifest(self, store: dict[str, Any] | None) -> dict[str, Any]:
        path = self.directory / MANIFEST
        if not path.exists():
            return {**self._identity, "store": store or store_spec(), "files": {}}
        manifest = read_manifest(self.directory)
        if manifest.get("embedder") != self.embedder.name:
            raise ConfigError(
                f"the index at {self.directory} was built with the embedder "
                f"'{manifest.get('embedder')}', not '{self.embedder.name}': use that embedder "
                "or ingest into a new --index folder"
            )
        if manifest.get("chunking") != self._identity["chunking"]:
            raise ConfigError(
                f"the index at {self.directory} was built with chunking "
                f"{manifest.get('chunking')}: use the same settings or a new --index folder"
            )
        built_with = manifest.setdefault("store", store_spec())  # indexes before stores
        if store is not None and store != built_with:
            raise ConfigError(
                f"the index at {self.directory} keeps its chunks in {describe(built_with)}, "
                f"not {describe(store)}: drop the store options or use a new --index folder"
            )
        return manifest

    def _save_manifest(self) -> None:
        path = self.directory / MANIFEST
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
        os.replace(partial, path)  # atomic: never a half-written manifest

    def ingest(
        self, paths: Iterable[Path], on_progress: Callable[[str, int], None] | None = None
    ) -> IngestReport:
        import time

        started = time.perf_counter()
        report = IngestReport()
        files = discover(paths)
        known: dict[str, str] = self.manifest["files"]
        for source in sorted(set(known) - set(files)):
            self.store.delete_source(source)
            del known[source]
            self._save_manifest()
            report.removed.append(source)
        for source, path in files.items():
            if path.suffix.lower() not in SUFFIXES:
                report.skipped[source] = f"unsupported file type '{path.suffix or path.name}'"
                continue
            try:
                digest = file_hash(path)
            except OSError as exc:
                report.skipped[source] = f"cannot read the file ({exc.strerror})"
                continue
            if known.get(source) == digest:
                report.unchanged.append(source)
                continue
            try:
                chunks = self.chunker.chunk(extract(path, source))
            except ExtractionError as exc:
                report.skipped[source] = str(exc)
                if source in known:  # it was indexed before: its old chunks are stale now
                    self.store.delete_source(source)
                    del known[source]
                    self._save_manifest()
                continue
            vectors = self.embedder.embed([c.embedding_text for c in chunks]).vectors
            self.store.replace_source(source, chunks, vectors)
            known[source] = digest
            self._save_manifest()
            report.ingested.append(source)
            report.chunks += len(chunks)
            if on_progress:
                on_progress(source, len(chunks))
        self.store.finish_ingest()  # also after a killed run that never reached it
        report.seconds = time.perf_counter() - started
        return report


def open_index(
    directory: Path,
    target_tokens: int = 200,
    overlap_tokens: int = 40,
    embedder_name: str | None = None,
    embedder_url: str | None = None,
    store: dict[str, Any] | None = None,
) -> DocumentIndex:
    """An index folder (new or existing) with its embedder: the bundled MiniLM unless an
    OpenAI model or endpoint is named. Chunks are always measured with the MiniLM
    tokenizer, so chunk sizes do not depend on the embedder."""
    from llmduet.embeddings.minilm import MiniLMEmbedder
    from llmduet.embeddings.openai import OpenAIEmbedder

    minilm = MiniLMEmbedder()
    embedder: Embedder = minilm
    if embedder_url or (embedder_name and embedder_name != minilm.name):
        embedder = OpenAIEmbedder(embedder_name or minilm.name, base_url=embedder_url)
    try:
        chunker = Chunker(minilm.count_tokens, target_tokens, overlap_tokens)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return DocumentIndex(directory, embedder, chunker, store)


def open_retriever(directory: Path) -> Retriever:
    """A retriever over an existing index, with the embedder, chunking and store it was
    built with (all read from its manifest)."""
    from llmduet.rag.retrieval import Retriever

    if not (directory / MANIFEST).exists():
        raise ConfigError(
            f"no index at {directory}: run `duet rag ingest PATH --index {directory}` first"
        )
    manifest = read_manifest(directory)
    chunking = manifest.get("chunking") or {}
    model, _, url = str(manifest.get("embedder", "")).partition("@")
    index = open_index(
        directory,
        chunking.get("target_tokens", 200),
        chunking.get("overlap_tokens", 40),
        model,
        url or None,
    )
    return Retriever(index.store, index.embedder)
