"""``duet serve``: an OpenAI-compatible HTTP server over llmduet's llama.cpp engine.

Split as vLLM's OpenAI entrypoint is: ``protocol`` (pydantic schemas), ``serving`` (the
logic, no web framework), ``routes`` (thin FastAPI routes), ``app`` (lifecycle, errors).
"""

from llmduet.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
