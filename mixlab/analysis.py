"""How well proxies rank mixtures, and which mixtures are worth having.

- :func:`rank_correlation`: Spearman ρ or Kendall τ-b with a percentile bootstrap 95% CI over resampled
  mixtures; ``None`` when fewer than 3 pairs make it undefined. Computed with numpy and pandas (equal to
  scipy's spearmanr/kendalltau, which the tests check), so a page draws them without importing scipy.stats.
- :func:`regret`: pick the mixture the proxy likes best; its rank under the true scores and how much
  true score it leaves on the table. Scores equal up to float noise (:func:`same_score`) tie: a pick tied
  for best is "#1 (tied)" with regret 0 (:func:`rank_label`), never #2 on a last-bit difference.
- :func:`pareto_front`: the non-dominated rows of a score matrix, each column with its direction.
- :func:`paired`: proxy and true scores of the same mixtures, side by side, from an engine's results.
- :func:`score_interval`: a score's 95% interval from its n (Wilson for a proportion such as accuracy;
  a mean over benchmarks by the normal approximation, :func:`with_mean`); :func:`rank_warning` when too
  few mixtures are paired to rank them, with :func:`mixtures_needed` for a CI of a given width.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mixlab.errors import MixlabError
from mixlab.simplex import ROUND, Mixture

MEAN = "mean"  # the pseudo-benchmark averaging the higher-is-better benchmarks
RESULT_COLUMNS = (
    "kind",
    "label",
    "benchmark",
    "metric",
    "score",
    "higher_is_better",
    "n",
    "method",
    "params",
    "seconds",
    "device",
    "weights",
)


def results_table(evaluations: Sequence, names: Sequence[str]) -> pd.DataFrame:
    """Evaluations as one tidy table: the :data:`RESULT_COLUMNS`, one weight column per expert, and each
    score's 95% interval ``low``/``high`` (:func:`score_interval`; NaN where there is none)."""
    df = pd.DataFrame([{k: getattr(e, k) for k in RESULT_COLUMNS} for e in evaluations], columns=list(RESULT_COLUMNS))
    df["replicate"] = pd.array([getattr(e, "replicate", None) for e in evaluations], dtype="Int64")  # true rows
    for n in names:
        df[n] = [None if w is None else float(w.get(n, 0.0)) for w in df["weights"]]
    ci = [score_interval(s, n, m) for s, n, m in zip(df.score, df.n, df.metric)]
    df["low"] = [np.nan if c is None else c[0] for c in ci]
    df["high"] = [np.nan if c is None else c[1] for c in ci]
    return df


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


def cached_params(results: pd.DataFrame, method: str) -> dict | None:
    """The parameters of ``method`` that the most cached proxy scores were made with (ties: the first in
    sorted order), or None when it has none: the defaults a page offers, so a first run can be compared."""
    proxy = results[(results.kind == "proxy") & (results.method == method)] if len(results) else results
    if proxy.empty:
        return None
    counts = pd.Series([json.dumps(p, sort_keys=True) for p in proxy.params]).value_counts()
    best = sorted(counts[counts == counts.max()].index)[0]
    return json.loads(best)


def readable(table: pd.DataFrame, digits: int = 3, missing: str = "undefined") -> pd.DataFrame:
    """``table`` for display: numbers rounded to ``digits`` (as text), and every None/NaN written as
    ``missing`` (a table widget prints None, which reads as a bug, not as "undefined")."""
    out = table.copy()
    for c in out.columns:
        col = out[c]
        if col.map(lambda v: v is None or (isinstance(v, float) and math.isnan(v))).any():
            out[c] = [
                missing
                if v is None or (isinstance(v, float) and math.isnan(v))
                else (f"{v:.{digits}f}" if isinstance(v, float) else v)
                for v in col
            ]
        elif pd.api.types.is_float_dtype(col):
            out[c] = col.round(digits)
    return out


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


def mean_benchmarks(benchmarks: Sequence, results: pd.DataFrame) -> list[str]:
    """The benchmarks the pseudo-benchmark ``mean`` averages: every higher-is-better one (by the
    benchmark spec's own direction) that has scores in ``results``."""
    present = set(results.benchmark)
    return [b.name for b in benchmarks if b.higher_is_better and b.name in present]


def with_lab_mean(results: pd.DataFrame, benchmarks: Sequence) -> pd.DataFrame:
    """``results`` plus the ``mean`` rows over :func:`mean_benchmarks`."""
    return with_mean(results, mean_benchmarks(benchmarks, results)) if len(results) else results


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


TIE_RTOL = 1e-9  # scores closer than this (relative to max(1, |score|)) are the same score: float noise


def same_score(a: float, b: float) -> bool:
    """Whether two scores are equal up to float noise: a mean of 0.5 and 0.7 and one of 0.6 and 0.6 differ
    in the last bit (1.1e-16), and ranking on that bit would call a tie a miss."""
    return abs(a - b) <= TIE_RTOL * max(1.0, abs(a), abs(b))


