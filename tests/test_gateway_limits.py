"""Budgets and rate limits per key and per team: the sliding minute, token reservations,
dollars per UTC day and month, and validation. All on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmduet.gateway.limits import Admission, Budget, BudgetLedger, Verdict

NOON = datetime(2024, 3, 13, 12, 0, 0, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def admitted(result: Verdict | Admission) -> Admission:
    assert isinstance(result, Admission), result
    return result


def refused(result: Verdict | Admission) -> Verdict:
    assert isinstance(result, Verdict), result
    assert result.allowed is False
    return result


def test_requests_per_minute_allows_exactly_n_then_refuses() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"team:finance": Budget(requests_per_minute=3)}, clock)
    for _ in range(3):
        admitted(ledger.admit(["team:finance"], 0))
        clock.advance(16)
    verdict = refused(ledger.admit(["team:finance"], 0))  # 48 s after the first
    assert verdict.subject == "team:finance"
    assert verdict.limit == "requests_per_minute"
    assert verdict.retry_after_s == pytest.approx(12)
    assert verdict.message == (
        "team 'finance' is over its budget of 3 requests per minute; retry in 12 s"
    )
    clock.advance(12)
    admitted(ledger.admit(["team:finance"], 0))


def test_the_minute_slides_rather_than_resetting() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(requests_per_minute=3)}, clock)
    for offset in (0, 20, 59):  # spread over 59 s: all still count at 59.5 s
        clock.now = NOON + offset
        admitted(ledger.admit(["key:alice"], 0))
    clock.now = NOON + 59.5
    assert refused(ledger.admit(["key:alice"], 0)).retry_after_s == pytest.approx(0.5)

    clock.now = NOON + 60  # the first has aged out: exactly one place is free
    admitted(ledger.admit(["key:alice"], 0))
    assert refused(ledger.admit(["key:alice"], 0)).retry_after_s == pytest.approx(20)
    clock.now = NOON + 79.9
    refused(ledger.admit(["key:alice"], 0))
    clock.now = NOON + 80  # the second has aged out
    admitted(ledger.admit(["key:alice"], 0))
    assert refused(ledger.admit(["key:alice"], 0)).retry_after_s == pytest.approx(39)
    assert ledger.usage("key:alice")["requests"] == 3


def test_a_request_at_a_fraction_of_a_second_counts_for_a_full_minute() -> None:
    clock = FakeClock(NOON + 0.5)
    ledger = BudgetLedger({"key:alice": Budget(requests_per_minute=1)}, clock)
    admitted(ledger.admit(["key:alice"], 0))
    clock.now = NOON + 60.4
    verdict = refused(ledger.admit(["key:alice"], 0))
    assert 0.1 <= (verdict.retry_after_s or 0) <= 0.6 + 1e-9
    clock.advance((verdict.retry_after_s or 0) + 1e-6)
    admitted(ledger.admit(["key:alice"], 0))


def test_tokens_are_reserved_then_settled_to_the_actual_count() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(tokens_per_minute=1000)}, clock)
    first = admitted(ledger.admit(["key:alice"], 600))
    assert first.reserved_tokens == 600 and first.subjects == ("key:alice",)
    assert ledger.usage("key:alice")["tokens"] == 600
    verdict = refused(ledger.admit(["key:alice"], 500))  # the reservation holds the room
    assert verdict.limit == "tokens_per_minute"
    assert verdict.retry_after_s == pytest.approx(60)

    clock.advance(5)
    ledger.settle(first, 200, None)  # used less than estimated: the rest is free again
    assert ledger.usage("key:alice")["tokens"] == 200
    second = admitted(ledger.admit(["key:alice"], 500))

    clock.advance(5)
    ledger.settle(second, 700, None)  # used more: takes more
    assert ledger.usage("key:alice")["tokens"] == 900
    verdict = refused(ledger.admit(["key:alice"], 150))
    assert verdict.message == (
        "key 'alice' is over its budget of 1,000 tokens per minute; retry in 50 s"
    )
    # 900 + 150 - 1000 = 50 tokens must expire: the first request's 200 go at NOON + 60.
    assert verdict.retry_after_s == pytest.approx(50)
    clock.now = NOON + 60
    admitted(ledger.admit(["key:alice"], 150))
    assert ledger.usage("key:alice")["tokens"] == 850


def test_token_retry_waits_for_enough_old_tokens_to_expire() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(tokens_per_minute=100)}, clock)
    for offset in (0, 10, 20):
        clock.now = NOON + offset
        admitted(ledger.admit(["key:alice"], 30))
    clock.now = NOON + 30
    # 90 in the window; 60 more needs 50 to expire: the buckets at 0 and 10 (30 + 30).
    assert refused(ledger.admit(["key:alice"], 60)).retry_after_s == pytest.approx(40)


def test_settling_after_the_minute_is_over_changes_nothing() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(tokens_per_minute=1000)}, clock)
    slow = admitted(ledger.admit(["key:alice"], 100))
    clock.advance(61)
    admitted(ledger.admit(["key:alice"], 100))
    ledger.settle(slow, 5000, None)  # its minute is over: nothing to correct
    assert ledger.usage("key:alice")["tokens"] == 100


def test_a_request_larger_than_the_token_budget_can_never_fit() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(tokens_per_minute=4000)}, clock)
    verdict = refused(ledger.admit(["key:alice"], 5000))
    assert verdict.limit == "tokens_per_minute" and verdict.subject == "key:alice"
    assert verdict.retry_after_s is None
    assert "never fit" in verdict.message and "5,000" in verdict.message
    assert "4,000" in verdict.message
    assert ledger.usage("key:alice")["requests"] == 0
    admitted(ledger.admit(["key:alice"], 4000))  # exactly the budget does fit


def test_team_and_key_both_apply_and_the_first_failing_is_reported() -> None:
    clock = FakeClock()
    ledger = BudgetLedger(
        {
            "team:finance": Budget(requests_per_minute=3),
            "key:alice": Budget(requests_per_minute=2),
            "key:bob": Budget(requests_per_minute=10),
        },
        clock,
    )
    admitted(ledger.admit(["key:alice", "team:finance"], 0))
    admitted(ledger.admit(["key:alice", "team:finance"], 0))
    verdict = refused(ledger.admit(["key:alice", "team:finance"], 0))
    assert verdict.subject == "key:alice"  # the key's own cap, although the team has room
    admitted(ledger.admit(["key:bob", "team:finance"], 0))
    verdict = refused(ledger.admit(["key:bob", "team:finance"], 0))
    assert verdict.subject == "team:finance"  # bob has room; the team has none
    assert verdict.message.startswith("team 'finance' is over its budget of 3 requests")
    # Both full: the order given decides which one is reported.
    assert refused(ledger.admit(["team:finance", "key:alice"], 0)).subject == "team:finance"
    assert refused(ledger.admit(["key:alice", "team:finance"], 0)).subject == "key:alice"


def test_within_a_subject_requests_come_before_tokens_before_dollars() -> None:
    clock = FakeClock()
    budget = Budget(requests_per_minute=2, tokens_per_minute=10, usd_per_day=1, usd_per_month=1)
    ledger = BudgetLedger({"key:alice": budget}, clock)
    admitted(ledger.admit(["key:alice"], 0))
    clock.now = NOON + 30
    admitted(ledger.admit(["key:alice"], 10))
    ledger.seed_spend("key:alice", 5.0, 5.0)
    assert refused(ledger.admit(["key:alice"], 1)).limit == "requests_per_minute"
    clock.now = NOON + 60  # one request has left the minute, its tokens have not
    assert refused(ledger.admit(["key:alice"], 1)).limit == "tokens_per_minute"
    assert refused(ledger.admit(["key:alice"], 0)).limit == "usd_per_day"
    ledger.seed_spend("key:alice", 0.0, 5.0)
    assert refused(ledger.admit(["key:alice"], 0)).limit == "usd_per_month"
    assert ledger.usage("key:alice")["requests"] == 1


def test_a_refusal_counts_nothing_anywhere() -> None:
    clock = FakeClock()
    ledger = BudgetLedger(
        {
            "key:alice": Budget(requests_per_minute=10, tokens_per_minute=1000),
            "team:finance": Budget(tokens_per_minute=100),
        },
        clock,
    )
    verdict = refused(ledger.admit(["key:alice", "team:finance"], 500))
    assert verdict.subject == "team:finance"
    assert ledger.usage("key:alice") == {
        "requests": 0.0,
        "tokens": 0.0,
        "usd_today": 0.0,
        "usd_this_month": 0.0,
    }
    assert ledger.usage("team:finance")["tokens"] == 0
    for _ in range(10):  # the refused request did not use one of alice's ten
        admitted(ledger.admit(["key:alice", "team:finance"], 10))
    assert refused(ledger.admit(["key:alice"], 0)).subject == "key:alice"


def test_usd_per_day_refuses_at_the_limit_and_rolls_over_at_utc_midnight() -> None:
    clock = FakeClock(at(2024, 3, 13, 22, 0))
    ledger = BudgetLedger({"team:finance": Budget(usd_per_day=10.0)}, clock)
    ledger.settle(admitted(ledger.admit(["team:finance"], 0)), 100, 6.0)
    ledger.settle(admitted(ledger.admit(["team:finance"], 0)), 100, 6.0)  # crosses: allowed
    assert ledger.usage("team:finance")["usd_today"] == pytest.approx(12.0)
    clock.now = at(2024, 3, 13, 23, 59, 30)
    verdict = refused(ledger.admit(["team:finance"], 0))
    assert verdict.limit == "usd_per_day" and verdict.subject == "team:finance"
    assert verdict.retry_after_s == pytest.approx(30)
    assert verdict.message == (
        "team 'finance' is over its budget of $10.00 per day (UTC); retry in 30 s"
    )
    clock.now = at(2024, 3, 14, 0, 0)
    admitted(ledger.admit(["team:finance"], 0))
    assert ledger.usage("team:finance")["usd_today"] == 0
    assert ledger.usage("team:finance")["usd_this_month"] == pytest.approx(12.0)


def test_usd_exactly_at_the_limit_is_refused() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(usd_per_day=1.0)}, clock)
    ledger.settle(admitted(ledger.admit(["key:alice"], 0)), 0, 0.99)
    ledger.settle(admitted(ledger.admit(["key:alice"], 0)), 0, 0.01)
    refused(ledger.admit(["key:alice"], 0))


def test_usd_per_month_lasts_across_days_and_rolls_over_on_the_first() -> None:
    clock = FakeClock(at(2024, 2, 10, 9, 0))
    ledger = BudgetLedger({"team:finance": Budget(usd_per_day=50, usd_per_month=100)}, clock)
    for day in (10, 11, 12, 13):
        clock.now = at(2024, 2, day, 9, 0)
        ledger.settle(admitted(ledger.admit(["team:finance"], 0)), 0, 25.0)
    clock.now = at(2024, 2, 29, 12, 0)  # a leap year: February has 29 days
    verdict = refused(ledger.admit(["team:finance"], 0))
    assert verdict.limit == "usd_per_month"
    assert verdict.retry_after_s == pytest.approx(12 * 3600)
    assert verdict.message == (
        "team 'finance' is over its budget of $100.00 per month (UTC); retry in 12 h"
    )
    clock.now = at(2024, 3, 1, 0, 0)
    admitted(ledger.admit(["team:finance"], 0))
    assert ledger.usage("team:finance")["usd_this_month"] == 0


def test_december_rolls_over_into_january() -> None:
    clock = FakeClock(at(2024, 12, 31, 23, 59, 59))
    ledger = BudgetLedger({"key:alice": Budget(usd_per_day=5, usd_per_month=5)}, clock)
    ledger.settle(admitted(ledger.admit(["key:alice"], 0)), 0, 5.0)
    verdict = refused(ledger.admit(["key:alice"], 0))
    assert verdict.limit == "usd_per_day"
    assert verdict.retry_after_s == pytest.approx(1)
    clock.now = at(2025, 1, 1, 0, 0, 0)
    admitted(ledger.admit(["key:alice"], 0))
    assert ledger.usage("key:alice") == {
        "requests": 2.0,
        "tokens": 0.0,
        "usd_today": 0.0,
        "usd_this_month": 0.0,
    }
    clock.now = at(2024, 12, 31, 23, 0)  # a clock that goes back does not reopen December
    admitted(ledger.admit(["key:alice"], 0))
    assert ledger.usage("key:alice")["usd_this_month"] == 0


def test_month_retry_after_on_december_counts_to_the_new_year() -> None:
    clock = FakeClock(at(2024, 12, 30, 12, 0))
    ledger = BudgetLedger({"key:alice": Budget(usd_per_month=1)}, clock)
    ledger.settle(admitted(ledger.admit(["key:alice"], 0)), 0, 1.5)
    verdict = refused(ledger.admit(["key:alice"], 0))
    assert verdict.retry_after_s == pytest.approx(at(2025, 1, 1) - clock.now)
    assert verdict.message.endswith("retry in 36 h")


def test_seed_spend_counts_and_replaces_the_totals() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"team:finance": Budget(usd_per_day=10, usd_per_month=100)}, clock)
    ledger.seed_spend("team:finance", 9.5, 99.0)
    assert ledger.usage("team:finance")["usd_today"] == 9.5
    ledger.settle(admitted(ledger.admit(["team:finance"], 0)), 0, 1.0)
    assert refused(ledger.admit(["team:finance"], 0)).limit == "usd_per_day"
    ledger.seed_spend("team:finance", 2.0, 100.0)  # re-sync from the audit log
    assert ledger.usage("team:finance")["usd_today"] == 2.0
    assert refused(ledger.admit(["team:finance"], 0)).limit == "usd_per_month"
    ledger.seed_spend("team:nobody", 1.0, 1.0)  # no budget: ignored
    assert ledger.usage("team:nobody")["usd_today"] == 0


def test_seeded_spend_is_for_the_day_of_seeding() -> None:
    clock = FakeClock(at(2024, 3, 13, 23, 0))
    ledger = BudgetLedger({"team:finance": Budget(usd_per_day=10)}, clock)
    ledger.seed_spend("team:finance", 10.0, 10.0)
    refused(ledger.admit(["team:finance"], 0))
    clock.now = at(2024, 3, 14, 0, 0)
    admitted(ledger.admit(["team:finance"], 0))
    assert ledger.usage("team:finance")["usd_this_month"] == 10.0


def test_unknown_cost_counts_no_dollars_but_settles_the_tokens() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget(tokens_per_minute=1000, usd_per_day=1)}, clock)
    admission = admitted(ledger.admit(["key:alice"], 500))
    ledger.settle(admission, 100, None)
    assert ledger.usage("key:alice") == {
        "requests": 1.0,
        "tokens": 100.0,
        "usd_today": 0.0,
        "usd_this_month": 0.0,
    }


def test_subjects_without_a_budget_are_unlimited() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:tracked": Budget()}, clock)
    for _ in range(1000):
        admission = admitted(ledger.admit(["key:free", "key:tracked", "team:none"], 10**6))
        ledger.settle(admission, 10**6, 1000.0)
    assert admission.subjects == ("key:free", "key:tracked", "team:none")
    assert ledger.usage("key:free") == {
        "requests": 0.0,
        "tokens": 0.0,
        "usd_today": 0.0,
        "usd_this_month": 0.0,
    }
    assert ledger.usage("key:tracked")["requests"] == 1000
    assert ledger.usage("key:tracked")["usd_today"] == pytest.approx(10**6)
    admitted(ledger.admit([], 5))
    admitted(BudgetLedger({}).admit(["key:x"], 1))  # the default clock works too


def test_a_subject_named_twice_is_charged_once() -> None:
    ledger = BudgetLedger({"key:alice": Budget(requests_per_minute=2)}, FakeClock())
    admission = admitted(ledger.admit(["key:alice", "key:alice"], 0))
    assert admission.subjects == ("key:alice",)
    admitted(ledger.admit(["key:alice"], 0))


def test_the_window_stays_small_under_steady_traffic() -> None:
    clock = FakeClock()
    ledger = BudgetLedger({"key:alice": Budget()}, clock)
    for _ in range(10_000):
        clock.advance(0.25)
        ledger.admit(["key:alice"], 1)
    window = ledger._subjects["key:alice"].window
    assert len(window.buckets) <= 61
    assert window.requests == sum(b.requests for b in window.buckets)
    assert 240 <= window.requests <= 244  # 60 to 61 s of four a second


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize("value", [0, -5])
def test_zero_or_negative_minute_limits_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"^team:finance: {field} must be more than 0"):
        BudgetLedger({"team:finance": Budget(**{field: value})})


@pytest.mark.parametrize("field", ["usd_per_day", "usd_per_month"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_zero_negative_or_nan_dollar_limits_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^key:alice: {field} must be more than 0"):
        BudgetLedger({"key:alice": Budget(**{field: value})})  # type: ignore[arg-type]


def test_other_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="requests_per_minute must be a whole number"):
        BudgetLedger({"key:alice": Budget(requests_per_minute=1.5)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key:alice: the budget must be a Budget"):
        BudgetLedger({"key:alice": {"requests_per_minute": 1}})  # type: ignore[dict-item]
    ledger = BudgetLedger({"key:alice": Budget(usd_per_day=1)}, FakeClock())
    with pytest.raises(ValueError, match="estimated_tokens"):
        ledger.admit(["key:alice"], -1)
    with pytest.raises(TypeError):
        ledger.admit("key:alice", 1)
    admission = admitted(ledger.admit(["key:alice"], 1))
    for tokens, usd in ((-1, 0.0), (1, -0.5), (1, float("nan")), (1, float("inf"))):
        with pytest.raises(ValueError):
            ledger.settle(admission, tokens, usd)
    with pytest.raises(ValueError, match="key:alice: usd_today"):
        ledger.seed_spend("key:alice", -1.0, 0.0)
    assert ledger.usage("key:alice")["usd_today"] == 0  # nothing half-applied
