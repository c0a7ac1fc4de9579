import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mixlab.analysis import MEAN, nearest, paired, pareto_front, rank_correlation, regret, with_mean
from mixlab.errors import MixlabError


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


def test_spearman_and_kendall_match_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=25) / 5  # accuracies on 5 examples: many ties
    y = np.round(x + rng.normal(scale=0.3, size=25), 1)
    assert rank_correlation(x, y, "spearman", n_boot=0).value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert rank_correlation(x, y, "kendall", n_boot=0).value == pytest.approx(stats.kendalltau(x, y).statistic)


def test_correlation_undefined_below_three_or_constant():
    assert rank_correlation([1, 2], [2, 1]).value is None
    constant = rank_correlation([1, 1, 1], [1, 2, 3])
    assert (constant.value, constant.low, constant.n) == (None, None, 3)


def test_regret_by_hand():
    proxy = [0.2, 0.9, 0.5, 0.7]
    true = [0.3, 0.6, 0.8, 0.7]
    r = regret(proxy, true)
    assert (r.chosen, r.true_rank, r.regret) == (1, 3, pytest.approx(0.2))
    loss = regret([2.0, 1.0, 3.0], [1.5, 1.7, 1.0], higher_is_better=False)  # proxy picks index 1
    assert (loss.chosen, loss.true_rank, loss.regret) == (1, 3, pytest.approx(0.7))


def test_a_pick_tied_for_best_on_float_noise_is_first_with_no_regret():
    # the demo-k4 case: two means of exact matches equal but for the last bit (0.1 + 0.2 != 0.3)
    a, b = (0.1 + 0.2) / 2, 0.3 / 2
    assert a != b and a - b == pytest.approx(2.8e-17, abs=1e-17)
    true = [b, 0.10, a, 0.05]  # index 2 ties index 0 for best
    proxy = [0.4, 0.1, 0.9, 0.2]  # the proxy picks index 2
    r = regret(proxy, true)
    assert (r.chosen, r.true_rank, r.tied, r.regret) == (2, 1, 1, 0.0)
    assert r.label() == "#1 (tied) of 4"
    # a real difference stays one: the hand rank of a pick 1e-6 below the best
    r = regret(proxy, [b + 1e-6, 0.10, b, 0.05])
    assert (r.true_rank, r.tied, r.label()) == (2, 0, "#2 of 4") and r.regret == pytest.approx(1e-6)
    # lower is better, three tied at the pick's score, one better: competition rank 2
    r = regret([3.0, 1.0, 2.0, 4.0], [2.0, 2.0 + 1e-15, 1.0, 2.0 - 1e-15], higher_is_better=False)
    assert (r.chosen, r.true_rank, r.tied, r.label()) == (1, 2, 2, "#2 (tied) of 4") and r.regret == pytest.approx(1.0)


def test_tie_ranks_are_competition_ranks_up_to_float_noise():
    from mixlab.analysis import snap_ties, tie_ranks

    v = [0.3, 0.1 + 0.2, 0.5, 0.2, 0.2 + 1e-7]
    assert list(tie_ranks(v)) == [2, 2, 1, 5, 4]  # 0.3 and 0.30000000000000004 share rank 2; 1e-7 is real
    assert list(tie_ranks(v, higher_is_better=False)) == [3, 3, 5, 1, 2]
    assert list(stats.rankdata([-x for x in snap_ties(v)], method="min").astype(int)) == [2, 2, 1, 5, 4]
    assert snap_ties([1.0, 2.0]).tolist() == [1.0, 2.0]


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
    assert exact and table.to_dict("records") == [
        {"benchmark": "x", "n": None, "proxy": 0.4, "true": 0.7, "expert a": 0.5}
    ]
    table, key, exact, dist = scores_at(df, names, [0.8, 0.1, 0.1], ["x"])
    assert not exact and key == (1.0, 0.0, 0.0) and dist == pytest.approx(0.4)
    assert table.to_dict("records") == [
        {"benchmark": "x", "n": None, "proxy": None, "nearest true": 0.9, "expert a": 0.5}
    ]
    # as text: each score with its Wilson interval (k of 200), by the other algebraic form of Wilson's
    from mixlab.analysis import results_table

    z = stats.norm.ppf(0.975)

    def wilson(k, n=200):
        root = z * np.sqrt(z * z + 4 * k * (n - k) / n)
        return ((2 * k + z * z - root) / (2 * (n + z * z)), (2 * k + z * z + root) / (2 * (n + z * z)))

    class E:  # an evaluation as the store gives it
        def __init__(self, **kw):
            self.__dict__.update(dict(metric="accuracy", higher_is_better=True, n=200, method=None, params=None,
                                      seconds=0.0, device="cpu") | kw)  # fmt: skip

    full = results_table([E(**r) for r in rows], names)
    table, *_ = scores_at(full, names, [1 / 3, 1 / 3, 1 / 3], ["x"], text=True)
    lo, hi = wilson(80)
    assert table.to_dict("records")[0] == {
        "benchmark": "x",
        "n": 200,
        "proxy": f"0.400 [{lo:.3f}, {hi:.3f}]",
        "true": "0.700 [{:.3f}, {:.3f}]".format(*wilson(140)),
        "expert a": "0.500 [{:.3f}, {:.3f}]".format(*wilson(100)),
    }


