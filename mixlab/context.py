"""One mixture in context: what a merged proxy's scores mean beside the models a researcher compares it
with at that point — the linear proxy at the same weights, the base, each expert on its own, and the
trained (true) mixture nearest to it — each score with its n and 95% interval.

Intervals are those of the results table (:func:`mixlab.analysis.results_table`, its ``ci`` column says
which): Wilson's for a proportion (accuracy, exact match); a percentile bootstrap over the examples for a
loss (mean token NLL) and for the mean over benchmarks, where the cache keeps the per-example values
(:mod:`mixlab.values`); else the normal approximation for a mean of proportions, and none for a loss
scored before per-example values were kept. A difference between two models is paired where both have
per-example values on the same examples (:func:`mixlab.analysis.paired_difference`: a paired bootstrap,
and the exact McNemar test for two accuracies), else Newcombe's MOVER interval from the two intervals
(:func:`mixlab.analysis.difference_interval`, conservative for two models scored on the same examples).
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
    pairable,
    paired_difference,
    same_mixture,
    weights_key,
)
from mixlab.simplex import Mixture

CONTEXT_COLUMNS = ["model", "mixture", "benchmark", "score", "low", "high", "n", "ci", "values"]
NO_INTERVAL = (
    "a score without an interval has no per-example values in the cache (a loss scored before they were kept, "
    "or a plugin's score): its mean alone gives no honest interval"
)
PAIRED, MOVER = "paired", "MOVER"  # how a difference's interval was made
DIFFERENCE_CAPTION = (
    "paired: both models have per-example values on the same examples, so the interval is a paired bootstrap "
    "over them (what the two share cancels) and p is the exact McNemar test for two accuracies. MOVER (Newcombe "
    "1998): from each score's own interval, treating the two as independent samples, so conservative. An "
    "interval that excludes 0 is a difference beyond noise; none where either score has no interval."
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
        latest = {r["benchmark"]: r for r in got.to_dict("records")}  # the latest, as every page reads a score
        for b in want:
            r = latest.get(b)
            if r is None:
                continue
            low, high = r.get("low"), r.get("high")
            rows.append(
                [
                    model,
                    mixture,
                    b,
                    float(r["score"]),
                    None if low is None or pd.isna(low) else float(low),
                    None if high is None or pd.isna(high) else float(high),
                    None if pd.isna(r.get("n")) else int(r.get("n")),
                    r.get("ci") or "",
                    r.get("values"),
                ]
            )
    return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)


def _by_model(table: pd.DataFrame, benchmarks: Sequence[str], cell, header=lambda b: b) -> pd.DataFrame:
    """One row per model of ``table``, one column per benchmark (named ``header(b)``), each cell
    ``cell(row)`` of the model's first row there (a named tuple), "—" where it has none."""
    models = list(dict.fromkeys(table.model))
    first: dict[tuple, tuple] = {}
    for r in table.itertuples(index=False):  # (one pass: a page draws this on every rerun)
        first.setdefault((r.model, r.benchmark), r)
    out = pd.DataFrame({"model": models})
    for b in benchmarks:
        out[header(b)] = [cell(first[m, b]) if (m, b) in first else "—" for m in models]
    return out


def context_text(table: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """:func:`mixture_in_context` as a page shows it: one row per model, one column per benchmark, each
    cell the score with its 95% interval (:func:`mixlab.analysis.format_score`); "—" where the model has
    no score there. n is in the column's name ("add · n=200") when every model was scored on as many
    examples, else in each cell."""
    ns = {b: {None if pd.isna(n) else int(n) for n in table[table.benchmark == b].n} for b in benchmarks}
    one = {b: len(n) == 1 and None not in n for b, n in ns.items()}

    def cell(r) -> str:
        shown = one[r.benchmark] or r.n is None or pd.isna(r.n)
        return format_score(r.score, r.low, r.high) + ("" if shown else f" · n={int(r.n)}")

    return _by_model(table, benchmarks, cell, lambda b: f"{b} · n={next(iter(ns[b]))}" if one[b] else b)


def differences(table: pd.DataFrame, first: str) -> pd.DataFrame:
    """``first``'s score (a model of ``table``) minus each other model's on every benchmark both have, with its
    95% interval: paired where both have per-example values on as many examples (:data:`PAIRED`,
    :func:`mixlab.analysis.paired_difference`, with the exact McNemar p for two accuracies), else MOVER where
    both scores have an interval (:data:`MOVER`, :func:`mixlab.analysis.difference_interval`; conservative for
    two models scored on the same examples), else none. Columns: model, benchmark, diff, low, high, how, p."""
    cols = ["model", "benchmark", "diff", "low", "high", "how", "p"]
    base = table[table.model == first].drop_duplicates("benchmark").set_index("benchmark")
    rows = []
    for _, r in table[table.model != first].iterrows():
        if r.benchmark not in base.index:
            continue
        a = base.loc[r.benchmark]
        va, vb = a.get("values"), r.get("values")
        if pairable(va, vb):
            d = paired_difference(va, vb)
            rows.append([r.model, r.benchmark, a.score - r.score, d.low, d.high, PAIRED, d.p_value])
        elif None in (r.low, r.high, a.low, a.high) or pd.isna([r.low, r.high, a.low, a.high]).any():
            rows.append([r.model, r.benchmark, a.score - r.score, None, None, "", None])
        else:
            d, lo, hi = difference_interval(a.score, a.low, a.high, r.score, r.low, r.high)
            rows.append([r.model, r.benchmark, d, lo, hi, MOVER, None])
    return pd.DataFrame(rows, columns=cols)


def difference_text(diffs: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """:func:`differences` as a page shows it: one row per model, one column per benchmark, each cell the
    signed difference with its 95% interval and how it was made ("+0.030 [+0.010, +0.050] paired, p=0.004";
    "+0.007 [−0.035, +0.048] MOVER"); "—" where there is none."""

    def cell(r) -> str:
        out = f"{r.diff:+.3f}"
        if r.low is not None and not pd.isna(r.low):
            out += f" [{r.low:+.3f}, {r.high:+.3f}] {r.how}"
        if r.p is not None and not pd.isna(r.p):
            out += f", p={r.p:.2g}"
        return out

    return _by_model(diffs, benchmarks, cell)
