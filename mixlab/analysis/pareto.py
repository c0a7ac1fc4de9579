"""Pareto fronts over two or three benchmarks, and merge methods compared over the same mixtures."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.analysis.mixtures import weights_key
from mixlab.analysis.tables import collapse_replicates
from mixlab.simplex import Mixture


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
