"""The gateway as a library: authenticate, decide, guard, budget, forward, audit.

:class:`Gateway` never imports the web framework: the HTTP app is a thin layer over
:meth:`Gateway.chat`, :meth:`Gateway.embeddings` and friends, and a program can route
requests through it in process the same way. Client errors are raised as
:class:`~llmduet.serve.errors.ServingError`, which carries the OpenAI error fields.

Forwarding: the targets of the decision are tried in order. On each, a replica is picked
by least outstanding requests; connect errors, timeouts, 429 and 5xx (for a stream: any
failure before its first token) are retried with exponential backoff, honouring
``Retry-After``, then the next target is tried. 401/403/404 from an upstream mean it is
misconfigured: no retry, next target. Other 4xx are the client's: returned with the
upstream's status and error fields. Once a stream has sent its first token it is never
restarted: a later failure ends it with an error event and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aiohttp

from llmduet.config import Settings
from llmduet.errors import ConfigError
from llmduet.gateway.audit import AuditLog, AuditRecord, open_audit
from llmduet.gateway.limits import Admission, Budget, BudgetLedger
from llmduet.gateway.metrics import GatewayMetrics
from llmduet.gateway.pii import TYPES, detect
from llmduet.gateway.policy import (
    Decision,
    Features,
    RoutePolicy,
    all_targets,
    estimate_tokens,
)
from llmduet.gateway.pseudonymise import Pseudonymiser, map_texts, request_texts
from llmduet.gateway.relay import (
    DONE,
    ReplyTally,
    StreamTransformer,
    error_frame,
    has_output,
    sse_events,
)
from llmduet.gateway.upstreams import Replica, Upstream, build_upstream
from llmduet.serve.errors import ServingError

log = logging.getLogger("llmduet.gateway")

TAGS_HEADER = "x-duet-tags"
TIME_BUDGET_HEADER = "x-duet-time-budget-ms"
MAX_RETRY_AFTER_S = 10.0
MAX_BACKOFF_S = 30.0

_Outcome = Literal["open", "ok", "failed", "abandoned"]
UNKNOWN_ROUTE = "(unknown)"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the name of the API key (never the key) and its team."""

    key: str
    team: str | None = None

    @property
    def subjects(self) -> tuple[str, ...]:
        return (f"key:{self.key}",) + ((f"team:{self.team}",) if self.team else ())


@dataclass(frozen=True, slots=True)
class JSONReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamReply:
    """``frames`` to send in order; call ``close()`` when done with it, sent or not (a
    reply dropped before its first frame still releases its upstream and is audited)."""

    frames: AsyncIterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


@dataclass(slots=True)
class _Trace:
    """The audit fields of one request, filled in as it goes."""

    route: str
    caller: Caller
    stream: bool
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    request_id: str = field(default_factory=lambda: os.urandom(12).hex())
    rule: str = "default"
    target: str | None = None
    location: str | None = None
    pii_types: tuple[str, ...] = ()
    privacy_action: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    ttft_ms: float | None = None
    status: int = 200
    error: str | None = None
    attempts: int = 0
    admission: Admission | None = None  # budget reservation, settled once at the end

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def record(self) -> AuditRecord:
        return AuditRecord(
            ts=self.ts,
            request_id=self.request_id,
            key=self.caller.key,
            team=self.caller.team,
            route=self.route,
            rule=self.rule,
            target=self.target,
            location=self.location,
            pii_types=self.pii_types,
            privacy_action=self.privacy_action,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
            latency_ms=self.elapsed_ms(),
            ttft_ms=self.ttft_ms,
            status=self.status,
            error=self.error,
            stream=self.stream,
            attempts=self.attempts,
        )


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _NextTarget(Exception):
    """The upstream refused the gateway itself (401/403/404): try the next target."""


@dataclass(slots=True)
class _Opened:
    upstream: Upstream
    replica: Replica
    response: aiohttp.ClientResponse
    pseudonymiser: Pseudonymiser | None
    events: AsyncIterator[bytes] | None = None
    first: list[bytes] = field(default_factory=list)  # stream frames read before committing


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            with contextlib.suppress(ValueError):
                return min(float(value) / scale, MAX_RETRY_AFTER_S)
    return None


