"""Fakes shipped with the package, for your tests as well as ours.

* :class:`ScriptedBackend`: a :class:`~llmduet.models.base.ChatBackend` that replays
  queued replies with scripted timings and failures, no model and no network.
* :class:`ScriptedOpenAIServer`: a real HTTP server on 127.0.0.1 that answers like the
  OpenAI API (streaming chunks, usage chunk, tool calls, error statuses, broken streams),
  for testing OpenAI clients over a real socket.
* :class:`LiveServer`: runs an ASGI app (such as ``duet serve``'s) under uvicorn on an
  ephemeral 127.0.0.1 port in a background thread.
"""

from llmduet.testing.live_server import LiveServer
from llmduet.testing.scripted import Reply, ScriptedBackend, ToolCallReply
from llmduet.testing.server import ScriptedOpenAIServer

__all__ = ["LiveServer", "Reply", "ScriptedBackend", "ScriptedOpenAIServer", "ToolCallReply"]
