"""One mixture in context: what a merged proxy's scores mean beside the models a researcher compares it
with at that point — the linear proxy at the same weights, the base, each expert on its own, and the
trained (true) mixture nearest to it — each score with its n and 95% interval.

The cache keeps each score's mean and n, not its per-example values, so an interval exists where the
mean and n determine it: Wilson's for a proportion (accuracy, exact match), the normal approximation
for the mean of proportions over benchmarks (:func:`mixlab.analysis.with_mean`). A loss (mean token NLL)
has no interval here: its spread over examples is not stored, and a width made up from the mean alone
would be a guess. Differences come with Newcombe's MOVER interval (:func:`mixlab.analysis.difference_interval`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.analysis import (
    collapse_replicates,
    difference_interval,
    format_score,
    nearest,
    same_mixture,
    weights_key,
)
from mixlab.simplex import Mixture

CONTEXT_COLUMNS = ["model", "mixture", "benchmark", "score", "low", "high", "n"]
NO_INTERVAL = (
    "a score without an interval is a loss (or a plugin's score): the cache keeps its mean over the examples, "
    "not their spread, so no honest interval can be drawn from it"
)


def _params_key(params) -> str:
    return json.dumps(params or {}, sort_keys=True)


def _at(rows: pd.DataFrame, names: Sequence[str], weights: Sequence[float]) -> pd.DataFrame:
    """The rows of ``rows`` scored at the mixture ``weights`` (:func:`mixlab.analysis.same_mixture`)."""
    if rows.empty:
        return rows
    keys = [weights_key(w, names) for w in rows.weights]
    distinct = sorted(set(keys))
    j = same_mixture(weights, distinct)
    if j is None:
        return rows.iloc[0:0]
    return rows[[k == distinct[j] for k in keys]]


def mixture_in_context(
    results: pd.DataFrame,
    names: Sequence[str],
    weights: Sequence[float],
    method: str,
    params: dict | None,
    benchmarks: Sequence[str],
    linear_params: dict | None = None,
) -> pd.DataFrame:
    """The scores at one mixture, beside what they are compared with, as a tidy table.

    Args:
        results: every cached score of the lab, all methods (:meth:`mixlab.engine.Engine.results` with no
            method; with the ``mean`` rows if it is asked for).
        names: the experts, in order.
        weights: the mixture, one weight per expert.
        method, params: the merge whose proxy is shown first (params as resolved, i.e. as cached).
        benchmarks: the benchmarks shown, in order.
        linear_params: the linear proxy's params (default: none, as the registry's linear has none).

    Returns:
        One row per (model, benchmark) with a score: columns :data:`CONTEXT_COLUMNS`. Models, in order:
        ``<method> proxy``, ``linear proxy`` (when ``method`` is not linear), ``base``, ``expert <name>``,
        and ``trained mixture`` (the true mixture at these weights) or ``nearest trained mixture`` (by L1
        distance), its ``mixture`` naming it: "add50_rev12: add=0.5, rev=0.5" (and "(L1 distance 0.1)"). A
        model with no score on a benchmark has no row there.
    """
    want = [b for b in benchmarks]
    sub = results[results.benchmark.isin(want)]
    label = Mixture.of(names, weights, normalize=True).label()
    proxy = sub[sub.kind == "proxy"]
    groups: list[tuple[str, str, pd.DataFrame]] = []
    mine = proxy[(proxy.method == method) & (proxy.params.map(_params_key) == _params_key(params))]
    groups.append((f"{method} proxy", label, _at(mine, names, weights)))
    if method != "linear":
        lin = proxy[(proxy.method == "linear") & (proxy.params.map(_params_key) == _params_key(linear_params))]
        groups.append(("linear proxy", label, _at(lin, names, weights)))
    groups.append(("base", "", sub[sub.kind == "base"]))
    experts = sub[sub.kind == "expert"]
    for name in dict.fromkeys(experts.label):
        groups.append((f"expert {name}", f"{name}=1", experts[experts.label == name]))
    true = collapse_replicates(sub[sub.kind == "true"])  # a mixture trained twice: its seeds' mean
    if len(true):
        keys = sorted({weights_key(w, names) for w in true.weights})
        i, dist = nearest(weights, np.array(keys))
        at = true[[weights_key(w, names) == keys[i] for w in true.weights]]
        name = at.label.iloc[-1]
        point = Mixture.of(names, keys[i], normalize=True).label()
        if same_mixture(weights, [keys[i]]) is not None:
            groups.append(("trained mixture", f"{name}: {point}", at))
        else:
            groups.append(("nearest trained mixture", f"{name}: {point} (L1 distance {dist:.3f})", at))
    rows = []
    for model, mixture, got in groups:
        for b in want:
            hit = got[got.benchmark == b]
            if hit.empty:
                continue
            r = hit.iloc[-1]  # the latest, as every page reads a score
            low, high = r.get("low"), r.get("high")
            rows.append(
                [
                    model,
                    mixture,
                    b,
                    float(r.score),
                    None if low is None or pd.isna(low) else float(low),
                    None if high is None or pd.isna(high) else float(high),
                    None if pd.isna(r.get("n")) else int(r.get("n")),
                ]
            )
    return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)


def context_text(table: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """:func:`mixture_in_context` as a page shows it: one row per model, one column per benchmark, each
    cell the score with its 95% interval (:func:`mixlab.analysis.format_score`); "—" where the model has
    no score there. n is in the column's name ("add · n=200") when every model was scored on as many
    examples, else in each cell."""
    models = list(dict.fromkeys(table.model))
    out = pd.DataFrame({"model": models})
    for b in benchmarks:
        ns = {None if pd.isna(n) else int(n) for n in table[table.benchmark == b].n}
        one = len(ns) == 1 and None not in ns
        cells = []
        for m in models:
            hit = table[(table.model == m) & (table.benchmark == b)]
            if hit.empty:
                cells.append("—")
                continue
            r = hit.iloc[0]
            n = "" if one or r.n is None or pd.isna(r.n) else f" · n={int(r.n)}"
            cells.append(format_score(r.score, r.low, r.high) + n)
        out[f"{b} · n={ns.pop()}" if one else b] = cells
    return out


def differences(table: pd.DataFrame, first: str) -> pd.DataFrame:
    """``first``'s score (a model of ``table``) minus each other model's on every benchmark both have, with the
    95% MOVER interval where both scores have an interval (:func:`mixlab.analysis.difference_interval`;
    conservative for two models scored on the same examples). Columns: model, benchmark, diff, low, high."""
    cols = ["model", "benchmark", "diff", "low", "high"]
    base = table[table.model == first].set_index("benchmark")
    rows = []
    for _, r in table[table.model != first].iterrows():
        if r.benchmark not in base.index:
            continue
        a = base.loc[r.benchmark]
        if None in (r.low, r.high, a.low, a.high) or pd.isna([r.low, r.high, a.low, a.high]).any():
            rows.append([r.model, r.benchmark, a.score - r.score, None, None])
        else:
            d, lo, hi = difference_interval(a.score, a.low, a.high, r.score, r.low, r.high)
            rows.append([r.model, r.benchmark, d, lo, hi])
    return pd.DataFrame(rows, columns=cols)


def difference_text(diffs: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """:func:`differences` as a page shows it: one row per model, one column per benchmark, each cell the
    signed difference with its 95% interval ("+0.007 [−0.035, +0.048]"); "—" where there is none."""
    models = list(dict.fromkeys(diffs.model))
    out = pd.DataFrame({"model": models})
    for b in benchmarks:
        cells = []
        for m in models:
            hit = diffs[(diffs.model == m) & (diffs.benchmark == b)]
            if hit.empty:
                cells.append("—")
                continue
            r = hit.iloc[0]
            cell = f"{r['diff']:+.3f}"
            if r["low"] is not None and not pd.isna(r["low"]):
                cell += f" [{r['low']:+.3f}, {r['high']:+.3f}]"
            cells.append(cell)
        out[b] = cells
    return out
