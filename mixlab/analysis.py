"""How well proxies rank mixtures, and which mixtures are worth having.

- :func:`rank_correlation`: Spearman ρ or Kendall τ (scipy) with a percentile bootstrap 95% CI over
  resampled mixtures; ``None`` when fewer than 3 pairs make it undefined.
- :func:`regret`: pick the mixture the proxy likes best; its rank under the true scores and how much
  true score it leaves on the table.
- :func:`pareto_front`: the non-dominated rows of a score matrix, each column with its direction.
- :func:`paired`: proxy and true scores of the same mixtures, side by side, from an engine's results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mixlab.errors import MixlabError
from mixlab.simplex import ROUND

MEAN = "mean"  # the pseudo-benchmark averaging the chosen benchmarks


@dataclass(frozen=True)
class Correlation:
    method: str
    value: float | None  # None: undefined (n < 3 or a constant side)
    low: float | None
    high: float | None
    n: int
    p_value: float | None

    def describe(self) -> str:
        if self.value is None:
            return f"{self.method} undefined (n={self.n})"
        return f"{self.method} {self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def _corr(method: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    fn = stats.spearmanr if method == "spearman" else stats.kendalltau
    res = fn(x, y)
    return float(res.statistic), float(res.pvalue)


def rank_correlation(proxy: Sequence[float], true: Sequence[float], method: str = "spearman",
                     n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Correlation:
    """Rank correlation of proxy and true scores over the same mixtures, with a bootstrap CI."""
    if method not in ("spearman", "kendall"):
        raise MixlabError(f"unknown rank correlation {method!r}; use spearman or kendall")
    x, y = np.asarray(proxy, dtype=float), np.asarray(true, dtype=float)
    if x.shape != y.shape:
        raise MixlabError(f"proxy and true scores differ in length: {len(x)} vs {len(y)}")
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(method, None, None, None, n, None)
    value, p = _corr(method, x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for idx in rng.integers(0, n, size=(n_boot, n)):
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
            boots.append(_corr(method, x[idx], y[idx])[0])
    alpha = (1 - level) / 2
    low, high = (np.quantile(boots, [alpha, 1 - alpha]) if boots else (np.nan, np.nan))
    return Correlation(method, value, float(low), float(high), n, p)


@dataclass(frozen=True)
class Regret:
    chosen: int  # index of the proxy's favourite
    true_rank: int  # its rank under the true scores, 1 = best
    regret: float  # best true score − the chosen mixture's true score, in the metric's units (≥ 0)
    n: int


def regret(proxy: Sequence[float], true: Sequence[float], higher_is_better: bool = True) -> Regret:
    x, y = np.asarray(proxy, dtype=float), np.asarray(true, dtype=float)
    if len(x) == 0:
        raise MixlabError("regret needs at least one mixture with both proxy and true scores")
    sign = 1.0 if higher_is_better else -1.0
    chosen = int(np.argmax(sign * x))
    true_rank = 1 + int(np.sum(sign * y > sign * y[chosen]))
    return Regret(chosen, true_rank, float(np.max(sign * y) - sign * y[chosen]), len(x))


def topk_overlap(proxy: Sequence[float], true: Sequence[float], k: int, higher_is_better: bool = True) -> float:
    """|top-k by proxy ∩ top-k by true| / k."""
    sign = 1.0 if higher_is_better else -1.0
    x, y = sign * np.asarray(proxy, dtype=float), sign * np.asarray(true, dtype=float)
    k = min(k, len(x))
    if k == 0:
        return float("nan")
    return len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k


def pareto_front(scores: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``scores`` (N, M)."""
    s = np.asarray(scores, dtype=float) * np.where(np.asarray(higher_is_better), 1.0, -1.0)  # maximise all
    n = len(s)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = np.all(s >= s[i], axis=1) & np.any(s > s[i], axis=1)
        mask[i] = not dominated_by.any()
    return mask


