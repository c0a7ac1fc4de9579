import numpy as np
import pandas as pd
import pytest

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
    assert "front of trained mixtures" in {t.name for t in fig.data}
    # the y range holds every point with room above the highest (b at 0.9) for an expert's name (0.8 span · 0.12)
    assert tuple(fig.layout.yaxis.range) == pytest.approx((0.1 - 0.04, 0.9 + 0.096))
    pool = pareto_points(pd.DataFrame([r for r in rows if r["kind"] != "true"]), NAMES, "x", "y")
    legend = {t.name for t in pareto_figure(pool, "x", "y", NAMES).data}  # a recycling pool: no trained mixtures
    assert "front of the checkpoints alone" in legend
    assert not any("trained" in name or "true" in name for name in legend), legend


def test_separated_projection_gives_every_k4_mixture_its_own_point():
    """On the K=4 demo lab the regular 4-gon stacks distinct cached mixtures on one point; the separated
    projection draws each at its own, and the figure puts it there."""
    from mixlab.demo import LABS_DIR
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.simplex import projected_xy, separating_vertices

    eng = Engine(load_lab(LABS_DIR / "demo-k4"))
    df = eng.results("linear", {})
    df = df[df.kind.isin(["proxy", "true"])]
    w = np.unique(np.round([[d.get(n, 0.0) for n in eng.names] for d in df.weights], 6), axis=0)
    distinct = lambda xy: len(np.unique(np.round(xy, 6), axis=0))  # noqa: E731
    assert distinct(projected_xy(w)) < len(w)  # the regular 4-gon hides some mixtures under others
    verts = separating_vertices(w)
    xy = projected_xy(w, verts)
    gaps = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))[np.triu_indices(len(w), 1)]
    assert distinct(xy) == len(w) and gaps.min() > 1e-3
    assert np.allclose((verts**2).sum(1), 1.0)  # vertices on the unit circle: experts stay at the rim
    proxy = pd.DataFrame(w, columns=eng.names).assign(score=np.arange(len(w), dtype=float), label="")
    fig = simplex_figure(eng.names, proxy, proxy.iloc[:0], proxy.iloc[:0], None, "t", True, vertices=verts)
    np.testing.assert_allclose(np.column_stack([fig.data[0].x, fig.data[0].y]), xy)


def test_a_box_selection_picks_the_best_point_and_says_what_it_is():
    from mixlab.plots import KINDS, selection_pick

    proxy, true = KINDS.index("proxy"), KINDS.index("true")
    points = [
        [0.2, 0.3, 0.5, 0.70, proxy],
        [0.5, 0.5, 0.0, 0.90, true],
        [0.3, 0.3, 0.4, float("nan"), KINDS.index("selected")],  # the red ring has no score: never picked
        None,
    ]
    up = selection_pick(points, 3, higher_is_better=True)
    assert up == {"weights": [0.5, 0.5, 0.0], "score": 0.9, "kind": "true", "n": 2}
    down = selection_pick(points, 3, higher_is_better=False)
    assert down["kind"] == "proxy" and down["weights"] == [0.2, 0.3, 0.5]
    assert selection_pick(points[2:], 3, True) is None


def test_parallel_coordinates_carry_every_mixture():
    from mixlab.plots import parallel_figure

    names = ["a", "b", "c", "d"]
    pts = pd.DataFrame([[0.1, 0.2, 0.3, 0.4, 0.5], [0.25, 0.25, 0.25, 0.25, 0.7]], columns=[*names, "score"])
    fig = parallel_figure(names, pts, "t", higher_is_better=False)
    dims = fig.data[0].dimensions
    assert [d.label for d in dims] == [*names, "score"]
    np.testing.assert_allclose(dims[3].values, [0.4, 0.25])
    np.testing.assert_allclose(dims[4].values, [0.5, 0.7])
    assert fig.data[0].line.colorscale is not None


