"""Qdrant: a Qdrant server or cluster by ``url``, or the client's local mode in a folder.

One collection per index, with a named dense vector (cosine) and a named sparse vector
holding BM25 term weights (see :mod:`sparse_bm25`; the collection applies the IDF).
Point ids are UUIDs derived from the chunk ids, so re-sending a file's chunks overwrites
rather than duplicates. A file is replaced by deleting its points, then upserting the new
ones with ``wait=True``; the index manifest is written only after that, so a run killed
in between re-does the file next time.
"""

from __future__ import annotations

import uuid
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmduet.errors import ConfigError
from llmduet.rag.chunking import Chunk
from llmduet.rag.stores import sparse_bm25
from llmduet.rag.stores.base import StoredHit

DENSE = "dense"
SPARSE = "bm25"
UPSERT_BATCH = 256
PAYLOAD = ["id", "source", "title", "heading", "page", "start", "end", "text"]
MAX_SOURCES = 1_000_000


class QdrantStore:
    def __init__(
        self,
        dimensions: int,
        *,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "chunks",
    ) -> None:
        from qdrant_client import QdrantClient, models

        if (path is None) == (url is None):
            raise ValueError("give the Qdrant store either a local path or a server url")
        self._models = models
        self.collection = collection
        self.local = url is None
        where = url or str(path)
        try:
            if url:
                self._client = QdrantClient(url=url, api_key=api_key, timeout=30)
            else:
                assert path is not None
                path.mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=str(path))
            exists = self._client.collection_exists(collection)
        except RuntimeError as exc:  # local mode: the folder is locked by another process
            raise ConfigError(f"cannot open the Qdrant store at {where}: {exc}") from None
        except Exception as exc:  # connection refused, DNS, TLS, auth ...
            raise ConfigError(
                f"cannot reach Qdrant at {where} ({type(exc).__name__}: {exc}): check the "
                "url, that the server is up, and QDRANT_API_KEY"
            ) from None
        if exists:
            self._check_dimensions(dimensions)
        else:
            self._create(dimensions)

    def _create(self, dimensions: int) -> None:
        models = self._models
        self._client.create_collection(
            self.collection,
            vectors_config={
                DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        if not self.local:  # local mode ignores payload indexes (and warns)
            self._client.create_payload_index(
                self.collection, "source", models.PayloadSchemaType.KEYWORD
            )

    def _check_dimensions(self, dimensions: int) -> None:
        vectors = self._client.get_collection(self.collection).config.params.vectors
        size = vectors[DENSE].size if isinstance(vectors, dict) and DENSE in vectors else None
        if size != dimensions:
            raise ConfigError(
                f"the Qdrant collection '{self.collection}' holds vectors of size {size}, "
                f"not {dimensions}: name another collection or delete that one"
            )

    def _source_filter(self, sources: list[str]) -> Any:
        models = self._models
        match = (
            models.MatchValue(value=sources[0])
            if len(sources) == 1
            else models.MatchAny(any=sources)
        )
        return models.Filter(must=[models.FieldCondition(key="source", match=match)])

    def _glob_filter(self, path_glob: str | None) -> tuple[bool, Any]:
        """(any source matches, the filter); Qdrant has no glob match, so the distinct
        sources are listed and matched here."""
        if not path_glob:
            return True, None
        facets = self._client.facet(self.collection, key="source", limit=MAX_SOURCES, exact=True)
        sources = [str(hit.value) for hit in facets.hits if fnmatchcase(str(hit.value), path_glob)]
        return bool(sources), self._source_filter(sources) if sources else None

    def replace_source(
        self, source: str, chunks: list[Chunk], vectors: npt.NDArray[np.float32]
    ) -> None:
        models = self._models
        self.delete_source(source)
        points = []
        for chunk, vector in zip(chunks, vectors, strict=True):
            indices, values = sparse_bm25.document_vector(chunk.embedding_text)
            points.append(
                models.PointStruct(
                    id=str(uuid.uuid5(uuid.NAMESPACE_URL, chunk.id)),
                    vector={
                        DENSE: np.asarray(vector, dtype=np.float32).tolist(),
                        SPARSE: models.SparseVector(indices=indices, values=values),
                    },
                    payload={key: getattr(chunk, key) for key in PAYLOAD},
                )
            )
        for start in range(0, len(points), UPSERT_BATCH):
            self._client.upsert(self.collection, points[start : start + UPSERT_BATCH], wait=True)

    def delete_source(self, source: str) -> None:
        self._client.delete(
            self.collection,
            points_selector=self._models.FilterSelector(filter=self._source_filter([source])),
            wait=True,
        )

    def finish_ingest(self) -> None:
        """Nothing to do: Qdrant indexes points as they arrive."""

    def count(self) -> int:
        return int(self._client.count(self.collection, exact=True).count)

    def _hits(self, using: str, query: Any, k: int, path_glob: str | None) -> list[StoredHit]:
        any_source, query_filter = self._glob_filter(path_glob)
        if not any_source:
            return []
        points = self._client.query_points(
            self.collection,
            query=query,
            using=using,
            limit=k,
            query_filter=query_filter,
            with_payload=True,
        ).points
        return [
            StoredHit(Chunk(**{key: point.payload[key] for key in PAYLOAD}), float(point.score))
            for point in points
            if point.payload is not None
        ]

    def dense(
        self, vector: npt.NDArray[np.float32], k: int, path_glob: str | None = None
    ) -> list[StoredHit]:
        return self._hits(DENSE, np.asarray(vector, dtype=np.float32).tolist(), k, path_glob)

    def lexical(self, query: str, k: int, path_glob: str | None = None) -> list[StoredHit]:
        indices, values = sparse_bm25.query_vector(query)
        if not indices:
            return []
        sparse = self._models.SparseVector(indices=indices, values=values)
        return self._hits(SPARSE, sparse, k, path_glob)

    def close(self) -> None:
        self._client.close()
