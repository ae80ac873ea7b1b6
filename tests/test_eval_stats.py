from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from llmduet.evals.stats import (
    Interval,
    PairedTest,
    bootstrap_mean,
    bradley_terry,
    bradley_terry_intervals,
    paired_difference,
    percentiles,
    win_rate,
)

# A beats B 7-3, B beats C 7-3, A beats C 8-2 and they tie once: transitive.
TRANSITIVE = (
    [("A", "B", 1.0)] * 7
    + [("A", "B", 0.0)] * 3
    + [("B", "C", 1.0)] * 7
    + [("B", "C", 0.0)] * 3
    + [("A", "C", 1.0)] * 8
    + [("C", "A", 1.0)] * 2
    + [("A", "C", 0.5)]
)


# --- bootstrap_mean --------------------------------------------------------------------


def test_interval_to_dict() -> None:
    assert Interval(0.5, 0.25, 0.75, 4).to_dict() == {
        "mean": 0.5,
        "low": 0.25,
        "high": 0.75,
        "n": 4,
    }


def test_bootstrap_interval_contains_the_mean() -> None:
    values = np.random.default_rng(7).normal(3.0, 2.0, size=40)
    ci = bootstrap_mean(values.tolist())
    assert ci.n == 40
    assert ci.mean == pytest.approx(values.mean())
    assert ci.low < ci.mean < ci.high


def test_bootstrap_known_two_point_case() -> None:
    # Resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles are 0 and 1.
    ci = bootstrap_mean([0.0, 1.0])
    assert (ci.mean, ci.low, ci.high) == (0.5, 0.0, 1.0)


def test_bootstrap_interval_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.normal(size=20).tolist())
    large = bootstrap_mean(rng.normal(size=2000).tolist())
    assert (large.high - large.low) < (small.high - small.low) / 5  # ~ sqrt(100) = 10x


def test_bootstrap_wider_at_higher_confidence() -> None:
    values = np.random.default_rng(2).normal(size=50).tolist()
    narrow = bootstrap_mean(values, confidence=0.8)
    wide = bootstrap_mean(values, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bootstrap_is_deterministic_given_a_seed() -> None:
    values = np.random.default_rng(3).exponential(size=30).tolist()
    assert bootstrap_mean(values, seed=5) == bootstrap_mean(values, seed=5)
    assert bootstrap_mean(values, seed=5) != bootstrap_mean(values, seed=6)


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    trials = 300
    covered = sum(
        ci.low <= 1.0 <= ci.high
        for ci in (
            bootstrap_mean(rng.normal(1.0, 1.0, size=60).tolist(), resamples=2000, seed=i)
            for i in range(trials)
        )
    )
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_drops_missing_values_and_handles_tiny_samples() -> None:
    ci = bootstrap_mean([1.0, None, float("nan"), 0.0, 1.0])
    assert ci.n == 3
    assert ci.mean == pytest.approx(2 / 3)
    empty = bootstrap_mean([None, float("nan")])
    assert empty.n == 0
    assert all(math.isnan(x) for x in (empty.mean, empty.low, empty.high))
    one = bootstrap_mean([0.7])
    assert (one.mean, one.low, one.high, one.n) == (0.7, 0.7, 0.7, 1)
    const = bootstrap_mean([0.1] * 9)
    assert const.low == const.mean == const.high


def test_bootstrap_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, 2.0], resamples=0)


# --- paired_difference -----------------------------------------------------------------


def test_exact_sign_flip_p_value_by_hand() -> None:
    # d = a - b = [1, 2, 3]; the 8 sign patterns give sums 6, 4, 2, 0, 0, -2, -4, -6.
    # |sum| >= 6 for 2 of 8 patterns: p = 0.25.
    result = paired_difference([3.0, 4.0, 5.0], [2.0, 2.0, 2.0])
    assert isinstance(result, PairedTest)
    assert result.n == 3
    assert result.mean_difference == pytest.approx(2.0)
    assert result.p_value == pytest.approx(0.25)
    assert result.low <= 2.0 <= result.high


@pytest.mark.parametrize(
    ("d", "p"),
    [
        ([1.0, 1.0, 2.0], 2 / 8),  # sums 4, 2, 2, 0, 0, -2, -2, -4
        ([1.0, 1.0, 1.0, 1.0, 1.0], 2 / 32),
        ([2.0, -1.0, 1.0], 6 / 8),  # observed 2; sums 4, 2, 2, 0, 0, -2, -2, -4
        ([1.0, -1.0], 1.0),  # observed 0: every pattern is at least as extreme
        ([0.0, 0.0, 0.0], 1.0),
        ([1e-10, 2e-10, 3e-10], 2 / 8),  # the rounding tolerance is relative, not absolute
        ([1e9, 2e9, 3e9], 2 / 8),
    ],
)
def test_exact_p_values(d: list[float], p: float) -> None:
    assert paired_difference(d, [0.0] * len(d)).p_value == pytest.approx(p)