def test_searched_points_and_front_are_drawn_but_never_picked():
    from mixlab.plots import KINDS, selection_pick

    proxy = _frame([[0.2, 0.3, 0.5, 0.7, "p1"]])
    searched = pd.DataFrame([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2]], columns=NAMES)
    fig = simplex_figure(NAMES, proxy, proxy.iloc[:0], proxy.iloc[:0], None, "t", True, searched=searched)
    tr = next(t for t in fig.data if t.name == "searched (trials)")
    np.testing.assert_allclose(tr.a, [0.1, 0.6])
    cd = np.asarray(tr.customdata)
    assert np.isnan(cd[:, 3]).all() and (cd[:, 4] == KINDS.index("searched")).all()
    assert selection_pick(list(cd), 3, True) is None  # their scores are on dev data: a box never picks them
    pts = pd.DataFrame(
        [["expert", "a", 0.1, 0.9, 1, 0, 0, True, True]],
        columns=["kind", "label", "x", "y", "a", "b", "c", "proxy_front", "true_front"],
    )
    front = pd.DataFrame({"x": [0.5, 0.2], "y": [0.1, 0.6]})
    fig = pareto_figure(pts, "x", "y", NAMES, searched=front)
    line = next(t for t in fig.data if t.name == "searched front (test)")
    assert list(line.x) == [0.2, 0.5] and list(line.y) == [0.6, 0.1]


def test_search_trace_and_weight_bars_carry_their_numbers():
    from mixlab.plots import trace_figure, weights_figure

    values = [0.2, 0.1, 0.5, 0.3, 0.6]
    fig = trace_figure(values, "mean (dev)")
    assert list(fig.data[0].y) == values
    assert list(fig.data[1].y) == list(np.maximum.accumulate(values))  # best so far
    bars = weights_figure({"a": 0.25, "b": 0.75})
    assert list(bars.data[0].x) == [0.25, 0.75] and list(bars.data[0].y) == ["a", "b"]


def test_the_best_mixtures_are_marked_at_their_weights_and_click_to_select():
    from mixlab.analysis import Best
    from mixlab.plots import BEST_STYLE, KINDS, selection_pick

    proxy = _frame([[0.2, 0.3, 0.5, 0.7, "p1"], [1.0, 0.0, 0.0, 0.4, "p2"]])
    best = [Best("proxy", "p1", (0.2, 0.3, 0.5), 0.7), Best("search", "s", (0.1, 0.1, 0.8), None)]
    fig = simplex_figure(NAMES, proxy, proxy.iloc[:0], proxy.iloc[:0], None, "t", True, best=best)
    marked = {t.name: t for t in fig.data if t.name in {v[0] for v in BEST_STYLE.values()}}
    p, s = marked["best under the proxy"], marked["the search's winner"]
    np.testing.assert_allclose([p.a[0], p.b[0], p.c[0]], [0.2, 0.3, 0.5])
    assert p.marker.symbol == "square-open" and s.marker.symbol == "star-open"
    data = np.asarray(p.customdata)
    assert data[0, 3] == 0.7 and KINDS[int(data[0, 4])] == "best"
    assert selection_pick([data[0]], 3, True)["weights"] == [0.2, 0.3, 0.5]
    assert np.isnan(np.asarray(s.customdata)[0, 3])  # a winner with no score here is marked, never picked


def test_the_pareto_figure_marks_the_best_and_rings_the_selection():
    from mixlab.analysis import Best, best_on_plane

    names = ["a", "b"]
    pts = pd.DataFrame(
        [["proxy", "p", 0.1, 0.2, 0.5, 0.5, True, False], ["true", "t", 0.3, 0.4, 1.0, 0.0, False, True]],
        columns=["kind", "label", "x", "y", *names, "proxy_front", "true_front"],
    )
    best = {"true": Best("true", "t", (1.0, 0.0), 0.9), "search": Best("search", "s", (0.2, 0.8), 0.5)}
    won = [{"weights": {"a": 0.2, "b": 0.8}, "test": {"x": 0.25, "y": 0.35}}]
    plane = best_on_plane(best, pts, names, won, "x", "y")
    assert plane[["source", "x", "y"]].values.tolist() == [["true", 0.3, 0.4], ["search", 0.25, 0.35]]
    fig = pareto_figure(pts, "x", "y", names, best=plane, selected=[0.5, 0.5])
    by_name = {t.name: t for t in fig.data}
    assert (by_name["best trained mixture"].x[0], by_name["best trained mixture"].y[0]) == (0.3, 0.4)
    assert (by_name["selected"].x[0], by_name["selected"].y[0]) == (0.1, 0.2)
    assert best_on_plane(best, pts, names, None, "x", "y").source.tolist() == ["true"]  # no winner's scores