def snap_ties(values: Sequence[float]) -> np.ndarray:
    """``values`` with every run of scores equal up to float noise (:func:`same_score` between sorted
    neighbours) replaced by the run's smallest value, so exact comparisons, ranks and correlations see
    a tie as a tie. Values further apart than noise are unchanged."""
    v = np.asarray(values, dtype=float)
    out = v.copy()
    order = np.argsort(v, kind="stable")
    for prev, cur in zip(order[:-1], order[1:]):
        if same_score(v[prev], v[cur]):
            out[cur] = out[prev]  # the run's smallest value, carried along the run
    return out


def best_index(values: Sequence[float], higher_is_better: bool = True) -> int:
    """Index of the first of the best ``values``, scores equal up to float noise tied (:func:`snap_ties`):
    the one rule by which a pick, a search's winner, a best single checkpoint and a greedy soup's step
    choose, so none of them is decided by summation order."""
    v = snap_ties(values)
    if len(v) == 0:
        raise MixlabError("nothing to choose from: no scores")
    return int(np.argmax(v if higher_is_better else -v))


def at_least(a: float, b: float) -> bool:
    """``a ≥ b`` where scores equal up to float noise (:func:`same_score`) count as equal."""
    return a >= b or same_score(a, b)


def exact_mean(values: Sequence[float]) -> float:
    """The mean of ``values`` summed exactly (``math.fsum``): the same number whatever their order, so two
    models with the same scores in another order have the same mean to the last bit."""
    values = list(values)
    return math.fsum(values) / len(values)


