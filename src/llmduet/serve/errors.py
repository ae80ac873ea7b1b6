"""Serving errors carry their HTTP status and OpenAI error fields; one handler renders them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmduet import errors
from llmduet.engine.batch import EngineClosedError, QueueFullError
from llmduet.serve.protocol import ErrorDetail, ErrorResponse


class ServingError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorDetail(
                message=self.message, type=self.type, param=self.param, code=self.code
            )
        )


def from_duet_error(exc: errors.DuetError) -> ServingError:
    """The HTTP meaning of an error raised below the serving layer."""
    message = str(exc)
    if isinstance(exc, QueueFullError):
        return ServingError(
            429,
            f"server busy: {message}",
            type="rate_limit_exceeded",
            code="queue_full",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, EngineClosedError):
        return ServingError(
            503,
            "the server is shutting down",
            type="server_error",
            code="shutting_down",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, errors.ContextWindowError):
        return ServingError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(exc, errors.GenerationTimeoutError):
        return ServingError(504, message, type="server_error", code="timeout")
    if isinstance(exc, errors.BadRequestError):
        return ServingError(400, message)
    return ServingError(500, f"generation failed: {message}", type="server_error")


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> ServingError:
    """A 400 naming the first problem pydantic found in a request body."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ServingError(400, f"the request body is not valid JSON: {first.get('msg')}")
    param = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
    where = f"{param}: " if param else ""
    return ServingError(400, f"{where}{first.get('msg')}", param=param)
