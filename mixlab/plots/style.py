"""What every figure shares: colour scales, the kinds a point's customdata names, how a best mixture is marked, axis titles and hover text."""

from __future__ import annotations

from collections.abc import Sequence

SCALE_UP = "Viridis"  # higher is better: bright = good


SCALE_DOWN = "Viridis_r"  # lower is better (loss): bright = good, too


KINDS = ("proxy", "true", "expert", "selected", "searched", "best")  # customdata[K + 1]: the point's kind here


# how the best mixture of each source is marked, on every figure that marks it (mixlab.analysis.best_mixtures)
BEST_STYLE = {  # source: (legend name, Plotly symbol, colour, the glyph a caption uses for it)
    "proxy": ("best under the proxy", "square-open", "#111111", "□"),
    "true": ("best trained mixture", "diamond-open", "#ff7f0e", "◇"),
    "search": ("the search's winner", "star-open", "#9467bd", "☆"),
}


def metric_title(benchmark: str, metric: str, higher_is_better: bool) -> str:
    return f"{benchmark} {metric} ({'↑ higher' if higher_is_better else '↓ lower'} is better)"


def _hover(names: Sequence[str]) -> str:
    return "<br>".join(f"{n} = %{{customdata[{i}]:.3f}}" for i, n in enumerate(names))
