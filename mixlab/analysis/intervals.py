"""Scores' 95% intervals and how a score reads beside one."""

from __future__ import annotations

import math

from mixlab.errors import MixlabError

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


PROPORTION_METRICS = frozenset({"accuracy", "acc", "exact_match", "em"})  # a fraction of n examples right


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion: (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
    Unlike p̂ ± z·√(p̂(1−p̂)/n) it stays inside [0, 1] and is not empty at 0 or n successes."""
    if n <= 0:
        raise MixlabError(f"a proportion needs n > 0 examples, got n={n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def score_interval(score: float, n: int | None, metric: str | None) -> tuple[float, float] | None:
    """A cached score's 95% interval from its mean and n alone: Wilson's for a proportion (a metric in
    :data:`PROPORTION_METRICS` whose score·n is a whole number of examples), else None — a loss's
    interval needs its per-example spread, which the cache does not keep."""
    if metric not in PROPORTION_METRICS or n is None or not n > 0 or not 0 <= score <= 1:  # NaN n: not > 0
        return None
    k = score * n
    if abs(k - round(k)) > 1e-6 * n:
        return None  # not k of n examples (a plugin's averaged score): no binomial interval
    return wilson_interval(round(k), int(n))


def difference_interval(
    a: float, a_low: float, a_high: float, b: float, b_low: float, b_high: float
) -> tuple[float, float, float]:
    """a − b with its 95% interval from each score's own interval (MOVER: Newcombe 1998's method 10 for two
    Wilson intervals; for two normal intervals it is d ± z·√(se_a² + se_b²)). It treats a and b as
    independent samples: two models scored on the same examples are positively correlated, so for them the
    interval is conservative (wider than a paired one)."""
    d = a - b
    low = d - math.sqrt((a - a_low) ** 2 + (b_high - b) ** 2)
    high = d + math.sqrt((a_high - a) ** 2 + (b - b_low) ** 2)
    return d, low, high


def format_score(score: float | None, low: float | None = None, high: float | None = None, digits: int = 3) -> str:
    """How a score reads beside its interval, everywhere: "0.510 [0.441, 0.578]"; "—" for no score."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "—"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{score:.{digits}f}"
    return f"{score:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