def test_pairwise_accuracy_by_brute_force():
    from mixlab.analysis import pairwise_accuracy

    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=25).astype(float)  # ties on both sides
    y = rng.integers(0, 5, size=25).astype(float)
    score, pairs = 0.0, 0
    for i, j in itertools.combinations(range(25), 2):
        if y[i] == y[j]:
            continue
        pairs += 1
        score += 0.5 if x[i] == x[j] else float((x[i] > x[j]) == (y[i] > y[j]))
    assert pairwise_accuracy(x, y) == pytest.approx(score / pairs)
    assert pairwise_accuracy([1, 2, 3], [1, 2, 3]) == 1.0 and pairwise_accuracy([3, 2, 1], [1, 2, 3]) == 0.0
    assert pairwise_accuracy([1, 2], [5, 5]) is None


def test_top_quartile_correlation_ranks_the_best_quarter():
    from mixlab.analysis import top_quartile_correlation

    true = np.arange(20, dtype=float)  # the best quarter (higher is better): indices 15..19
    proxy = np.where(true >= 15, -true, true)  # right overall, reversed among the best
    top = top_quartile_correlation(proxy, true, True, n_boot=0)
    assert top.n == 5 and top.value == pytest.approx(stats.spearmanr(proxy[15:], true[15:]).statistic) == -1.0
    low = top_quartile_correlation(proxy, true, False, n_boot=0)  # lower is better: indices 0..4
    assert low.n == 5 and low.value == pytest.approx(1.0)


