"""Rank correlations of proxy and true scores with bootstrap CIs, and how many mixtures a CI needs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mixlab.analysis.intervals import Z95
from mixlab.errors import MixlabError

MIN_RANK_N = 8  # fewer paired mixtures than this: ρ's CI spans most of [−1, 1]


def spearman_ci_width(rho: float, n: int, z: float = Z95) -> float:
    """The width of Spearman ρ's approximate 95% CI with n pairs: Fisher's z with Bonett & Wright's
    (2000) variance (1 + ρ²/2)/(n − 3), back through tanh."""
    if n <= 3:
        return 2.0
    rho = min(max(rho, -0.999), 0.999)
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    centre = math.atanh(rho)
    return math.tanh(centre + z * se) - math.tanh(centre - z * se)


def mixtures_needed(width: float, rho: float = 0.5, most: int = 100_000) -> int:
    """The fewest paired mixtures whose ρ CI (:func:`spearman_ci_width`) is at most ``width`` wide at ``rho``."""
    if not 0 < width < 2:
        raise MixlabError(f"a CI width must be in (0, 2), got {width}")
    n = 4
    while spearman_ci_width(rho, n) > width and n < most:
        n += 1
    return n


def rank_warning(n: int, width: float = 0.5, rho: float = 0.5) -> str | None:
    """A warning when n paired mixtures are too few to rank (n < :data:`MIN_RANK_N`), saying about how many
    give a 95% CI ``width`` wide for a proxy whose ρ is near ``rho`` (a planning value: a ρ measured on so
    few mixtures is itself too noisy to plan with). None when n is enough."""
    if n >= MIN_RANK_N:
        return None
    now = "ρ is undefined" if n < 3 else f"ρ's 95% CI is about {spearman_ci_width(rho, n):.1f} wide at ρ ≈ {rho:.1f}"
    return (
        f"Only {n} true mixture{'s' if n != 1 else ''} to rank: {now}. About {mixtures_needed(width, rho)} give a CI "
        f"{width} wide for a proxy with ρ ≈ {rho:.1f}; train more mixtures before trusting a ranking."
    )


@dataclass(frozen=True)
class Correlation:
    method: str
    value: float | None  # None: undefined (n < 3 or a constant side)
    low: float | None
    high: float | None
    n: int


def rank_correlation(
    proxy: Sequence[float],
    true: Sequence[float],
    method: str = "spearman",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Correlation:
    """Rank correlation of proxy and true scores over the same mixtures, with a bootstrap CI."""
    if method not in ("spearman", "kendall"):
        raise MixlabError(f"unknown rank correlation {method!r}; use spearman or kendall")
    x, y = np.asarray(proxy, dtype=float), np.asarray(true, dtype=float)
    if x.shape != y.shape:
        raise MixlabError(f"proxy and true scores differ in length: {len(x)} vs {len(y)}")
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(method, None, None, None, n)
    value = float(bootstrap_statistics(method, x[None], y[None])[0])
    if n_boot == 0:
        return Correlation(method, value, None, None, n)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = bootstrap_statistics(method, x[idx], y[idx])
    boots = boots[np.isfinite(boots)]  # resamples with a constant side have no correlation
    alpha = (1 - level) / 2
    low, high = np.quantile(boots, [alpha, 1 - alpha]) if len(boots) else (np.nan, np.nan)
    return Correlation(method, value, float(low), float(high), n)


def bootstrap_statistics(method: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman ρ or Kendall τ-b of every row pair of ``xs``/``ys`` (B, n) at once (NaN where undefined);
    row by row these equal scipy's spearmanr/kendalltau (a test checks it)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "spearman":
            # average ranks for ties, as scipy.stats.rankdata (pandas: no scipy.stats import on a page)
            rx = pd.DataFrame(xs).rank(axis=1, method="average").to_numpy()
            ry = pd.DataFrame(ys).rank(axis=1, method="average").to_numpy()
            rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
            return (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
        # τ-b = Σ_{i<j} sgn(Δx)·sgn(Δy) / √(Σ|sgn Δx| · Σ|sgn Δy|)
        i, j = np.triu_indices(xs.shape[1], 1)
        sx = np.sign(xs[:, i] - xs[:, j]).astype(np.int8)  # (B, n(n−1)/2)
        sy = np.sign(ys[:, i] - ys[:, j]).astype(np.int8)
        concordance = np.einsum("bp,bp->b", sx, sy, dtype=np.int64)
        return concordance / np.sqrt(np.abs(sx).sum(1, dtype=np.int64) * np.abs(sy).sum(1, dtype=np.int64))


def pairwise_accuracy(proxy: Sequence[float], true: Sequence[float]) -> float | None:
    """The fraction of mixture pairs the proxy orders like the true scores (pairs tied under the true
    scores are left out; a pair the proxy ties counts half). None with no untied pair."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(true, dtype=float)
    i, j = np.triu_indices(len(x), 1)
    dy = np.sign(y[i] - y[j])
    keep = dy != 0
    if not keep.any():
        return None
    agree = np.sign(x[i] - x[j])[keep] * dy[keep]  # 1 same order, −1 reversed, 0 proxy tie
    return float(np.mean((agree + 1) / 2))


def top_quartile_correlation(
    proxy: Sequence[float], true: Sequence[float], higher_is_better: bool = True, n_boot: int = 2000
) -> Correlation:
    """Spearman ρ among the best quarter of mixtures by true score (⌈n/4⌉ of them, as DeMix reports):
    does the proxy still rank the mixtures worth choosing between?"""
    x, y = np.asarray(proxy, dtype=float), np.asarray(true, dtype=float)
    k = math.ceil(len(x) / 4)
    best = np.argsort(-y if higher_is_better else y, kind="stable")[:k]
    return rank_correlation(x[best], y[best], "spearman", n_boot=n_boot)


def mean_of_rhos(
    xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0
) -> Correlation:
    """The mean over benchmarks of Spearman ρ(xs[b], ys[b]), every benchmark over the same n mixtures, with
    a percentile bootstrap CI that resamples the mixtures (the same resample for every benchmark, so their
    dependence is kept). Undefined (None) when fewer than 3 mixtures or any benchmark's ρ is undefined."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)  # (B, n)
    n = x.shape[1] if x.ndim == 2 else 0
    if n < 3 or len(x) == 0:
        return Correlation("spearman", None, None, None, n)
    rhos = [rank_correlation(a, b, n_boot=0).value for a, b in zip(x, y)]
    if any(r is None for r in rhos):
        return Correlation("spearman", None, None, None, n)
    value = float(np.mean(rhos))
    if n_boot == 0:
        return Correlation("spearman", value, None, None, n)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = np.mean([bootstrap_statistics("spearman", a[idx], b[idx]) for a, b in zip(x, y)], axis=0)  # (n_boot,)
    boots = boots[np.isfinite(boots)]
    low, high = np.quantile(boots, [0.025, 0.975]) if len(boots) else (np.nan, np.nan)
    return Correlation("spearman", value, float(low), float(high), n)