def test_exact_p_value_counts_ties_despite_rounding() -> None:
    # a - b = [0.1, 0.2, -0.3] sums to ~5.6e-17, i.e. zero: p must be exactly 1.
    result = paired_difference([0.1, 0.2, 0.0], [0.0, 0.0, 0.3])
    assert result.p_value == 1.0
    # Observed sum 0.6; the 16 patterns give |sum| in {1.0, 0.8 x3, 0.6 x3, 0.4}, twice
    # each, so 14 of 16 reach 0.6, though some 0.6s differ from it in the last bit.
    d = [0.1, -0.1, 0.7, -0.1]
    assert paired_difference(d, [0.0] * 4).p_value == pytest.approx(14 / 16)
    # Only the identity and its mirror reach the observed sum, computed in another order.
    d = [0.1, 0.3, 0.6, 0.6]
    assert paired_difference(d, [0.0] * 4).p_value == pytest.approx(2 / 16)


def test_monte_carlo_p_value_agrees_with_full_enumeration() -> None:
    rng = np.random.default_rng(4)
    d = rng.normal(0.3, 1.0, size=17)  # 17 > 16: the random-flip branch
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=17)))
    exact = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12)
    estimate = paired_difference(d.tolist(), [0.0] * 17, resamples=20_000).p_value
    assert estimate == pytest.approx(exact, abs=0.015)


def test_monte_carlo_p_value_floor() -> None:
    d = [1.0 + 0.01 * i for i in range(40)]  # every flip but the identity is less extreme
    result = paired_difference(d, [0.0] * 40, resamples=999)
    assert result.p_value == pytest.approx(1 / 1000)


def test_paired_interval_beats_unpaired_when_difficulty_is_shared() -> None:
    rng = np.random.default_rng(5)
    difficulty = rng.normal(0.0, 3.0, size=100)
    a = difficulty + 0.5 + rng.normal(0.0, 0.3, size=100)
    b = difficulty + rng.normal(0.0, 0.3, size=100)
    paired = paired_difference(a.tolist(), b.tolist())
    ci_a = bootstrap_mean(a.tolist())
    assert paired.high - paired.low < (ci_a.high - ci_a.low) / 4
    assert paired.low > 0.0
    assert paired.p_value < 0.001


def test_paired_uses_complete_pairs_only() -> None:
    result = paired_difference([1.0, None, 3.0, 5.0], [0.0, 1.0, float("nan"), 4.0])
    assert result.n == 2
    assert result.mean_difference == pytest.approx(1.0)


def test_paired_difference_is_deterministic_and_validates_lengths() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=30).tolist(), rng.normal(size=30).tolist()
    assert paired_difference(a, b, seed=3) == paired_difference(a, b, seed=3)
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0, 2.0], [1.0])
    empty = paired_difference([None], [1.0])
    assert empty.n == 0
    assert math.isnan(empty.p_value)
    assert set(empty.to_dict()) == {"mean_difference", "low", "high", "p_value", "n"}


# --- win_rate --------------------------------------------------------------------------


def test_win_rate_counts_ties_as_half() -> None:
    ci = win_rate([1, 1, 0.5, 0, None])
    assert ci.n == 4
    assert ci.mean == pytest.approx(0.625)
    assert 0.0 <= ci.low <= ci.mean <= ci.high <= 1.0


def test_win_rate_rejects_other_values() -> None:
    with pytest.raises(ValueError, match=r"1, 0\.5 or 0"):
        win_rate([1, 0.7, 0])


# --- Bradley-Terry ---------------------------------------------------------------------


def test_bt_eight_two() -> None:
    scores = bradley_terry([("A", "B", 1.0)] * 8 + [("A", "B", 0.0)] * 2)
    assert scores["A"] > scores["B"]
    assert (scores["A"] + scores["B"]) / 2 == pytest.approx(1000.0)  # geometric mean 1


def test_bt_transitive_order() -> None:
    scores = bradley_terry(TRANSITIVE)
    assert scores["A"] > scores["B"] > scores["C"]
    assert sum(scores.values()) / 3 == pytest.approx(1000.0)


def test_bt_large_sample_recovers_the_odds() -> None:
    # With 800-200 the prior is negligible: strength ratio 4, i.e. 400*log10(4) points.
    scores = bradley_terry([("A", "B", 1.0)] * 800 + [("A", "B", 0.0)] * 200)
    assert scores["A"] - scores["B"] == pytest.approx(400 * math.log10(4), abs=0.5)


