"""mixlab.context: a mixture beside linear, the base, the experts and the nearest trained mixture, checked
on the shipped demo-k3 cache against the raw rows, scipy's Wilson interval and a brute-force nearest point."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mixlab.analysis import with_lab_mean
from mixlab.context import context_text, difference_text, differences, mixture_in_context
from mixlab.demo import DEMO_LAB
from mixlab.engine import Engine, open_store
from mixlab.lab import load_lab


@pytest.fixture(scope="module")
def k3(tmp_path_factory):
    lab = load_lab(DEMO_LAB.parent / "demo-k3")
    eng = Engine(lab, open_store(lab, tmp_path_factory.mktemp("cache") / "cache.sqlite"))
    return eng, with_lab_mean(eng.results(), eng.lab.benchmarks)


def wilson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def test_at_a_trained_point_every_model_is_the_raw_row_with_scipys_wilson_interval(k3):
    eng, df = k3
    names = eng.names
    ties = df[(df.kind == "proxy") & (df.method == "ties")]
    w = [ties.weights.iloc[0].get(n, 0.0) for n in names]
    params = ties.params.iloc[0]
    table = mixture_in_context(df, names, w, "ties", params, ["add", "rev-loss", "mean"])
    models = list(dict.fromkeys(table.model))
    true = df[df.kind == "true"]
    at = [i for i, tw in enumerate(true.weights) if max(abs(tw.get(n, 0) - x) for n, x in zip(names, w)) < 1e-3]
    assert models[:3] == ["ties proxy", "linear proxy", "base"]
    assert models[3:6] == [f"expert {n}" for n in names]
    assert models[6] == "trained mixture"
    assert table[table.model == models[6]].mixture.iloc[0].startswith(f"{true.label.iloc[at[0]]}: ")
    for model, kind, method in (("ties proxy", "proxy", "ties"), ("linear proxy", "proxy", "linear")):
        rows = df[(df.kind == kind) & (df.method == method) & (df.benchmark == "add")]
        hit = rows[[max(abs(rw.get(n, 0) - x) for n, x in zip(names, w)) < 1e-3 for rw in rows.weights]]
        if method == "ties":
            hit = hit[[p == params for p in hit.params]]
        else:
            hit = hit[[p == {} for p in hit.params]]
        got = table[(table.model == model) & (table.benchmark == "add")].iloc[0]
        assert got.score == hit.score.iloc[-1] and got.n == hit.n.iloc[-1]
        k = round(got.score * got.n)
        assert (got.low, got.high) == pytest.approx(wilson(k, int(got.n)), abs=1e-9)
    loss = table[table.benchmark == "rev-loss"]
    assert len(loss) == 7 and loss.low.isna().all()  # a loss: the cache keeps no spread, so no interval
    base = df[(df.kind == "base") & (df.benchmark == "rev-loss")].score.iloc[-1]
    assert table[(table.model == "base") & (table.benchmark == "rev-loss")].score.iloc[0] == base


def test_off_the_trained_points_the_nearest_trained_mixture_is_the_brute_force_nearest(k3):
    eng, df = k3
    names = eng.names
    w = [0.55, 0.3, 0.15]  # on no lattice point of the trained mixtures
    table = mixture_in_context(df, names, w, "linear", {}, ["add"])
    true = df[(df.kind == "true") & (df.benchmark == "add")]
    d = [sum(abs(tw.get(n, 0.0) - x) for n, x in zip(names, w)) for tw in true.weights]
    best = int(np.argmin(d))
    row = table[table.model == "nearest trained mixture"].iloc[0]
    assert row.mixture.startswith(f"{true.label.iloc[best]}: ")
    assert row.mixture.endswith(f"(L1 distance {d[best]:.3f})")
    seeds = true[true.label == true.label.iloc[best]].score  # demo-k3 trains this mixture twice: their mean
    assert row.score == pytest.approx(seeds.mean())
    assert "linear proxy" not in set(table.model[1:])  # linear is the merge shown: not twice
    assert not (table.model == "linear proxy").any()  # no proxy cached at this point: no row, not a made-up one


def test_differences_are_newcombes_mover_from_scipys_wilson_bounds(k3):
    eng, df = k3
    names = eng.names
    ties = df[(df.kind == "proxy") & (df.method == "ties")]
    w = [ties.weights.iloc[3].get(n, 0.0) for n in names]
    table = mixture_in_context(df, names, w, "ties", ties.params.iloc[3], ["add", "add-loss"])
    diffs = differences(table, "ties proxy")
    a = table[(table.model == "ties proxy") & (table.benchmark == "add")].iloc[0]
    b = table[(table.model == "base") & (table.benchmark == "add")].iloc[0]
    (al, ah), (bl, bh) = wilson(round(a.score * a.n), int(a.n)), wilson(round(b.score * b.n), int(b.n))
    d = a.score - b.score
    want = (d, d - math.hypot(a.score - al, bh - b.score), d + math.hypot(ah - a.score, b.score - bl))
    got = diffs[(diffs.model == "base") & (diffs.benchmark == "add")].iloc[0]
    assert (got["diff"], got.low, got.high) == pytest.approx(want, abs=1e-9)
    loss = diffs[diffs.benchmark == "add-loss"]
    assert len(loss) and loss.low.isna().all()  # no interval for a loss's difference either
    text = difference_text(diffs, ["add", "add-loss"])
    assert text.loc[text.model == "base", "add"].iloc[0] == f"{want[0]:+.3f} [{want[1]:+.3f}, {want[2]:+.3f}]"


def test_the_page_table_gives_each_cell_its_interval_and_n_and_a_dash_where_none():
    table = pd.DataFrame(
        [
            ["ties proxy", "a=1", "acc", 0.5, 0.4, 0.6, 100],
            ["base", "", "acc", 0.25, 0.2, 0.3, 100],
            ["base", "", "loss", 1.5, None, None, 100],
        ],
        columns=["model", "mixture", "benchmark", "score", "low", "high", "n"],
    )
    text = context_text(table, ["acc", "loss"])
    assert text.to_dict("records") == [
        {"model": "ties proxy", "acc · n=100": "0.500 [0.400, 0.600]", "loss · n=100": "—"},
        {"model": "base", "acc · n=100": "0.250 [0.200, 0.300]", "loss · n=100": "1.500"},
    ]
    mixed = context_text(table.assign(n=[100, 50, 100]), ["acc"])
    assert list(mixed["acc"]) == ["0.500 [0.400, 0.600] · n=100", "0.250 [0.200, 0.300] · n=50"]
