"""A search's figures: its trace, optuna's slice and contour views, studies compared, trials on the simplex."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mixlab.plots.style import SCALE_UP


def trace_figure(values: Sequence[float], label: str) -> go.Figure:
    """A search's objective per trial and its best so far."""
    x = list(range(1, len(values) + 1))
    fig = go.Figure(
        [
            go.Scatter(x=x, y=list(values), mode="markers", name="trial", marker=dict(size=7, opacity=0.6)),
            go.Scatter(x=x, y=list(pd.Series(values, dtype=float).cummax()), mode="lines", name="best so far"),
        ]
    )
    fig.update_layout(xaxis_title="trial", yaxis_title=label, height=360, margin=dict(t=30))
    return fig


def line_figure(values: Sequence[float], label: str) -> go.Figure:
    """One value per trial as a line (a multi-objective study's hypervolume history)."""
    fig = go.Figure(go.Scatter(x=list(range(1, len(values) + 1)), y=list(values), mode="lines+markers", name=label))
    fig.update_layout(xaxis_title="trial", yaxis_title=label, height=360, margin=dict(t=30))
    return fig


def slice_figure(study, label: str) -> go.Figure:
    """Optuna's slice plot of a study whose parameters are the mixture weights (mixlab.search.weights_study):
    the objective of every trial against each expert's weight, coloured by trial number."""
    import optuna.visualization

    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None  # the first objective
    fig = optuna.visualization.plot_slice(study, target=target, target_name=label)
    fig.update_layout(title=None, height=360, margin=dict(t=30))
    return fig


def contour_figure(study, x: str, y: str, label: str) -> go.Figure:
    """Optuna's contour plot of a weights study (mixlab.search.weights_study): the objective interpolated
    over two experts' weights, the trials as points (the first objective of a multi-objective study)."""
    import optuna.visualization

    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    fig = optuna.visualization.plot_contour(study, params=[x, y], target=target, target_name=label)
    fig.update_layout(title=None, height=420, margin=dict(t=30))
    return fig


SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x")
DASHES = ("solid", "dash", "dot", "dashdot")


def studies_figure(histories: dict[str, Sequence[float]], label: str) -> go.Figure:
    """Several studies' best-so-far lines on one pair of axes (trial number, objective): which search got
    where, how fast. ``histories``: study name → its complete trials' first objective, in trial order."""
    fig = go.Figure(
        [
            go.Scatter(
                x=list(range(1, len(v) + 1)),
                y=list(pd.Series(v, dtype=float).cummax()),
                mode="lines+markers",  # markers and dashes apart: studies that tie draw one line otherwise
                marker=dict(symbol=SYMBOLS[i % len(SYMBOLS)], size=8),
                line=dict(dash=DASHES[i % len(DASHES)]),
                name=name,
                hovertemplate=f"{name}<br>trial %{{x}}<br>best so far %{{y:.4f}}<extra></extra>",
            )
            for i, (name, v) in enumerate(histories.items())
        ]
    )
    fig.update_layout(
        xaxis_title="trial",
        yaxis_title=f"best so far: {label}",
        height=380,
        margin=dict(t=30),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def trials_ternary(names: Sequence[str], trials: Sequence[dict], label: str) -> go.Figure:
    """K=3: every complete trial of a study at its mixture on the simplex, coloured by its (first) objective,
    the best ringed — where on the simplex the search looked, and where it scored."""
    done = [t for t in trials if t["state"] == "complete" and t["values"]]
    w = np.array([[t["weights"][n] for n in names] for t in done]).reshape(-1, 3)
    v = np.array([t["values"][0] for t in done], dtype=float)
    fig = go.Figure(
        go.Scatterternary(
            a=w[:, 0],
            b=w[:, 1],
            c=w[:, 2],
            mode="markers",
            name="trial",
            marker=dict(size=9, color=v, colorscale=SCALE_UP, colorbar=dict(title=label), showscale=True),
            customdata=np.column_stack([np.arange(len(done)), v]),
            hovertemplate="trial %{customdata[0]}<br>"
            + _hover_ternary(names)
            + "<br>%{customdata[1]:.4f}<extra></extra>",
        )
    )
    if len(done):
        i = int(np.argmax(v))
        fig.add_trace(
            go.Scatterternary(
                a=[w[i, 0]], b=[w[i, 1]], c=[w[i, 2]], mode="markers", name="best",
                marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=2, color="crimson")),
                hoverinfo="skip",
            )
        )  # fmt: skip
    fig.update_layout(
        ternary=dict(aaxis_title=names[0], baxis_title=names[1], caxis_title=names[2]),
        height=440,
        margin=dict(t=50, b=60, l=60, r=60),  # room for the corner titles
        showlegend=False,
    )
    return fig


def _hover_ternary(names: Sequence[str]) -> str:
    return "<br>".join(f"{n} = %{{{axis}:.3f}}" for n, axis in zip(names, "abc"))
