import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mixlab.analysis import MEAN, nearest, paired, pareto_front, rank_correlation, regret, topk_overlap, with_mean


def test_spearman_and_kendall_match_scipy_with_a_ci():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=0.8, size=30)
    s = rank_correlation(x, y, "spearman", n_boot=500)
    assert s.value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert s.low < s.value < s.high and s.n == 30
    assert s == rank_correlation(x, y, "spearman", n_boot=500)  # seeded
    k = rank_correlation(x, y, "kendall", n_boot=200)
    assert k.value == pytest.approx(stats.kendalltau(x, y).statistic)


def test_correlation_undefined_below_three_or_constant():
    assert rank_correlation([1, 2], [2, 1]).value is None
    assert rank_correlation([1, 1, 1], [1, 2, 3]).describe() == "spearman undefined (n=3)"


def test_regret_by_hand():
    proxy = [0.2, 0.9, 0.5, 0.7]
    true = [0.3, 0.6, 0.8, 0.7]
    r = regret(proxy, true)
    assert (r.chosen, r.true_rank, r.regret) == (1, 3, pytest.approx(0.2))
    loss = regret([2.0, 1.0, 3.0], [1.5, 1.7, 1.0], higher_is_better=False)  # proxy picks index 1
    assert (loss.chosen, loss.true_rank, loss.regret) == (1, 3, pytest.approx(0.7))


def test_topk_overlap():
    assert topk_overlap([1, 2, 3, 4], [4, 3, 2, 1], 2) == 0.0
    assert topk_overlap([1, 2, 3, 4], [1, 2, 4, 3], 2) == 1.0


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(1)
    s = rng.random((40, 2))
    dirs = [True, False]
    mask = pareto_front(s, dirs)
    for i in range(40):
        dominated = any(
            (s[j, 0] >= s[i, 0] and s[j, 1] <= s[i, 1]) and (s[j, 0] > s[i, 0] or s[j, 1] < s[i, 1]) for j in range(40)
        )
        assert mask[i] == (not dominated)
    assert pareto_front(np.array([[1, 1], [1, 1]]), [True, True]).all()  # ties dominate nothing


def _results():
    rows = []
    names = ["a", "b"]
    for (wa, kind), bench in itertools.product(
        [(0.0, "proxy"), (0.5, "proxy"), (1.0, "proxy"), (0.5, "true"), (1.0, "true")], ["x", "y"]
    ):
        score = wa + (0.1 if kind == "true" else 0) + (0.5 if bench == "y" else 0)
        rows.append(
            {
                "kind": kind,
                "label": f"{kind}{wa}",
                "benchmark": bench,
                "score": score,
                "higher_is_better": True,
                "metric": "accuracy",
                "method": "linear" if kind == "proxy" else None,
                "params": {} if kind == "proxy" else None,
                "weights": {"a": wa, "b": 1 - wa},
            }
        )
    return pd.DataFrame(rows), names


def test_paired_and_mean():
    df, names = _results()
    p = paired(df, names, "x")
    assert list(p.label) == ["true0.5", "true1.0"]
    assert list(p.proxy) == [0.5, 1.0] and list(p.true) == pytest.approx([0.6, 1.1])
    m = with_mean(df, ["x", "y"])
    assert sorted(m[m.benchmark == MEAN].kind) == ["proxy"] * 3 + ["true"] * 2
    pm = paired(m, names, MEAN)
    assert list(pm.true) == pytest.approx([0.85, 1.35])


def test_nearest():
    i, d = nearest([0.3, 0.7], np.array([[0.0, 1.0], [0.25, 0.75], [1.0, 0.0]]))
    assert (i, d) == (1, pytest.approx(0.1))


def test_vectorised_bootstrap_equals_scipy_row_by_row():
    from mixlab.analysis import bootstrap_statistics

    rng = np.random.default_rng(3)
    xs = rng.integers(0, 5, size=(20, 12)).astype(float)  # many ties, as accuracies have
    ys = xs + rng.integers(0, 3, size=(20, 12))
    xs[0] = 1.0  # a constant row: undefined
    rho = bootstrap_statistics("spearman", xs, ys)
    tau = bootstrap_statistics("kendall", xs, ys)
    assert np.isnan(rho[0]) and np.isnan(tau[0])
    for i in range(1, 20):
        assert rho[i] == pytest.approx(stats.spearmanr(xs[i], ys[i]).statistic)
        assert tau[i] == pytest.approx(stats.kendalltau(xs[i], ys[i]).statistic)


def test_scores_at_a_mixture_uses_the_lattice_tolerance():
    import pandas as pd

    from mixlab.analysis import scores_at

    names = ["a", "b", "c"]
    third = {"a": 0.333333, "b": 0.333333, "c": 0.333334}  # a lab's rounding of the uniform mixture
    rows = [
        dict(kind="proxy", label="p", benchmark="x", score=0.4, weights={"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
        dict(kind="true", label="t", benchmark="x", score=0.7, weights=third),
        dict(kind="true", label="t2", benchmark="x", score=0.9, weights={"a": 1.0, "b": 0.0, "c": 0.0}),
        dict(kind="expert", label="a", benchmark="x", score=0.5, weights={"a": 1.0, "b": 0.0, "c": 0.0}),
    ]
    df = pd.DataFrame(rows)
    table, key, exact, dist = scores_at(df, names, [1 / 3, 1 / 3, 1 / 3], ["x"])
    assert exact and table.to_dict("records") == [{"benchmark": "x", "proxy": 0.4, "true": 0.7, "expert a": 0.5}]
    table, key, exact, dist = scores_at(df, names, [0.8, 0.1, 0.1], ["x"])
    assert not exact and key == (1.0, 0.0, 0.0) and dist == pytest.approx(0.4)
    assert table.to_dict("records") == [{"benchmark": "x", "proxy": None, "nearest true": 0.9, "expert a": 0.5}]
