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

The package, one concept a module: :mod:`~mixlab.analysis.intervals`, :mod:`~mixlab.analysis.mixtures`, :mod:`~mixlab.analysis.ties`, :mod:`~mixlab.analysis.ranking`, :mod:`~mixlab.analysis.tables`, :mod:`~mixlab.analysis.replicates`, :mod:`~mixlab.analysis.pareto`, :mod:`~mixlab.analysis.best`, :mod:`~mixlab.analysis.report`; every
name is importable from ``mixlab.analysis`` as before."""

from __future__ import annotations

from mixlab.analysis.best import Best, best_mixtures, best_on_plane, leaderboard
from mixlab.analysis.intervals import (
    PROPORTION_METRICS,
    Z95,
    difference_interval,
    format_score,
    score_interval,
    wilson_interval,
)
from mixlab.analysis.mixtures import MATCH, nearest, same_mixture, weights_key
from mixlab.analysis.pareto import method_fronts, pareto_front, pareto_points
from mixlab.analysis.ranking import (
    MIN_RANK_N,
    Correlation,
    bootstrap_statistics,
    mean_of_rhos,
    mixtures_needed,
    pairwise_accuracy,
    rank_correlation,
    rank_warning,
    spearman_ci_width,
    top_quartile_correlation,
)
from mixlab.analysis.replicates import SUBSETS, ceiling_text, in_subset, noise_ceiling, replicate_pairs
from mixlab.analysis.report import SUMMARIES, method_comparison, proxy_report, rho_summaries, subset_of
from mixlab.analysis.tables import (
    MEAN,
    RESULT_COLUMNS,
    cached_params,
    collapse_replicates,
    mean_benchmarks,
    paired,
    readable,
    results_table,
    scores_at,
    with_lab_mean,
    with_mean,
)
from mixlab.analysis.ties import (
    TIE_RTOL,
    Regret,
    at_least,
    best_index,
    exact_mean,
    rank_label,
    regret,
    same_score,
    snap_ties,
    tie_ranks,
)

__all__ = [
    "Z95",
    "PROPORTION_METRICS",
    "wilson_interval",
    "score_interval",
    "difference_interval",
    "format_score",
    "weights_key",
    "MATCH",
    "same_mixture",
    "nearest",
    "TIE_RTOL",
    "same_score",
    "snap_ties",
    "best_index",
    "at_least",
    "exact_mean",
    "tie_ranks",
    "rank_label",
    "Regret",
    "regret",
    "MIN_RANK_N",
    "spearman_ci_width",
    "mixtures_needed",
    "rank_warning",
    "Correlation",
    "rank_correlation",
    "bootstrap_statistics",
    "pairwise_accuracy",
    "top_quartile_correlation",
    "mean_of_rhos",
    "MEAN",
    "RESULT_COLUMNS",
    "results_table",
    "cached_params",
    "readable",
    "mean_benchmarks",
    "with_lab_mean",
    "with_mean",
    "paired",
    "collapse_replicates",
    "scores_at",
    "SUBSETS",
    "in_subset",
    "replicate_pairs",
    "noise_ceiling",
    "ceiling_text",
    "pareto_front",
    "pareto_points",
    "method_fronts",
    "Best",
    "best_mixtures",
    "leaderboard",
    "best_on_plane",
    "proxy_report",
    "subset_of",
    "SUMMARIES",
    "rho_summaries",
    "method_comparison",
]
