"""Continuous batching over llama.cpp's batch API.

One engine thread owns the llama.cpp context. Each step it admits waiting requests into
free KV-cache sequences, builds one batch holding the next token of every decoding
sequence plus prompt chunks of newly admitted ones (decode first, so running streams keep
their pace), calls ``llama_decode`` once, and samples every sequence that produced
logits. A finished, cancelled or timed-out sequence frees its KV cells at once.

Callers submit from any thread; events reach them through a callback they pass, which
for asyncio callers hops onto their loop (see :meth:`BatchEngine.generate`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from llmduet.engine.model import GGUFModel
from llmduet.engine.sampling import SamplingParams, build_sampler
from llmduet.engine.text import TextStream
from llmduet.errors import BackendError, ContextWindowError, DuetError


class QueueFullError(BackendError):
    """The admission queue is full; retry after a short wait."""


class EngineClosedError(BackendError):
    """The engine is shutting down and takes no new requests."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    prompt_tokens: list[int]
    max_tokens: int | None = None  # None: until the context is full
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stops: tuple[str, ...] = ()
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """``text`` while generating; the last event has ``finish`` set and the token counts.

    ``finish`` is ``stop`` or ``length`` for a complete output; ``cancelled`` when the
    submitter left; ``shutdown`` when the engine closed before the output was complete;
    ``timeout``; ``rejected`` when the request itself is invalid (a grammar that does not
    compile); ``error`` when llama.cpp failed."""

    text: str = ""
    finish: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    t: float = field(default_factory=time.perf_counter)


EventSink = Callable[[EngineEvent], None]


@dataclass(eq=False, slots=True)
class _Sequence:
    request: GenerationRequest
    sink: EventSink
    budget: int
    deadline: float | None
    text: TextStream
    cancelled: bool = False
    seq_id: int = -1
    sampler: Any = None
    n_past: int = 0
    prompt_done: int = 0
    pending: int = -1
    generated: int = 0
    batch_row: int = -1
    output: list[int] = field(default_factory=list)


class SequenceHandle:
    """Lets the submitter cancel its request; the engine frees the slot on its next step."""

    def __init__(self, sequence: _Sequence, engine: BatchEngine) -> None:
        self._sequence = sequence
        self._engine = engine

    def cancel(self) -> None:
        self._sequence.cancelled = True
        self._engine._wake()


