"""Pareto fronts on two or three benchmarks, with the best mixtures and the selection marked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mixlab.analysis import MATCH
from mixlab.plots.simplex import vertex_key
from mixlab.plots.style import BEST_STYLE, _hover


def _at_selection(points: pd.DataFrame, names: Sequence[str], selected: Sequence[float] | None) -> pd.DataFrame:
    """The rows of ``points`` (a column per expert) at the selected mixture, to ring; none without a selection."""
    if selected is None or not len(points):
        return points.iloc[:0]
    w = points[list(names)].to_numpy(dtype=float)
    return points[np.abs(w - np.asarray(selected, dtype=float)).max(axis=1) <= MATCH]


def _add_marks(fig, trace, dims, names, best, at, best_size, ring_size, hover, symbols=None) -> None:
    """The best mixtures (``best``) in their :data:`BEST_STYLE` and the selected mixture (``at``) ringed in red,
    on a 2-D or a 3-D figure: ``trace`` is go.Scatter or go.Scatter3d, ``dims`` its coordinate columns,
    ``hover`` what a best mark's hover says after its name, ``symbols`` a map for symbols the trace lacks."""
    for _, b in (best if best is not None else pd.DataFrame()).iterrows():
        name, symbol, colour, _ = BEST_STYLE[b.source]
        fig.add_trace(
            trace(
                **{d: [b[d]] for d in dims},
                mode="markers",
                name=name,
                text=[b.label],
                customdata=[[b[n] for n in names]],
                marker=dict(
                    symbol=(symbols or {}).get(symbol, symbol),
                    size=best_size,
                    color=colour,
                    line=dict(width=3, color=colour),
                ),
                hovertemplate=f"<b>{name}</b>{hover}",
            )
        )
    if len(at):
        fig.add_trace(
            trace(
                **{d: at[d] for d in dims},
                mode="markers",
                name="selected",
                marker=dict(symbol="circle-open", size=ring_size, color="red", line=dict(width=3, color="red")),
                hoverinfo="skip",
            )
        )


