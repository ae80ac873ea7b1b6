"""Statistics for comparing two models on the same questions.

Everything here is numpy only and deterministic given ``seed``: the same inputs and seed
always give the same numbers, so a report can be regenerated exactly.

Why these methods:

* **Percentile bootstrap** for the mean of a per-question score. Scores are often bounded,
  skewed or two-valued (exact match is 0/1), so a normal-theory interval can spill outside
  [0, 1] or be badly centred on small sets. Resampling the questions makes no
  distributional assumption, and the percentile interval always stays inside the range of
  attainable means.
* **Paired analysis** when both models answered the same questions. Per-question
  difficulty is shared by both models; differencing within each question removes it, so a
  paired interval is much narrower than comparing two independent intervals (which is
  conservative and often misleads by overlapping when the difference is real).
* **Sign-flip permutation test** for the p-value. Under the null hypothesis that the two
  models are exchangeable on each question, every difference is as likely to be ``+d`` as
  ``-d``; flipping signs enumerates that null exactly. It is exact for small ``n`` (full
  enumeration up to 16 pairs) and needs no normality assumption. For larger ``n`` a Monte
  Carlo estimate with the ``(count + 1) / (resamples + 1)`` correction keeps the test valid
  (never reports p = 0 from a finite sample).
* **Bradley-Terry fitted by MM** (Hunter 2004, "MM algorithms for generalized
  Bradley-Terry models") for pairwise preferences among several models. The MM update is a
  closed form that increases the likelihood at every step and needs no step size or
  Hessian. A weak prior (one virtual tie against an opponent of strength 1 per player)
  keeps an undefeated or winless player finite, which plain maximum likelihood does not.
  Scores are reported on an Elo-like scale (400 points = 10x odds, mean 1000).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Interval",
    "PairedTest",
    "bootstrap_mean",
    "bradley_terry",
    "bradley_terry_intervals",
    "paired_difference",
    "percentiles",
    "win_rate",
]

FloatArray = NDArray[np.float64]

# Elements (rows x columns) per chunk of resampling work, bounding memory on large inputs.
_CHUNK_ELEMENTS = 1 << 20
# Full enumeration of sign flips up to this many pairs (2**16 = 65,536 patterns).
_EXACT_MAX_N = 16
# Bradley-Terry prior: each player gets one virtual tie (this many wins, as many losses)
# against a virtual opponent of strength 1.
_BT_PRIOR_WINS = 0.5
_BT_TOLERANCE = 1e-10
_BT_MAX_ITER = 100_000
_OUTCOMES = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; ``n`` is the number of observations."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict, ready for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """Mean of ``a - b`` over complete pairs, its interval and a two-sided p-value."""

    mean_difference: float
    low: float
    high: float
    p_value: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict, ready for JSON."""
        return asdict(self)


def _as_array(values: Iterable[float | None]) -> FloatArray:
    """Values as a float array, ``None`` as NaN."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _clean(values: Iterable[float | None]) -> FloatArray:
    """Values as a float array with ``None`` and NaN dropped."""
    x = _as_array(values)
    return x[~np.isnan(x)]


def _check_options(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _bootstrap_means(x: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    """Means of ``resamples`` resamples of ``x`` with replacement, computed in chunks."""
    n = len(x)
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def _percentile_interval(x: FloatArray, resamples: int, confidence: float, seed: int) -> Interval:
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)
    means = _bootstrap_means(x, resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    # Resampled means of a constant sample can differ from it in the last bit; clamp that.
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), n)


def bootstrap_mean(
    values: Iterable[float | None],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of ``values`` with a percentile-bootstrap interval; ``None``/NaN are dropped.

    No values gives an all-NaN interval with ``n=0``; one value gives ``low == high == mean``.
    """
    _check_options(resamples, confidence)
    return _percentile_interval(_clean(values), resamples, confidence, seed)