def test_proxy_report_by_hand():
    from mixlab.analysis import proxy_report
    from mixlab.lab import BenchmarkSpec

    names = ["a", "b"]
    ws = [{"a": w, "b": 1 - w} for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    proxy_x, true_x = [1, 2, 3, 4, 5], [2, 1, 3, 5, 4]
    proxy_l, true_l = [5, 4, 3, 2, 1], [5, 4, 3, 1, 2]  # a loss: lower is better

    def row(kind, bench, score, w):
        proxy = kind == "proxy"
        return dict(kind=kind, label=f"a{w['a']}", benchmark=bench, score=score, higher_is_better=bench == "x",
                    weights=w, method="linear" if proxy else None, params={} if proxy else None)  # fmt: skip

    rows = []
    for w, px, tx, pl, tl in zip(ws, proxy_x, true_x, proxy_l, true_l):
        rows += [row("proxy", "x", px, w), row("true", "x", tx, w), row("proxy", "l", pl, w), row("true", "l", tl, w)]
    df = pd.DataFrame(rows).assign(metric="m")
    specs = [
        BenchmarkSpec(name="x", evaluator="exact_match", data="d"),
        BenchmarkSpec(name="l", evaluator="lm_loss", data="d"),
    ]
    report = {r["benchmark"]: r for r in proxy_report(df, names, specs, n_boot=100)}
    assert set(report) == {"x", "l", MEAN}  # the mean averages x only (the only higher-is-better benchmark)
    x = report["x"]
    assert x["spearman"] == pytest.approx(stats.spearmanr(proxy_x, true_x).statistic)
    assert x["kendall"] == pytest.approx(stats.kendalltau(proxy_x, true_x).statistic)
    assert x["pairwise_accuracy"] == pytest.approx(8 / 10)  # pairs (0,1) and (3,4) reversed
    assert (x["pick"], x["pick_true_rank"], x["regret"]) == ("a1.0", 2, 1.0)  # proxy picks 5, true 4 of best 5
    assert x["n_top25"] == 2 and x["top25_spearman"] is None  # fewer than 3: undefined
    loss = report["l"]
    # lowest proxy loss: a1.0, whose true loss 2 is second to a0.75's 1
    assert (loss["pick"], loss["pick_true_rank"], loss["regret"]) == ("a1.0", 2, 1.0)
    assert report[MEAN]["spearman"] == pytest.approx(x["spearman"])


def test_a_labs_rounded_weights_are_the_lattice_point():
    """0.3333/0.3333/0.3334 in a lab.toml is the uniform mixture; a neighbouring lattice point is not."""
    from mixlab.analysis import same_mixture, scores_at

    third = [1 / 3] * 3
    assert same_mixture([0.3333, 0.3333, 0.3334], [[0.5, 0.25, 0.25], third]) == 1
    assert same_mixture([0.34, 0.33, 0.33], [third]) is None
    names = ["a", "b", "c"]
    rows = pd.DataFrame(
        [
            {"kind": "proxy", "label": "p", "benchmark": "x", "score": 0.7, "weights": dict(zip(names, third))},
            {
                "kind": "true",
                "label": "uniform",
                "benchmark": "x",
                "score": 0.6,
                "weights": {"a": 0.3333, "b": 0.3333, "c": 0.3334},
            },
        ]
    )
    pairs = paired(rows, names, "x")
    assert list(pairs.proxy) == [0.7] and list(pairs.true) == [0.6]
    table, _, exact, _ = scores_at(rows, names, [0.3334, 0.3333, 0.3333], ["x"])
    assert exact and table.proxy.iloc[0] == 0.7 and table.true.iloc[0] == 0.6


def test_method_comparison_rows_match_scipy_per_method():
    from mixlab.analysis import method_comparison
    from mixlab.lab import BenchmarkSpec

    rng = np.random.default_rng(0)
    names = ["a", "b"]
    ws = [{"a": x, "b": 1 - x} for x in np.linspace(0, 1, 9)]
    true = rng.random(9)
    methods = {("linear", ()): true + 0.1 * rng.random(9), ("ties", (("density", 0.5),)): rng.random(9)}
    rows = [
        {"kind": "true", "label": f"t{i}", "benchmark": "x", "score": s, "weights": w, "method": None, "params": None}
        for i, (w, s) in enumerate(zip(ws, true))
    ]
    for (m, p), scores in methods.items():
        rows += [
            {"kind": "proxy", "label": "", "benchmark": "x", "score": s, "weights": w, "method": m, "params": dict(p)}
            for w, s in zip(ws, scores)
        ]
    df = pd.DataFrame(rows).assign(higher_is_better=True, metric="exact_match")
    bench = [BenchmarkSpec(name="x", evaluator="exact_match", data="x.jsonl")]
    table = method_comparison(df, names, bench, "x", n_boot=200)
    assert list(table.method) == ["linear", "ties"] and list(table.n) == [9, 9]
    for (m, _), scores in methods.items():
        got = table[table.method == m].iloc[0]
        assert got.spearman == pytest.approx(stats.spearmanr(scores, true).statistic)
        assert got.pick_true_rank == int((true > true[np.argmax(scores)]).sum()) + 1


@pytest.mark.parametrize("k, n", [(102, 200), (0, 10), (10, 10), (1, 3), (37, 50)])
def test_wilson_interval_equals_the_hand_formula(k, n):
    from mixlab.analysis import wilson_interval

    z = stats.norm.ppf(0.975)
    # Wilson (1927) in the other algebraic form: (2k + z² ± z·√(z² + 4k(n−k)/n)) / (2(n + z²))
    root = z * np.sqrt(z * z + 4 * k * (n - k) / n)
    want = ((2 * k + z * z - root) / (2 * (n + z * z)), (2 * k + z * z + root) / (2 * (n + z * z)))
    assert wilson_interval(k, n) == pytest.approx(want, abs=1e-12)
    if k == 0:
        assert wilson_interval(k, n)[1] == pytest.approx(z * z / (n + z * z))  # the rule-of-three's cousin


def test_a_score_has_an_interval_only_when_it_is_k_of_n():
    from mixlab.analysis import format_score, score_interval, wilson_interval

    assert score_interval(0.51, 200, "accuracy") == wilson_interval(102, 200)
    assert score_interval(0.51, 200, "loss") is None  # a loss needs its per-example spread
    assert score_interval(0.5123, 200, "accuracy") is None  # not a whole number of examples
    assert score_interval(0.5, 0, "accuracy") is None
    lo, hi = score_interval(0.51, 200, "accuracy")
    assert 0.44 < lo < 0.45 and 0.57 < hi < 0.58  # ± about 2 × 0.035, the standard error
    assert format_score(0.51, lo, hi) == f"0.510 [{lo:.3f}, {hi:.3f}]" and format_score(None) == "—"
    assert format_score(2.5, float("nan"), float("nan")) == "2.500"


def test_the_mean_over_benchmarks_has_the_normal_interval_of_independent_proportions():
    z = stats.norm.ppf(0.975)
    rows = [
        {"kind": "proxy", "label": "p", "benchmark": b, "score": s, "n": n, "metric": "accuracy", "method": "linear",
         "params": {}, "higher_is_better": True, "weights": {"a": 1.0}}
        for b, s, n in (("x", 0.5, 200), ("y", 0.9, 100))
    ]  # fmt: skip
    m = with_mean(pd.DataFrame(rows), ["x", "y"])
    mean = m[m.benchmark == MEAN].iloc[0]
    se = np.sqrt(0.5 * 0.5 / 200 + 0.9 * 0.1 / 100) / 2  # Var(mean) = (σ_x² + σ_y²) / 4
    assert (mean.score, mean.n) == (pytest.approx(0.7), 300)
    assert (mean.low, mean.high) == (pytest.approx(0.7 - z * se), pytest.approx(0.7 + z * se))
    rows[1]["metric"] = "loss"
    rows[1]["higher_is_better"] = True
    m = with_mean(pd.DataFrame(rows), ["x", "y"])
    assert np.isnan(m[m.benchmark == MEAN].iloc[0].low)  # one side without an interval: the mean has none


def test_mixtures_needed_for_a_ci_width_and_the_warning_below_eight():
    from mixlab.analysis import mixtures_needed, rank_warning, spearman_ci_width

    z = stats.norm.ppf(0.975)
    # at ρ = 0 the Fisher-z CI is ±tanh(z/√(n−3)): width ≤ w ⇔ n ≥ 3 + (z / atanh(w/2))²
    for w in (0.5, 0.3, 1.0):
        assert mixtures_needed(w, rho=0.0) == int(np.ceil(3 + (z / np.arctanh(w / 2)) ** 2))
    assert spearman_ci_width(0.0, 19) == pytest.approx(2 * np.tanh(z / 4))
    assert mixtures_needed(0.5, rho=0.8) < mixtures_needed(0.5, rho=0.0)  # a strong ρ is pinned down sooner
    five = rank_warning(5)
    assert five.startswith("Only 5 true mixtures to rank") and f"About {mixtures_needed(0.5, 0.5)} give" in five
    assert f"about {spearman_ci_width(0.5, 5):.1f} wide" in five
    # by hand at ρ = 0.5: n = 41 gives tanh(0.5493 ± 1.96·√(1.125/38)) = [0.209, 0.710], 0.501 wide; n = 42, 0.494
    assert mixtures_needed(0.5, 0.5) == 42
    assert "undefined" in rank_warning(2) and rank_warning(8) is None


def test_best_mixtures_are_each_sources_argmax_and_the_search_winner():
    from mixlab.analysis import best_mixtures, results_table

    names = ["a", "b"]
    rng = np.random.default_rng(3)

    class E:
        def __init__(self, **kw):
            self.__dict__.update(dict(metric="accuracy", n=100, method=None, params=None, seconds=0.0, device="cpu",
                                      benchmark="x") | kw)  # fmt: skip

    grid = np.linspace(0, 1, 11)
    proxy = rng.integers(0, 101, 11) / 100
    true = rng.integers(0, 101, 6) / 100
    evs = [E(kind="proxy", label=f"p{i}", score=s, higher_is_better=True, weights={"a": w, "b": 1 - w})
           for i, (w, s) in enumerate(zip(grid, proxy))]  # fmt: skip
    evs += [E(kind="true", label=f"t{i}", score=s, higher_is_better=True, weights={"a": w, "b": 1 - w})
            for i, (w, s) in enumerate(zip(grid[::2], true))]  # fmt: skip
    df = results_table(evs, names)
    won = {"weights": {"a": 0.3, "b": 0.7}, "test": {"x": 0.61}, "dev": [0.6]}
    best = best_mixtures(df, names, "x", [won, {"weights": {"a": 1.0}, "test": {}}])
    i, j = int(pd.Series(proxy).idxmax()), int(pd.Series(true).idxmax())  # pandas' first maximum
    assert best["proxy"].label == f"a={grid[i]:.3g}, b={1 - grid[i]:.3g}" and best["proxy"].weights == pytest.approx(
        (grid[i], 1 - grid[i])
    )
    assert best["proxy"].score == proxy[i] and best["proxy"].n == 100 and best["proxy"].low < proxy[i]
    assert best["true"].label.endswith(f"(t{j})") and best["true"].score == true[j]
    assert (best["search"].weights, best["search"].score) == ((0.3, 0.7), 0.61)
    assert best["search"].label == "a=0.3, b=0.7" and best["search"].low is None
    # lower is better: the minimum; and a tie on float noise marks the first, with the tie counted
    loss = df.assign(higher_is_better=False, metric="loss")
    assert best_mixtures(loss, names, "x")["proxy"].score == proxy.min()
    tied = df.copy()
    tied.loc[tied.label == "t0", "score"] = (0.1 + 0.2) * 10
    tied.loc[tied.label == "t1", "score"] = 3.0
    got = best_mixtures(tied, names, "x")["true"]
    assert (got.label, got.tied) == ("a=0, b=1 (t0)", 1) and "tied with 1 other" in got.describe()
    assert best_mixtures(df.iloc[:0], names, "x") == {}


def test_readable_writes_undefined_where_a_table_would_print_none():
    from mixlab.analysis import readable

    t = pd.DataFrame({"a": ["x", "y"], "rho": [0.12345, None], "n": [3, 4], "p": [0.5, 0.25]})
    out = readable(t)
    assert out.rho.tolist() == ["0.123", "undefined"] and out.n.tolist() == [3, 4] and out.p.tolist() == [0.5, 0.25]
    assert readable(t.assign(rho=[1.0, float("nan")]), 2, "—").rho.tolist() == ["1.00", "—"]


def test_cached_params_are_the_most_cached_of_a_method():
    from mixlab.analysis import cached_params

    rows = [{"kind": "proxy", "method": "ties", "params": {"density": d}} for d in (0.5, 0.5, 0.2)]
    rows += [{"kind": "true", "method": None, "params": None}, {"kind": "proxy", "method": "linear", "params": {}}]
    df = pd.DataFrame(rows)
    assert cached_params(df, "ties") == {"density": 0.5} and cached_params(df, "linear") == {}
    assert cached_params(df, "dare_ties") is None
    tie = pd.DataFrame([{"kind": "proxy", "method": "ties", "params": {"density": d}} for d in (0.7, 0.3)])
    assert cached_params(tie, "ties") == {"density": 0.3}  # a tie: the first in sorted order


def test_methods_are_compared_on_the_plane_at_the_mixtures_they_share():
    from mixlab.analysis import method_fronts

    names = ["a", "b"]
    rng = np.random.default_rng(5)
    rows = [{"kind": "expert", "label": n, "benchmark": b, "score": s, "weights": {n: 1.0}, "method": None,
             "params": None} for n in names for b, s in (("x", 0.3), ("y", 0.3))]  # fmt: skip
    grids = {"linear": [0.0, 0.25, 0.5, 0.75, 1.0], "ties": [0.0, 0.5, 1.0]}
    scores = {}
    for m, grid in grids.items():
        for w in grid:
            sx, sy = rng.random(2)
            scores[(m, w)] = (sx, sy)
            rows += [{"kind": "proxy", "label": f"{m}{w}", "benchmark": b, "score": s, "weights": {"a": w, "b": 1 - w},
                      "method": m, "params": {}} for b, s in (("x", sx), ("y", sy))]  # fmt: skip
    df = pd.DataFrame(rows).assign(higher_is_better=True)
    for n in names:  # one weight column per expert, as results_table gives
        df[n] = [w.get(n, 0.0) for w in df.weights]
    table, shared = method_fronts(df, names, "x", "y")
    assert shared == 3 and list(table.merges) == [3, 3]  # linear's 0.25 and 0.75 are left out
    for _, r in table.iterrows():
        pts = [scores[(r.method, w)] for w in grids["ties"]] + [(0.3, 0.3), (0.3, 0.3)]
        front = [p for p in pts if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)]  # brute force
        merges_front = sum(1 for p in front if p != (0.3, 0.3))
        assert r["merges on the front"] == merges_front
        assert r["best x"] == max(scores[(r.method, w)][0] for w in grids["ties"])


