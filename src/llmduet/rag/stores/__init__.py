"""Vector stores behind one small seam (:class:`ChunkStore`), chosen per index.

An index records its store in its manifest (``{"kind": "lancedb"}`` or
``{"kind": "qdrant", "url": ..., "collection": ...}``), so later commands reopen the same
store without being told again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmduet.errors import ConfigError
from llmduet.rag.stores.base import ChunkStore

KINDS = ("lancedb", "qdrant")
QDRANT_API_KEY_ENV = "QDRANT_API_KEY"


def store_spec(
    kind: str = "lancedb", url: str | None = None, collection: str | None = None
) -> dict[str, Any]:
    """Validate the user's choice of store; the result goes into the manifest."""
    if kind not in KINDS:
        raise ConfigError(f"unknown store '{kind}': choose {' or '.join(KINDS)}")
    if kind == "lancedb":
        if url or collection:
            raise ConfigError("a url or collection applies to the qdrant store only")
        return {"kind": "lancedb"}
    return {"kind": "qdrant", "url": url, "collection": collection or "chunks"}


def describe(spec: dict[str, Any]) -> str:
    if spec.get("kind") != "qdrant":
        return "LanceDB"
    where = spec.get("url") or "local mode"
    return f"Qdrant ({where}, collection '{spec.get('collection')}')"


def open_store(directory: Path, spec: dict[str, Any], dimensions: int) -> ChunkStore:
    """The store of an index folder: LanceDB or Qdrant local mode inside it, or a Qdrant
    server (API key from ``QDRANT_API_KEY``)."""
    if spec.get("kind") == "qdrant":
        from llmduet.rag.stores.qdrant import QdrantStore

        url = spec.get("url")
        return QdrantStore(
            dimensions,
            path=None if url else directory / "qdrant",
            url=url,
            api_key=os.environ.get(QDRANT_API_KEY_ENV) if url else None,
            collection=spec.get("collection") or "chunks",
        )
    from llmduet.rag.stores.lancedb import LanceDBStore

    return LanceDBStore(directory / "lancedb", dimensions)