def pareto_points(results: pd.DataFrame, names: Sequence[str], bx: str, by: str) -> pd.DataFrame:
    """Models scored on both benchmarks, one row each: kind, label, x, y, a column per expert, and
    ``proxy_front`` (non-dominated among experts + proxies: what recycling checkpoints by merging can
    reach) and ``true_front`` (among experts + true mixtures)."""
    cols = ["kind", "label", "x", "y", *names, "proxy_front", "true_front"]
    sub = results[results.benchmark.isin([bx, by]) & results.kind.isin(["expert", "proxy", "true", "base"])]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    dirs = [bool(sub[sub.benchmark == b].higher_is_better.iloc[0]) for b in (bx, by)]
    wide = sub.pivot_table(index=["kind", "label"], columns="benchmark", values="score", aggfunc="last").dropna()
    if bx == by or wide.empty:
        return pd.DataFrame(columns=cols)
    wide = wide.reset_index().rename(columns={bx: "x", by: "y"})
    first = sub.drop_duplicates(["kind", "label"]).set_index(["kind", "label"])
    for n in names:
        wide[n] = [first.loc[(k, lab), n] for k, lab in zip(wide.kind, wide.label)]
    for col, family in (("proxy_front", ("expert", "proxy")), ("true_front", ("expert", "true"))):
        member = wide.kind.isin(family).to_numpy()
        front = np.zeros(len(wide), dtype=bool)
        if member.any():
            front[member] = pareto_front(wide.loc[member, ["x", "y"]].to_numpy(), dirs)
        wide[col] = front
    return wide[cols]


def with_mean(results: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """Add rows of the pseudo-benchmark ``mean``: the mean of ``benchmarks`` (which must share a
    direction) for every model scored on all of them."""
    if not benchmarks:
        return results
    sub = results[results.benchmark.isin(benchmarks)]
    directions = set(sub.higher_is_better)
    if len(directions) > 1:
        raise MixlabError(f"cannot average benchmarks of opposite directions: {', '.join(benchmarks)}")
    keys = ["kind", "label", "method", "params_key"]
    sub = sub.assign(params_key=sub["params"].map(repr))
    grouped = sub.groupby(keys, dropna=False)
    rows = []
    for _, g in grouped:
        if set(g.benchmark) >= set(benchmarks):
            row = g.iloc[0].to_dict()
            row.update(benchmark=MEAN, score=float(g[g.benchmark.isin(benchmarks)].score.mean()), metric="mean")
            rows.append(row)
    mean = pd.DataFrame(rows).drop(columns=["params_key"], errors="ignore")
    return pd.concat([results, mean], ignore_index=True) if rows else results


def weights_key(weights: dict | None, names: Sequence[str]) -> tuple | None:
    if weights is None:
        return None
    return tuple(round(float(weights.get(n, 0.0)), ROUND) for n in names)


def paired(results: pd.DataFrame, names: Sequence[str], benchmark: str) -> pd.DataFrame:
    """Proxy and true scores of the same mixtures on one benchmark: columns label, *names, proxy, true."""
    sub = results[results.benchmark == benchmark]
    proxy = {weights_key(w, names): s for w, s in zip(sub[sub.kind == "proxy"].weights, sub[sub.kind == "proxy"].score)}
    rows = []
    for _, t in sub[sub.kind == "true"].iterrows():
        key = weights_key(t.weights, names)
        if key in proxy:
            rows.append({"label": t.label, **dict(zip(names, key)), "proxy": proxy[key], "true": t.score})
    return pd.DataFrame(rows, columns=["label", *names, "proxy", "true"])


def nearest(weights: Sequence[float], candidates: np.ndarray) -> tuple[int, float]:
    """Index of the candidate mixture nearest to ``weights`` (L1), and that distance."""
    d = np.abs(np.asarray(candidates, dtype=float) - np.asarray(weights, dtype=float)).sum(axis=1)
    i = int(np.argmin(d))
    return i, float(d[i])