def _error_fields(body: bytes, status: int) -> tuple[str, str, str | None, str | None]:
    """message, type, param, code of an upstream's error body (OpenAI-shaped or not)."""
    with contextlib.suppress(ValueError, LookupError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        if isinstance(error, dict):
            param, code = error.get("param"), error.get("code")
            return (
                str(error.get("message") or f"upstream answered {status}"),
                str(error.get("type") or "invalid_request_error"),
                None if param is None else str(param),
                None if code is None else str(code),
            )
    text = body[:200].decode(errors="replace").strip()
    return (text or f"upstream answered {status}", "invalid_request_error", None, None)


def _describe(exc: BaseException) -> str:
    """An upstream failure in words that cannot carry reply content (a parser error's
    message may quote the reply, so only connection errors keep theirs)."""
    if isinstance(exc, _Retryable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return type(exc).__name__


class Gateway:
    """Routes OpenAI-shaped requests by policy; one per process, shared by all requests."""

    def __init__(self, settings: Settings, *, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.spec = settings.gateway
        if not self.spec.routes:
            raise ConfigError(
                "no gateway routes: add [gateway.routes.NAME] with `targets` to duet.toml "
                "(see the README's gateway section)"
            )
        names = {t for route in self.spec.routes.values() for t in all_targets(route)}
        self.upstreams = {name: build_upstream(name, settings) for name in sorted(names)}
        locations = {name: upstream.location for name, upstream in self.upstreams.items()}
        self.routes = {
            name: RoutePolicy(name, route, locations) for name, route in self.spec.routes.items()
        }
        self.pii_types = tuple(self.spec.pii_types or TYPES)
        unknown = set(self.pii_types) - set(TYPES)
        if unknown:
            raise ConfigError(
                f"gateway.pii_types: unknown type {sorted(unknown)[0]} (known: {', '.join(TYPES)})"
            )
        self._check_keys()
        self._check_rule_callers()
        self._keys: dict[str, Caller] | None = None
        self.ledger = BudgetLedger(self._budgets())
        self.metrics = GatewayMetrics()
        for name, upstream in self.upstreams.items():
            self.metrics.track_replicas(name, upstream.usable_count)
        self._audit = audit
        self._session: aiohttp.ClientSession | None = None
        self._health: asyncio.Task[None] | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=self.spec.connect_timeout_s)

    # ---- set-up ----------------------------------------------------------------------

    def _check_rule_callers(self) -> None:
        """A rule naming a team or key that does not exist would silently never fire."""
        for route_name, route in self.spec.routes.items():
            for rule in route.rules:
                where = f"gateway.routes.{route_name}.rules.{rule.name}"
                for kind, names, known in (
                    ("team", rule.teams, self.spec.teams),
                    ("key", rule.keys, self.spec.keys),
                ):
                    unknown = sorted(set(names or ()) - set(known))
                    if unknown:
                        raise ConfigError(
                            f"{where}: unknown {kind} '{unknown[0]}' "
                            f"(have: {', '.join(known) or 'none'})"
                        )

    def _check_keys(self) -> None:
        if not self.spec.keys:
            raise ConfigError(
                "the gateway requires API keys: add [gateway.keys.NAME] with key_env or "
                "key_sha256 (and a team) to duet.toml"
            )
        for name, key in self.spec.keys.items():
            if key.team is not None and key.team not in self.spec.teams:
                raise ConfigError(
                    f"gateway.keys.{name}: unknown team '{key.team}'; "
                    f"add [gateway.teams.{key.team}]"
                )

    def load_keys(self) -> None:
        """Read the client keys' secrets (from the environment or their hashes); done by
        :meth:`start`, or earlier to fail before the server binds its port."""
        keys: dict[str, Caller] = {}
        for name, key in self.spec.keys.items():
            digest = key.key_sha256.lower() if key.key_sha256 else None
            if key.key_env is not None:
                secret = os.environ.get(key.key_env)
                if not secret:
                    raise ConfigError(
                        f"gateway.keys.{name}: environment variable {key.key_env} is not set"
                    )
                digest = _sha256(secret)
            assert digest is not None
            keys[digest] = Caller(name, key.team)
        self._keys = keys

    def caller_named(self, key: str) -> Caller:
        """The caller of a key by its name (for ``--explain``; needs no secret)."""
        spec = self.spec.keys.get(key)
        if spec is None:
            raise ConfigError(
                f"no key '{key}' under [gateway.keys] (have: {', '.join(self.spec.keys)})"
            )
        return Caller(key, spec.team)

    def _budgets(self) -> dict[str, Budget]:
        budgets: dict[str, Budget] = {}
        for kind, specs in (("key", self.spec.keys), ("team", self.spec.teams)):
            for name, spec in specs.items():
                budget = Budget(
                    spec.requests_per_minute,
                    spec.tokens_per_minute,
                    spec.usd_per_day,
                    spec.usd_per_month,
                )
                if budget != Budget():
                    budgets[f"{kind}:{name}"] = budget
        return budgets

    async def start(self) -> None:
        """Open the audit log and the upstream connection pool; seed USD budgets from the
        audit log (so a restart, or another instance, does not reset spend); start health
        checks."""
        if self._keys is None:
            self.load_keys()
        if self._audit is None:
            await asyncio.to_thread(self.open_audit)
        await asyncio.to_thread(self._seed_spend)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        if self.spec.health_interval_s > 0:
            self._health = asyncio.create_task(self._health_loop())

    def open_audit(self) -> AuditLog:
        """The audit log of ``audit_url`` (SQLite by default), opened once."""
        if self._audit is None:
            self._audit = open_audit(self.spec.audit_url)
        return self._audit

    def _seed_spend(self) -> None:
        assert self._audit is not None
        now = time.gmtime()
        day = float(calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0)))
        month = float(calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0)))
        for by in ("team", "key"):
            today = self._audit.spend(day, by=by)
            this_month = self._audit.spend(month, by=by)
            for name, usd in this_month.items():
                self.ledger.seed_spend(f"{by}:{name}", today.get(name, 0.0), usd)

    async def aclose(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self._session is not None:
            await self._session.close()
        if self._audit is not None:
            await asyncio.to_thread(self._audit.close)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def audit(self) -> AuditLog:
        assert self._audit is not None, "call start() first"
        return self._audit

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "call start() first"
        return self._session

    # ---- per request -----------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Caller:
        header = authorization or ""
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        assert self._keys is not None, "call start() first"
        caller = self._keys.get(_sha256(token)) if token else None
        if caller is None:
            raise ServingError(
                401,
                "invalid or missing API key: send 'Authorization: Bearer KEY' with a key "
                "listed under [gateway.keys]",
                code="invalid_api_key",
            )
        return caller

    def _route_name(self, body: Mapping[str, Any]) -> str:
        """The route as the audit may keep it: a name the client sent that is not a route
        could be anything, private data included, so it is not stored."""
        name = body.get("model")
        return name if isinstance(name, str) and name in self.routes else UNKNOWN_ROUTE

    def _policy(self, body: Mapping[str, Any]) -> RoutePolicy:
        name = body.get("model")
        policy = self.routes.get(name) if isinstance(name, str) else None
        if policy is None:
            raise ServingError(
                404,
                f"unknown route '{name}': this gateway serves {', '.join(sorted(self.routes))}",
                param="model",
                code="model_not_found",
            )
        return policy

    def features(
        self, texts: list[str], messages: int, caller: Caller | None, headers: Mapping[str, str]
    ) -> Features:
        found = {f.type for text in texts for f in detect(text, self.pii_types)}
        tags = frozenset(
            t.strip().lower() for t in headers.get(TAGS_HEADER, "").split(",") if t.strip()
        )
        budget_text = headers.get(TIME_BUDGET_HEADER)
        budget: int | None = None
        if budget_text is not None:
            if not re.fullmatch(r"\s*[0-9]{1,9}\s*", budget_text) or int(budget_text) <= 0:
                raise ServingError(
                    400,
                    f"{TIME_BUDGET_HEADER} must be a positive whole number of milliseconds "
                    f"(got {budget_text[:40]!r})",
                    param=TIME_BUDGET_HEADER,
                )
            budget = int(budget_text)
        return Features(
            prompt_tokens=estimate_tokens(texts, messages),
            pii_types=frozenset(found),
            tags=tags,
            team=caller.team if caller else None,
            key=caller.key if caller else None,
            time_budget_ms=budget,
        )

    def decide(
        self, body: Mapping[str, Any], caller: Caller | None, headers: Mapping[str, str]
    ) -> tuple[Decision, Features]:
        """Which rule fires for this chat request and why (``duet gateway --explain``)."""
        return self._decide(self._policy(body), body, caller, headers)

    def _decide(
        self,
        policy: RoutePolicy,
        body: Mapping[str, Any],
        caller: Caller | None,
        headers: Mapping[str, str],
    ) -> tuple[Decision, Features]:
        messages = body.get("messages")
        count = len(messages) if isinstance(messages, list) else 0
        features = self.features(request_texts(body), count, caller, headers)
        return policy.decide(features), features

    async def chat(
        self, body: dict[str, Any], caller: Caller, headers: Mapping[str, str]
    ) -> JSONReply | StreamReply:
        """Route one ``/v1/chat/completions`` request (already validated)."""
        stream = bool(body.get("stream"))
        trace = _Trace(route=self._route_name(body), caller=caller, stream=stream)
        with self._failures_recorded(trace):
            policy = self._policy(body)
            decision, features = self._decide(policy, body, caller, headers)
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            max_output = limit if isinstance(limit, int) and limit > 0 else 0
            decision = self._admit(policy, decision, features, trace, max_output)
            opened = await self._open(trace, decision, body, "/chat/completions", stream)
        if stream:
            want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            transformer = StreamTransformer(want_usage, opened.pseudonymiser)
            return self._stream_reply(opened, transformer, trace)
        with self._failures_recorded(trace):
            return await self._complete(opened, trace)

    @contextlib.contextmanager
    def _failures_recorded(self, trace: _Trace) -> Iterator[None]:
        """A request refused or failed before its reply is audited with its status."""
        try:
            yield
        except ServingError as exc:
            self._finish(trace, status=exc.status, error=exc.code or exc.type)
            raise
        except BaseException:
            self._finish(trace, status=499, error="client_disconnected")
            raise

    async def embeddings(
        self, body: dict[str, Any], caller: Caller, headers: Mapping[str, str]
    ) -> JSONReply:
        """Route one ``/v1/embeddings`` request. Pseudonymising makes no sense for a vector
        (it would embed the placeholders), so there it keeps the request local instead."""
        trace = _Trace(route=self._route_name(body), caller=caller, stream=False)
        with self._failures_recorded(trace):
            policy = self._policy(body)
            features = self.features(request_texts(body), 0, caller, headers)
            decision = policy.decide(features)
            if decision.privacy_action == "pseudonymise":
                why = "embeddings with private data stay local"
                decision = replace(policy.downgraded(decision, why), privacy_action="route_local")
            decision = self._admit(policy, decision, features, trace)
            opened = await self._open(trace, decision, body, "/embeddings", False)
            return await self._complete(opened, trace)

    def model_list(self) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "llmduet-gateway"}
                for name in self.routes
            ],
        }

    def health(self) -> tuple[int, dict[str, Any]]:
        upstreams = {
            name: {
                "location": upstream.location,
                "replicas": len(upstream.replicas),
                "usable": sum(r.usable for r in upstream.replicas),
                "problems": sorted({r.last_error for r in upstream.replicas if r.last_error}),
            }
            for name, upstream in self.upstreams.items()
        }
        dead = [
            route
            for route, policy in self.routes.items()
            if not any(self.upstreams[t].available for t in all_targets(policy.spec))
        ]
        status = "down" if len(dead) == len(self.routes) else "degraded" if dead else "ok"
        body = {"status": status, "routes_without_upstream": dead, "upstreams": upstreams}
        return (503 if status == "down" else 200), body

    # ---- steps -----------------------------------------------------------------------

    def _admit(
        self,
        policy: RoutePolicy,
        decision: Decision,
        features: Features,
        trace: _Trace,
        max_output: int = 0,
    ) -> Decision:
        """Apply the privacy decision and the budgets; raise for block and over budget."""
        trace.rule = decision.rule
        trace.pii_types = tuple(sorted(features.pii_types))
        trace.privacy_action = decision.privacy_action
        trace.prompt_tokens = features.prompt_tokens
        for pii_type in trace.pii_types:
            self.metrics.pii.labels(pii_type, decision.privacy_action or "none").inc()
        if decision.blocked:
            raise ServingError(
                400,
                f"the prompt contains private data ({', '.join(trace.pii_types)}) and route "
                f"'{decision.route}' blocks it: remove it or use a route that keeps it local",
                param="messages",
                code="private_data_blocked",
            )
        verdict = self.ledger.admit(trace.caller.subjects, features.prompt_tokens + max_output)
        if isinstance(verdict, Admission):
            trace.admission = verdict
            return decision
        limit = verdict.limit or "budget"
        if policy.spec.over_budget == "downgrade":
            self.metrics.budget_refusals.labels(limit, "downgraded").inc()
            decision = policy.downgraded(decision, "over budget, downgraded to local")
            trace.rule = f"{decision.rule} (over {limit}: downgraded)"
            return decision
        self.metrics.budget_refusals.labels(limit, "rejected").inc()
        retry = verdict.retry_after_s
        raise ServingError(
            429,
            verdict.message,
            type="rate_limit_exceeded",
            code="budget_exceeded",
            headers={"Retry-After": str(max(1, round(retry)))} if retry else {},
        )

    def _payload(
        self, body: Mapping[str, Any], upstream: Upstream, masker: Pseudonymiser | None
    ) -> bytes:
        out = {**(masker.mask_request(body) if masker else body), "model": upstream.model}
        if out.get("stream"):
            out["stream_options"] = {**(out.get("stream_options") or {}), "include_usage": True}
        return json.dumps(out).encode()

    async def _open(
        self, trace: _Trace, decision: Decision, body: Mapping[str, Any], path: str, stream: bool
    ) -> _Opened:
        """Try the decision's targets in order, with retries, until one answers."""
        self.metrics.overhead.observe(time.perf_counter() - trace.started)
        failures: list[str] = []
        masker: Pseudonymiser | None = None
        for target in decision.targets:
            upstream = self.upstreams[target]
            if not upstream.available:
                reason = upstream.missing_key or "no healthy replica with a closed circuit"
                failures.append(f"{target}: {reason}")
                continue
            pseudonymise = decision.privacy_action == "pseudonymise"
            if pseudonymise and upstream.location == "external" and masker is None:
                masker = Pseudonymiser(self.pii_types)
            use = masker if pseudonymise and upstream.location == "external" else None
            payload = self._payload(body, upstream, use)
            last: Replica | None = None
            for attempt in range(self.spec.retries + 1):
                replica = upstream.pick(exclude=last)
                if replica is None:
                    failures.append(f"{target}: no usable replica left")
                    break
                trace.attempts += 1
                trace.target, trace.location = target, upstream.location
                try:
                    opened = await self._attempt(upstream, replica, path, payload, stream)
                except _Retryable as exc:
                    self.metrics.attempts.labels(target, "retryable").inc()
                    failures.append(f"{target}: {exc}")
                    last = replica
                    if attempt < self.spec.retries:
                        await asyncio.sleep(self._backoff(attempt, exc.retry_after_s))
                    continue
                except _NextTarget as exc:
                    self.metrics.attempts.labels(target, "refused").inc()
                    failures.append(f"{target}: {exc}")
                    break
                self.metrics.attempts.labels(target, "ok").inc()
                opened.pseudonymiser = use
                return opened
        if not decision.targets:
            raise ServingError(503, f"route '{decision.route}' has no target for this request")
        available = any(self.upstreams[t].available for t in decision.targets)
        raise ServingError(
            502 if available or trace.attempts else 503,
            f"no upstream of route '{decision.route}' could answer: {'; '.join(failures)}",
            type="server_error",
            code="upstream_unavailable",
            headers={"Retry-After": "1"},
        )

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        delay = self.spec.backoff_s * (2**attempt) * (0.5 + random.random())  # +-50% jitter
        return max(min(delay, MAX_BACKOFF_S), retry_after_s or 0.0)

    async def _attempt(
        self, upstream: Upstream, replica: Replica, path: str, payload: bytes, stream: bool
    ) -> _Opened:
        replica.outstanding += 1
        trial = replica.breaker.start()
        headers = {"Content-Type": "application/json", **upstream.headers()}
        response: aiohttp.ClientResponse | None = None
        outcome: _Outcome = "failed"  # what the breaker hears unless the reply is usable
        try:
            async with asyncio.timeout(self.spec.first_byte_timeout_s):
                response = await self.session.post(
                    replica.base_url + path, data=payload, headers=headers
                )
                if response.status == 200:
                    opened = _Opened(upstream, replica, response, None)
                    if stream:
                        await self._first_token(opened)
                    replica.breaker.succeeded()
                    outcome = "open"
                    return opened
                error_body = await response.read()
            status = response.status
            message, kind, param, code = _error_fields(error_body, status)
            if status == 429 or status >= 500:
                raise _Retryable(f"{status} {message[:120]}", _retry_after(response))
            if status in (401, 403, 404):  # a failure too: it will not heal by itself
                raise _NextTarget(f"{status} {message[:120]}")
            outcome = "ok"  # the upstream works; it is the request it refuses
            raise ServingError(status, message, type=kind, param=param, code=code)
        except (_Retryable, _NextTarget, ServingError):
            raise
        except Exception as exc:  # connect errors, timeouts, broken or odd replies
            raise _Retryable(_describe(exc)) from None
        except BaseException:
            outcome = "abandoned"
            raise
        finally:
            if outcome != "open":
                self._release(replica, response, outcome, trial=trial)

    async def _first_token(self, opened: _Opened) -> None:
        """Read a stream up to its first output (or its end) before the client sees it,
        so a failure before the first token can still be retried elsewhere."""
        events = sse_events(opened.response.content.__aiter__())
        opened.events = events
        async for payload in events:
            opened.first.append(payload)
            if payload == b"[DONE]":
                return
            chunk = json.loads(payload)
            if not isinstance(chunk, dict) or "error" in chunk:
                raise _Retryable("an error event before the first token")
            choices = chunk.get("choices")
            if isinstance(choices, list) and any(
                isinstance(c, dict) and has_output(c.get("delta")) for c in choices
            ):
                return
        raise _Retryable("the stream ended before its first token")

    def _release(
        self,
        replica: Replica,
        response: aiohttp.ClientResponse | None,
        outcome: _Outcome,
        *,
        trial: bool = False,
    ) -> None:
        replica.outstanding -= 1
        if outcome == "failed":
            replica.breaker.failed(trial)
        elif outcome == "ok":
            replica.breaker.succeeded()
        else:
            replica.breaker.abandoned(trial)
        if response is not None:
            response.release()

    async def _complete(self, opened: _Opened, trace: _Trace) -> JSONReply:
        outcome: _Outcome = "failed"
        try:
            async with asyncio.timeout(self.spec.idle_timeout_s):
                data = await opened.response.read()
            outcome = "ok"
        except Exception as exc:
            raise ServingError(
                502,
                f"upstream '{opened.upstream.name}' broke off its reply ({_describe(exc)})",
                type="server_error",
                code="upstream_unavailable",
            ) from None
        except BaseException:
            outcome = "abandoned"
            raise
        finally:
            self._release(opened.replica, opened.response, outcome)
        tally = ReplyTally()
        with contextlib.suppress(ValueError):
            body = json.loads(data)
            if isinstance(body, dict):
                tally.take_usage(body.get("usage"))
            if opened.pseudonymiser is not None:
                data = json.dumps(map_texts(body, opened.pseudonymiser.restore)).encode()
        self._settle(trace, opened.upstream, tally)
        self._finish(trace, status=200)
        return JSONReply(200, data, _where(trace))

    def _stream_reply(
        self, opened: _Opened, transformer: StreamTransformer, trace: _Trace
    ) -> StreamReply:
        ended = False

        def end(outcome: _Outcome, status: int, error: str | None) -> None:
            """Release, settle and audit exactly once, however the stream ends, even if
            its frames were never iterated."""
            nonlocal ended
            if ended:
                return
            ended = True
            self._release(opened.replica, opened.response, outcome)
            try:
                self._settle(trace, opened.upstream, transformer.tally)
            finally:
                self._finish(trace, status=status, error=error)

        async def frames() -> AsyncIterator[bytes]:
            try:
                # What was read before committing goes out in one write, not three.
                yield b"".join(self._forward_event(p, transformer, trace) for p in opened.first)
                if opened.first and opened.first[-1] == b"[DONE]":
                    end("ok", 200, None)
                    return
                assert opened.events is not None
                while True:
                    try:
                        async with asyncio.timeout(self.spec.idle_timeout_s):
                            payload = await anext(opened.events)
                    except StopAsyncIteration:
                        break
                    out = self._forward_event(payload, transformer, trace)
                    if out:
                        yield out
                    if payload == b"[DONE]":
                        end("ok", 200, None)
                        return
                if not transformer.finished:
                    raise _Retryable("the upstream closed the stream before it finished")
                yield transformer.finish() + DONE  # finished, only the [DONE] was missing
                end("ok", 200, None)
            except Exception as exc:
                log.warning(
                    "stream from %s broke after its first token (%s)",
                    opened.upstream.name,
                    _describe(exc),
                )
                end("failed", 502, "upstream_stream_interrupted")
                yield error_frame(
                    f"upstream '{opened.upstream.name}' failed mid-stream ({_describe(exc)}); "
                    "the reply above is incomplete",
                    "upstream_stream_interrupted",
                )
                yield DONE
            finally:
                end("abandoned", 499, "client_disconnected")

        return StreamReply(
            frames(), _where(trace), lambda: end("abandoned", 499, "client_disconnected")
        )

    def _forward_event(
        self, payload: bytes, transformer: StreamTransformer, trace: _Trace
    ) -> bytes:
        if payload == b"[DONE]":
            return transformer.finish() + DONE
        out, carried = transformer.event(payload)
        if carried and trace.ttft_ms is None:
            trace.ttft_ms = trace.elapsed_ms()
        return out

    def _settle(self, trace: _Trace, upstream: Upstream, tally: ReplyTally) -> None:
        if tally.prompt_tokens is not None:
            trace.prompt_tokens = tally.prompt_tokens
        trace.completion_tokens = (
            tally.completion_tokens if tally.completion_tokens is not None else tally.content_chunks
        )
        seconds = trace.elapsed_ms() / 1000.0
        trace.cost_usd = upstream.cost_model.cost(
            trace.prompt_tokens, trace.completion_tokens, seconds
        )
        if trace.admission is not None:
            tokens = trace.prompt_tokens + trace.completion_tokens
            self.ledger.settle(trace.admission, tokens, trace.cost_usd)
            trace.admission = None
        self.metrics.tokens.labels(upstream.name, "prompt").inc(trace.prompt_tokens)
        self.metrics.tokens.labels(upstream.name, "completion").inc(trace.completion_tokens)
        if trace.cost_usd:
            self.metrics.cost.labels(upstream.name).inc(trace.cost_usd)

    def _finish(
        self,
        trace: _Trace,
        *,
        status: int,
        error: str | None = None,
    ) -> None:
        if trace.admission is not None:  # failed before a reply: give back the reservation
            self.ledger.settle(trace.admission, trace.prompt_tokens, None)
            trace.admission = None
        trace.status, trace.error = status, error
        route = trace.route if trace.route in self.routes else "other"
        where = (trace.target or "none", trace.location or "none")
        self.metrics.requests.labels(route, *where, str(status)).inc()
        self.metrics.duration.labels(route).observe(trace.elapsed_ms() / 1000.0)
        if self._audit is not None:
            self._audit.write(trace.record())

    # ---- health ----------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.gather(
                *(
                    self._check(upstream, replica)
                    for upstream in self.upstreams.values()
                    if upstream.missing_key is None
                    for replica in upstream.replicas
                )
            )
            await asyncio.sleep(self.spec.health_interval_s)

    async def _check(self, upstream: Upstream, replica: Replica) -> None:
        """GET /models: cheap on every OpenAI-compatible server, and it checks the key."""
        try:
            async with asyncio.timeout(self.spec.connect_timeout_s):
                async with self.session.get(
                    replica.base_url + "/models", headers=upstream.headers()
                ) as response:
                    ok = response.status == 200
                    problem = None if ok else f"health check answered {response.status}"
        except Exception as exc:  # whatever it is, the replica is not healthy; keep checking
            ok, problem = False, f"health check failed: {type(exc).__name__}"
        if ok != replica.healthy:
            log.warning(
                "upstream %s replica %s is %s",
                upstream.name,
                replica.base_url,
                "up" if ok else "down",
            )
        replica.healthy, replica.last_error = ok, problem


def _where(trace: _Trace) -> dict[str, str]:
    """Response headers that tell the client which rule fired and where it went."""
    return {
        "x-duet-rule": trace.rule,
        "x-duet-target": trace.target or "",
        "x-duet-location": trace.location or "",
        "x-duet-request-id": trace.request_id,
    }
