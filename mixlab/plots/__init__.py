"""Plotly figures for the dashboard, built from library tables (no Streamlit here, so tests can check
every number a figure carries). Each point carries its mixture weights in ``customdata``, which is
how a click on a point becomes a selected mixture.

One module a page's figures: :mod:`~mixlab.plots.style`, :mod:`~mixlab.plots.simplex`, :mod:`~mixlab.plots.proxy_true`, :mod:`~mixlab.plots.pareto`, :mod:`~mixlab.plots.charts`, :mod:`~mixlab.plots.search`; every name is
importable from ``mixlab.plots`` as before."""

from __future__ import annotations

from mixlab.plots.charts import heatmap, weights_figure
from mixlab.plots.pareto import SYMBOLS_3D, pareto_figure, pareto_figure_3d
from mixlab.plots.proxy_true import proxy_true_figure
from mixlab.plots.search import contour_figure, line_figure, slice_figure, studies_figure, trace_figure, trials_ternary
from mixlab.plots.simplex import (
    COLOURS,
    MAX_NAMED_VERTICES,
    PROXY_SIZE,
    RING_SIZE,
    TRUE_SIZE,
    colour_values,
    parallel_figure,
    selection_pick,
    simplex_figure,
    vertex_key,
    vertex_labels,
    vertex_names,
)
from mixlab.plots.style import BEST_STYLE, KINDS, SCALE_DOWN, SCALE_UP, metric_title

__all__ = [
    "SCALE_UP",
    "SCALE_DOWN",
    "KINDS",
    "BEST_STYLE",
    "metric_title",
    "selection_pick",
    "PROXY_SIZE",
    "TRUE_SIZE",
    "RING_SIZE",
    "COLOURS",
    "colour_values",
    "simplex_figure",
    "MAX_NAMED_VERTICES",
    "vertex_names",
    "vertex_key",
    "vertex_labels",
    "parallel_figure",
    "proxy_true_figure",
    "pareto_figure",
    "SYMBOLS_3D",
    "pareto_figure_3d",
    "heatmap",
    "weights_figure",
    "trace_figure",
    "line_figure",
    "slice_figure",
    "contour_figure",
    "studies_figure",
    "trials_ternary",
]
