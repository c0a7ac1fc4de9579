"""Proxy against true scores: the scatter (or rank–rank view) with y = x, the pick and the true best."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mixlab.analysis import regret, snap_ties, tie_ranks
from mixlab.plots.style import BEST_STYLE


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
