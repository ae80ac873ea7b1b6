"""Budgets and rate limits per API key and per team, checked before a request is forwarded.

Each request is charged to several *subjects* at once: the caller's key (``key:alice``) and
its team (``team:finance``). A team can then share one budget while each key in it still has
its own cap. A subject can limit requests and tokens per minute, and US dollars per UTC day
and per UTC month. A subject without a budget is unlimited.

The gateway calls :meth:`BudgetLedger.admit` before it forwards a request, with an estimate
of its tokens (prompt plus ``max_tokens``), and :meth:`BudgetLedger.settle` once the reply is
done, with the real token count and cost. Admitting counts the request and *reserves* the
estimate, so concurrent requests cannot all get through the same gap before any of them is
settled. Settling then replaces the reservation with what was actually used.

"Per minute" means a sliding 60-second window, not the clock minute. A fixed window lets
twice the budget through across a boundary (N requests at 12:00:59, N more at 12:01:00).
The window is kept as per-second buckets in a deque rather than as one entry per request,
so its memory and the cost of every call stay bounded (at most 61 buckets per subject,
whatever the traffic), and settle finds its bucket without searching a long list.
A request is put in the bucket of the *next* whole second (the ceiling of its time), so it
counts for at least 60 s and at most 61 s. The limit is therefore never exceeded in any
real 60-second span; at worst it is up to one second stricter than an exact window. With
whole-second times it is exact. ``retry_after_s`` is the real time until the oldest buckets
that must leave the window to make room have left it.

Dollars are counted per UTC calendar day and month, because invoices and finance budgets are
counted that way. A request is admitted while the spend is below the limit, so the request
that crosses it may overshoot by its own cost. Unknown cost (``usd=None``) counts nothing.

Everything is in memory, one ledger per gateway instance. At start-up the gateway seeds it
(:meth:`BudgetLedger.seed_spend`) with the spend already recorded in the shared audit log.
That way a restart does not hand out a fresh day's budget, and several instances agree on
the dollars spent up to that point. After start-up, each instance adds only its own spend
until it is seeded again. Seeding replaces the totals, so it can also be repeated to re-sync.
The per-minute limits are per instance: with three instances behind a load balancer, a key
allowed 60 requests per minute can make up to 180. Divide the per-minute limits by the
number of instances, or put a shared limiter in front, if that matters.

The calls are cheap: O(1) per subject, with no I/O, no sleeping and no locks. The ledger is
meant for a single event loop; it is not thread-safe. If the clock goes backwards, the
ledger holds time still until the clock catches up.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

WINDOW_S = 60
LIMITS = ("requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month")


@dataclass(frozen=True, slots=True)
class Budget:
    """The limits of one subject; ``None`` means no limit on that axis."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None  # prompt + completion tokens
    usd_per_day: float | None = None  # UTC calendar day
    usd_per_month: float | None = None  # UTC calendar month


@dataclass(frozen=True, slots=True)
class Verdict:
    """A refusal: which subject ran out of which limit, and when to retry."""

    allowed: bool
    subject: str | None = None  # e.g. "team:finance" or "key:alice"
    limit: str | None = None  # one of LIMITS
    message: str = ""  # one line for the client
    retry_after_s: float | None = None  # for Retry-After; None when waiting cannot help


@dataclass(slots=True)
class Admission:
    """An admitted request: returned by ``admit``, passed back to ``settle`` once."""

    subjects: tuple[str, ...]
    reserved_tokens: int
    at: float


@dataclass(slots=True)
class _Bucket:
    second: int  # holds the requests admitted in (second - 1, second]
    requests: int = 0
    tokens: int = 0


@dataclass(slots=True)
class _Window:
    """The sliding minute of one subject: buckets oldest first, and their running totals."""

    buckets: deque[_Bucket] = field(default_factory=deque)
    requests: int = 0
    tokens: int = 0

    def prune(self, now: float) -> None:
        buckets = self.buckets
        while buckets and buckets[0].second + WINDOW_S <= now:
            old = buckets.popleft()
            self.requests -= old.requests
            self.tokens -= old.tokens

    def add(self, second: int, tokens: int) -> None:
        buckets = self.buckets
        if buckets and buckets[-1].second == second:
            bucket = buckets[-1]
        else:
            bucket = _Bucket(second)
            buckets.append(bucket)
        bucket.requests += 1
        bucket.tokens += tokens
        self.requests += 1
        self.tokens += tokens

    def adjust(self, second: int, delta: int) -> None:
        """Change the tokens of the bucket for ``second``, if it is still in the window."""
        for bucket in reversed(self.buckets):
            if bucket.second < second:
                return
            if bucket.second == second:
                bucket.tokens += delta
                self.tokens += delta
                return

    def wait(self, now: float, requests: int = 0, tokens: int = 0) -> float:
        """Seconds until at least ``requests`` requests and ``tokens`` tokens have expired."""
        freed_requests = freed_tokens = 0
        for bucket in self.buckets:
            freed_requests += bucket.requests
            freed_tokens += bucket.tokens
            if freed_requests >= requests and freed_tokens >= tokens:
                return bucket.second + WINDOW_S - now
        # Not reached while the totals match the buckets; the whole window is the upper bound.
        return self.buckets[-1].second + WINDOW_S - now if self.buckets else 0.0