def test_a_difference_of_two_wilson_scores_has_newcombes_interval():
    from mixlab.analysis import difference_interval, wilson_interval

    # Newcombe (1998), Statistics in Medicine 17:873, Table II, example (a): 56/70 − 48/80, method 10
    a, b = wilson_interval(56, 70), wilson_interval(48, 80)
    d, low, high = difference_interval(56 / 70, *a, 48 / 80, *b)
    assert d == pytest.approx(0.2) and (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # two normal intervals: d ± z·√(se_a² + se_b²)
    z = stats.norm.ppf(0.975)
    d, low, high = difference_interval(0.6, 0.6 - z * 0.03, 0.6 + z * 0.03, 0.5, 0.5 - z * 0.04, 0.5 + z * 0.04)
    assert (low, high) == (pytest.approx(0.1 - z * 0.05), pytest.approx(0.1 + z * 0.05))


def test_a_three_objective_front_equals_a_brute_force_check_on_demo_k3(tmp_path):
    """pareto_points with a third benchmark: a model is on a front exactly when no other model of its family
    is at least as good on all three benchmarks and better on one (checked pair by pair, by hand)."""
    from mixlab.analysis import best_mixtures, best_on_plane, pareto_points
    from mixlab.demo import DEMO_LAB
    from mixlab.engine import Engine, open_store
    from mixlab.lab import load_lab

    lab = load_lab(DEMO_LAB.parent / "demo-k3")
    eng = Engine(lab, open_store(lab, tmp_path / "cache.sqlite"))
    df = eng.results("linear", {})
    pts = pareto_points(df, eng.names, "add", "rev", "sort-loss")  # sort-loss: lower is better
    assert len(pts) > 50 and {"x", "y", "z"} <= set(pts.columns)
    last = df.groupby(["kind", "label", "benchmark"]).score.mean()  # a mixture trained twice: its seeds' mean
    for col, family in (("proxy_front", ("expert", "proxy")), ("true_front", ("expert", "true"))):
        members = pts[pts.kind.isin(family)]
        scores = {
            (k, name): (last[(k, name, "add")], last[(k, name, "rev")], -last[(k, name, "sort-loss")])
            for k, name in zip(members.kind, members.label)
        }  # maximise all three
        for key, s in scores.items():
            dominated = any(
                all(o >= v for o, v in zip(other, s)) and any(o > v for o, v in zip(other, s))
                for other_key, other in scores.items()
                if other_key != key
            )
            got = bool(members[(members.kind == key[0]) & (members.label == key[1])][col].iloc[0])
            assert got == (not dominated), (col, key)
        assert members[col].sum() >= 2
    assert not pts[~pts.kind.isin(("expert", "proxy"))].proxy_front.any()
    # one label format: a proxy's mixture reads as its weights, a trained one's adds its name, an expert its name
    true = pts[pts.kind == "true"].iloc[0]
    assert true.mixture.endswith(f" ({true.label})") and "=" in true.mixture
    experts = pts[pts.kind == "expert"]
    assert list(experts.mixture) == list(experts.label)
    # the best mixtures placed in the three objectives, at their own rows' scores
    best = best_mixtures(df, eng.names, "add")
    marked = best_on_plane(best, pts, eng.names, None, "add", "rev", "sort-loss").set_index("source")
    for source in ("proxy", "true"):
        mine = pts[pts.kind == source]
        w = mine[list(eng.names)].to_numpy(dtype=float)
        hit = int(np.argmin(np.abs(w - np.asarray(best[source].weights)).max(axis=1)))
        assert tuple(marked.loc[source, ["x", "y", "z"]]) == tuple(mine[["x", "y", "z"]].iloc[hit])


def test_means_of_the_same_scores_in_another_order_are_equal_to_the_last_bit():
    from mixlab.analysis import exact_mean

    s = [0.035, 0.035, 0.105]  # fractions k/200; summed left to right the two orders differ in the last bit
    assert sum(x / 3 for x in s) != sum(x / 3 for x in s[::-1])
    assert exact_mean(s) == exact_mean(s[::-1]) == pytest.approx(0.175 / 3)
    # with_mean averages the same scores held in another row order to the same number
    rows = [dict(kind="true", label=lab, benchmark=b, score=x, higher_is_better=True, method=None, params=None,
                 weights={"a": 1.0}) for lab, order in (("p", s), ("q", s[::-1])) for b, x in zip("xyz", order)]  # fmt: skip
    df = with_mean(pd.DataFrame(rows), ["x", "y", "z"])
    means = df[df.benchmark == MEAN].set_index("label").score
    assert means["p"] == means["q"]


def test_best_index_takes_the_first_of_scores_tied_up_to_float_noise():
    from mixlab.analysis import at_least, best_index

    a, b = (0.1 + 0.7) / 2, (0.3 + 0.5) / 2  # both 0.4 by hand; as floats 0.39999999999999997 and 0.4
    assert a < b
    assert best_index([0.2, a, b]) == 1  # tied: the first, not the one whose sum rounded up
    assert best_index([0.2, a, b + 1e-6]) == 2  # a real difference is one
    assert best_index([0.5, a, b], higher_is_better=False) == 1
    assert at_least(a, b) and at_least(b, a) and not at_least(a, b + 1e-6)
    with pytest.raises(MixlabError, match="no scores"):
        best_index([])


def _replicated_results(seed=0, n_mix=12):
    """A 2-expert design (2 vertices + interior points), 2 benchmarks, a proxy and 2 true replicates."""
    rng = np.random.default_rng(seed)
    ws = np.linspace(0, 1, n_mix)
    rows = []
    for i, w in enumerate(ws):
        weights = {"a": float(w), "b": float(1 - w)}
        for b, slope in (("x", 1.0), ("y", -1.0)):
            signal = slope * w
            rows.append(dict(kind="proxy", label=f"p{i}", benchmark=b, score=float(signal + rng.normal(0, 0.3)),
                             weights=weights, replicate=None))  # fmt: skip
            for r in (1, 2):
                rows.append(dict(kind="true", label=f"t{i}", benchmark=b, score=float(signal + rng.normal(0, 0.2)),
                                 weights=weights, replicate=r))  # fmt: skip
    df = pd.DataFrame(rows).assign(higher_is_better=True, method=None, params=None, n=np.nan, metric="score")
    df["replicate"] = df.replicate.astype("Int64")
    return df


class _Bench:
    def __init__(self, name):
        self.name, self.higher_is_better = name, True


def test_the_noise_ceiling_and_the_proxy_against_the_replicate_mean_match_scipy_by_hand():
    from mixlab.analysis import noise_ceiling, proxy_report, replicate_pairs

    df = _replicated_results()
    t = df[df.kind == "true"]
    r1 = t[(t.replicate == 1) & (t.benchmark == "x")].score.to_numpy()
    r2 = t[(t.replicate == 2) & (t.benchmark == "x")].score.to_numpy()
    px = df[(df.kind == "proxy") & (df.benchmark == "x")].score.to_numpy()
    ceiling = noise_ceiling(df, ["a", "b"], "x", n_boot=500)
    assert ceiling.n == 12 and ceiling.value == pytest.approx(stats.spearmanr(r1, r2).statistic)
    assert ceiling.low < ceiling.value < ceiling.high
    # the proxy's ρ is against the mean of the two replicates
    pairs = paired(df, ["a", "b"], "x")
    assert pairs.true.tolist() == pytest.approx(((r1 + r2) / 2).tolist()) and set(pairs.replicates) == {2}
    rows = {r["benchmark"]: r for r in proxy_report(df, ["a", "b"], [_Bench("x"), _Bench("y")], n_boot=200)}
    assert rows["x"]["spearman"] == pytest.approx(stats.spearmanr(px, (r1 + r2) / 2).statistic)
    assert rows["x"]["ceiling"] == pytest.approx(stats.spearmanr(r1, r2).statistic) and rows["x"]["n_replicated"] == 12
    # the interior points: the vertices (w = 0 or 1) left out, for the proxy's ρ and for the ceiling alike
    inner = slice(1, 11)
    assert len(replicate_pairs(df, ["a", "b"], "x", "interior")) == 10
    rows = {r["benchmark"]: r for r in proxy_report(df, ["a", "b"], [_Bench("x")], n_boot=0, subset="interior")}
    assert rows["x"]["n"] == 10
    assert rows["x"]["spearman"] == pytest.approx(stats.spearmanr(px[inner], ((r1 + r2) / 2)[inner]).statistic)
    assert rows["x"]["ceiling"] == pytest.approx(stats.spearmanr(r1[inner], r2[inner]).statistic)


def test_both_summaries_rho_of_the_mean_and_mean_of_per_benchmark_rho_by_hand():
    from mixlab.analysis import rho_summaries

    df = _replicated_results(seed=3)
    t, p = df[df.kind == "true"], df[df.kind == "proxy"]

    def col(frame, b, r=None):
        f = frame[frame.benchmark == b]
        return (f if r is None else f[f.replicate == r]).score.to_numpy()

    true_mean = {b: (col(t, b, 1) + col(t, b, 2)) / 2 for b in "xy"}
    out = {
        (r["subset"], r["summary"]): r for r in rho_summaries(df, ["a", "b"], [_Bench("x"), _Bench("y")], n_boot=300)
    }
    of_mean = out["all", "ρ of the mean"]
    proxy_mean = (col(p, "x") + col(p, "y")) / 2
    assert of_mean["spearman"] == pytest.approx(
        stats.spearmanr(proxy_mean, (true_mean["x"] + true_mean["y"]) / 2).statistic
    )
    rep_means = [(col(t, "x", r) + col(t, "y", r)) / 2 for r in (1, 2)]
    assert of_mean["ceiling"] == pytest.approx(stats.spearmanr(*rep_means).statistic) and of_mean["n_replicated"] == 12
    per = out["all", "mean of per-benchmark ρ"]
    by_hand = np.mean([stats.spearmanr(col(p, b), true_mean[b]).statistic for b in "xy"])
    assert per["spearman"] == pytest.approx(by_hand) and per["spearman_low"] <= per["spearman"] <= per["spearman_high"]
    ceiling = np.mean([stats.spearmanr(col(t, b, 1), col(t, b, 2)).statistic for b in "xy"])
    assert per["ceiling"] == pytest.approx(ceiling)
    inner = out["interior", "mean of per-benchmark ρ"]
    by_hand = np.mean([stats.spearmanr(col(p, b)[1:-1], true_mean[b][1:-1]).statistic for b in "xy"])
    assert inner["n"] == 10 and inner["spearman"] == pytest.approx(by_hand)


def test_without_replicates_the_ceiling_is_unknown_and_says_so():
    from mixlab.analysis import ceiling_text, in_subset, proxy_report, rho_summaries

    df = _replicated_results()
    one = df[(df.kind == "proxy") | (df.replicate == 1)]
    (row,) = [r for r in proxy_report(one, ["a", "b"], [_Bench("x")], n_boot=0) if r["benchmark"] == "x"]
    assert row["ceiling"] is None and row["n_replicated"] == 0 and row["replicates"] == 1
    assert ceiling_text(row["ceiling"], None, None, row["n_replicated"]) == "no replicates: ceiling unknown"
    assert ceiling_text(0.8213, 0.66, 0.92, 46) == "ceiling +0.82 [+0.66, +0.92] (n=46)"
    assert all(r["ceiling"] is None for r in rho_summaries(one, ["a", "b"], [_Bench("x")], n_boot=0))
    with pytest.raises(MixlabError, match="unknown subset 'edge'; available: all, interior"):
        in_subset([0.5, 0.5], "edge")


def test_a_page_shows_a_replicated_mixture_once_at_its_replicates_mean():
    from mixlab.analysis import best_mixtures, collapse_replicates

    df = _replicated_results()
    one = collapse_replicates(df)
    t = one[(one.kind == "true") & (one.benchmark == "x")]
    assert len(t) == 12 and t.replicate.isna().all()
    raw = df[(df.kind == "true") & (df.benchmark == "x")]
    by_hand = raw.groupby("label").score.mean()
    assert t.set_index("label").score.to_dict() == pytest.approx(by_hand.to_dict())
    best = best_mixtures(df.assign(low=np.nan, high=np.nan), ["a", "b"], "x")["true"]
    assert best.score == pytest.approx(by_hand.max())  # the best mean, not the luckiest seed
    single = df[df.replicate.isna() | (df.replicate == 1)]
    assert collapse_replicates(single) is single  # no replicates: unchanged


# --- intervals from per-example values -----------------------------------------------------------------------
def _loss_values(n=150, seed=1):
    from mixlab.values import ExampleValues

    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, 12, n).astype(float)
    nll = tokens * rng.gamma(2.0, 0.6, n)  # summed NLL per example: longer completions lose more
    return ExampleValues(nll, tokens)


