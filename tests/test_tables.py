"""The read side's tables (mixlab.tables), on results frames written out by hand: which rows a method
keeps, which methods a lab offers, one mixture's scores, the per-method Pareto table and the fronts."""

import json

import pandas as pd
import pytest

from mixlab.analysis import pareto_points
from mixlab.tables import (
    front_counts,
    fronts,
    labelled_scores,
    method_table,
    mixture_rows,
    of_method,
    params_label,
    proxy_methods,
)

NAMES = ("a", "b")


def _row(kind, label, bench, score, w=None, method=None, params=None):
    return {
        "kind": kind,
        "label": label,
        "benchmark": bench,
        "metric": "accuracy",
        "score": score,
        "higher_is_better": True,
        "n": 100,
        "method": method,
        "params": params if params is not None else {},
        "seconds": 0.5,
        "device": "cpu",
        "weights": w,
        "a": None if w is None else w["a"],
        "b": None if w is None else w["b"],
    }


def _frame():
    lin, ties = ("linear", {}), ("ties", {"density": 0.5})
    rows = []
    for bench, (sa, sb) in {"ocr": (0.8, 0.2), "chart": (0.1, 0.9)}.items():
        rows += [
            _row("expert", "a", bench, sa, {"a": 1.0, "b": 0.0}),
            _row("expert", "b", bench, sb, {"a": 0.0, "b": 1.0}),
            _row("true", "t1", bench, 0.5, {"a": 0.5, "b": 0.5}),
        ]
    # linear at (0.5, 0.5): ocr 0.6, chart 0.6 (on the front of merges); at (1/3, 2/3): ocr 0.3, chart 0.5 (dominated)
    # ties at (0.5, 0.5): ocr 0.55, chart 0.55
    for (wa, wb), sx, sy, (m, p) in (
        ((0.5, 0.5), 0.6, 0.6, lin),
        ((1 / 3, 2 / 3), 0.3, 0.5, lin),
        ((0.5, 0.5), 0.55, 0.55, ties),
    ):
        w = {"a": wa, "b": wb}
        rows += [
            _row("proxy", f"{m} {wa:.2f}", "ocr", sx, w, m, p),
            _row("proxy", f"{m} {wa:.2f}", "chart", sy, w, m, p),
        ]
    return pd.DataFrame(rows)


def test_of_method_keeps_every_checkpoint_and_the_proxies_of_one_method():
    df = _frame()
    lin = of_method(df, "linear", {})
    assert sorted(lin.kind.value_counts().items()) == [("expert", 4), ("proxy", 4), ("true", 2)]
    assert set(lin[lin.kind == "proxy"].method) == {"linear"}
    assert len(of_method(df, "ties", {"density": 0.5})) == 6 + 2
    assert len(of_method(df, "ties", {"density": 0.2})) == 6  # other params: no proxies
    assert list(of_method(df.iloc[:0], "linear", {}).columns) == list(df.columns)  # empty keeps its columns


def test_proxy_methods_put_the_labs_method_first():
    df = _frame()
    assert proxy_methods(df, ("linear", {})) == [("linear", {}), ("ties", {"density": 0.5})]
    assert proxy_methods(df, ("ties", {"density": 0.5})) == [("ties", {"density": 0.5}), ("linear", {})]
    assert proxy_methods(df[df.kind != "proxy"], ("ties", {})) == [("linear", {})]  # none cached: what a sweep makes


def test_mixture_rows_are_one_mixtures_scores_under_one_method():
    df = _frame()
    got = mixture_rows(df, NAMES, {"a": 0.5, "b": 0.5}, "linear", {})
    assert list(got.benchmark) == ["ocr", "chart"] and list(got.score) == [0.6, 0.6]
    assert list(got.columns) == ["benchmark", "metric", "score", "higher_is_better", "n", "seconds", "device"]
    # the cache rounds weights: 0.3333333 and 1/3 are the same mixture
    third = mixture_rows(df, NAMES, {"a": 0.3333333, "b": 0.6666667}, "linear", {})
    assert list(third.score) == [0.3, 0.5]
    assert mixture_rows(df, NAMES, {"a": 0.5, "b": 0.5}, "ties", {}).empty  # ties with other params
    csv = labelled_scores(got, {"a": 0.5, "b": 0.5}, "linear", {})
    assert list(csv.columns)[-4:] == ["a", "b", "method", "params"]
    assert csv.a.tolist() == [0.5, 0.5] and csv.params.tolist() == ["defaults", "defaults"]


def test_params_are_labelled_as_sorted_json_or_defaults():
    assert params_label({}) == params_label(None) == "defaults"
    assert params_label({"scale": 2, "density": 0.5}) == json.dumps({"density": 0.5, "scale": 2})


def test_the_fronts_and_their_counts_by_hand():
    df = _frame()
    pts = pareto_points(of_method(df, "linear", {}), NAMES, "ocr", "chart")
    # experts + linear proxies: (0.8, 0.1) a, (0.2, 0.9) b, (0.6, 0.6), (0.3, 0.5); the last is dominated by 0.6/0.6
    assert front_counts(pts) == {"merges": 1, "experts_on_front": 2, "experts": 2}
    shown = fronts(pts, NAMES)
    assert sorted(shown["merges"].mixture) == ["a", "a=0.5, b=0.5", "b"]  # one label format: the weights
    assert sorted(shown["trained"].mixture) == ["a", "a=0.5, b=0.5 (t1)", "b"]  # (0.5, 0.5) is not dominated
    assert list(shown["merges"].columns) == ["kind", "mixture", "x", "y", "a", "b"]
    three = fronts(pareto_points(of_method(df, "linear", {}), NAMES, "ocr", "chart", "ocr-loss"), NAMES)
    assert list(three["merges"].columns) == ["kind", "mixture", "x", "y", "z", "a", "b"]  # ocr-loss: none here
    assert three["merges"].empty


def test_the_method_table_names_its_columns_by_benchmark():
    table, n_shared = method_table(_frame(), NAMES, "ocr", "chart")
    assert n_shared == 1  # only (0.5, 0.5) has both methods
    assert list(table.columns)[-2:] == ["best ocr", "best chart"]
    by_method = dict(zip(table.method, table.params))
    assert by_method == {"linear": "defaults", "ties": '{"density": 0.5}'}
    best = dict(zip(table.method, table["best ocr"]))
    assert best["linear"] == pytest.approx(0.6) and best["ties"] == pytest.approx(0.55)  # at the shared mixture