def _sign_flip_p_value(d: FloatArray, resamples: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of the paired sign-flip permutation test on differences ``d``."""
    n = len(d)
    observed = abs(float(d.sum()))
    # Sums of the same numbers in another order can differ in the last bits; a pattern
    # whose statistic ties the observed one must still count as at least as extreme.
    tol = 1e-9 * float(np.abs(d).sum())  # relative, so tiny-scale data is unaffected
    if n <= _EXACT_MAX_N:
        patterns = np.arange(2**n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((patterns >> np.arange(n, dtype=np.int64)) & 1)
        stats = np.abs(signs @ d)
        return float(np.count_nonzero(stats >= observed - tol)) / float(2**n)
    rows = max(1, _CHUNK_ELEMENTS // n)
    count = 0
    for start in range(0, resamples, rows):
        size = min(resamples, start + rows) - start
        flips = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        count += int(np.count_nonzero(np.abs(flips @ d) >= observed - tol))
    return (count + 1) / (resamples + 1)


def paired_difference(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Compare ``a`` and ``b`` question by question (``a[i]`` and ``b[i]`` are paired).

    Uses pairs where both values are present. The interval is a paired percentile bootstrap
    of the mean of ``a - b``; the p-value is a two-sided sign-flip permutation test (exact
    for up to 16 pairs, otherwise ``resamples`` random flips).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    _check_options(resamples, confidence)
    x, y = _as_array(a), _as_array(b)
    present = ~(np.isnan(x) | np.isnan(y))
    d = x[present] - y[present]
    n = len(d)
    if n == 0:
        return PairedTest(math.nan, math.nan, math.nan, math.nan, 0)
    interval = _percentile_interval(d, resamples, confidence, seed)
    # An independent stream for the permutation test, still determined by ``seed``.
    p_value = _sign_flip_p_value(d, resamples, np.random.default_rng([seed, 1]))
    return PairedTest(interval.mean, interval.low, interval.high, p_value, n)


def win_rate(
    outcomes: Iterable[float | None],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Share of A's wins over B (a tie counts half), with a bootstrap interval.

    Each outcome is 1 (A wins), 0.5 (tie) or 0 (B wins); ``None``/NaN are dropped.
    """
    x = _clean(outcomes)
    bad = sorted({float(v) for v in x if float(v) not in _OUTCOMES})
    if bad:
        raise ValueError(f"outcomes must be 1, 0.5 or 0, got {bad[:5]}")
    _check_options(resamples, confidence)
    return _percentile_interval(x, resamples, confidence, seed)


def _bt_tally(
    comparisons: Iterable[tuple[str, str, float]],
) -> tuple[list[str], NDArray[np.int64], NDArray[np.int64], FloatArray]:
    """Validate comparisons; return players (sorted), their indices and A's scores."""
    rows: list[tuple[str, str, float]] = []
    for player_a, player_b, score_a in comparisons:
        if player_a == player_b:
            raise ValueError(f"a player cannot be compared with itself: {player_a!r}")
        score = float(score_a)
        if score not in _OUTCOMES:
            raise ValueError(f"score_a must be 1, 0.5 or 0, got {score_a!r}")
        rows.append((player_a, player_b, score))
    players = sorted({p for a, b, _ in rows for p in (a, b)})
    index = {player: i for i, player in enumerate(players)}
    ia = np.array([index[a] for a, _, _ in rows], dtype=np.int64)
    ib = np.array([index[b] for _, b, _ in rows], dtype=np.int64)
    return players, ia, ib, np.array([s for _, _, s in rows], dtype=np.float64)


def _bt_fit(
    k: int, ia: NDArray[np.int64], ib: NDArray[np.int64], s: FloatArray, weights: FloatArray
) -> FloatArray:
    """Bradley-Terry ratings for ``weights.shape[0]`` weightings of the same comparisons.

    ``weights[r, c]`` is how many times comparison ``c`` counts in fit ``r`` (1 for the plain
    fit, bootstrap counts for resamples). All fits iterate together, vectorised over ``r``.
    """
    r = weights.shape[0]
    wins = np.full((r, k), _BT_PRIOR_WINS)
    games = np.zeros((r, k * k))
    pair_ab, pair_ba = ia * k + ib, ib * k + ia
    for row in range(r):
        w = weights[row]
        wins[row] += np.bincount(ia, weights=w * s, minlength=k)
        wins[row] += np.bincount(ib, weights=w * (1.0 - s), minlength=k)
        games[row] += np.bincount(pair_ab, weights=w, minlength=k * k)
        games[row] += np.bincount(pair_ba, weights=w, minlength=k * k)
    n_ij = games.reshape(r, k, k)
    prior_games = 2.0 * _BT_PRIOR_WINS
    p = np.ones((r, k))
    for _ in range(_BT_MAX_ITER):
        # Hunter (2004), eq. (3): p_i <- W_i / sum_j n_ij / (p_i + p_j), plus the prior games.
        denom = (n_ij / (p[:, :, None] + p[:, None, :])).sum(axis=2) + prior_games / (p + 1.0)
        new = wins / denom
        change = float(np.max(np.abs(np.log(new) - np.log(p))))
        p = new
        if change < _BT_TOLERANCE:
            break
    log_p = np.log10(p)
    log_p -= log_p.mean(axis=1, keepdims=True)  # geometric mean of strengths = 1
    ratings: FloatArray = 400.0 * log_p + 1000.0
    return ratings


def bradley_terry(comparisons: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Bradley-Terry ratings from ``(player_a, player_b, score_a)`` comparisons.

    ``score_a`` is 1 (A won), 0.5 (tie: half a win each) or 0 (B won). Strengths are fitted
    by MM with one virtual tie per player against an opponent of strength 1, normalised to a
    geometric mean of 1, and returned as ``400 * log10(strength) + 1000``: a 400-point gap
    means 10:1 odds, and the average rating is 1000.
    """
    players, ia, ib, s = _bt_tally(comparisons)
    if not players:
        return {}
    fitted = _bt_fit(len(players), ia, ib, s, np.ones((1, len(s))))[0]
    return {player: float(score) for player, score in zip(players, fitted, strict=True)}


def bradley_terry_intervals(
    comparisons: Iterable[tuple[str, str, float]],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """:func:`bradley_terry` ratings with percentile-bootstrap intervals over comparisons.

    Each resample draws the comparisons with replacement and refits every player (one
    missing from a resample keeps only its prior). ``mean`` is the fit on all comparisons and
    ``n`` the number of comparisons the player took part in.
    """
    _check_options(resamples, confidence)
    players, ia, ib, s = _bt_tally(comparisons)
    if not players:
        return {}
    k, m = len(players), len(s)
    point = _bt_fit(k, ia, ib, s, np.ones((1, m)))[0]
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // max(k * k, m))
    boot = np.empty((resamples, k))
    for start in range(0, resamples, rows):
        size = min(resamples, start + rows) - start
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=size).astype(np.float64)
        boot[start : start + size] = _bt_fit(k, ia, ib, s, weights)
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    played = np.bincount(ia, minlength=k) + np.bincount(ib, minlength=k)
    return {
        player: Interval(float(point[i]), float(low[i]), float(high[i]), int(played[i]))
        for i, player in enumerate(players)
    }


def percentiles(
    values: Iterable[float | None], qs: Sequence[float] = (50, 95, 99)
) -> dict[str, float]:
    """Percentiles of ``values`` (linear interpolation), keyed ``"p50"``, ``"p99.9"``, ...

    ``None``/NaN are dropped; no values gives NaN for every key.
    """
    for q in qs:
        if not 0.0 <= float(q) <= 100.0:
            raise ValueError(f"percentiles must be between 0 and 100, got {q}")
    keys = [f"p{float(q):g}" for q in qs]
    x = _clean(values)
    if len(x) == 0:
        return dict.fromkeys(keys, math.nan)
    result = np.percentile(x, [float(q) for q in qs], method="linear")
    return {key: float(v) for key, v in zip(keys, result, strict=True)}