def test_proxy_vs_true_marks_the_pick_and_the_best_and_ranks_on_y_equals_x():
    from scipy import stats

    from mixlab.plots import proxy_true_figure

    pairs = pd.DataFrame(
        {"label": list("pqrst"), "a": [0.0, 0.25, 0.5, 0.75, 1.0], "proxy": [0.1, 0.5, 0.3, 0.9, 0.2],
         "true": [0.2, 0.8, 0.4, 0.6, 0.1]}
    )  # fmt: skip
    fig = proxy_true_figure(pairs, "x", "y", True, ranks=True, colour_by="a")
    points, diagonal, pick, best = fig.data
    want_x = stats.rankdata(-pairs.proxy, method="min")
    np.testing.assert_array_equal(points.x, want_x)  # scipy's competition ranks, 1 = best
    np.testing.assert_array_equal(points.y, stats.rankdata(-pairs.true, method="min"))
    assert list(diagonal.x) == list(diagonal.y) == [1.0, 5.0]
    assert (pick.text[0], pick.x[0], pick.y[0]) == ("s", 1.0, 2.0)  # the proxy's favourite (0.9) is second under true
    assert (best.text[0], best.x[0], best.y[0]) == ("q", 2.0, 1.0)
    assert (
        list(points.marker.color) == [0.0, 0.25, 0.5, 0.75, 1.0] and points.marker.colorbar.title.text == "weight of a"
    )
    assert fig.layout.yaxis.autorange == "reversed"
    loss = proxy_true_figure(pairs, "x", "y", False)  # lower is better: the pick is the lowest proxy
    assert loss.data[2].text[0] == "p" and loss.data[3].text[0] == "t" and loss.data[0].x[0] == 0.1


def test_the_simplex_colours_can_be_normalised_or_ranked_within_each_source():
    from scipy import stats

    proxy = _frame([[0.2, 0.3, 0.5, 0.45, "p1"], [1.0, 0.0, 0.0, 0.47, "p2"], [0.0, 1.0, 0.0, 0.46, "p3"]])
    true = _frame([[0.2, 0.3, 0.5, 0.59, "t1"], [0.0, 0.0, 1.0, 0.55, "t2"]])
    shared = simplex_figure(NAMES, proxy, true, proxy.iloc[:0], None, "t", True)
    assert list(shared.data[0].marker.color) == [0.45, 0.47, 0.46] and shared.data[0].marker.cmax == 0.59
    norm = simplex_figure(NAMES, proxy, true, proxy.iloc[:0], None, "t", True, colour="per source")
    np.testing.assert_allclose(norm.data[0].marker.color, [0.0, 1.0, 0.5])  # (s − min) / (max − min)
    np.testing.assert_allclose(norm.data[1].marker.color, [1.0, 0.0])
    assert (norm.data[0].marker.cmin, norm.data[0].marker.cmax) == (0.0, 1.0)
    assert "normalised within each source" in norm.data[0].marker.colorbar.title.text
    rank = simplex_figure(NAMES, proxy, true, proxy.iloc[:0], None, "t", False, colour="rank")  # lower is better
    want = 1 - (stats.rankdata(proxy.score, method="min") - 1) / 2  # the lowest score is best: colour 1
    np.testing.assert_allclose(rank.data[0].marker.color, want)
    np.testing.assert_allclose(
        simplex_figure(NAMES, proxy, true, proxy.iloc[:0], None, "t", True, colour="per source").data[1].marker.color,
        [1.0, 0.0],
    )


def test_a_studys_trials_on_the_simplex_carry_their_weights_and_values():
    from mixlab.plots import trials_ternary

    trials = [
        {"state": "complete", "weights": {"a": 0.2, "b": 0.3, "c": 0.5}, "values": [0.4]},
        {"state": "pruned", "weights": {"a": 0.9, "b": 0.1, "c": 0.0}, "values": None},
        {"state": "complete", "weights": {"a": 0.6, "b": 0.2, "c": 0.2}, "values": [0.7]},
    ]
    fig = trials_ternary(NAMES, trials, "mean (dev)")
    points, best = fig.data
    np.testing.assert_allclose(points.a, [0.2, 0.6]) and np.testing.assert_allclose(points.c, [0.5, 0.2])
    np.testing.assert_allclose(points.marker.color, [0.4, 0.7])  # the pruned trial has no value: not drawn
    assert (best.a, best.b, best.c) == ((0.6,), (0.2,), (0.2,))  # the best is ringed
    assert fig.layout.ternary.caxis.title.text == "c"


