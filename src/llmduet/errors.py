"""Exceptions users can catch.

Every error carries a one-line message that says what is wrong and how to fix it;
the CLI prints exactly that line and exits non-zero.

    DuetError
    ├── ConfigError              bad duet.toml / env value / option
    ├── UnknownModelError        a model name not in the registry
    ├── ModelNotReadyError       model cannot run here (missing key, file not found)
    │   └── InvalidModelFileError    path is not a GGUF file / fails to load
    └── BackendError             a call to a model failed
        ├── AuthenticationError      401 / 403 from the endpoint
        ├── UpstreamNotFoundError    404: endpoint or upstream model missing
        ├── RateLimitError           429 that persisted through retries
        ├── EndpointUnreachableError connect error / timeout that persisted
        ├── UpstreamServerError      5xx that persisted through retries
        ├── StreamInterruptedError   a stream broke after it started
        ├── ContextWindowError       prompt longer than the context window
        ├── GenerationTimeoutError   a call ran past its time limit
        └── BadRequestError          the endpoint rejected the request (400/422)
"""

from __future__ import annotations


class DuetError(Exception):
    """Base of all llmduet errors; ``str(err)`` is a one-line, actionable message."""


class ConfigError(DuetError):
    """Settings or options are invalid."""


class UnknownModelError(DuetError):
    """A model name that is not registered."""


class ModelNotReadyError(DuetError):
    """A registered model that cannot run on this machine as configured."""


class InvalidModelFileError(ModelNotReadyError):
    """The configured model file is missing, not GGUF, or fails to load."""


class BackendError(DuetError):
    """A call to a model failed."""


class AuthenticationError(BackendError):
    pass


class UpstreamNotFoundError(BackendError):
    pass


class RateLimitError(BackendError):
    pass


class EndpointUnreachableError(BackendError):
    pass


class UpstreamServerError(BackendError):
    pass


class StreamInterruptedError(BackendError):
    pass


class ContextWindowError(BackendError):
    pass


class GenerationTimeoutError(BackendError):
    pass


class BadRequestError(BackendError):
    pass
