"""Replicates (seeds) of the true models: split halves and the noise ceiling."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mixlab.analysis.mixtures import weights_key
from mixlab.analysis.ranking import Correlation, rank_correlation
from mixlab.analysis.ties import snap_ties
from mixlab.errors import MixlabError

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