def test_a_proxy_at_a_trained_point_rings_the_diamond_instead_of_hiding_under_it():
    from mixlab.plots import PROXY_SIZE, RING_SIZE, TRUE_SIZE

    # TIES proxies cached only at the trained points (and one elsewhere); 0.3334 is the point 1/3 as a lab writes it
    proxy = _frame([[0.3334, 0.3333, 0.3333, 0.52, "p1"], [0.5, 0.5, 0.0, 0.48, "p2"], [0.1, 0.1, 0.8, 0.4, "p3"]])
    true = _frame([[1 / 3, 1 / 3, 1 / 3, 0.58, "t1"], [0.5, 0.5, 0.0, 0.55, "t2"]])
    fig = simplex_figure(NAMES, proxy, true, proxy.iloc[:0], None, "t", True)
    p, t = fig.data[0], fig.data[1]
    assert p.name.startswith("proxy") and t.name.startswith("true")  # the proxy drawn first: its ring shows
    assert list(p.marker.size) == [RING_SIZE, RING_SIZE, PROXY_SIZE]
    assert RING_SIZE >= TRUE_SIZE + 8  # at least 4 px of the proxy's colour on each side of the diamond
    assert t.marker.size == TRUE_SIZE
    np.testing.assert_allclose(p.marker.color, [0.52, 0.48, 0.4])  # the ring is coloured by the proxy's score
    alone = simplex_figure(NAMES, proxy, true.iloc[:0], proxy.iloc[:0], None, "t", True)
    assert alone.data[0].marker.size == PROXY_SIZE  # no trained mixtures: every proxy its usual size


def test_a_15_gon_numbers_its_vertices_outward_and_the_caption_names_them():
    from mixlab.plots import vertex_key
    from mixlab.simplex import polygon_vertices

    names = [f"true-add{i}_rev{100 - i}_sort{i // 2}" for i in range(15)]  # long checkpoint names
    proxy = pd.DataFrame([[1 / 15] * 15 + [0.5, "u"]], columns=[*names, "score", "label"])
    fig = simplex_figure(names, proxy, proxy.iloc[:0], proxy.iloc[:0], None, "t", True)
    labels = fig.layout.annotations
    assert [a.text for a in labels] == [str(i) for i in range(1, 16)]
    verts = polygon_vertices(15)
    for a, (x, y) in zip(labels, verts):
        assert (a.x, a.y) == (x, y)
        assert a.xshift * x + a.yshift * y > 0  # pushed outward, off the expert star
        if abs(x) > abs(y):
            assert a.xanchor == ("left" if x > 0 else "right")  # the text runs away from the polygon
        else:
            assert a.yanchor == ("bottom" if y > 0 else "top")
    assert vertex_key(names) == " · ".join(f"{i + 1} {n}" for i, n in enumerate(names))
    assert list(fig.layout.xaxis.range) == [verts[:, 0].min() - 0.12, verts[:, 0].max() + 0.12]  # not autoranged
    k4 = ["general", "ocr", "count", "chart"]
    four = pd.DataFrame([[0.25] * 4 + [0.5, "u"]], columns=[*k4, "score", "label"])
    fig4 = simplex_figure(k4, four, four.iloc[:0], four.iloc[:0], None, "t", True)
    assert [a.text for a in fig4.layout.annotations] == k4 and vertex_key(k4) is None


