"""The llama.cpp engine under both the in-process backend and ``duet serve``.

Continuous batching over llama.cpp's batch API: every active request owns one KV-cache
sequence, and one ``llama_decode`` per step advances all of them together, so concurrent
requests neither wait for nor interrupt each other.
"""

from llmduet.engine.batch import BatchEngine, EngineEvent, GenerationRequest
from llmduet.engine.model import GGUFModel
from llmduet.engine.sampling import SamplingParams

__all__ = ["BatchEngine", "EngineEvent", "GGUFModel", "GenerationRequest", "SamplingParams"]