def test_a_loss_interval_equals_scipys_percentile_bootstrap_of_the_per_token_mean():
    from mixlab.analysis import bootstrap_intervals

    v = _loss_values()
    low, high = bootstrap_intervals([v])[0]
    ref = stats.bootstrap(
        (v.values.astype(float), v.weights.astype(float)),
        lambda x, w, axis: x.sum(axis) / w.sum(axis),
        paired=True,
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(7),
    ).confidence_interval
    width = ref.high - ref.low
    assert low < v.score() < high
    assert low == pytest.approx(ref.low, abs=0.06 * width) and high == pytest.approx(ref.high, abs=0.06 * width)
    # and the ratio estimator's delta-method interval by hand: r ± 1.96·√(Σ(v − r·w)²)/Σw
    r = v.score()
    e = v.values.astype(float) - r * v.weights
    half = 1.959964 * np.sqrt((e**2).sum()) / v.weights.sum()
    assert high - low == pytest.approx(2 * half, rel=0.15)


def test_many_intervals_at_once_equal_each_alone():
    from mixlab.analysis import bootstrap_intervals
    from mixlab.values import ExampleValues

    vs = [_loss_values(seed=s) for s in range(3)] + [ExampleValues(np.arange(30) % 3 == 0)]
    n = vs[0].n  # and unweighted scores of the losses' n, resampled with them (an unweighted one divides by n)
    vs += [ExampleValues(np.arange(n) % 4 == 0), ExampleValues(np.linspace(0, 2, n))]
    together = bootstrap_intervals(vs)
    alone = np.array([bootstrap_intervals([v])[0] for v in vs])
    np.testing.assert_allclose(together, alone, rtol=1e-12)