def test_the_3d_pareto_figure_names_experts_marks_the_best_and_rings_the_selection():
    from mixlab.plots import BEST_STYLE, pareto_figure_3d

    rows = []
    for kind, label, scores, w in [
        ("expert", "a", (0.9, 0.1, 0.1), (1, 0, 0)),
        ("expert", "b", (0.1, 0.9, 0.1), (0, 1, 0)),
        ("expert", "c", (0.1, 0.1, 0.9), (0, 0, 1)),
        ("proxy", "a=0.5, b=0.5, c=0", (0.6, 0.6, 0.05), (0.5, 0.5, 0)),
        ("proxy", "a=0.2, b=0.2, c=0.6", (0.05, 0.05, 0.05), (0.2, 0.2, 0.6)),  # dominated by every expert
    ]:
        for bench, s in zip(("x", "y", "z"), scores):
            rows.append({"kind": kind, "label": label, "benchmark": bench, "score": s, "higher_is_better": True,
                         "a": w[0], "b": w[1], "c": w[2]})  # fmt: skip
    pts = pareto_points(pd.DataFrame(rows), NAMES, "x", "y", "z")
    assert list(pts.sort_values("label").proxy_front) == [True, False, True, True, True]  # a, a=0.2…, a=0.5…, b, c
    best = pd.DataFrame([{"source": "proxy", "label": "a=0.5, b=0.5, c=0", "x": 0.6, "y": 0.6, "z": 0.05,
                          "a": 0.5, "b": 0.5, "c": 0.0}])  # fmt: skip
    fig = pareto_figure_3d(pts, "x", "y", "z", NAMES, best, [0.2, 0.2, 0.6])
    traces = {t.name: t for t in fig.data}
    assert list(traces["expert on a front"].text) == ["a", "b", "c"]  # experts named on the figure
    assert traces["expert on a front"].mode == "markers+text"
    faint = traces["proxy (merge)"]
    assert list(faint.text) == ["a=0.2, b=0.2, c=0.6"] and faint.marker.opacity < 1
    mark = traces[BEST_STYLE["proxy"][0]]
    assert (mark.x[0], mark.y[0], mark.z[0]) == (0.6, 0.6, 0.05) and mark.marker.symbol == "square-open"
    sel = traces["selected"]
    assert (sel.x[0], sel.y[0], sel.z[0]) == (0.05, 0.05, 0.05)
    assert fig.layout.scene.zaxis.title.text == "z"


def _weight_trials(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i, w in enumerate(rng.dirichlet([1, 1, 1], size=n)):
        out.append({"number": i, "state": "complete", "weights": dict(zip(NAMES, w)), "values": [float(w[0] - w[2])]})
    return out


def test_the_contour_plot_draws_every_trial_at_its_two_weights():
    """optuna's contour plot on the weights: the trials' points are their weights of the two experts asked
    for (read back from the figure, compared with the trials themselves)."""
    from mixlab.plots import contour_figure
    from mixlab.search import weights_study

    trials = _weight_trials(12)
    fig = contour_figure(weights_study(trials, NAMES), NAMES[0], NAMES[2], "objective")
    points = [t for t in fig.data if t.type == "scatter" and t.x is not None and len(t.x) == len(trials)]
    assert points, [t.type for t in fig.data]
    got = sorted(zip(points[0].x, points[0].y))
    want = sorted((t["weights"][NAMES[0]], t["weights"][NAMES[2]]) for t in trials)
    np.testing.assert_allclose(got, want)
    assert any(t.type == "contour" for t in fig.data)


def test_studies_compared_are_each_a_best_so_far_line():
    from mixlab.plots import studies_figure

    histories = {"a": [0.1, 0.3, 0.2, 0.5], "b": [0.4, 0.1, 0.45]}
    fig = studies_figure(histories, "objective")
    assert [t.name for t in fig.data] == ["a", "b"]
    np.testing.assert_allclose(fig.data[0].y, [0.1, 0.3, 0.3, 0.5])  # by hand
    np.testing.assert_allclose(fig.data[1].y, [0.4, 0.4, 0.45])
    assert list(fig.data[1].x) == [1, 2, 3]
    # two studies that tie stay two visible curves: each its own marker and dash
    assert fig.data[0].marker.symbol != fig.data[1].marker.symbol and fig.data[0].line.dash != fig.data[1].line.dash


def test_beyond_eight_experts_the_pareto_figure_numbers_them_and_keeps_their_names_for_hover():
    names = [f"ckpt-{i}" for i in range(10)]
    rows = []
    for i, n in enumerate(names):
        w = dict.fromkeys(names, 0.0) | {n: 1.0}
        for bench, s in (("x", i / 10), ("y", 1 - i / 10)):
            rows.append({"kind": "expert", "label": n, "benchmark": bench, "score": s, "higher_is_better": True, **w})
    pts = pareto_points(pd.DataFrame(rows), names, "x", "y")
    expert = next(t for t in pareto_figure(pts, "x", "y", names).data if t.name == "expert")
    assert list(expert.texttemplate) == [str(names.index(t) + 1) for t in expert.text]
    assert set(expert.text) == set(names)  # the hover's bold line stays the name
    few = next(t for t in pareto_figure(pareto_points(pd.DataFrame(rows[:6]), names, "x", "y"), "x", "y", names[:3]).data
               if t.name == "expert")  # fmt: skip
    assert few.texttemplate is None