def tie_ranks(values: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Competition ranks (1 = best; tied scores share the best rank of their group, the next rank skips)
    after :func:`snap_ties`: [0.9, 0.9 + 1e-16, 0.5] ranks [1, 1, 3]."""
    v = snap_ties(values) * (1.0 if higher_is_better else -1.0)
    return np.array([1 + int(np.sum(v > x)) for x in v], dtype=int)


def rank_label(rank: int, tied: int, n: int | None = None) -> str:
    """How a rank reads everywhere (pages, CLI, bench): "#1 (tied) of 21", "#3 of 21"."""
    return f"#{rank}" + (" (tied)" if tied else "") + (f" of {n}" if n is not None else "")


@dataclass(frozen=True)
class Regret:
    chosen: int  # index of the proxy's favourite
    true_rank: int  # its rank under the true scores, 1 = best; mixtures tied with it share the rank
    regret: float  # best true score − the chosen mixture's true score, in the metric's units (≥ 0; 0 when tied)
    n: int
    tied: int = 0  # how many other mixtures have the chosen one's true score (up to float noise)

    def label(self) -> str:
        return rank_label(self.true_rank, self.tied, self.n)


def regret(proxy: Sequence[float], true: Sequence[float], higher_is_better: bool = True) -> Regret:
    """The proxy's favourite (the first of any proxies tied for best), its competition rank under the true
    scores and the true score it gives up; true scores equal up to float noise tie (:func:`snap_ties`)."""
    x, y = np.asarray(proxy, dtype=float), snap_ties(true)
    if len(x) == 0:
        raise MixlabError("regret needs at least one mixture with both proxy and true scores")
    sign = 1.0 if higher_is_better else -1.0
    chosen = best_index(x, higher_is_better)
    true_rank = 1 + int(np.sum(sign * y > sign * y[chosen]))
    tied = int(np.sum(y == y[chosen])) - 1
    return Regret(chosen, true_rank, float(np.max(sign * y) - sign * y[chosen]), len(x), tied)


def pareto_front(scores: np.ndarray, higher_is_better: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``scores`` (N, M)."""
    s = np.asarray(scores, dtype=float) * np.where(np.asarray(higher_is_better), 1.0, -1.0)  # maximise all
    n = len(s)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = np.all(s >= s[i], axis=1) & np.any(s > s[i], axis=1)
        mask[i] = not dominated_by.any()
    return mask


def pareto_points(results: pd.DataFrame, names: Sequence[str], bx: str, by: str, bz: str | None = None) -> pd.DataFrame:
    """Models scored on every benchmark asked (two, or three with ``bz``), one row each: kind, label,
    mixture (one label format for every kind: "add=0.5, rev=0.5, sort=0", a trained mixture's name after
    it, an expert's or the base's name), x, y (and z), a column per expert, and ``proxy_front``
    (non-dominated among experts + proxies on all the objectives: what recycling checkpoints by merging
    can reach) and ``true_front`` (among experts + true mixtures)."""
    axes = [("x", bx), ("y", by)] + ([("z", bz)] if bz is not None else [])
    cols = ["kind", "label", "mixture", *[a for a, _ in axes], *names, "proxy_front", "true_front"]
    benches = [b for _, b in axes]
    results = collapse_replicates(results)
    sub = results[results.benchmark.isin(benches) & results.kind.isin(["expert", "proxy", "true", "base"])]
    if len(set(benches)) < len(benches) or not set(benches) <= set(sub.benchmark):  # one with no scores: none
        return pd.DataFrame(columns=cols)
    dirs = [bool(sub[sub.benchmark == b].higher_is_better.iloc[0]) for b in benches]
    wide = sub.pivot_table(index=["kind", "label"], columns="benchmark", values="score", aggfunc="last")
    wide = wide.reindex(columns=benches).dropna()
    if wide.empty:
        return pd.DataFrame(columns=cols)
    wide = wide.reset_index().rename(columns={b: a for a, b in axes})
    first = sub.drop_duplicates(["kind", "label"]).set_index(["kind", "label"])
    for n in names:
        wide[n] = [first.loc[(k, lab), n] for k, lab in zip(wide.kind, wide.label)]
    weights = wide[list(names)].to_numpy(dtype=float)
    wide["mixture"] = [
        lab
        if k in ("expert", "base") or not np.isfinite(w).all() or w.sum() <= 0
        else Mixture.of(names, w, normalize=True).label() + (f" ({lab})" if k == "true" else "")
        for k, lab, w in zip(wide.kind, wide.label, weights)
    ]
    for col, family in (("proxy_front", ("expert", "proxy")), ("true_front", ("expert", "true"))):
        member = wide.kind.isin(family).to_numpy()
        front = np.zeros(len(wide), dtype=bool)
        if member.any():
            front[member] = pareto_front(wide.loc[member, [a for a, _ in axes]].to_numpy(), dirs)
        wide[col] = front
    return wide[cols]


def method_fronts(results: pd.DataFrame, names: Sequence[str], bx: str, by: str) -> tuple[pd.DataFrame, int]:
    """Merge methods compared fairly on a two-benchmark plane: each (method, params)'s proxies at only the
    mixtures that every one of them has (scored on both benchmarks), against the single experts — so a
    method with a denser grid cannot win by count.

    Returns:
        (one row per (method, params): method, params, merges, merges on the front, experts on the front,
        best x, best y (NaN with no merge); the number of shared mixtures).
    """
    proxy = results[(results.kind == "proxy") & results.benchmark.isin([bx, by])]
    methods = sorted({(m, json.dumps(p, sort_keys=True)) for m, p in zip(proxy.method, proxy.params)})
    keys = [weights_key(w, names) for w in proxy.weights]
    have: dict[tuple, set] = {}
    for (m, p, b), key in zip(zip(proxy.method, proxy.params, proxy.benchmark), keys):
        have.setdefault((m, json.dumps(p, sort_keys=True), b), set()).add(key)
    shared = set.intersection(*[have.get((m, p, b), set()) for m, p in methods for b in (bx, by)]) if methods else set()
    hib = {b: bool(results[results.benchmark == b].higher_is_better.iloc[0]) for b in (bx, by)}
    rows = []
    for m, p in methods:
        keep = [
            k != "proxy" or (mm == m and json.dumps(pp, sort_keys=True) == p and key in shared)
            for k, mm, pp, key in zip(
                results.kind, results.method, results.params, [weights_key(w, names) for w in results.weights]
            )
        ]
        pts = pareto_points(results[np.asarray(keep, dtype=bool)], names, bx, by)
        merges = pts[pts.kind == "proxy"]
        best = {
            axis: (merges[axis].max() if hib[b] else merges[axis].min()) if len(merges) else np.nan
            for axis, b in (("x", bx), ("y", by))
        }
        rows.append(
            {
                "method": m,
                "params": json.loads(p),
                "merges": len(merges),
                "merges on the front": int(merges.proxy_front.sum()),
                "experts on the front": int((pts.proxy_front & (pts.kind == "expert")).sum()),
                "best x": best["x"],
                "best y": best["y"],
            }
        )
    cols = ["method", "params", "merges", "merges on the front", "experts on the front", "best x", "best y"]
    return pd.DataFrame(rows, columns=cols), len(shared)


def with_mean(results: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """Add rows of the pseudo-benchmark ``mean``: the mean of ``benchmarks`` (which must share a
    direction) for every model scored on all of them. Its ``n`` is the examples summed over them; its
    ``low``/``high`` (when every benchmark is a proportion) the normal approximation mean ± 1.96·√(Σ
    p_b(1−p_b)/n_b)/B over B benchmarks with independent examples, clipped to [0, 1]."""
    if not benchmarks:
        return results
    sub = results[results.benchmark.isin(benchmarks)]
    directions = set(sub.higher_is_better)
    if len(directions) > 1:
        raise MixlabError(f"cannot average benchmarks of opposite directions: {', '.join(benchmarks)}")
    rep = sub["replicate"] if "replicate" in sub else pd.Series(None, index=sub.index, dtype=object)
    model = pd.Series(
        [f"{k}\0{lab}\0{m}\0{p!r}\0{r}" for k, lab, m, p, r in zip(sub.kind, sub.label, sub.method, sub.params, rep)],
        index=sub.index,
    )  # one key per model (a proxy is its method + params + weights; a true mixture's replicates are models)
    # each benchmark's binomial variance p(1−p)/n where it is a proportion (NaN otherwise: no interval)
    n = sub["n"] if "n" in sub else pd.Series(np.nan, index=sub.index)
    metric = sub["metric"] if "metric" in sub else pd.Series(None, index=sub.index)
    proportion = np.array([score_interval(s, k, m) is not None for s, k, m in zip(sub.score, n, metric)], dtype=bool)
    var = pd.Series(np.where(proportion, sub.score * (1 - sub.score) / n.where(proportion, 1), np.nan), index=sub.index)
    groups = sub.assign(_var=var, _n=n).groupby(model, sort=False)
    stats_ = groups.agg(score=("score", exact_mean), k=("benchmark", "nunique"), n=("_n", "sum"))
    stats_["var"] = groups._var.agg(lambda v: v.sum(min_count=len(v)))  # NaN unless every benchmark has one
    complete = stats_.index[stats_.k == len(set(benchmarks))]
    if len(complete) == 0:
        return results
    first = sub.assign(_model=model).drop_duplicates("_model").set_index("_model").loc[complete]
    got = stats_.loc[complete]
    # the mean of B independent proportions: normal approximation, mean ± z·√(Σ p_b(1−p_b)/n_b) / B
    half = Z95 * np.sqrt(got["var"].to_numpy(dtype=float)) / got.k.to_numpy()
    centre = got.score.to_numpy()
    mean = first.assign(
        benchmark=MEAN,
        score=centre,
        metric=metric.iloc[0],
        n=got.n.to_numpy(),
        low=np.clip(centre - half, 0.0, 1.0),
        high=np.clip(centre + half, 0.0, 1.0),
    )
    return pd.concat([results, mean.reset_index(drop=True)], ignore_index=True)


def weights_key(weights: dict | None, names: Sequence[str]) -> tuple | None:
    if weights is None:
        return None
    return tuple(round(float(weights.get(n, 0.0)), ROUND) for n in names)


MATCH = 1e-3  # two mixtures are the same point when every weight agrees this closely (0.3334 ≈ 1/3)


def same_mixture(weights: Sequence[float], candidates: Sequence[Sequence[float]]) -> int | None:
    """Index of the candidate that is the same mixture as ``weights`` (every weight within :data:`MATCH`;
    the nearest such, by the largest difference), or None. Lattice points are ≥ 1/64 apart, so a weight
    written to 3–4 decimals in a lab matches its lattice point and no other."""
    if len(candidates) == 0:
        return None
    d = np.abs(np.asarray(candidates, dtype=float) - np.asarray(weights, dtype=float)).max(axis=1)
    i = int(np.argmin(d))
    return i if d[i] <= MATCH else None


def paired(results: pd.DataFrame, names: Sequence[str], benchmark: str) -> pd.DataFrame:
    """Proxy and true scores of the same mixtures (:func:`same_mixture`) on one benchmark: columns label,
    *names, proxy, true, replicates. A true mixture trained more than once (replicates, seeds) is one row
    whose ``true`` is the mean of its replicates' scores (``replicates`` counts them)."""
    sub = results[results.benchmark == benchmark]
    proxy = {weights_key(w, names): s for w, s in zip(sub[sub.kind == "proxy"].weights, sub[sub.kind == "proxy"].score)}
    keys, scores = list(proxy), list(proxy.values())
    rows = []
    true = sub[sub.kind == "true"]
    for label, t in true.groupby("label", sort=False):
        key = weights_key(t.weights.iloc[0], names)
        i = same_mixture(key, keys)
        if i is not None:
            rows.append(
                {"label": label, **dict(zip(names, key)), "proxy": scores[i], "true": exact_mean(t.score)}
                | {"replicates": len(t)}
            )
    return pd.DataFrame(rows, columns=["label", *names, "proxy", "true", "replicates"])


def collapse_replicates(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with each true mixture trained more than once (replicates) as one row per benchmark: the
    replicates' mean score, summed exactly, with no interval (``low``/``high`` NaN: a mean over seeds is not a
    binomial proportion) and no replicate number — what a page shows as "the trained mixture". Unchanged when
    no mixture has replicates."""
    if "replicate" not in results or not len(results):
        return results
    true = results[results.kind == "true"]
    size = true.groupby(["label", "benchmark"]).score.transform("size")
    many = true[size > 1]
    if many.empty:
        return results
    means = many.groupby(["label", "benchmark"], sort=False).score.agg(exact_mean)
    first = many.drop_duplicates(["label", "benchmark"]).copy()  # keeps the first replicate's index
    first["score"] = [means[lab, b] for lab, b in zip(first.label, first.benchmark)]
    first["replicate"] = pd.NA
    for c in ("low", "high"):
        if c in first:
            first[c] = np.nan
    return pd.concat([results.drop(index=many.index), first]).sort_index(kind="stable")


SUBSETS = {
    "all": "every trained mixture",
    "interior": "the interior points (every expert's weight > 0, as the seed paper's design)",
}


def in_subset(weights: Sequence[float], subset: str) -> bool:
    """Whether a mixture belongs to a design subset of :data:`SUBSETS`."""
    if subset not in SUBSETS:
        raise MixlabError(f"unknown subset {subset!r}; available: {', '.join(SUBSETS)}")
    return subset == "all" or all(w > 1e-9 for w in weights)


def replicate_pairs(results: pd.DataFrame, names: Sequence[str], benchmark: str, subset: str = "all") -> pd.DataFrame:
    """The split half of a lab's replicates on one benchmark: every true mixture trained at least twice,
    with replicate 1's and replicate 2's scores. Columns label, *names, first, second."""
    sub = results[(results.benchmark == benchmark) & (results.kind == "true")]
    rows = []
    if "replicate" in sub:
        for label, t in sub.groupby("label", sort=False):
            by = {int(r): s for r, s in zip(t.replicate, t.score) if not pd.isna(r)}
            key = weights_key(t.weights.iloc[0], names)
            if 1 in by and 2 in by and in_subset(key, subset):
                rows.append({"label": label, **dict(zip(names, key)), "first": by[1], "second": by[2]})
    return pd.DataFrame(rows, columns=["label", *names, "first", "second"])


def noise_ceiling(
    results: pd.DataFrame, names: Sequence[str], benchmark: str, subset: str = "all", n_boot: int = 2000
) -> Correlation:
    """The noise ceiling on one benchmark: Spearman ρ between two replicates (seeds) of the true models,
    replicate 1 against replicate 2 over the mixtures trained twice (split half), with its bootstrap CI —
    how well the true models rank themselves. A proxy's ρ against one seed cannot be expected above it
    (against the mean of two seeds it may be a little higher: the mean is less noisy than one seed).
    Undefined (value None, n the number of replicated mixtures) with fewer than 3 of them."""
    pairs = replicate_pairs(results, names, benchmark, subset)
    return rank_correlation(snap_ties(pairs["first"]), snap_ties(pairs["second"]), "spearman", n_boot=n_boot)


def ceiling_text(value: float | None, low: float | None, high: float | None, n: int) -> str:
    """How a ceiling reads beside a ρ, everywhere: "ceiling +0.82 [+0.66, +0.92] (n=46)", or why there is none."""
    if n == 0:
        return "no replicates: ceiling unknown"
    if value is None:
        return f"ceiling undefined ({n} replicated mixture{'s' if n != 1 else ''})"
    ci = "" if low is None else f" [{low:+.2f}, {high:+.2f}]"
    return f"ceiling {value:+.2f}{ci} (n={n})"


def scores_at(
    results: pd.DataFrame,
    names: Sequence[str],
    weights: Sequence[float],
    benchmarks: Sequence[str],
    text: bool = False,
) -> tuple[pd.DataFrame, tuple | None, bool, float | None]:
    """The scores a page shows beside a selected mixture: per benchmark, the proxy at these weights,
    the true model trained at these weights (or the nearest trained mixture, by L1 distance) and each
    expert on its own.

    Args:
        text: cells as :func:`format_score` text, each score with its 95% interval where it has one.

    Returns:
        (table with columns benchmark, n (examples; for the mean, summed over its benchmarks), proxy, true
        or "nearest true", "expert <name>"…; the true point's weights or None; whether it is exact (within
        the simplex tolerance); its L1 distance or None).
    """
    results = collapse_replicates(results)
    proxy = results[results.kind == "proxy"]
    true = results[results.kind == "true"]
    true_keys = sorted({weights_key(w, names) for w in true.weights})
    if true_keys:
        i, dist = nearest(weights, np.array(true_keys))
        true_key, exact = true_keys[i], same_mixture(weights, [true_keys[i]]) is not None
    else:
        true_key, exact, dist = None, False, None
    proxy_keys = proxy.weights.map(lambda w: weights_key(w, names))
    distinct = sorted(set(proxy_keys))
    j = same_mixture(weights, distinct)
    key = distinct[j] if j is not None else None
    true_at = true.weights.map(lambda w: weights_key(w, names)) == true_key if len(true) else true.weights

    def cell(rows_: pd.DataFrame, i: int = -1):
        if not len(rows_):
            return "—" if text else None
        r = rows_.iloc[i]
        if not text:
            return r.score
        return format_score(r.score, r.get("low"), r.get("high"))

    rows = []
    for b in benchmarks:
        pr = proxy[(proxy.benchmark == b) & (proxy_keys == key)]
        tr = true[(true.benchmark == b) & true_at] if len(true) else true
        ex = results[(results.kind == "expert") & (results.benchmark == b)]
        ns = results[results.benchmark == b]["n"].dropna() if "n" in results else pd.Series(dtype=float)
        row = {
            "benchmark": b,
            "n": int(ns.max()) if len(ns) else None,
            "proxy": cell(pr),
            ("true" if exact else "nearest true"): cell(tr),
        }
        row.update({f"expert {lab}": cell(ex, i) for i, lab in enumerate(ex.label)})
        rows.append(row)
    return pd.DataFrame(rows), true_key, exact, dist


@dataclass(frozen=True)
class Best:
    """The best mixture under one source of scores, as a page marks it."""

    source: str  # "proxy" (the merged proxies), "true" (the trained mixtures) or "search" (its winner)
    label: str  # its weights ("add=0.5, rev=0.25, sort=0.25"), and a trained mixture's name after them
    weights: tuple[float, ...]  # one per expert, in the lab's order
    score: float | None  # on the benchmark asked (a search winner's test score; None if not scored there)
    low: float | None = None  # its 95% interval (:func:`score_interval`), None where there is none
    high: float | None = None
    n: int | None = None
    tied: int = 0  # other mixtures with the same score (up to float noise): the first is marked
    row: object = None  # its row's index in the results it came from (None for a search winner)

    def describe(self) -> str:
        what = {"proxy": "best under the proxy", "true": "best trained mixture", "search": "the search's winner"}
        tie = f", tied with {self.tied} other{'s' if self.tied > 1 else ''}" if self.tied else ""
        return f"{what[self.source]}: {self.label} — {format_score(self.score, self.low, self.high)}{tie}"


def _float(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def best_mixtures(
    results: pd.DataFrame, names: Sequence[str], benchmark: str, searched: Sequence[dict] | None = None
) -> dict[str, Best]:
    """The answer to "which mixture?" on one benchmark, by each source that has one: ``proxy`` (the best
    cached proxy score), ``true`` (the best trained mixture) and ``search`` (a search's winner: the first of
    ``searched``, each a dict with ``weights`` {expert: w} and ``test`` {benchmark: score}, as
    :class:`mixlab.search.SearchResult` ``best`` gives; chosen by its objective on dev, not by this score).
    Scores equal up to float noise tie (:func:`snap_ties`); the first of them is returned.

    ``results``: one method's rows (the mean included if it is asked for)."""
    sub = collapse_replicates(results[results.benchmark == benchmark])
    out: dict[str, Best] = {}
    if len(sub):
        sign = 1.0 if bool(sub.higher_is_better.iloc[0]) else -1.0
        for source in ("proxy", "true"):
            rows = sub[sub.kind == source]
            if rows.empty:
                continue
            v = sign * snap_ties(rows.score)
            i = int(np.argmax(v))
            r = rows.iloc[i]
            weights = tuple(float(r.weights.get(n, 0.0)) for n in names)
            label = Mixture.of(names, weights, normalize=True).label()  # one format for every source
            out[source] = Best(
                source,
                label if source == "proxy" else f"{label} ({r.label})",
                weights,
                float(r.score),
                _float(r.get("low")),
                _float(r.get("high")),
                None if pd.isna(r.get("n")) else int(r.get("n")),
                int(np.sum(v == v[i])) - 1,
                rows.index[i],
            )
    if searched:
        win = searched[0]
        w = tuple(float(win["weights"].get(n, 0.0)) for n in names)
        score = (win.get("test") or {}).get(benchmark)
        out["search"] = Best("search", Mixture.of(names, w, normalize=True).label(), w, _float(score))
    return out


def leaderboard(results: pd.DataFrame, names: Sequence[str], benchmark: str) -> pd.DataFrame:
    """What a lab has to show on one benchmark, best first: the base, each expert, the best trained mixture
    and the proxy's best merge (:func:`best_mixtures`: over every cached proxy, not only the trained points)
    with the true score of a model trained at that mixture
    when there is one. ``results``: one method's rows (with the mean if asked for).

    Columns: model, mixture, score, low, high (95% interval, NaN where none), n, true_at_pick (the pick's
    row only), diff, diff_low, diff_high (each row minus the first, with :func:`difference_interval`)."""
    cols = ["model", "mixture", "score", "low", "high", "n", "true_at_pick"]
    sub = collapse_replicates(results[results.benchmark == benchmark])
    if sub.empty:
        return pd.DataFrame(columns=cols)
    rows = []

    def add(model: str, mixture: str, r, true_at_pick=None) -> None:
        low, high = _float(r.get("low")), _float(r.get("high"))
        n = None if pd.isna(r.get("n")) else int(r.get("n"))
        rows.append([model, mixture, float(r.score), low, high, n, true_at_pick])

    for _, r in sub[sub.kind == "base"].tail(1).iterrows():
        add("base", "", r)
    for _, r in sub[sub.kind == "expert"].drop_duplicates("label", keep="last").iterrows():
        add(f"expert {r.label}", f"{r.label}=1", r)
    best = best_mixtures(sub, names, benchmark)
    for source, model in (("true", "best trained mixture"), ("proxy", "proxy's best merge")):
        if source not in best:
            continue
        b = best[source]
        r = sub.loc[b.row]
        true_at = None
        if source == "proxy":
            trained = sub[sub.kind == "true"]
            keys = [weights_key(w, names) for w in trained.weights]
            hit = same_mixture(b.weights, keys) if keys else None
            true_at = None if hit is None else float(trained.score.iloc[hit])
        add(model, b.label + (f"; tied with {b.tied} other{'s' if b.tied > 1 else ''}" if b.tied else ""), r, true_at)
    table = pd.DataFrame(rows, columns=cols)
    hib = bool(sub.higher_is_better.iloc[0])
    table = table.sort_values("score", ascending=not hib, kind="stable").reset_index(drop=True)
    top = table.iloc[0]
    diffs = [
        difference_interval(r.score, r.low, r.high, top.score, top.low, top.high)
        if i and None not in (r.low, r.high, top.low, top.high) and not pd.isna([r.low, top.low]).any()
        else (np.nan, np.nan, np.nan)
        for i, r in table.iterrows()
    ]
    return table.assign(diff=[d[0] for d in diffs], diff_low=[d[1] for d in diffs], diff_high=[d[2] for d in diffs])


def best_on_plane(
    best: dict[str, Best],
    points: pd.DataFrame,
    names: Sequence[str],
    searched: Sequence[dict] | None,
    bx: str,
    by: str,
    bz: str | None = None,
) -> pd.DataFrame:
    """Where each of ``best`` (:func:`best_mixtures`) sits among the Pareto points: its row of ``points``
    (:func:`pareto_points`, same kind and mixture) or, for a search winner, its test scores on ``bx``/``by``
    (and ``bz``). Columns source, label, x, y (z), *names; a best with no score on every axis is left out."""
    axes = ["x", "y"] + (["z"] if bz is not None else [])
    rows = []
    for source, b in best.items():
        if source == "search":
            test = (searched[0].get("test") or {}) if searched else {}
            xyz = tuple(test.get(bench) for bench in (bx, by, bz)[: len(axes)])
        else:
            mine = points[points.kind == source]
            hit = same_mixture(b.weights, mine[list(names)].to_numpy(dtype=float)) if len(mine) else None
            xyz = (None,) * len(axes) if hit is None else tuple(mine[a].iloc[hit] for a in axes)
        if None not in xyz:
            rows.append({"source": source, "label": b.label, **{a: float(v) for a, v in zip(axes, xyz)},
                         **dict(zip(names, b.weights))})  # fmt: skip
    return pd.DataFrame(rows, columns=["source", "label", *axes, *names])


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


def proxy_report(
    results: pd.DataFrame, names: Sequence[str], benchmarks: Sequence, n_boot: int = 2000, subset: str = "all"
) -> list[dict]:
    """How well the proxy ranks the trained mixtures, per benchmark and on the ``mean``: the one table
    that ``python -m mixlab report`` and the Proxy vs true page show.

    Args:
        results: one method's rows (see :meth:`mixlab.engine.Engine.results`), without the mean.
        names: the experts, in order.
        benchmarks: the lab's benchmark specs (their direction decides the mean and the regret).

    Returns:
        One dict per benchmark with true/proxy pairs: benchmark, higher_is_better, n, spearman and its 95%
        bootstrap CI (spearman_low, spearman_high), kendall, top25_spearman (with n_top25), pairwise_accuracy,
        pick (the proxy's favourite), pick_true_rank (1 = best of n), pick_tied (how many others share its true
        score), pick_rank (how it reads: "#1 (tied) of 21"), regret; the noise ceiling beside ρ
        (:func:`noise_ceiling`: ceiling, ceiling_low, ceiling_high, n_replicated = mixtures with two
        replicates, 0 when the lab has none) and replicates (the most replicates a mixture has; its true
        score is their mean). Scores equal up to float noise tie (:func:`snap_ties`). Undefined values are
        None. ``subset``: one of :data:`SUBSETS` (``interior``: only mixtures where every expert has weight).
    """
    mean_of = mean_benchmarks(benchmarks, results)
    df = with_mean(results, mean_of)
    directions = {b.name: b.higher_is_better for b in benchmarks} | {MEAN: True}
    rows = []
    for name in [b.name for b in benchmarks] + ([MEAN] if mean_of else []):
        pairs = subset_of(paired(df, names, name), names, subset)
        if pairs.empty:
            continue
        hib = directions[name]
        ceiling = noise_ceiling(df, names, name, subset, n_boot)
        px, ty = snap_ties(pairs.proxy), snap_ties(pairs.true)  # a tie up to float noise is a tie in every statistic
        rho = rank_correlation(px, ty, "spearman", n_boot=n_boot)
        tau = rank_correlation(px, ty, "kendall", n_boot=0)
        top = top_quartile_correlation(px, ty, hib, n_boot=0)
        reg = regret(px, ty, hib)
        rows.append(
            {
                "benchmark": name,
                "higher_is_better": hib,
                "n": rho.n,
                "spearman": rho.value,
                "spearman_low": rho.low,
                "spearman_high": rho.high,
                "kendall": tau.value,
                "top25_spearman": top.value,
                "n_top25": top.n,
                "pairwise_accuracy": pairwise_accuracy(px, ty),
                "pick": pairs.label.iloc[reg.chosen],
                "pick_true_rank": reg.true_rank,
                "pick_tied": reg.tied,
                "pick_rank": reg.label(),
                "regret": reg.regret,
                "warning": rank_warning(rho.n),
                "ceiling": ceiling.value,
                "ceiling_low": ceiling.low,
                "ceiling_high": ceiling.high,
                "n_replicated": ceiling.n,
                "replicates": int(pairs.replicates.max()),
            }
        )
    return rows


def subset_of(pairs: pd.DataFrame, names: Sequence[str], subset: str) -> pd.DataFrame:
    """The rows of ``pairs`` (:func:`paired` or :func:`replicate_pairs`) whose mixture is in ``subset``."""
    keep = [in_subset(w, subset) for w in pairs[list(names)].itertuples(index=False)]
    return pairs[np.asarray(keep, dtype=bool)] if len(pairs) else pairs


SUMMARIES = ("ρ of the mean", "mean of per-benchmark ρ")


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


def rho_summaries(
    results: pd.DataFrame,
    names: Sequence[str],
    benchmarks: Sequence,
    subsets: Sequence[str] = tuple(SUBSETS),
    n_boot: int = 2000,
) -> list[dict]:
    """Both summaries of how the proxy ranks, for each design subset: ``ρ of the mean`` (Spearman ρ of the
    proxy's mean over the higher-is-better benchmarks against the true mean) and ``mean of per-benchmark ρ``
    (the average of each benchmark's ρ, over the same mixtures) — papers report either, rarely saying which —
    each with its 95% bootstrap CI and its noise ceiling (the same statistic between replicate 1 and 2).

    ``results``: one method's rows, without the mean. Returns one dict per (subset, summary): subset,
    summary, n, spearman, spearman_low, spearman_high, ceiling, ceiling_low, ceiling_high, n_replicated."""
    mean_of = mean_benchmarks(benchmarks, results)
    df = with_mean(results, mean_of)
    out = []
    for subset in subsets:
        for summary in SUMMARIES:
            rho = ceil = None
            if summary == SUMMARIES[0] and mean_of:
                p = subset_of(paired(df, names, MEAN), names, subset)
                rho = rank_correlation(snap_ties(p.proxy), snap_ties(p.true), n_boot=n_boot)
                ceil = noise_ceiling(df, names, MEAN, subset, n_boot)
            elif mean_of:
                rho, ceil = _mean_of_rhos_over(df, names, mean_of, subset, n_boot)
            row = {"subset": subset, "summary": summary, "n": rho.n if rho else 0}
            row |= {"spearman": None, "spearman_low": None, "spearman_high": None}
            if rho is not None:
                row |= {"spearman": rho.value, "spearman_low": rho.low, "spearman_high": rho.high}
            row |= {"ceiling": None, "ceiling_low": None, "ceiling_high": None, "n_replicated": 0}
            if ceil is not None:
                row |= {"ceiling": ceil.value, "ceiling_low": ceil.low, "ceiling_high": ceil.high}
                row["n_replicated"] = ceil.n
            out.append(row)
    return out


def _mean_of_rhos_over(df, names, benchmarks, subset, n_boot) -> tuple[Correlation, Correlation]:
    """:func:`mean_of_rhos` of proxy vs true, and of replicate 1 vs 2, over the mixtures every benchmark has."""
    pairs = [subset_of(paired(df, names, b), names, subset).set_index("label") for b in benchmarks]
    common = [lab for lab in pairs[0].index if all(lab in p.index for p in pairs)]
    rho = mean_of_rhos(
        [snap_ties(p.loc[common, "proxy"]) for p in pairs], [snap_ties(p.loc[common, "true"]) for p in pairs], n_boot
    )
    reps = [replicate_pairs(df, names, b, subset).set_index("label") for b in benchmarks]
    both = [lab for lab in reps[0].index if all(lab in r.index for r in reps)]
    ceil = mean_of_rhos(
        [snap_ties(r.loc[both, "first"]) for r in reps], [snap_ties(r.loc[both, "second"]) for r in reps], n_boot
    )
    return rho, ceil


def method_comparison(
    results: pd.DataFrame, names: Sequence[str], benchmarks: Sequence, benchmark: str = MEAN, n_boot: int = 2000
) -> pd.DataFrame:
    """Merge methods side by side on one benchmark: one row per (method, params) with cached proxies — its
    :func:`proxy_report` row (n, ρ with CI, top-25% ρ, pairwise accuracy, pick's true rank, regret).

    ``results``: every method's rows (:meth:`mixlab.engine.Engine.results` with no method), without the mean.
    """
    cols = ["method", "params", "n", "spearman", "spearman_low", "spearman_high", "top25_spearman"]
    cols += ["pairwise_accuracy", "pick_true_rank", "pick_tied", "pick_rank", "regret"]
    proxy = results[results.kind == "proxy"]
    pairs = sorted({(m, repr(sorted(p.items()))): (m, p) for m, p in zip(proxy.method, proxy.params)}.items())
    rows = []
    for _, (method, params) in pairs:
        keep = [
            k != "proxy" or (m == method and p == params)
            for k, m, p in zip(results.kind, results.method, results.params)
        ]
        report = proxy_report(results[np.asarray(keep, dtype=bool)], names, benchmarks, n_boot=n_boot)
        row = next((r for r in report if r["benchmark"] == benchmark), None)
        if row is not None:
            rows.append({"method": method, "params": params} | {c: row[c] for c in cols[2:]})
    return pd.DataFrame(rows, columns=cols)


def nearest(weights: Sequence[float], candidates: np.ndarray) -> tuple[int, float]:
    """Index of the candidate mixture nearest to ``weights`` (L1), and that distance."""
    d = np.abs(np.asarray(candidates, dtype=float) - np.asarray(weights, dtype=float)).sum(axis=1)
    i = int(np.argmin(d))
    return i, float(d[i])
