import numpy as np
import pandas as pd

from mixlab.analysis import pareto_points
from mixlab.plots import metric_title, pareto_figure, simplex_figure

NAMES = ["a", "b", "c"]


def _frame(rows):
    return pd.DataFrame(rows, columns=[*NAMES, "score", "label"])


def test_ternary_figure_carries_weights_scores_and_titles():
    proxy = _frame([[0.2, 0.3, 0.5, 0.7, "p1"], [1.0, 0.0, 0.0, 0.4, "p2"]])
    true = _frame([[0.2, 0.3, 0.5, 0.9, "t1"]])
    experts = _frame([[1.0, 0.0, 0.0, 0.4, "a"]])
    fig = simplex_figure(NAMES, proxy, true, experts, [0.2, 0.3, 0.5], metric_title("x", "accuracy", True), True)
    p, t, e, sel = fig.data
    np.testing.assert_allclose(p.a, [0.2, 1.0])
    np.testing.assert_allclose(np.asarray(p.customdata)[:, 3], [0.7, 0.4])
    assert p.cliponaxis is False and t.marker.symbol == "diamond"
    assert fig.layout.ternary.aaxis.title.text == "a" and fig.layout.ternary.caxis.title.text == "c"
    assert fig.layout.ternary.baxis.tickvals == (0.2, 0.4, 0.6, 0.8)  # no tick labels on the corner stars
    assert p.marker.colorbar.title.text == "x accuracy (↑ higher is better)"
    assert (p.marker.cmin, p.marker.cmax) == (0.4, 0.9)
    assert np.isnan(np.asarray(sel.customdata)[0, 3])


def test_projection_for_k4():
    names = ["a", "b", "c", "d"]
    proxy = pd.DataFrame([[0.25, 0.25, 0.25, 0.25, 0.5, "u"]], columns=[*names, "score", "label"])
    fig = simplex_figure(names, proxy, proxy.iloc[:0], proxy.iloc[:0], None, "t", False)
    np.testing.assert_allclose([fig.data[0].x[0], fig.data[0].y[0]], [0, 0], atol=1e-12)
    assert fig.data[0].marker.colorscale is not None


def test_pareto_points_and_figure():
    rows = []
    for kind, label, x, y, w in [
        ("expert", "a", 0.9, 0.1, (1, 0, 0)),
        ("expert", "b", 0.1, 0.9, (0, 1, 0)),
        ("proxy", "m", 0.6, 0.6, (0.5, 0.5, 0)),
        ("proxy", "bad", 0.2, 0.2, (0.3, 0.3, 0.4)),
        ("true", "t", 0.7, 0.7, (0.5, 0.5, 0)),
    ]:
        for bench, s in (("x", x), ("y", y)):
            rows.append(
                {
                    "kind": kind,
                    "label": label,
                    "benchmark": bench,
                    "score": s,
                    "higher_is_better": True,
                    "a": w[0],
                    "b": w[1],
                    "c": w[2],
                }
            )
    pts = pareto_points(pd.DataFrame(rows), NAMES, "x", "y")
    assert set(pts[pts.proxy_front].label) == {"a", "b", "m"}
    assert set(pts[pts.true_front].label) == {"a", "b", "t"}
    fig = pareto_figure(pts, "x", "y", NAMES)
    assert {t.name for t in fig.data} >= {"expert", "proxy (merge)", "true mixture", "front of merges"}