def test_a_mean_over_benchmarks_interval_equals_scipys_stratified_bootstrap():
    from mixlab.analysis import mean_bootstrap_interval
    from mixlab.values import ExampleValues

    rng = np.random.default_rng(3)
    benches = [ExampleValues(rng.random(n) < p) for n, p in ((200, 0.55), (120, 0.8), (80, 0.3))]
    low, high = mean_bootstrap_interval(benches)
    ref = stats.bootstrap(
        [b.values.astype(float) for b in benches],
        lambda *xs, axis: np.mean([x.mean(axis) for x in xs], axis=0),
        vectorized=True,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(11),
    ).confidence_interval
    width = ref.high - ref.low
    assert low == pytest.approx(ref.low, abs=0.06 * width) and high == pytest.approx(ref.high, abs=0.06 * width)


def test_a_paired_difference_of_two_accuracies_by_hand():
    import math

    from mixlab.analysis import difference_interval, paired_difference, wilson_interval
    from mixlab.values import ExampleValues

    rng = np.random.default_rng(5)
    n = 400
    a = rng.random(n) < 0.6
    b = a.copy()
    flip = rng.choice(n, 40, replace=False)  # b differs from a on 40 examples: 28 a-only right, 12 b-only right
    b[flip[:28]] = False
    a[flip[:28]] = True
    b[flip[28:]] = True
    a[flip[28:]] = False
    d = paired_difference(ExampleValues(a), ExampleValues(b))
    ab, ba = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert d.discordant == (ab, ba) == (28, 12)
    # exact McNemar by hand: two-sided binomial tail of the smaller discordant count, m = 40, p = 1/2
    m = ab + ba
    p_hand = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(ab, ba) + 1)) / 2**m)
    assert d.p_value == pytest.approx(p_hand, rel=1e-9)
    assert d.p_value == pytest.approx(stats.binomtest(ab, m, 0.5).pvalue, rel=1e-9)  # and scipy's exact test
    assert d.difference == pytest.approx((ab - ba) / n)
    # the paired interval ≈ d̄ ± 1.96·sd(a − b)/√n, and much narrower than the independent (MOVER) one
    diff = a.astype(float) - b.astype(float)
    half = 1.959964 * diff.std(ddof=1) / np.sqrt(n)
    assert d.low == pytest.approx(d.difference - half, abs=0.006)
    assert d.high == pytest.approx(d.difference + half, abs=0.006)
    wa, wb = wilson_interval(a.sum(), n), wilson_interval(b.sum(), n)
    _, ml, mh = difference_interval(a.mean(), *wa, b.mean(), *wb)
    assert (d.high - d.low) < 0.5 * (mh - ml)