class BatchEngine:
    def __init__(
        self,
        model: GGUFModel,
        *,
        max_sequences: int = 8,
        context_per_sequence: int = 2048,
        max_queue: int = 64,
        batch_tokens: int = 512,
        threads: int = 2,
    ) -> None:
        self.model = model
        self.max_sequences = max_sequences
        self.max_queue = max_queue
        self.batch_tokens = batch_tokens
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context_per_sequence * max_sequences
        params.n_batch = batch_tokens
        params.n_ubatch = batch_tokens
        params.n_seq_max = max_sequences
        params.kv_unified = False  # each sequence gets its own share: no cross-talk
        params.n_threads = threads
        params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ctx:
            raise BackendError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens for "
                f"{model.path}: lower max_sequences or context_per_sequence"
            )
        # llama.cpp may round the cache up; the configured size is the promise we keep.
        self.context_per_sequence = min(
            context_per_sequence, int(llama_cpp.llama_n_ctx_seq(self._ctx))
        )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(batch_tokens, 0, 1)
        self._free_ids = list(range(max_sequences))
        # Tokens whose KV each free sequence still holds: a new prompt that starts the
        # same way (a shared system prompt, the earlier turns of a chat) skips them.
        self._cached: dict[int, list[int]] = {}
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llmduet-engine", daemon=True)
        self._thread.start()

    # ---- submitting ---------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._active)

    def check_fits(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The output budget for a prompt, or a :class:`ContextWindowError`."""
        room = self.context_per_sequence - prompt_tokens
        if room <= 0 or (max_tokens is not None and max_tokens > room):
            wanted = f" + max_tokens {max_tokens}" if max_tokens is not None else ""
            raise ContextWindowError(
                f"the prompt is {prompt_tokens} tokens{wanted} but the context window is "
                f"{self.context_per_sequence} tokens: shorten the prompt or lower max_tokens"
            )
        return room if max_tokens is None else max_tokens

    def submit(self, request: GenerationRequest, sink: EventSink) -> SequenceHandle:
        budget = self.check_fits(len(request.prompt_tokens), request.max_tokens)
        if not request.prompt_tokens:
            raise BackendError("the prompt is empty after formatting")
        deadline = time.perf_counter() + request.timeout_s if request.timeout_s else None
        sequence = _Sequence(request, sink, budget, deadline, TextStream(list(request.stops)))
        with self._condition:
            if self._closing:
                raise EngineClosedError("the engine is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(
                    f"{len(self._waiting)} requests are already waiting: retry shortly"
                )
            self._waiting.append(sequence)
            self._condition.notify()
        return SequenceHandle(sequence, self)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        """Events for one request on the caller's event loop; leaving early cancels it."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()

        def sink(event: EngineEvent) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)  # raises once the loop is gone

        handle = self.submit(request, sink)
        try:
            while True:
                event = await queue.get()
                yield event
                if event.finish is not None:
                    return
        finally:
            handle.cancel()

    def close(self, grace_s: float = 0.0) -> None:
        """Stop taking requests; let running ones finish for up to ``grace_s``, cancel the
        rest, then free the context. Closing twice is harmless."""
        with self._condition:
            if self._closing:
                return
            self._closing = True
            self._condition.notify()
        deadline = time.perf_counter() + grace_s
        while (self._active or self._waiting) and time.perf_counter() < deadline:
            time.sleep(0.01)
        for sequence in [*self._active, *self._waiting]:
            sequence.cancelled = True
        self._wake()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    def _wake(self) -> None:
        with self._condition:
            self._condition.notify()

    # ---- the engine thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._active and not self._closing:
                    self._condition.wait()
                if self._closing and not self._active and not self._waiting:
                    return
                self._admit()
            self._sweep()
            if not self._active:
                continue
            try:
                self._step()
            except Exception as exc:  # never let one bad step kill the engine
                for sequence in list(self._active):
                    self._release(sequence, "error", error=f"llama.cpp failed: {exc}")

    def _admit(self) -> None:
        while self._waiting and self._free_ids:
            sequence = self._waiting.popleft()
            if sequence.cancelled:
                self._emit(sequence, EngineEvent(finish=self._cancel_reason))
                continue
            try:
                sequence.sampler = build_sampler(self.model.vocab, sequence.request.sampling)
            except DuetError as exc:
                self._emit(sequence, EngineEvent(finish="rejected", error=str(exc)))
                continue
            self._assign_slot(sequence)
            self._active.append(sequence)
        if self._closing:  # no new work once closing: fail what still waits
            while self._waiting:
                self._emit(self._waiting.popleft(), EngineEvent(finish="shutdown"))

    @property
    def _cancel_reason(self) -> str:
        """Cancelled sequences are cut by the shutdown once the engine is closing."""
        return "shutdown" if self._closing else "cancelled"

    def _sweep(self) -> None:
        """Release cancelled and timed-out sequences before spending a step on them."""
        now = time.perf_counter()
        for sequence in list(self._active):
            if sequence.cancelled:
                self._release(sequence, self._cancel_reason)
            elif sequence.deadline is not None and now > sequence.deadline:
                self._release(sequence, "timeout", error="the request timed out")
        with self._condition:  # a request can also run out of time while it waits
            expired = [s for s in self._waiting if s.deadline is not None and now > s.deadline]
            for sequence in expired:
                self._waiting.remove(sequence)
        for sequence in expired:
            self._emit(sequence, EngineEvent(finish="timeout", error="the request timed out"))

    def _assign_slot(self, sequence: _Sequence) -> None:
        """Take the free sequence whose cached tokens share the longest prefix with the
        prompt, keep that prefix's KV and drop the rest."""
        prompt = sequence.request.prompt_tokens

        def shared(seq_id: int) -> int:
            cached = self._cached.get(seq_id, [])
            count = 0
            for a, b in zip(cached, prompt, strict=False):
                if a != b:
                    break
                count += 1
            return count

        seq_id = max(self._free_ids, key=shared)
        self._free_ids.remove(seq_id)
        # The last prompt token is always decoded again: its logits start sampling.
        reuse = min(shared(seq_id), len(prompt) - 1)
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, reuse, -1)
        self._cached.pop(seq_id, None)
        sequence.seq_id = seq_id
        sequence.n_past = sequence.prompt_done = reuse

    def _release(self, sequence: _Sequence, finish: str, error: str | None = None) -> None:
        if finish not in ("stop", "length") or sequence.prompt_done < len(
            sequence.request.prompt_tokens
        ):
            llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
        else:  # keep the KV of prompt + decoded output for the next request
            self._cached[sequence.seq_id] = sequence.request.prompt_tokens + sequence.output[:-1]
        llama_cpp.llama_sampler_free(sequence.sampler)
        self._active.remove(sequence)
        self._free_ids.append(sequence.seq_id)
        tail = sequence.text.finish() if finish in ("stop", "length", "timeout") else ""
        self._emit(
            sequence,
            EngineEvent(
                text=tail,
                finish=finish,
                prompt_tokens=len(sequence.request.prompt_tokens),
                completion_tokens=sequence.generated,
                error=error,
            ),
        )

    @staticmethod
    def _emit(sequence: _Sequence, event: EngineEvent) -> None:
        """Hand an event to its submitter; a submitter that is gone (its event loop
        closed) has its sequence cancelled instead of breaking the engine."""
        try:
            sequence.sink(event)
        except Exception:
            sequence.cancelled = True

    def _add(self, token: int, position: int, seq_id: int, logits: bool) -> int:
        batch = self._batch
        row = batch.n_tokens
        batch.token[row] = token
        batch.pos[row] = position
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq_id
        batch.logits[row] = logits
        batch.n_tokens = row + 1
        return row

    def _step(self) -> None:
        self._batch.n_tokens = 0
        sampling: list[_Sequence] = []
        for sequence in self._active:  # decoding sequences first: one token each
            sequence.batch_row = -1
            if sequence.pending >= 0:
                sequence.batch_row = self._add(
                    sequence.pending, sequence.n_past, sequence.seq_id, True
                )
                sequence.n_past += 1
                sequence.pending = -1
                sampling.append(sequence)
        for sequence in self._active:  # then prompt chunks in the room left
            prompt = sequence.request.prompt_tokens
            if sequence.prompt_done >= len(prompt):
                continue
            room = self.batch_tokens - self._batch.n_tokens
            if room <= 0:
                break
            chunk = prompt[sequence.prompt_done : sequence.prompt_done + room]
            last = sequence.prompt_done + len(chunk) == len(prompt)
            for offset, token in enumerate(chunk):
                row = self._add(
                    token, sequence.n_past, sequence.seq_id, last and offset == len(chunk) - 1
                )
                sequence.n_past += 1
            sequence.prompt_done += len(chunk)
            if last:
                sequence.batch_row = row
                sampling.append(sequence)
        if self._batch.n_tokens == 0:
            return
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        model = self.model
        for sequence in sampling:
            token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, sequence.batch_row)
            if model.is_end(token):
                self._release(sequence, "stop")
                continue
            sequence.generated += 1
            sequence.output.append(token)
            text = sequence.text.push(model.piece(token))
            if text:
                self._emit(sequence, EngineEvent(text=text))
            if sequence.text.stopped:
                self._release(sequence, "stop")
            elif sequence.generated >= sequence.budget:
                self._release(sequence, "length")
            else:
                sequence.pending = token
