"""The Simplex explorer's figures: proxies and true models on the simplex (a triangle, or a polygon beyond three experts), their colours, a click's selection, and parallel coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mixlab.analysis import MATCH, tie_ranks
from mixlab.plots.style import BEST_STYLE, KINDS, SCALE_DOWN, SCALE_UP, _hover
from mixlab.simplex import polygon_vertices, projected_xy


def selection_pick(points: Sequence[Sequence[float]], k: int, higher_is_better: bool) -> dict | None:
    """What a click, box or lasso on :func:`simplex_figure` selects, from the points' ``customdata`` (K
    weights, score, kind index): one point is itself; several give the best scored among them. Points with
    no score (the selection marker) are ignored; None when nothing is left. Returns weights, score, kind
    (from :data:`KINDS`) and n (how many points were selected)."""
    data = [list(d) for d in points if d is not None and len(d) > k + 1 and not np.isnan(d[k])]
    if not data:
        return None
    scores = [d[k] for d in data]
    best = int(np.argmax(scores) if higher_is_better else np.argmin(scores))
    return {"weights": data[best][:k], "score": scores[best], "kind": KINDS[int(data[best][k + 1])], "n": len(data)}


PROXY_SIZE, TRUE_SIZE, RING_SIZE = 13, 12, 24  # marker sizes (px): a proxy, a trained mixture, a proxy under one


COLOURS = ("shared", "per source", "rank")  # how simplex_figure colours proxies and true models


def colour_values(scores: pd.Series, mode: str, higher_is_better: bool) -> np.ndarray:
    """The colour of each of one source's points: its score (``shared``), min-max normalised with 1 = the
    best (``per source``), or its tie-aware rank mapped to [0, 1] with 1 = the best (``rank``)."""
    s = np.asarray(scores, dtype=float)
    if mode == "shared" or len(s) == 0:
        return s
    if mode == "per source":
        span = np.ptp(s)
        norm = (s - s.min()) / span if span > 0 else np.ones_like(s)
        return norm if higher_is_better else 1 - norm
    r = tie_ranks(s, higher_is_better)
    return 1 - (r - 1) / max(len(s) - 1, 1)


def simplex_figure(
    names: Sequence[str],
    proxy: pd.DataFrame,
    true: pd.DataFrame,
    experts: pd.DataFrame,
    selected: Sequence[float] | None,
    title: str,
    higher_is_better: bool,
    vertices: np.ndarray | None = None,
    searched: pd.DataFrame | None = None,
    best: Sequence | None = None,
    colour: str = "shared",
) -> go.Figure:
    """K=3: a ternary plot; K>3: the barycentric projection onto a polygon (``vertices``, (K, 2); default
    the regular K-gon, or :func:`mixlab.simplex.separating_vertices` so no two mixtures share a point).

    ``proxy``/``true``/``experts`` have one column per expert name plus ``score`` (and ``label``).
    Proxy scores colour the grid; true-mixture models are diamonds coloured on the same scale (a proxy at a
    trained mixture's point is drawn larger, a ring of its colour around the diamond: never hidden); experts
    sit at the vertices; ``searched`` (weights, ``score`` = the search objective on dev) are the points a
    search tried, drawn small and uncoloured (their scores are on other data); ``best``
    (:class:`mixlab.analysis.Best`, one per source) marks the answer under the proxy, the trained models and
    a search, each in its :data:`BEST_STYLE`. ``colour`` (:data:`COLOURS`): ``shared``, one scale for
    proxies and true models; ``per source``, each source min-max normalised (1 = its best), since a linear
    merge's scores are compressed and one scale says "proxies are worse" rather than "proxies rank alike";
    ``rank``, each source's tie-aware rank, 1 = its best. ``customdata`` per point: the K weights, the score,
    the index of its kind in :data:`KINDS`.
    """
    k = len(names)
    if colour not in COLOURS:
        raise ValueError(f"unknown colour mode {colour!r}; use one of {', '.join(COLOURS)}")
    scores = pd.concat([proxy["score"], true["score"]]) if len(true) else proxy["score"]
    cmin, cmax = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    scale = SCALE_UP if higher_is_better else SCALE_DOWN
    if colour != "shared":
        cmin, cmax, scale = 0.0, 1.0, SCALE_UP  # 1 = the source's best, whichever the direction
        title = f"{title}: {'normalised' if colour == 'per source' else 'rank'} within each source (1 = best)"
    fig = go.Figure()

    verts = polygon_vertices(k) if vertices is None else np.asarray(vertices, dtype=float)
    mode = colour

    def trace(df: pd.DataFrame, name: str, marker: dict, kind: str, text_col: str | None = None, colour: bool = True):
        w = df[list(names)].to_numpy(dtype=float) if len(df) else np.zeros((0, k))
        custom = np.column_stack([w, df["score"].to_numpy(dtype=float), np.full(len(df), KINDS.index(kind))])
        hover = f"<b>{name}</b><br>" + _hover(names) + f"<br>score = %{{customdata[{k}]:.4f}}<extra></extra>"
        if colour and len(df):
            values = colour_values(df["score"], mode, higher_is_better)
            marker = {**marker, "color": values, "colorscale": scale, "cmin": cmin, "cmax": cmax}
        common = dict(
            name=name,
            mode="markers+text" if text_col else "markers",
            marker=marker,
            customdata=custom,
            hovertemplate=hover,
            cliponaxis=False,
            text=df[text_col] if text_col else None,
            textposition="top center",
        )
        if k == 3:
            fig.add_trace(go.Scatterternary(a=w[:, 0], b=w[:, 1], c=w[:, 2], **common))
        else:
            xy = projected_xy(w, verts) if len(w) else np.zeros((0, 2))
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], **common))

    # a proxy scored where a trained mixture sits (TIES, DARE, TA cached only there) would hide under its
    # diamond: it is drawn larger, a ring of its own colour around the diamond drawn over it
    trained = true[list(names)].to_numpy(dtype=float) if len(true) else np.zeros((0, k))
    under = [
        len(trained) > 0 and np.abs(trained - w).max(axis=1).min() <= MATCH
        for w in (proxy[list(names)].to_numpy(dtype=float) if len(proxy) else np.zeros((0, k)))
    ]
    trace(
        proxy,
        "proxy (merged experts)",
        dict(
            size=[RING_SIZE if u else PROXY_SIZE for u in under] if any(under) else PROXY_SIZE,
            symbol="circle",
            line=dict(width=0.5, color="white"),
            colorbar=dict(title=dict(text=title, side="right"), len=0.85),
        ),
        "proxy",
    )
    if len(true):
        trace(
            true,
            "true mixture (trained)",
            dict(size=TRUE_SIZE, symbol="diamond", line=dict(width=1.5, color="black")),
            "true",
        )
    if len(experts):
        trace(experts, "expert", dict(size=16, symbol="star", line=dict(width=1, color="black")), "expert")
    if searched is not None and len(searched):
        trace(
            searched.assign(score=np.nan),
            "searched (trials)",
            dict(size=7, symbol="x-thin", line=dict(width=1.5, color="#d62728")),
            "searched",
            colour=False,
        )
    for b in best or ():
        name, symbol, colour, _ = BEST_STYLE[b.source]
        point = pd.DataFrame([list(b.weights)], columns=list(names)).assign(
            score=np.nan if b.score is None else b.score
        )
        trace(
            point,
            name,
            dict(size=26, symbol=symbol, color=colour, line=dict(width=3, color=colour)),
            "best",
            colour=False,
        )
    if selected is not None:
        sel = pd.DataFrame([list(selected)], columns=list(names)).assign(score=np.nan)
        trace(
            sel,
            "selected",
            dict(size=22, symbol="circle-open", color="red", line=dict(width=3, color="red")),
            "selected",
            colour=False,
        )
    # no clickmode/dragmode here: Streamlit sets click-to-select with pan, and box/lasso sit in the modebar
    layout = dict(
        height=560,
        margin=dict(l=50, r=30, t=50, b=40),
        legend=dict(orientation="h", yanchor="bottom", y=-0.12, x=0),
    )
    if k == 3:
        # interior ticks only: 0 and 1 would sit on the expert stars at the corners
        axis = dict(min=0, linewidth=2, ticks="outside", tickvals=[0.2, 0.4, 0.6, 0.8], tickformat=".1f")
        fig.update_layout(
            ternary=dict(
                sum=1,
                aaxis=dict(title=dict(text=names[0]), **axis),
                baxis=dict(title=dict(text=names[1]), **axis),
                caxis=dict(title=dict(text=names[2]), **axis),
            ),
            **layout,
        )
    else:
        ring = np.vstack([verts, verts[:1]])
        fig.add_trace(
            go.Scatter(
                x=ring[:, 0], y=ring[:, 1], mode="lines", line=dict(color="#999"), hoverinfo="skip", showlegend=False
            )
        )
        for a in vertex_labels(names, verts):
            fig.add_annotation(**a)
        lo, hi = verts.min(axis=0) - 0.12, verts.max(axis=0) + 0.12  # fixed: autorange would make room
        axes = dict(xaxis=dict(range=[lo[0], hi[0]]), yaxis=dict(range=[lo[1], hi[1]]))  # for the labels' text
        # room around the polygon for the labels; the colour bar right of them, not over them
        room = 70  # px: a label of ~10 characters
        layout["margin"] = dict(l=room, r=room + 90, t=room, b=room + 60)
        plot_height = layout["height"] - 2 * room - 60
        layout["legend"] = dict(orientation="h", yanchor="top", y=-(room + 5) / plot_height, x=0)
        fig.data[0].marker.colorbar.update(x=1.0, xanchor="left", xpad=room + 10)
        fig.update_layout(
            xaxis=dict(visible=False, scaleanchor="y", **axes["xaxis"]),
            yaxis=dict(visible=False, **axes["yaxis"]),
            **layout,
        )
    return fig


MAX_NAMED_VERTICES = 8  # beyond, a polygon's vertices are numbered (names of 15 checkpoints overlap)


def vertex_names(names: Sequence[str]) -> list[str]:
    """What each vertex of a K>3 polygon is labelled: its expert's name, or beyond
    :data:`MAX_NAMED_VERTICES` its number (1 = the first expert), which :func:`vertex_key` explains."""
    return list(names) if len(names) <= MAX_NAMED_VERTICES else [str(i + 1) for i in range(len(names))]


def vertex_key(names: Sequence[str]) -> str | None:
    """The caption that names numbered vertices ("1 expert-add · 2 expert-rev · …"), None when named."""
    return None if len(names) <= MAX_NAMED_VERTICES else " · ".join(f"{i + 1} {n}" for i, n in enumerate(names))


def vertex_labels(names: Sequence[str], vertices: np.ndarray) -> list[dict]:
    """Plotly annotations labelling each vertex of a K>3 polygon (:func:`vertex_names`), each just beyond
    its vertex and anchored away from the polygon, clear of the expert star there."""
    out = []
    vertices = np.asarray(vertices, dtype=float)
    centre = vertices.mean(axis=0)
    for text, (x, y) in zip(vertex_names(names), vertices):
        dx, dy = x - centre[0], y - centre[1]
        norm = float(np.hypot(dx, dy)) or 1.0
        side = abs(dx) > abs(dy)
        out.append(
            dict(
                x=x,
                y=y,
                text=text,
                showarrow=False,
                xanchor=("left" if dx > 0 else "right") if side else "center",
                yanchor="middle" if side else ("bottom" if dy > 0 else "top"),
                xshift=12 * dx / norm,
                yshift=12 * dy / norm,
                font=dict(size=14),
            )
        )
    return out


def parallel_figure(names: Sequence[str], points: pd.DataFrame, title: str, higher_is_better: bool) -> go.Figure:
    """Parallel coordinates: one line per mixture through its K weights and its score, coloured by the
    score, so every mixture of any K is its own line (axes can be brushed to filter)."""
    dims = [dict(label=n, values=points[n], range=[0, 1]) for n in names]
    dims.append(dict(label="score", values=points["score"]))
    line = dict(color=points["score"], colorscale=SCALE_UP if higher_is_better else SCALE_DOWN, showscale=True)
    # the colour bar sits in the right margin, clear of the score axis's tick labels
    line["colorbar"] = dict(title=dict(text=title, side="right"), x=1.0, xanchor="left", xpad=60)
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(height=460, margin=dict(l=50, r=170, t=60, b=30))
    return fig
