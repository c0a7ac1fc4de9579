"""Small charts: a heatmap, a weights bar chart."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


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


def weights_figure(weights: dict[str, float], title: str = "weight") -> go.Figure:
    """Mixture weights as horizontal bars, one per expert or checkpoint."""
    names = list(weights)
    fig = go.Figure(
        go.Bar(x=[weights[n] for n in names], y=names, orientation="h", text=[f"{weights[n]:.3f}" for n in names])
    )
    fig.update_layout(
        xaxis_title=title,
        height=max(240, 28 * len(names) + 100),
        margin=dict(t=30),
        yaxis=dict(autorange="reversed", automargin=True),  # long checkpoint names were cut at the left edge
    )
    return fig
