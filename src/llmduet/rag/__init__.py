"""Retrieval-augmented generation: extraction, chunking, indexing and retrieval."""
