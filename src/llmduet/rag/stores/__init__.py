"""Vector stores behind one small seam (:class:`ChunkStore`)."""