@dataclass(slots=True)
class _Subject:
    name: str
    label: str  # "team 'finance'", for messages
    budget: Budget
    window: _Window = field(default_factory=_Window)
    day: int = -1  # the UTC day (proleptic ordinal) that usd_day belongs to
    usd_day: float = 0.0
    month: int = -1  # the UTC month (year * 12 + month - 1) that usd_month belongs to
    usd_month: float = 0.0


class BudgetLedger:
    """Counts requests, tokens and dollars per subject and decides whether a request fits.

    ``budgets`` maps subjects (``"team:NAME"``, ``"key:NAME"``) to their limits. Only those
    subjects are tracked: any other subject is unlimited, and its usage reads as zero. List a
    subject with an empty ``Budget()`` to track it without limiting it.
    """

    def __init__(
        self, budgets: Mapping[str, Budget], clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._subjects: dict[str, _Subject] = {}
        for name, budget in budgets.items():
            _validate(name, budget)
            self._subjects[name] = _Subject(name, _label(name), budget)
        self._last = -math.inf  # latest time seen; the ledger's time never goes backwards
        self._day = self._month = -1
        self._day_start = self._day_end = self._month_end = 0.0

    def admit(self, subjects: Sequence[str], estimated_tokens: int) -> Verdict | Admission:
        """Count the request and reserve its tokens for every subject, or refuse it.

        All or nothing: if any subject has no room (checked in the order given; within a
        subject: requests, tokens, usd_per_day, usd_per_month), nothing is counted and the
        first limit hit is returned as a refusal.
        """
        if isinstance(subjects, str):
            raise TypeError("subjects must be a sequence of subjects, not one string")
        if estimated_tokens < 0:
            raise ValueError(f"estimated_tokens must be 0 or more, not {estimated_tokens}")
        now = self._now()
        names = tuple(dict.fromkeys(subjects))  # a subject named twice is charged once
        tracked = []
        for name in names:
            subject = self._subjects.get(name)
            if subject is None:
                continue
            verdict = self._check(subject, estimated_tokens, now)
            if verdict is not None:
                return verdict
            tracked.append(subject)
        second = math.ceil(now)
        for subject in tracked:
            subject.window.add(second, estimated_tokens)
        return Admission(names, estimated_tokens, now)

    def settle(self, admission: Admission, tokens: int, usd: float | None) -> None:
        """Replace the reservation with the real token count and add the cost.

        The tokens stay in the minute the request was admitted in (if that is over, there is
        nothing left to correct). The cost goes to today's and this month's totals, as of
        now. ``usd=None`` means the cost is unknown: no dollars are counted.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be 0 or more, not {tokens}")
        if usd is not None and not (usd >= 0 and math.isfinite(usd)):
            raise ValueError(f"usd must be a finite amount of 0 or more (or None), not {usd}")
        now = self._now()
        delta = tokens - admission.reserved_tokens
        second = math.ceil(admission.at)
        in_window = second + WINDOW_S > now
        for name in admission.subjects:
            subject = self._subjects.get(name)
            if subject is None:
                continue
            if delta and in_window:
                subject.window.prune(now)
                subject.window.adjust(second, delta)
            if usd:
                self._roll(subject)
                subject.usd_day += usd
                subject.usd_month += usd

    def seed_spend(self, subject: str, usd_today: float, usd_this_month: float) -> None:
        """Set the subject's spend today and this month (UTC), e.g. from the audit log.

        This replaces the totals rather than adding to them: the audit log already holds this
        instance's own spend, so seeding can be repeated to pick up other instances' spend.
        An untracked subject (no budget) is ignored.
        """
        for label, value in (("usd_today", usd_today), ("usd_this_month", usd_this_month)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{subject}: {label} must be a finite amount of 0 or more")
        state = self._subjects.get(subject)
        if state is None:
            return
        self._now()
        self._roll(state)
        state.usd_day, state.usd_month = float(usd_today), float(usd_this_month)

    def usage(self, subject: str) -> dict[str, float]:
        """Requests and tokens in the sliding minute, and dollars today and this month."""
        state = self._subjects.get(subject)
        if state is None:
            return {"requests": 0.0, "tokens": 0.0, "usd_today": 0.0, "usd_this_month": 0.0}
        now = self._now()
        state.window.prune(now)
        self._roll(state)
        return {
            "requests": float(state.window.requests),
            "tokens": float(state.window.tokens),
            "usd_today": state.usd_day,
            "usd_this_month": state.usd_month,
        }

    def _now(self) -> float:
        """The clock, held still if it went backwards; keeps the UTC day and month current."""
        now = self._clock()
        if now < self._last:
            now = self._last
        self._last = now
        if not self._day_start <= now < self._day_end:
            self._set_calendar(now)
        return now

    def _set_calendar(self, now: float) -> None:
        moment = datetime.fromtimestamp(now, UTC)
        start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        self._day = start.toordinal()
        self._day_start = start.timestamp()
        self._day_end = (start + timedelta(days=1)).timestamp()
        self._month = moment.year * 12 + moment.month - 1
        self._month_end = following.timestamp()

    def _roll(self, subject: _Subject) -> None:
        """Start the subject's dollar totals afresh if the UTC day or month has changed."""
        if subject.day != self._day:
            subject.day, subject.usd_day = self._day, 0.0
        if subject.month != self._month:
            subject.month, subject.usd_month = self._month, 0.0

    def _check(self, subject: _Subject, tokens: int, now: float) -> Verdict | None:
        """The refusal for the first limit this request would break, or None if it fits."""
        budget, window, label = subject.budget, subject.window, subject.label
        window.prune(now)
        rpm = budget.requests_per_minute
        if rpm is not None and window.requests + 1 > rpm:
            wait = window.wait(now, requests=window.requests + 1 - rpm)
            return Verdict(
                False,
                subject.name,
                "requests_per_minute",
                f"{label} is over its budget of {rpm:,} requests per minute; "
                f"retry in {_duration(wait)}",
                wait,
            )
        tpm = budget.tokens_per_minute
        if tpm is not None:
            if tokens > tpm:
                return Verdict(
                    False,
                    subject.name,
                    "tokens_per_minute",
                    f"{label} allows {tpm:,} tokens per minute and this request alone needs "
                    f"about {tokens:,}, so it can never fit; shorten it or lower max_tokens",
                    None,
                )
            if window.tokens + tokens > tpm:
                wait = window.wait(now, tokens=window.tokens + tokens - tpm)
                return Verdict(
                    False,
                    subject.name,
                    "tokens_per_minute",
                    f"{label} is over its budget of {tpm:,} tokens per minute; "
                    f"retry in {_duration(wait)}",
                    wait,
                )
        per_day, per_month = budget.usd_per_day, budget.usd_per_month
        if per_day is None and per_month is None:
            return None
        self._roll(subject)
        if per_day is not None and subject.usd_day >= per_day:
            wait = self._day_end - now
            return Verdict(
                False,
                subject.name,
                "usd_per_day",
                f"{label} is over its budget of {_usd(per_day)} per day (UTC); "
                f"retry in {_duration(wait)}",
                wait,
            )
        if per_month is not None and subject.usd_month >= per_month:
            wait = self._month_end - now
            return Verdict(
                False,
                subject.name,
                "usd_per_month",
                f"{label} is over its budget of {_usd(per_month)} per month (UTC); "
                f"retry in {_duration(wait)}",
                wait,
            )
        return None


def _validate(subject: str, budget: Budget) -> None:
    if not isinstance(budget, Budget):
        raise ValueError(f"{subject}: the budget must be a Budget, not {type(budget).__name__}")
    for name in LIMITS:
        value = getattr(budget, name)
        if value is None:
            continue
        whole = name.endswith("_per_minute")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "a whole number" if whole else "a number"
            raise ValueError(f"{subject}: {name} must be {kind} or None, not {value!r}")
        if not value > 0:  # also refuses NaN
            raise ValueError(
                f"{subject}: {name} must be more than 0, not {value!r} (use None for no limit)"
            )


def _label(subject: str) -> str:
    kind, colon, name = subject.partition(":")
    return f"{kind} '{name}'" if colon and kind and name else f"subject '{subject}'"


def _usd(amount: float) -> str:
    return f"${amount:,.2f}" if round(amount, 2) == amount else f"${amount:,g}"


def _duration(seconds: float) -> str:
    """A wait for people: "12 s", "5 min", "3 h 12 min", "4 d 6 h" (always rounded up)."""
    whole = math.ceil(seconds)
    if whole < 120:
        return f"{whole} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(math.ceil(seconds / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