def test_a_paired_difference_needs_the_same_examples():
    from mixlab.analysis import paired_difference
    from mixlab.values import ExampleValues

    with pytest.raises(MixlabError, match=r"same examples: \[3\] values against \[2\]"):
        paired_difference(ExampleValues([1, 0, 1]), ExampleValues([1, 0]))


def test_the_results_table_says_which_interval_each_score_has():
    from mixlab.analysis import bootstrap_intervals, mean_bootstrap_interval, results_table, wilson_interval
    from mixlab.store import Evaluation
    from mixlab.values import ExampleValues

    loss = _loss_values(n=40)
    acc1, acc2 = ExampleValues(np.arange(40) % 2 == 0), ExampleValues(np.arange(40) % 4 == 0)

    def e(key, bench, metric, score, hib, values=None, label="a=1"):
        return Evaluation(key=key, lab="l", kind="proxy", label=label, models="m", benchmark=bench, metric=metric,
                          score=score, higher_is_better=hib, n=40, device="cpu", seconds=0.0, method="linear",
                          params={}, weights={"a": 1.0}, values=values)  # fmt: skip

    evals = [
        e("1", "x-loss", "loss", loss.score(), False, loss),
        e("2", "x", "accuracy", 0.5, True, acc1),
        e("3", "y", "accuracy", 0.25, True),
        e("4", "x-loss", "loss", 1.5, False, label="b=1"),
    ]
    df = results_table(evals[:1] + evals[2:], ["a"], {"2": acc1})  # values from the store, by key
    df = results_table(evals, ["a"])
    assert df.ci.tolist() == ["bootstrap", "Wilson", "Wilson", ""]
    assert [df.low[0], df.high[0]] == pytest.approx(bootstrap_intervals([loss])[0].tolist())
    assert [df.low[1], df.high[1]] == pytest.approx(list(wilson_interval(20, 40)))
    assert np.isnan(df.low[3])
    # the mean: bootstrapped where every benchmark has values, else the normal approximation
    mean = with_mean(df, ["x", "y"])
    row = mean[mean.benchmark == MEAN].iloc[0]
    assert row.ci == "normal" and row.score == pytest.approx(0.375)
    df2 = results_table([evals[1], e("3", "y", "accuracy", 0.25, True, acc2)], ["a"])
    row = with_mean(df2, ["x", "y"]).iloc[-1]
    assert row.ci == "bootstrap" and [row.low, row.high] == pytest.approx(list(mean_bootstrap_interval([acc1, acc2])))
    assert row["values"] == (acc1, acc2)  # its benchmarks' values, in order: what a paired difference resamples
    # rows concatenated by pandas with rows that have no values hold NaN there, not None: the normal approximation
    both = pd.concat([df2, df[df.benchmark == "y"].assign(values=np.nan, label="c=1")], ignore_index=True)
    assert [r.ci for r in with_mean(both, ["x", "y"]).itertuples() if r.benchmark == MEAN] == ["bootstrap"]
    df3 = pd.concat([df2[df2.benchmark == "x"].assign(values=np.nan), df2[df2.benchmark == "y"]], ignore_index=True)
    assert with_mean(df3, ["x", "y"]).iloc[-1].ci == "normal"


def test_a_paired_difference_of_two_means_over_benchmarks_by_the_normal_approximation():
    from mixlab.analysis import paired_difference
    from mixlab.values import ExampleValues

    rng = np.random.default_rng(9)
    a, b = [], []
    for n, p in ((300, 0.6), (200, 0.4)):
        x = rng.random(n) < p
        y = x ^ (rng.random(n) < 0.15)  # b disagrees with a on about 15% of each benchmark's examples
        a.append(ExampleValues(x))
        b.append(ExampleValues(y))
    d = paired_difference(tuple(a), tuple(b))
    diffs = [x.values.astype(float) - y.values.astype(float) for x, y in zip(a, b)]
    centre = np.mean([v.mean() for v in diffs])
    half = 1.959964 * np.sqrt(sum(v.var(ddof=1) / len(v) for v in diffs)) / len(diffs)
    assert d.difference == pytest.approx(centre) and d.p_value is None and d.n == 500
    assert d.low == pytest.approx(centre - half, abs=0.006) and d.high == pytest.approx(centre + half, abs=0.006)
    with pytest.raises(MixlabError, match="same examples"):
        paired_difference(tuple(a), (b[0],))
