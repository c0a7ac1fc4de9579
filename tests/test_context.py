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
    loss = table[table.benchmark == "rev-loss"].set_index("model")
    assert len(loss) == 7
    # a loss: a bootstrap interval from the per-example values demo-k3 ships for every score (the TIES proxy's
    # too), equal to scipy's percentile bootstrap of Σ NLL / Σ tokens
    # the trained mixture, where it was trained with several seeds: their mean, and the mean of their
    # intervals (scipy's Wilson per seed for an accuracy) where every seed has one
    label = table[table.model == "trained mixture"].mixture.iloc[0].split(":")[0]
    seeds = true[true.label == label]
    if seeds.replicate.notna().any():
        for b in ("add", "rev-loss"):
            reps = seeds[seeds.benchmark == b]
            got = table[(table.model == "trained mixture") & (table.benchmark == b)].iloc[0]
            assert len(reps) > 1 and got.score == pytest.approx(reps.score.mean(), abs=1e-12)
            if b == "add":
                bounds = np.array([wilson(round(s * n), int(n)) for s, n in zip(reps.score, reps.n)])
            else:
                bounds = reps[["low", "high"]].to_numpy(dtype=float)
            if np.isfinite(bounds).all():
                assert got.ci == "seeds"
                assert (got.low, got.high) == pytest.approx(tuple(bounds.mean(axis=0)), abs=1e-9)
            else:  # a seed without per-example values (a loss): no interval rather than one seed's
                assert got.ci == "" and np.isnan(got.low)
        loss = loss.drop("trained mixture")
    for model in loss.index:
        r = loss.loc[model]
        v = r["values"]
        assert r.ci == "bootstrap"
        ref = stats.bootstrap((v.values.astype(float), v.weights.astype(float)),
                              lambda x, t, axis: x.sum(axis) / t.sum(axis), paired=True, vectorized=True,
                              n_resamples=10000, method="percentile",
                              random_state=np.random.default_rng(1)).confidence_interval  # fmt: skip
        width = ref.high - ref.low
        assert r.low == pytest.approx(ref.low, abs=0.08 * width) and r.high == pytest.approx(ref.high, abs=0.08 * width)
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
    table = table.assign(values=None, low=table.low.where(table.ci != "bootstrap"))  # as if none were kept
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
    assert text.loc[text.model == "base", "add"].iloc[0] == f"{want[0]:+.3f} [{want[1]:+.3f}, {want[2]:+.3f}] MOVER"


def test_two_models_with_per_example_values_get_a_paired_difference_and_mcnemars_p():
    from mixlab.analysis import results_table
    from mixlab.store import Evaluation
    from mixlab.values import ExampleValues

    n = 200
    right = np.arange(n) < 120  # the proxy: 120 of 200
    base = right.copy()
    base[:30] = False  # the base misses 30 the proxy gets, and gets 10 it misses
    base[150:160] = True
    tokens = np.full(n, 4.0)
    rows = []
    for kind, label, hits, nll in (("proxy", "a=0.5, b=0.5", right, 2.0), ("base", "base", base, 3.0)):
        w = {"a": 0.5, "b": 0.5} if kind == "proxy" else None
        loss = ExampleValues(nll * tokens + np.linspace(-1, 1, n), tokens)
        for bench, metric, v in (("x", "accuracy", ExampleValues(hits)), ("x-loss", "loss", loss)):
            rows.append(Evaluation(key=f"{label}{bench}", lab="l", kind=kind, label=label, models="m",
                                   benchmark=bench, metric=metric, score=v.score(), higher_is_better=metric != "loss",
                                   n=n, device="cpu", seconds=0.0, method="linear" if w else None,
                                   params={} if w else None, weights=w, values=v))  # fmt: skip
    df = results_table(rows, ["a", "b"])
    table = mixture_in_context(df, ["a", "b"], [0.5, 0.5], "linear", {}, ["x", "x-loss"])
    assert table.set_index(["model", "benchmark"]).ci.to_dict() == {
        ("linear proxy", "x"): "Wilson", ("linear proxy", "x-loss"): "bootstrap",
        ("base", "x"): "Wilson", ("base", "x-loss"): "bootstrap",
    }  # fmt: skip
    diffs = differences(table, "linear proxy").set_index("benchmark")
    assert (diffs.how == "paired").all()
    p = 2 * sum(math.comb(40, i) for i in range(11)) / 2**40  # exact McNemar by hand: 30 against 10
    assert diffs.loc["x", "p"] == pytest.approx(p) and diffs.loc["x", "diff"] == pytest.approx(20 / 200)
    assert diffs.loc["x", "low"] > 0  # 20 more right, beyond noise once paired
    assert diffs.loc["x-loss", "diff"] == pytest.approx(-1.0) and diffs.loc["x-loss", "high"] < 0
    assert diffs.loc["x-loss", "p"] is None or np.isnan(diffs.loc["x-loss", "p"])
    text = difference_text(diffs.reset_index(), ["x"])
    assert text.x.iloc[0].startswith("+0.100 [+0.") and text.x.iloc[0].endswith(f"paired, p={p:.2g}")


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