def test_bt_is_the_penalised_maximum_likelihood() -> None:
    # Score equations with one virtual tie per player against an opponent of strength 1:
    # W_i + 0.5 = sum_j n_ij s(t_i - t_j) + s(t_i), s the logistic function. Ratings fix
    # t only up to a shift c; choose c from the summed equation, then every one must hold.
    scores = bradley_terry(TRANSITIVE)
    players = sorted(scores)
    wins = dict.fromkeys(players, 0.0)
    games = {(p, q): 0 for p in players for q in players}
    for a, b, s in TRANSITIVE:
        wins[a] += s
        wins[b] += 1 - s
        games[a, b] += 1
        games[b, a] += 1
    theta = {p: (scores[p] - 1000.0) / 400.0 * math.log(10) for p in players}

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    lo, hi = -10.0, 10.0
    for _ in range(200):
        c = (lo + hi) / 2
        if sum(sig(theta[p] + c) for p in players) > len(players) / 2:
            hi = c
        else:
            lo = c
    for p in players:
        expected = sum(games[p, q] * sig(theta[p] - theta[q]) for q in players if q != p)
        assert wins[p] + 0.5 == pytest.approx(expected + sig(theta[p] + c), abs=1e-6)


def test_bt_ties_count_as_half_a_win() -> None:
    with_ties = bradley_terry([("A", "B", 1.0), ("A", "B", 0.5)] * 2)
    as_wins = bradley_terry([("A", "B", 1.0)] * 3 + [("A", "B", 0.0)])
    assert with_ties["A"] == pytest.approx(as_wins["A"])
    even = bradley_terry([("A", "B", 0.5)] * 5 + [("B", "C", 0.5)] * 5)
    assert all(v == pytest.approx(1000.0) for v in even.values())


def test_bt_undefeated_player_stays_finite_and_order_does_not_matter() -> None:
    scores = bradley_terry([("A", "B", 1.0)] * 20 + [("B", "C", 1.0)] * 20)
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["A"] > scores["B"] > scores["C"]
    swapped = bradley_terry([(b, a, 1 - s) for a, b, s in reversed(TRANSITIVE)])
    original = bradley_terry(TRANSITIVE)
    assert swapped == pytest.approx(original)


def test_bt_validation() -> None:
    assert bradley_terry([]) == {}
    with pytest.raises(ValueError, match="itself"):
        bradley_terry([("A", "A", 1.0)])
    with pytest.raises(ValueError, match=r"1, 0\.5 or 0"):
        bradley_terry([("A", "B", 0.7)])


def test_bt_intervals() -> None:
    point = bradley_terry(TRANSITIVE)
    intervals = bradley_terry_intervals(TRANSITIVE, resamples=300, seed=1)
    assert set(intervals) == {"A", "B", "C"}
    for player, ci in intervals.items():
        assert ci.mean == pytest.approx(point[player])
        assert ci.low < ci.mean < ci.high
    assert (intervals["A"].n, intervals["B"].n, intervals["C"].n) == (21, 20, 21)
    assert intervals == bradley_terry_intervals(TRANSITIVE, resamples=300, seed=1)
    assert intervals != bradley_terry_intervals(TRANSITIVE, resamples=300, seed=2)


def test_bt_intervals_narrow_with_more_comparisons() -> None:
    small = bradley_terry_intervals(TRANSITIVE, resamples=300)
    large = bradley_terry_intervals(TRANSITIVE * 10, resamples=300)
    for player in ("A", "B", "C"):
        assert large[player].high - large[player].low < small[player].high - small[player].low
    assert large["A"].low > large["C"].high  # with enough data A and C separate clearly


# --- percentiles -----------------------------------------------------------------------


def test_percentiles_linear_interpolation() -> None:
    assert percentiles(range(101)) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    result = percentiles([4.0, 1.0, None, 3.0, 2.0])
    assert result["p50"] == pytest.approx(2.5)
    assert result["p95"] == pytest.approx(3.85)  # rank 0.95 * 3 = 2.85 -> 3 + 0.85
    assert percentiles([1.0, 2.0], qs=(0, 99.9, 100)) == pytest.approx(
        {"p0": 1.0, "p99.9": 1.999, "p100": 2.0}
    )


def test_percentiles_empty_and_invalid() -> None:
    empty = percentiles([])
    assert list(empty) == ["p50", "p95", "p99"]
    assert all(math.isnan(v) for v in empty.values())
    with pytest.raises(ValueError):
        percentiles([1.0], qs=(101,))
