"""How well a proxy ranks the trained mixtures: the report table, ρ summaries, methods side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.analysis.ranking import (
    Correlation,
    mean_of_rhos,
    pairwise_accuracy,
    rank_correlation,
    rank_warning,
    top_quartile_correlation,
)
from mixlab.analysis.replicates import SUBSETS, in_subset, noise_ceiling, replicate_pairs
from mixlab.analysis.tables import MEAN, mean_benchmarks, paired, with_mean
from mixlab.analysis.ties import regret, snap_ties


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
        warning = rank_warning(rho.n)  # too few mixtures to rank: no CI (a bootstrap of 3 points is no interval)
        rows.append(
            {
                "benchmark": name,
                "higher_is_better": hib,
                "n": rho.n,
                "spearman": rho.value,
                "spearman_low": None if warning else rho.low,
                "spearman_high": None if warning else rho.high,
                "kendall": tau.value,
                "top25_spearman": top.value,
                "n_top25": top.n,
                "pairwise_accuracy": pairwise_accuracy(px, ty),
                "pick": pairs.label.iloc[reg.chosen],
                "pick_true_rank": reg.true_rank,
                "pick_tied": reg.tied,
                "pick_rank": reg.label(),
                "regret": reg.regret,
                "warning": warning,
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
