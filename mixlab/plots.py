"""Plotly figures for the dashboard, built from library tables (no Streamlit here, so tests can check
every number a figure carries). Each point carries its mixture weights in ``customdata``, which is
how a click on a point becomes a selected mixture."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mixlab.analysis import MATCH, regret, snap_ties, tie_ranks
from mixlab.simplex import polygon_vertices, projected_xy

SCALE_UP = "Viridis"  # higher is better: bright = good
SCALE_DOWN = "Viridis_r"  # lower is better (loss): bright = good, too
KINDS = ("proxy", "true", "expert", "selected", "searched", "best")  # customdata[K + 1]: the point's kind here
# how the best mixture of each source is marked, on every figure that marks it (mixlab.analysis.best_mixtures)
BEST_STYLE = {  # source: (legend name, Plotly symbol, colour, the glyph a caption uses for it)
    "proxy": ("best under the proxy", "square-open", "#111111", "□"),
    "true": ("best trained mixture", "diamond-open", "#ff7f0e", "◇"),
    "search": ("the search's winner", "star-open", "#9467bd", "☆"),
}


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


def metric_title(benchmark: str, metric: str, higher_is_better: bool) -> str:
    return f"{benchmark} {metric} ({'↑ higher' if higher_is_better else '↓ lower'} is better)"


def _hover(names: Sequence[str]) -> str:
    return "<br>".join(f"{n} = %{{customdata[{i}]:.3f}}" for i, n in enumerate(names))


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


def proxy_true_figure(
    pairs: pd.DataFrame,
    title_x: str,
    title_y: str,
    higher_is_better: bool = True,
    ranks: bool = False,
    colour_by: str | None = None,
) -> go.Figure:
    """Proxy (x) against true (y), one point per mixture (``pairs`` from :func:`mixlab.analysis.paired`),
    with y = x, the proxy's pick (:func:`mixlab.analysis.regret`) and the best trained mixture marked in
    their :data:`BEST_STYLE`.

    Args:
        ranks: plot tie-aware ranks (1 = best, :func:`mixlab.analysis.tie_ranks`) instead of scores: a proxy
            that ranks like the true models puts every point on y = x, whatever its scale.
        colour_by: an expert's name: colour each mixture by its weight, to see where the proxy fails.
    """
    if ranks:
        x = tie_ranks(pairs["proxy"], higher_is_better).astype(float)
        y = tie_ranks(pairs["true"], higher_is_better).astype(float)
    else:
        x, y = pairs["proxy"].to_numpy(dtype=float), pairs["true"].to_numpy(dtype=float)
    marker = dict(size=10, color="#3b6fb6", line=dict(width=1, color="white"))
    if colour_by is not None:
        marker |= dict(
            color=pairs[colour_by],
            colorscale="Viridis",
            cmin=0.0,
            cmax=1.0,
            colorbar=dict(title=dict(text=f"weight of {colour_by}", side="right")),
        )
    what = "rank" if ranks else "score"
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            name="trained mixture",
            text=pairs["label"],
            customdata=np.column_stack([pairs["proxy"], pairs["true"]]) if len(pairs) else None,
            marker=marker,
            hovertemplate="<b>%{text}</b><br>proxy %{customdata[0]:.4f}<br>true %{customdata[1]:.4f}"
            + f"<br>({what}s: %{{x}}, %{{y}})<extra></extra>",
            showlegend=False,
        )
    )
    if len(pairs):
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="y = x",
                line=dict(color="#999", dash="dash"),
                hoverinfo="skip",
            )
        )
        sign = 1.0 if higher_is_better else -1.0
        marks = (
            ("proxy", regret(pairs["proxy"], pairs["true"], higher_is_better).chosen),
            ("true", int(np.argmax(sign * snap_ties(pairs["true"])))),
        )
        for source, i in marks:
            name, symbol, colour, _ = BEST_STYLE[source]
            name = "the proxy's pick" if source == "proxy" else name
            fig.add_trace(
                go.Scatter(
                    x=[x[i]],
                    y=[y[i]],
                    mode="markers",
                    name=name,
                    text=[pairs["label"].iloc[i]],
                    marker=dict(symbol=symbol, size=22, color=colour, line=dict(width=3, color=colour)),
                    hovertemplate=f"<b>{name}</b>: %{{text}}<extra></extra>",
                )
            )
    axis = dict(autorange="reversed") if ranks else {}  # rank 1 (best) at the top right, like the scores
    suffix = " (1 = best)" if ranks else ""
    fig.update_layout(
        height=480,
        xaxis=dict(title=title_x + suffix, **axis),
        yaxis=dict(title=title_y + suffix, **axis),
        margin=dict(l=60, r=20, t=30, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def _at_selection(points: pd.DataFrame, names: Sequence[str], selected: Sequence[float] | None) -> pd.DataFrame:
    """The rows of ``points`` (a column per expert) at the selected mixture, to ring; none without a selection."""
    if selected is None or not len(points):
        return points.iloc[:0]
    w = points[list(names)].to_numpy(dtype=float)
    return points[np.abs(w - np.asarray(selected, dtype=float)).max(axis=1) <= MATCH]


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
        fig.add_trace(
            go.Scatter(
                x=sub["x"],
                y=sub["y"],
                mode="markers+text" if kind == "expert" else "markers",  # experts named on the plot
                textposition="top center",
                name={"proxy": "proxy (merge)", "true": "true mixture"}.get(kind, kind),
                text=sub["mixture"] if "mixture" in sub else sub["label"],  # one label format for every kind
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
    for _, b in (best if best is not None else pd.DataFrame()).iterrows():
        name, symbol, colour, _ = BEST_STYLE[b.source]
        fig.add_trace(
            go.Scatter(
                x=[b.x],
                y=[b.y],
                mode="markers",
                name=name,
                text=[b.label],
                customdata=[[b[n] for n in names]],
                marker=dict(symbol=symbol, size=24, color=colour, line=dict(width=3, color=colour)),
                hovertemplate=f"<b>{name}</b><br>%{{text}}<br>{x} %{{x:.4f}}<br>{y} %{{y:.4f}}<extra></extra>",
            )
        )
    at = _at_selection(points, names, selected)
    if len(at):
        fig.add_trace(
            go.Scatter(
                x=at["x"],
                y=at["y"],
                mode="markers",
                name="selected",
                marker=dict(symbol="circle-open", size=20, color="red", line=dict(width=3, color="red")),
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        height=520,
        xaxis_title=x,
        yaxis_title=y,
        margin=dict(l=60, r=20, t=30, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
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
    for _, b in (best if best is not None else pd.DataFrame()).iterrows():
        name, symbol, colour, _ = BEST_STYLE[b.source]
        fig.add_trace(
            go.Scatter3d(
                x=[b.x],
                y=[b.y],
                z=[b.z],
                mode="markers",
                name=name,
                text=[b.label],
                customdata=[[b[n] for n in names]],
                marker=dict(symbol=SYMBOLS_3D[symbol], size=14, color=colour, line=dict(width=3, color=colour)),
                hovertemplate=f"<b>{name}</b><br>%{{text}}<extra></extra>",
            )
        )
    at = _at_selection(points, names, selected)
    if len(at):
        fig.add_trace(
            go.Scatter3d(
                x=at["x"],
                y=at["y"],
                z=at["z"],
                mode="markers",
                name="selected",
                marker=dict(symbol="circle-open", size=14, color="red", line=dict(width=3, color="red")),
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        height=660,
        scene=dict(xaxis_title=x, yaxis_title=y, zaxis_title=z),
        margin=dict(l=0, r=0, t=30, b=70),
        legend=dict(orientation="h", yanchor="top", y=0.0, x=0),  # below: above, it ran under the modebar
    )
    return fig


def heatmap(
    df: pd.DataFrame,
    title: str,
    zmin: float | None = None,
    zmax: float | None = None,
    colorscale: str = "Blues",
    fmt: str = ".3f",
    text: pd.DataFrame | None = None,
) -> go.Figure:
    """``df`` as a heatmap, each cell labelled with its value, or with ``text`` (same shape) when given."""
    fig = go.Figure(
        go.Heatmap(
            z=df.to_numpy(dtype=float),
            x=[str(c) for c in df.columns],
            y=[str(i) for i in df.index],
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            text=None if text is None else text.to_numpy(),
            texttemplate="%{text}" if text is not None else f"%{{z:{fmt}}}",
            colorbar=dict(title=dict(text=title, side="right")),
        )
    )
    fig.update_layout(height=max(260, 60 * len(df) + 120), margin=dict(l=80, r=20, t=30, b=60))
    return fig


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


def weights_figure(weights: dict[str, float], title: str = "weight") -> go.Figure:
    """Mixture weights as horizontal bars, one per expert or checkpoint."""
    names = list(weights)
    fig = go.Figure(
        go.Bar(x=[weights[n] for n in names], y=names, orientation="h", text=[f"{weights[n]:.3f}" for n in names])
    )
    fig.update_layout(
        xaxis_title=title, height=max(240, 28 * len(names) + 100), margin=dict(t=30), yaxis=dict(autorange="reversed")
    )
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


def studies_figure(histories: dict[str, Sequence[float]], label: str) -> go.Figure:
    """Several studies' best-so-far lines on one pair of axes (trial number, objective): which search got
    where, how fast. ``histories``: study name → its complete trials' first objective, in trial order."""
    fig = go.Figure(
        [
            go.Scatter(
                x=list(range(1, len(v) + 1)),
                y=list(pd.Series(v, dtype=float).cummax()),
                mode="lines",
                name=name,
                hovertemplate=f"{name}<br>trial %{{x}}<br>best so far %{{y:.4f}}<extra></extra>",
            )
            for name, v in histories.items()
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
