"""The embedded default store: LanceDB in one directory (vectors, BM25 full-text index).

Each file's chunks are replaced in a single ``add`` after deleting the old ones by source;
a LanceDB commit is atomic, so an ingest killed midway leaves every file either fully in
or fully out, and re-ingesting a file is idempotent.

Small tables are searched exactly. From ``ANN_MIN_ROWS`` rows on, an IVF-HNSW index with
8-bit scalar quantisation answers dense queries, and the best ``REFINE_FACTOR`` x k
candidates are re-ranked on the full vectors, so scores stay exact cosines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from llmduet.rag.chunking import Chunk
from llmduet.rag.stores.base import StoredHit

TABLE = "chunks"
ANN_MIN_ROWS = 20_000
REFINE_FACTOR = 4
COLUMNS = ["id", "source", "title", "heading", "page", "start", "end", "text"]


def _schema(dimensions: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimensions)),
            pa.field("source", pa.string()),
            pa.field("title", pa.string()),
            pa.field("heading", pa.string()),
            pa.field("page", pa.int32(), nullable=True),
            pa.field("start", pa.int32()),
            pa.field("end", pa.int32()),
            pa.field("text", pa.string()),
        ]
    )


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def glob_to_like(pattern: str) -> str:
    """A shell glob (``docs/*.md``) as a SQL LIKE pattern."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


class LanceDBStore:
    def __init__(self, directory: Path, dimensions: int) -> None:
        import lancedb

        self.directory = directory
        self._db = lancedb.connect(str(directory))
        if TABLE in self._db.list_tables().tables:
            self._table = self._db.open_table(TABLE)
        else:
            self._table = self._db.create_table(TABLE, schema=_schema(dimensions))
        indexes = {index.name for index in self._table.list_indices()}
        self._has_fts = "text_idx" in indexes
        self._has_ann = "vector_idx" in indexes
        self._changed = False

    def _where(self, path_glob: str | None) -> str | None:
        return f"source LIKE {_quote(glob_to_like(path_glob))}" if path_glob else None

    def replace_source(
        self, source: str, chunks: list[Chunk], vectors: npt.NDArray[np.float32]
    ) -> None:
        self.delete_source(source)
        if not chunks:
            return
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), pa.float32())
        columns: dict[str, Any] = {
            "id": [c.id for c in chunks],
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            "source": [c.source for c in chunks],
            "title": [c.title for c in chunks],
            "heading": [c.heading for c in chunks],
            "page": pa.array([c.page for c in chunks], pa.int32()),
            "start": pa.array([c.start for c in chunks], pa.int32()),
            "end": pa.array([c.end for c in chunks], pa.int32()),
            "text": [c.text for c in chunks],
        }
        self._table.add(pa.table(columns, schema=self._table.schema))
        self._changed = True

    def delete_source(self, source: str) -> None:
        self._table.delete(f"source = {_quote(source)}")
        self._changed = True

    def finish_ingest(self) -> None:
        """Build the indexes a table of this size wants, and fold new rows into them.
        Safe to call after a run that was killed before it got here."""
        if self._changed:  # compacts the per-file fragments, indexes the new rows
            self._table.optimize()
            self._changed = False
        rows = self._table.count_rows()
        if not self._has_fts and rows:
            from lancedb.index import FTS

            self._table.create_index("text", config=FTS())
            self._has_fts = True
        if not self._has_ann and rows >= ANN_MIN_ROWS:
            self._table.create_index(
                metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ"
            )
            self._has_ann = True

    def count(self) -> int:
        return int(self._table.count_rows())

    @staticmethod
    def _chunk(row: dict[str, Any]) -> Chunk:
        return Chunk(**{key: row[key] for key in COLUMNS})

    def dense(
        self, vector: npt.NDArray[np.float32], k: int, path_glob: str | None = None
    ) -> list[StoredHit]:
        query = self._table.search(vector).distance_type("cosine")  # type: ignore[attr-defined]
        if self._has_ann:
            query = query.refine_factor(REFINE_FACTOR)
        where = self._where(path_glob)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select([*COLUMNS, "_distance"]).limit(k).to_list()
        return [StoredHit(self._chunk(row), 1.0 - float(row["_distance"])) for row in rows]

    def lexical(self, query: str, k: int, path_glob: str | None = None) -> list[StoredHit]:
        if not self._has_fts or not query.strip():
            return []
        search = self._table.search(query, query_type="fts")
        where = self._where(path_glob)
        if where:
            search = search.where(where, prefilter=True)
        rows = search.select([*COLUMNS, "_score"]).limit(k).to_list()
        return [StoredHit(self._chunk(row), float(row["_score"])) for row in rows]

    def close(self) -> None:
        """Nothing held open between calls."""
