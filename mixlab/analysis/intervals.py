"""Scores' 95% intervals and how a score reads beside one: Wilson's for an accuracy from its n alone; a
percentile bootstrap over the examples for a loss and for a mean over benchmarks, from per-example values
(:mod:`mixlab.values`); and the difference of two models, paired over shared examples where both have
per-example values, else from the two intervals (MOVER)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import MixlabError
from mixlab.values import ExampleValues

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


# --- from per-example values (mixlab.values): bootstrap intervals and paired differences ---------------------
N_BOOT = 2000  # bootstrap resamples: the percentile interval's ends move by well under 1% of its width between seeds
BOOT_SEED = 0  # a fixed seed: a page, the CLI and a test show the same interval for the same values


@functools.lru_cache(maxsize=16)
def resample_counts(n: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """(n_boot, n) how often each of n examples is drawn in each bootstrap resample (n draws with
    replacement, seeded): the resample's sum of any per-example column is ``counts @ column``. Read-only and
    kept, since every score of the same n shares them."""
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n) example indices
    rows = np.arange(n_boot)[:, None] * n
    counts = np.bincount((draws + rows).ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _ratios(values: Sequence[ExampleValues], counts: np.ndarray) -> np.ndarray:
    """(R, n_boot) each of R same-length scores Σv/Σw recomputed on every resample of ``counts``."""
    v = np.stack([x.values for x in values]).astype(np.float64)  # (R, n)
    out = v @ counts.T
    # every resample draws n examples (each row of counts sums to n), so an unweighted score's denominator is
    # n itself: only the weighted rows (a loss's token counts) take a second product
    weighted = np.array([x.weights is not None for x in values])
    out[~weighted] /= counts.shape[1]
    if weighted.any():
        w = np.stack([x.weights for x in values if x.weights is not None]).astype(np.float64)
        out[weighted] /= w @ counts.T
    return out


def _percentiles(boots: np.ndarray, level: float = 0.95) -> np.ndarray:
    alpha = (1 - level) / 2
    return np.quantile(boots, [alpha, 1 - alpha], axis=-1).T  # (…, 2)


def bootstrap_intervals(values: Sequence[ExampleValues], n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """(R, 2) the percentile bootstrap 95% interval of each score Σv/Σw (a loss: summed NLL over tokens, so
    the resample keeps each example's tokens together), resampling its examples. Scores with the same n
    share one seeded set of resamples, so thousands of them take one matrix product."""
    out = np.full((len(values), 2), np.nan)
    by_n: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        by_n.setdefault(v.n, []).append(i)
    for n, rows in by_n.items():
        out[rows] = _percentiles(_ratios([values[i] for i in rows], resample_counts(n, n_boot, seed)))
    return out


def mean_bootstrap_intervals(
    models: Sequence[Sequence[ExampleValues]], n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> np.ndarray:
    """(R, 2) the percentile bootstrap 95% interval of each model's mean over benchmarks (``models[r][b]``:
    model r's values on benchmark b, the same benchmarks in the same order for every model), each
    benchmark's examples resampled on their own (a stratified bootstrap: the benchmarks are fixed, their
    examples are the sample; benchmark b's resamples are seeded ``seed + b``)."""
    if not models:
        return np.empty((0, 2))
    boots = np.zeros((len(models), n_boot))
    for b in range(len(models[0])):
        by_n: dict[int, list[int]] = {}
        for r, m in enumerate(models):
            by_n.setdefault(m[b].n, []).append(r)
        for n, rows in by_n.items():
            boots[rows] += _ratios([models[r][b] for r in rows], resample_counts(n, n_boot, seed + b))
    return _percentiles(boots / len(models[0]))


def mean_bootstrap_interval(
    per_benchmark: Sequence[ExampleValues], n_boot: int = N_BOOT, seed: int = BOOT_SEED
) -> tuple[float, float]:
    """One model's :func:`mean_bootstrap_intervals`."""
    low, high = mean_bootstrap_intervals([per_benchmark], n_boot, seed)[0]
    return float(low), float(high)


@dataclass(frozen=True)
class PairedDifference:
    """a − b of two models scored on the same examples, with its 95% interval and how it was made."""

    difference: float
    low: float
    high: float
    n: int  # shared examples
    method: str  # "paired bootstrap" (resampling the shared examples), or how the fallback was made
    p_value: float | None = None  # exact McNemar test (two accuracies), else None
    discordant: tuple[int, int] | None = None  # (a right & b wrong, a wrong & b right), for McNemar


Shared = ExampleValues | tuple[ExampleValues, ...]  # one benchmark's values, or a mean's: one per benchmark


def pairable(a: Shared | None, b: Shared | None) -> bool:
    """Whether two scores' per-example values can be paired: both kept, over as many benchmarks, each with as
    many examples (the same benchmark data: a lab's scores of one benchmark share its examples)."""
    if a is None or b is None:
        return False
    a, b = _parts(a), _parts(b)
    return len(a) == len(b) and all(x.n == y.n for x, y in zip(a, b))


def _parts(v: Shared) -> tuple[ExampleValues, ...]:
    return (v,) if isinstance(v, ExampleValues) else tuple(v)


def paired_difference(
    a: Shared,
    b: Shared,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    coefficients: Sequence[float] | None = None,
) -> PairedDifference:
    """a − b over the same examples (same benchmark data, same order) with a paired percentile bootstrap
    95% interval: each resample draws examples and recomputes both scores on them, so what the two models
    share (the examples' difficulty) cancels — narrower than the independent :func:`difference_interval`
    when they agree on which examples are hard. For a mean over benchmarks (a tuple of values, one per
    benchmark, as :func:`mixlab.analysis.with_mean` keeps them) each benchmark's examples are resampled on their
    own, as :func:`mean_bootstrap_intervals` does. For two accuracies on one benchmark (0/1 values, unweighted)
    also the exact McNemar test: a two-sided binomial test of the discordant examples at 1/2.
    ``coefficients`` (one per benchmark; default 1/B each, the mean): the difference of Σ c_b·score_b instead,
    as a search objective weighs its benchmarks (a negative c: a loss, lower is better)."""
    if not pairable(a, b):
        sizes = [[x.n for x in _parts(v)] for v in (a, b)]
        raise MixlabError(f"a paired difference needs the same examples: {sizes[0]} values against {sizes[1]}")
    pa, pb = _parts(a), _parts(b)
    c = [1.0 / len(pa)] * len(pa) if coefficients is None else [float(x) for x in coefficients]
    if len(c) != len(pa):
        raise MixlabError(f"a paired difference over {len(pa)} benchmarks needs {len(pa)} coefficients, got {len(c)}")
    boots = np.zeros(n_boot)
    for i, (x, y) in enumerate(zip(pa, pb)):
        counts = resample_counts(x.n, n_boot, seed + i)
        boots += c[i] * (_ratios([x], counts)[0] - _ratios([y], counts)[0])
    low, high = _percentiles(boots)
    d = math.fsum(ci * (x.score() - y.score()) for ci, x, y in zip(c, pa, pb))
    p, disc = None, None
    binary = len(pa) == 1 and all(v.weights is None and np.isin(v.values, (0.0, 1.0)).all() for v in (pa[0], pb[0]))
    if binary:
        ab = int(np.sum((pa[0].values == 1) & (pb[0].values == 0)))
        ba = int(np.sum((pa[0].values == 0) & (pb[0].values == 1)))
        disc = (ab, ba)
        # the exact two-sided binomial test at 1/2 (what scipy.stats.binomtest gives; a test checks), in exact
        # integers: the Merge page draws this at first paint, where importing scipy.stats costs seconds
        m = ab + ba
        p = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(ab, ba) + 1)) / 2**m)
    return PairedDifference(d, float(low), float(high), sum(x.n for x in pa), "paired bootstrap", p, disc)
