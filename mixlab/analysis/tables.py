"""The tidy results table and the views pages take of it: the mean over benchmarks, replicates collapsed, proxy/true pairs, the scores at a mixture."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.analysis.intervals import (
    Z95,
    bootstrap_intervals,
    format_score,
    mean_bootstrap_intervals,
    score_interval,
)
from mixlab.analysis.mixtures import nearest, same_mixture, weights_key
from mixlab.analysis.ties import exact_mean
from mixlab.errors import MixlabError
from mixlab.values import ExampleValues

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


WILSON, BOOTSTRAP, NORMAL, SEEDS = "Wilson", "bootstrap", "normal", "seeds"  # how a row's interval was made
_HOW = {
    WILSON: "Wilson's for an accuracy (k of n examples)",
    BOOTSTRAP: "a percentile bootstrap over the examples (a loss: per-token, each example's tokens together; the "
    "mean: each benchmark's examples resampled) from the per-example values",
    NORMAL: "the normal approximation over its benchmarks for a mean without per-example values",
    SEEDS: "a mixture trained with several seeds: the mean of its seeds' intervals (the seeds are scored on the "
    "same examples, so their errors may correlate; averaging the bounds covers any correlation)",
}


def interval_caption(cis) -> str:
    """What the 95% intervals shown are, for the ``ci`` values among them (a page's caption, in one place)."""
    how = [_HOW[c] for c in _HOW if c in set(cis)]
    return "Each score with its 95% interval: " + "; ".join(how) if how else "No score shown has an interval"


def results_table(
    evaluations: Sequence, names: Sequence[str], values: dict[str, ExampleValues] | None = None
) -> pd.DataFrame:
    """Evaluations as one tidy table: the :data:`RESULT_COLUMNS`, one weight column per expert, each score's
    per-example values (``values``: the evaluation's own, else ``values[key]``; None where none are kept), and
    its 95% interval ``low``/``high`` with ``ci`` saying how it was made: ``Wilson`` for an accuracy
    (:func:`score_interval`), ``bootstrap`` for another score with per-example values (a loss:
    :func:`bootstrap_intervals`), none (NaN, "") otherwise."""
    values = values or {}
    df = pd.DataFrame([{k: getattr(e, k) for k in RESULT_COLUMNS} for e in evaluations], columns=list(RESULT_COLUMNS))
    df["replicate"] = pd.array([getattr(e, "replicate", None) for e in evaluations], dtype="Int64")  # true rows
    df["values"] = pd.Series(
        [getattr(e, "values", None) or values.get(getattr(e, "key", None)) for e in evaluations],
        index=df.index,
        dtype=object,
    )
    for n in names:
        df[n] = [None if w is None else float(w.get(n, 0.0)) for w in df["weights"]]
    ci = [score_interval(s, n, m) for s, n, m in zip(df.score, df.n, df.metric)]
    df["low"] = [np.nan if c is None else c[0] for c in ci]
    df["high"] = [np.nan if c is None else c[1] for c in ci]
    df["ci"] = [WILSON if c is not None else "" for c in ci]
    boot = [i for i, (c, v) in enumerate(zip(ci, df["values"])) if c is None and v is not None]
    if boot:
        bounds = bootstrap_intervals([df["values"].iat[i] for i in boot])
        rows = df.index[boot]
        df.loc[rows, "low"], df.loc[rows, "high"], df.loc[rows, "ci"] = bounds[:, 0], bounds[:, 1], BOOTSTRAP
    return df


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


def mean_benchmarks(benchmarks: Sequence, results: pd.DataFrame) -> list[str]:
    """The benchmarks the pseudo-benchmark ``mean`` averages: every higher-is-better one (by the
    benchmark spec's own direction) that has scores in ``results``."""
    present = set(results.benchmark)
    return [b.name for b in benchmarks if b.higher_is_better and b.name in present]


def with_lab_mean(results: pd.DataFrame, benchmarks: Sequence) -> pd.DataFrame:
    """``results`` plus the ``mean`` rows over :func:`mean_benchmarks`."""
    return with_mean(results, mean_benchmarks(benchmarks, results)) if len(results) else results


def with_mean(results: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """Add rows of the pseudo-benchmark ``mean``: the mean of ``benchmarks`` (which must share a
    direction) for every model scored on all of them. Its ``n`` is the examples summed over them; its
    ``low``/``high`` a percentile bootstrap (``ci`` "bootstrap", :func:`mean_bootstrap_intervals`) where
    every benchmark has per-example values, else (when every benchmark is a proportion) the normal
    approximation mean ± 1.96·√(Σ p_b(1−p_b)/n_b)/B over B benchmarks with independent examples, clipped to
    [0, 1] (``ci`` "normal")."""
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
    low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    how = np.where(np.isfinite(half), NORMAL, "").astype(object)
    if "values" in sub:  # where every benchmark has per-example values: the stratified bootstrap instead
        # (a row without values holds None, or NaN once pandas has concatenated it with rows that have them)
        kept = {(m, b): v for m, b, v in zip(model, sub.benchmark, sub["values"]) if isinstance(v, ExampleValues)}
        order = list(dict.fromkeys(benchmarks))
        full = [i for i, m in enumerate(complete) if all((m, b) in kept for b in order)]
        if full:
            bounds = mean_bootstrap_intervals([[kept[complete[i], b] for b in order] for i in full])
            low[full], high[full], how[full] = bounds[:, 0], bounds[:, 1], BOOTSTRAP
    mean = first.assign(benchmark=MEAN, score=centre, metric=metric.iloc[0], n=got.n.to_numpy(), low=low, high=high)
    mean["ci"] = how
    if "values" in mean:  # a mean's per-example values: its benchmarks', in order (for a paired difference)
        mean["values"] = pd.Series([None] * len(mean), index=mean.index, dtype=object)
        if "values" in sub and full:
            for i in full:
                mean.iat[i, mean.columns.get_loc("values")] = tuple(kept[complete[i], b] for b in order)
    return pd.concat([results, mean.reset_index(drop=True)], ignore_index=True)


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
    replicates' mean score, summed exactly, and no replicate number — what a page shows as "the trained
    mixture". Its interval (``ci`` "seeds") is the mean of the replicates' bounds where every replicate has one:
    the seeds are scored on the same examples, so their test-sampling errors correlate, and for a mean of two
    estimates sd((a+b)/2) ≤ (sd a + sd b)/2 whatever the correlation — averaging the bounds is conservative, never
    narrower than the truth (it says nothing of seed-to-seed spread: that is the noise ceiling's). NaN where a
    replicate has none. Unchanged when no mixture has replicates."""
    if "replicate" not in results or not len(results):
        return results
    # one pass over the true rows' positions (a page calls this on every rerun: no per-group pandas lookups)
    groups: dict[tuple, list[int]] = {}
    is_true = results["kind"].to_numpy(dtype=object) == "true"
    labels, benches = results["label"].to_numpy(dtype=object), results["benchmark"].to_numpy(dtype=object)
    for i in np.flatnonzero(is_true):
        groups.setdefault((labels[i], benches[i]), []).append(int(i))
    many = [pos for pos in groups.values() if len(pos) > 1]
    if not many:
        return results
    scores = results["score"].to_numpy(dtype=float)
    first = results.iloc[[pos[0] for pos in many]].copy()  # keeps the first replicate's index
    first["score"] = [exact_mean(scores[pos]) for pos in many]
    first["replicate"] = pd.NA
    if "low" in first and "high" in first:
        # a mean of bounds, NaN as soon as one replicate has none (pandas' mean would skip it)
        for col in ("low", "high"):
            bound = results[col].to_numpy(dtype=float)
            first[col] = [float(bound[pos].sum() / len(pos)) for pos in many]  # (as pandas' mean sums)
        if "ci" in first:
            first["ci"] = [SEEDS if pd.notna(lo) else "" for lo in first["low"]]
    elif "ci" in first:
        first["ci"] = ""
    if "values" in first:
        first["values"] = None  # a mean over seeds has no per-example values
    dropped = np.ones(len(results), dtype=bool)
    dropped[[i for pos in many for i in pos]] = False
    return pd.concat([results[dropped], first]).sort_index(kind="stable")


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
    # masks as plain arrays, made once (a page calls this on every click)
    kind, bench = results["kind"].to_numpy(dtype=object), results["benchmark"].to_numpy(dtype=object)
    proxy = results[kind == "proxy"]
    true = results[kind == "true"]
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
    proxy_at = np.array([k == key for k in proxy_keys], dtype=bool)
    true_at = np.array([weights_key(w, names) == true_key for w in true.weights], dtype=bool)
    proxy_bench, true_bench = bench[kind == "proxy"], bench[kind == "true"]
    expert = kind == "expert"
    ns_all = results["n"] if "n" in results else None

    def cell(rows_: pd.DataFrame, i: int = -1):
        if not len(rows_):
            return "—" if text else None
        r = rows_.iloc[i]
        if not text:
            return r.score
        return format_score(r.score, r.get("low"), r.get("high"))

    rows = []
    for b in benchmarks:
        pr = proxy[(proxy_bench == b) & proxy_at]
        tr = true[(true_bench == b) & true_at]
        ex = results[expert & (bench == b)]
        ns = ns_all[bench == b].dropna() if ns_all is not None else pd.Series(dtype=float)
        row = {
            "benchmark": b,
            "n": int(ns.max()) if len(ns) else None,
            "proxy": cell(pr),
            ("true" if exact else "nearest true"): cell(tr),
        }
        row.update({f"expert {lab}": cell(ex, i) for i, lab in enumerate(ex.label)})
        rows.append(row)
    return pd.DataFrame(rows), true_key, exact, dist
