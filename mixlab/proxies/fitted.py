"""Proxies fitted on a few true runs, measured like the regression baseline (:mod:`mixlab.regression`):

- **calibrated**: each benchmark's proxy mapped to its true scale by an affine map fitted on n true runs
  (true_b ≈ a_b + c_b·proxy_b, least squares), then averaged. On one benchmark an increasing map changes no
  rank; on the mean it re-weighs benchmarks whose proxy trades off more steeply than training does.
- **proxy features**: a linear regression from the weights *and* the proxy's scores on every benchmark of
  the mean to the true score (MDE's finding: it beats regressions that see only the weights).

Both are scored like the regression: leave-one-out predictions over every true run (their ρ with a
bootstrap CI), and a data-efficiency curve — fit on random subsets of n runs, ρ on the held-out rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.analysis import MEAN, mean_benchmarks, paired, rank_correlation, snap_ties, subset_of, with_mean
from mixlab.errors import MixlabError
from mixlab.simplex import check_seed

FITTED = ("calibrated", "proxy features", "weights only")  # the last: the regression baseline, for comparison


def _linear(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(x, y)


def affine_maps(proxy: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per benchmark b, the least-squares (a_b, c_b) of true[:, b] ≈ a_b + c_b·proxy[:, b] over the rows
    (runs): an array (B, 2). A benchmark whose proxy is constant on the runs gets c_b = 0, a_b = its mean."""
    out = []
    for b in range(proxy.shape[1]):
        fit = _linear(proxy[:, b : b + 1], true[:, b])
        out.append((float(fit.intercept_), float(fit.coef_[0])))
    return np.array(out)


def calibrated_mean(train_proxy: np.ndarray, train_true: np.ndarray, proxy: np.ndarray) -> np.ndarray:
    """The calibrated proxy of the mean at ``proxy`` (n, B): mean_b(a_b + c_b·proxy_b), the maps fitted on
    the training runs' proxy and true scores (each (n_train, B))."""
    maps = affine_maps(train_proxy, train_true)
    return (maps[:, 0] + maps[:, 1] * proxy).mean(axis=1)


def feature_regression(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares linear prediction of y from features (with an intercept; the minimum-norm solution
    when there are more features than runs), fitted on the training rows, at ``x``."""
    return _linear(train_x, train_y).predict(x)


def fitted_table(
    results: pd.DataFrame, names: Sequence[str], benchmarks: Sequence, subset: str = "all"
) -> pd.DataFrame:
    """One row per true mixture with proxy and true scores on every benchmark of the mean: label, the
    weights (one column per expert), ``proxy <b>`` and ``true <b>`` per benchmark b, and ``proxy mean`` /
    ``true mean`` (a replicated mixture's true scores are its replicates' mean)."""
    up = mean_benchmarks(benchmarks, results)
    if not up:
        raise MixlabError("fitted proxies need at least one higher-is-better benchmark to average")
    df = with_mean(results, up)
    table = None
    for b in [*up, MEAN]:
        p = subset_of(paired(df, names, b), names, subset)[["label", *names, "proxy", "true"]]
        p = p.rename(columns={"proxy": f"proxy {b}", "true": f"true {b}"})
        table = p if table is None else table.merge(p.drop(columns=list(names)), on="label")
    return table.reset_index(drop=True)


def _predict(kind: str, table: pd.DataFrame, names, up, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    proxy = table[[f"proxy {b}" for b in up]].to_numpy(dtype=float)
    true = table[[f"true {b}" for b in up]].to_numpy(dtype=float)
    w = table[list(names)].to_numpy(dtype=float)
    y = table[f"true {MEAN}"].to_numpy(dtype=float)
    if kind == "calibrated":
        return calibrated_mean(proxy[train], true[train], proxy[test])
    x = np.hstack([w, proxy]) if kind == "proxy features" else w
    return feature_regression(x[train], y[train], x[test])


def fitted_report(
    results: pd.DataFrame,
    names: Sequence[str],
    benchmarks: Sequence,
    sizes: Sequence[int] | None = None,
    repeats: int = 20,
    seed: int = 0,
    subset: str = "all",
    n_boot: int = 2000,
) -> dict:
    """The fitted proxies of :data:`FITTED` on the mean, beside the merged proxy on the same mixtures.

    ``results``: one merge method's rows, without the mean. Returns {n, proxy: ρ of the merged proxy's mean,
    loo: {kind: {spearman, spearman_low, spearman_high}} (leave-one-out predictions against the true mean),
    curve: [{n_train, kind: median ρ on the held-out runs, kind_low, kind_high: 25th/75th percentiles}]} —
    the same random subsets for every kind, so the curves compare paired."""
    check_seed(seed)
    table = fitted_table(results, names, benchmarks, subset)
    up = mean_benchmarks(benchmarks, results)
    n = len(table)
    y = snap_ties(table[f"true {MEAN}"])  # scores equal up to float noise tie, as in every report
    proxy_rho = rank_correlation(snap_ties(table[f"proxy {MEAN}"]), y, n_boot=n_boot)
    report = {"n": n, "proxy": _rho_dict(proxy_rho), "loo": {}, "curve": []}
    if n < 4:
        return report
    every = np.arange(n)
    for kind in FITTED:
        pred = np.array([_predict(kind, table, names, up, every != i, every == i)[0] for i in range(n)])
        report["loo"][kind] = _rho_dict(rank_correlation(snap_ties(pred), y, n_boot=n_boot))
    rng = np.random.default_rng(seed)
    for k in sizes if sizes is not None else [s for s in (3, 4, 6, 8, 12, 16, 24, 32) if s <= n - 3]:
        draws = [rng.choice(n, size=k, replace=False) for _ in range(repeats)]
        row: dict = {"n_train": k}
        for kind in FITTED:
            rhos = []
            for train in draws:
                test = np.setdiff1d(every, train)
                pred = snap_ties(_predict(kind, table, names, up, train, test))
                r = rank_correlation(pred, y[test], n_boot=0).value
                if r is not None:
                    rhos.append(r)
            row[kind] = float(np.median(rhos)) if rhos else None
            row[f"{kind}_low"] = float(np.percentile(rhos, 25)) if rhos else None
            row[f"{kind}_high"] = float(np.percentile(rhos, 75)) if rhos else None
        report["curve"].append(row)
    return report


def _rho_dict(c) -> dict:
    return {"spearman": c.value, "spearman_low": c.low, "spearman_high": c.high, "n": c.n}
