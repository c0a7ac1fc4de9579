"""The best mixtures (under the proxy, the trained models, a search) and the lab's leaderboard."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mixlab.analysis.intervals import difference_interval, format_score, pairable, paired_difference
from mixlab.analysis.mixtures import same_mixture, weights_key
from mixlab.analysis.tables import collapse_replicates
from mixlab.analysis.ties import snap_ties
from mixlab.simplex import Mixture


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

    Columns: model, mixture, score, low, high (95% interval, NaN where none), ci (how it was made), n,
    true_at_pick, true_at_low, true_at_high (the pick's row only: the trained model there, with its interval),
    values (per-example, or None), diff, diff_low, diff_high, diff_how
    (each row minus the first: paired over the shared examples where both have per-example values,
    :func:`paired_difference`, "paired"; else from the two intervals, :func:`difference_interval`, "MOVER")."""
    cols = [
        "model",
        "mixture",
        "score",
        "low",
        "high",
        "ci",
        "n",
        "true_at_pick",
        "true_at_low",
        "true_at_high",
        "values",
    ]
    sub = collapse_replicates(results[results.benchmark == benchmark])
    if sub.empty:
        return pd.DataFrame(columns=cols)
    rows = []

    def add(model: str, mixture: str, r, true_at=None) -> None:
        low, high = _float(r.get("low")), _float(r.get("high"))
        n = None if pd.isna(r.get("n")) else int(r.get("n"))
        values, ci = r.get("values"), r.get("ci") or ""
        there = (
            (None,) * 3
            if true_at is None
            else (float(true_at.score), _float(true_at.get("low")), _float(true_at.get("high")))
        )
        rows.append([model, mixture, float(r.score), low, high, ci, n, *there, values])

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
            true_at = None if hit is None else trained.iloc[hit]
        add(model, b.label + (f"; tied with {b.tied} other{'s' if b.tied > 1 else ''}" if b.tied else ""), r, true_at)
    table = pd.DataFrame(rows, columns=cols)
    hib = bool(sub.higher_is_better.iloc[0])
    table = table.sort_values("score", ascending=not hib, kind="stable").reset_index(drop=True)
    top = table.iloc[0]
    diffs = []
    for i, r in table.iterrows():
        if i and pairable(r["values"], top["values"]):
            d = paired_difference(r["values"], top["values"])
            diffs.append((r.score - top.score, d.low, d.high, "paired"))
        elif i and None not in (r.low, r.high, top.low, top.high) and not pd.isna([r.low, top.low]).any():
            diffs.append((*difference_interval(r.score, r.low, r.high, top.score, top.low, top.high), "MOVER"))
        else:
            diffs.append((np.nan, np.nan, np.nan, ""))
    return table.assign(
        diff=[d[0] for d in diffs],
        diff_low=[d[1] for d in diffs],
        diff_high=[d[2] for d in diffs],
        diff_how=[d[3] for d in diffs],
    )


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
