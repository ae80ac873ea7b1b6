"""LangChain adapter: the hybrid retriever as a ``BaseRetriever``."""

from __future__ import annotations

from typing import Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from llmduet.rag.retrieval import DEFAULT_ALPHA, Fusion, Retriever


class DuetRetriever(BaseRetriever):
    """Returns chunks as LangChain ``Document``s with source, heading, page, offsets and
    score in ``metadata``, so they drop into any LangChain RAG chain."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = 5
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    path_glob: str | None = None
    fusion: Fusion = "rrf"
    alpha: float = DEFAULT_ALPHA

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.retriever.search(
            query, self.k, self.mode, self.path_glob, self.fusion, self.alpha
        )
        documents = []
        for hit in hits:
            metadata = hit.to_dict()
            text = metadata.pop("text")
            documents.append(Document(page_content=str(text), metadata=metadata))
        return documents
