"""The regression baseline (RegMix-style): predict a mixture's true score from its weights, fitted on n
models truly trained on mixtures, against the merged proxy, which costs K expert runs and no true run.

A linear model and gradient-boosted trees (scikit-learn) are fitted on weights → true score. With all
the lab's true runs, leave-one-out predictions give the rank correlation a regression reaches; the
data-efficiency curve refits on random subsets of n runs and scores the held-out rest, for growing n —
the seed paper's comparison (how many true runs a regression needs to rank as well as the proxy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from mixlab.analysis import paired, snap_ties, with_lab_mean
from mixlab.simplex import check_seed

MODELS = ("linear", "boosted")


def make_model(name: str, seed: int = 0):
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    if name == "linear":
        return LinearRegression()
    if name == "boosted":
        return GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.1, random_state=seed)
    raise ValueError(f"regression model must be one of {', '.join(MODELS)}, got {name!r}")


def leave_one_out(x: np.ndarray, y: np.ndarray, model: str, seed: int = 0) -> np.ndarray:
    """Each run's score predicted by the model fitted on every other run."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        out[i] = make_model(model, seed).fit(x[keep], y[keep]).predict(x[i : i + 1])[0]
    return out


def _rho(a, b) -> float | None:
    """Spearman ρ with scores equal up to float noise tied (as every statistic of the report)."""
    a, b = snap_ties(a), snap_ties(b)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(stats.spearmanr(a, b).statistic)


def regression_report(
    results: pd.DataFrame,
    names: Sequence[str],
    benchmarks: Sequence,
    benchmark: str,
    sizes: Sequence[int] | None = None,
    repeats: int = 20,
    seed: int = 0,
) -> dict:
    """Leave-one-out ρ of each regression model and the data-efficiency curve on one benchmark (or the
    mean), beside the proxy's ρ on the same mixtures.

    ``results``: one merge method's rows (:meth:`mixlab.engine.Engine.results`), without the mean.
    Returns {benchmark, n, proxy_spearman, loo: {model: ρ}, curve: [{n_train, model: median ρ on held-out,
    low, high (25th/75th percentiles)}]}.
    """
    check_seed(seed)
    pairs = paired(with_lab_mean(results, benchmarks), names, benchmark)
    x, y = pairs[list(names)].to_numpy(dtype=float), pairs["true"].to_numpy(dtype=float)
    n = len(y)
    report = {"benchmark": benchmark, "n": n, "proxy_spearman": _rho(pairs["proxy"], y), "loo": {}, "curve": []}
    if n < 4:
        return report
    report["loo"] = {m: _rho(leave_one_out(x, y, m, seed), y) for m in MODELS}
    rng = np.random.default_rng(seed)
    for k in sizes or [s for s in (4, 6, 8, 12, 16, 24, 32) if s <= n - 3]:
        row = {"n_train": k}
        for m in MODELS:
            rhos = []
            for _ in range(repeats):
                train = rng.choice(n, size=k, replace=False)
                test = np.setdiff1d(np.arange(n), train)
                pred = make_model(m, seed).fit(x[train], y[train]).predict(x[test])
                r = _rho(pred, y[test])
                if r is not None:
                    rhos.append(r)
            row[m] = float(np.median(rhos)) if rhos else None
            row[f"{m}_low"], row[f"{m}_high"] = (
                (float(np.percentile(rhos, 25)), float(np.percentile(rhos, 75))) if rhos else (None, None)
            )
        report["curve"].append(row)
    return report