def pareto_figure(
    points: pd.DataFrame,
    x: str,
    y: str,
    names: Sequence[str],
    searched: pd.DataFrame | None = None,
    best: pd.DataFrame | None = None,
    selected: Sequence[float] | None = None,
) -> go.Figure:
    """``points`` from :func:`mixlab.analysis.pareto_points`; points on a front get a thick outline and
    each front (merges and experts; trained mixtures and experts) is traced by a dotted line. ``searched``:
    a multi-objective search's front (columns x, y: its winners' test scores), drawn as a dashed line.
    ``best``: :func:`mixlab.analysis.best_on_plane`, each marked in its :data:`BEST_STYLE`; ``selected``:
    the selected mixture's weights, ringed where a proxy or trained model at it is on the plane."""
    styles = {
        "expert": ("star", 17, "#ff7f0e"),
        "proxy": ("circle", 9, "#1f77b4"),
        "true": ("diamond", 11, "#2ca02c"),
        "base": ("x", 12, "#7f7f7f"),
    }
    fig = go.Figure()
    for kind, (symbol, size, colour) in styles.items():
        sub = points[points.kind == kind]
        if sub.empty:
            continue
        on_front = sub["proxy_front"] | sub["true_front"]
        text = sub["mixture"] if "mixture" in sub else sub["label"]  # one label format for every kind
        numbered = kind == "expert" and vertex_key(names) is not None  # 15 names overlapped: numbers, as the K-gon
        fig.add_trace(
            go.Scatter(
                x=sub["x"],
                y=sub["y"],
                mode="markers+text" if kind == "expert" else "markers",  # experts named on the plot
                textposition="top center",
                name={"proxy": "proxy (merge)", "true": "true mixture"}.get(kind, kind),
                text=text,
                texttemplate=[str(list(names).index(t) + 1) if t in names else t for t in text] if numbered else None,
                customdata=sub[list(names)].to_numpy(dtype=float),
                marker=dict(
                    symbol=symbol, size=size, color=colour, line=dict(width=np.where(on_front, 2.5, 0.5), color="black")
                ),
                hovertemplate="<b>%{text}</b><br>"
                + _hover(names)
                + f"<br>{x} %{{x:.4f}}<br>{y} %{{y:.4f}}<extra>{kind}</extra>",
            )
        )
    trained = (points.kind == "true").any()  # a recycling pool has checkpoints and merges, no trained mixtures
    for col, name, colour in (
        ("proxy_front", "front of merges", "#1f77b4"),
        ("true_front", "front of trained mixtures" if trained else "front of the checkpoints alone", "#2ca02c"),
    ):
        front = points[points[col]].sort_values(["x", "y"])
        if len(front) > 1:
            fig.add_trace(
                go.Scatter(
                    x=front["x"],
                    y=front["y"],
                    mode="lines",
                    name=name,
                    line=dict(color=colour, width=2, dash="dot"),
                    hoverinfo="skip",
                )
            )
    if searched is not None and len(searched):
        front = searched.sort_values(["x", "y"])
        fig.add_trace(
            go.Scatter(
                x=front["x"],
                y=front["y"],
                mode="lines+markers",
                name="searched front (test)",
                line=dict(color="#d62728", width=2, dash="dash"),
                marker=dict(symbol="x", size=9, color="#d62728"),
            )
        )
    hover = f"<br>%{{text}}<br>{x} %{{x:.4f}}<br>{y} %{{y:.4f}}<extra></extra>"
    _add_marks(fig, go.Scatter, ("x", "y"), names, best, _at_selection(points, names, selected), 24, 20, hover)
    fig.update_layout(
        height=520,
        xaxis_title=x,
        yaxis_title=y,
        margin=dict(l=60, r=20, t=30, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    ys = points["y"].to_numpy(dtype=float)
    ys = ys[np.isfinite(ys)]
    if len(ys):  # room above the highest point for an expert's name (autorange clipped it under the legend)
        span = float(ys.max() - ys.min()) or 1.0
        fig.update_yaxes(range=[float(ys.min()) - 0.05 * span, float(ys.max()) + 0.12 * span])
    return fig


SYMBOLS_3D = {"square-open": "square-open", "diamond-open": "diamond-open", "star-open": "cross"}  # no 3-D star


def pareto_figure_3d(
    points: pd.DataFrame,
    x: str,
    y: str,
    z: str,
    names: Sequence[str],
    best: pd.DataFrame | None = None,
    selected: Sequence[float] | None = None,
) -> go.Figure:
    """Three objectives: ``points`` from :func:`mixlab.analysis.pareto_points` with ``bz``, as a 3-D
    scatter (drag to turn it). Points on a front are drawn large and opaque, the rest small and faint;
    experts are named; ``best`` (:func:`mixlab.analysis.best_on_plane` with ``bz``) is marked in its
    :data:`BEST_STYLE`, and the selected mixture is ringed in red."""
    styles = {
        "expert": ("diamond", 8, "#ff7f0e"),
        "proxy": ("circle", 4, "#1f77b4"),
        "true": ("square", 5, "#2ca02c"),
        "base": ("x", 6, "#7f7f7f"),
    }
    fig = go.Figure()
    hover = "<b>%{text}</b><br>" + _hover(names) + f"<br>{x} %{{x:.4f}}<br>{y} %{{y:.4f}}<br>{z} %{{z:.4f}}"
    for kind, (symbol, size, colour) in styles.items():
        sub = points[points.kind == kind]
        for on, part in (
            (True, sub[sub.proxy_front | sub.true_front]),
            (False, sub[~(sub.proxy_front | sub.true_front)]),
        ):
            if part.empty:
                continue
            name = {"proxy": "proxy (merge)", "true": "true mixture"}.get(kind, kind)
            fig.add_trace(
                go.Scatter3d(
                    x=part["x"],
                    y=part["y"],
                    z=part["z"],
                    mode="markers+text" if kind == "expert" else "markers",
                    name=f"{name} on a front" if on else name,
                    text=part["mixture"],
                    customdata=part[list(names)].to_numpy(dtype=float),
                    marker=dict(
                        symbol=symbol,
                        size=size * (1.6 if on else 1.0),
                        color=colour,
                        opacity=1.0 if on else 0.35,
                        line=dict(width=1, color="black"),
                    ),
                    hovertemplate=hover + f"<extra>{kind}</extra>",
                )
            )
    at = _at_selection(points, names, selected)
    _add_marks(fig, go.Scatter3d, ("x", "y", "z"), names, best, at, 14, 14, "<br>%{text}<extra></extra>", SYMBOLS_3D)
    fig.update_layout(
        height=660,
        scene=dict(xaxis_title=x, yaxis_title=y, zaxis_title=z),
        margin=dict(l=0, r=0, t=30, b=70),
        legend=dict(orientation="h", yanchor="top", y=0.0, x=0),  # below: above, it ran under the modebar
    )
    return fig
