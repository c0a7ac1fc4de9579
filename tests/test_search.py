"""Search over the simplex through optuna: the box→simplex map, dev/test separation, the engine's cache,
resumable studies, multi-fidelity pruning and Pareto fronts, on the tiny lab."""

import json

import numpy as np
import pytest

from mixlab.analysis import pareto_front
from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.lab import load_lab
from mixlab.search import Search, to_weights
from mixlab.simplex import Mixture
from mixlab.store import Store


def test_the_box_maps_onto_the_simplex_uniformly():
    rng = np.random.default_rng(0)
    w = np.array([to_weights(u) for u in rng.uniform(1e-6, 1, size=(20000, 3))])
    assert np.allclose(w.sum(1), 1) and (w > 0).all()
    np.testing.assert_allclose(w.mean(0), [1 / 3] * 3, atol=0.01)  # Dirichlet(1): mean 1/K …
    np.testing.assert_allclose(w.var(0), [1 / 18] * 3, atol=0.003)  # … and variance (K−1)/(K²(K+1))
    assert to_weights([1, 1, 1]) == [1 / 3] * 3


def test_search_optimises_on_dev_and_reports_on_test(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    search = Search(engine, ["rev-loss"], sampler="random", seed=1)
    result = search.run(6)
    assert result.split == "dev" and len(result.trials) == 6
    values = [t["values"][0] for t in result.trials]
    (best,) = result.best
    assert best["dev"][0] == max(values)  # higher is better: the objective is −loss on the dev data
    m = engine.mixture([best["weights"][n] for n in engine.names])
    (test,) = engine.proxy(m, benchmarks=["rev-loss"])
    assert best["test"] == {"rev-loss": test.score}  # reported on the lab's own data …
    dev = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")
    dev_spec = dev.lab.benchmark("rev-loss").model_copy(update={"name": "x", "data": "data/rev_dev.jsonl"})
    (again,) = dev.proxy(m, benchmarks=[dev_spec])
    assert -again.score == pytest.approx(best["dev"][0], rel=1e-6)  # … chosen on the dev file
    shown = engine.results()
    assert set(shown.benchmark) <= {"rev", "rev-loss", "pick"}  # dev scores never appear as reported ones


def test_a_search_resumes_and_recomputes_nothing_cached(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    first = Search(engine, ["rev-loss"], sampler="random", seed=3, name="s1").run(4)
    rows = engine.store.count()
    again = Search(engine, ["rev-loss"], sampler="random", seed=3, name="s2").run(4)  # same points, new study
    assert engine.store.count() == rows and again.best[0]["dev"] == first.best[0]["dev"]
    resumed = Search(engine, ["rev-loss"], sampler="random", seed=3, name="s1").run(2)
    assert len(resumed.trials) == 6  # the stored study grew
    assert (dev_lab / ".mixlab" / "search.sqlite").exists() or (tmp_path / "search.sqlite").exists()


def test_searching_the_reported_data_needs_asking(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")
    with pytest.raises(MixlabError, match="pick have no search_data"):
        Search(engine, ["pick"])
    result = Search(engine, ["pick"], sampler="random", allow_test=True).run(2)
    assert result.split == "test"
    with pytest.raises(MixlabError, match="sampler must be one of"):
        Search(engine, ["rev"], sampler="annealing")
    with pytest.raises(MixlabError, match="no benchmark 'nope'"):
        Search(engine, ["nope"])


def test_multi_fidelity_prunes_and_spends_less_than_a_full_evaluation_each(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")
    result = Search(engine, ["rev-loss"], sampler="random", seed=0, fidelity=0.25).run(12)
    states = [t["state"] for t in result.trials]
    assert "pruned" in states and result.full_evaluations < len(states)


def test_two_objectives_give_a_pareto_front(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")
    result = Search(engine, ["rev-loss", "rev"], sampler="nsga2", seed=0).run(8)
    done = [t for t in result.trials if t["state"] == "complete"]
    values = np.array([t["values"] for t in done])
    front = {tuple(v) for v in values[pareto_front(values, [True, True])]}
    assert {tuple(b["dev"]) for b in result.best} == front
    assert all(set(b["test"]) == {"rev-loss", "rev"} for b in result.best)


def test_grid_sampler_visits_the_lattice(dev_lab):
    engine = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")
    result = Search(engine, ["rev-loss"], sampler="grid").run(5)
    for t in result.trials:
        assert all(abs(x * 8 - round(x * 8)) < 1e-9 for x in t["weights"].values())


def test_search_from_the_command_line(dev_lab, tmp_path, monkeypatch, capsys):
    from mixlab.cli import main

    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    args = ["search", str(dev_lab), "--objective", "rev-loss", "--sampler", "random", "--trials", "3"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "dev" and len(out["trials"]) == 3 and out["study"].startswith("rev-loss-random-")
    assert set(out["best"]) == {"weights", "score", "test"} and out["evaluations"] >= 3 and out["front"] == []
    assert main(args) == 0  # the same study again: resumed
    text = capsys.readouterr().out
    assert "6 trials (6 complete, 0 pruned)" in text and "searched on dev data" in text
    assert main(["search", str(dev_lab), "--objective", "pick"]) == 2
    assert "pick have no search_data" in capsys.readouterr().err
    assert main([*args[:2], "--objectives", "rev-loss,rev", "--sampler", "nsga2", "--trials", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["front"]
    assert main(["pareto", str(dev_lab), "--objectives", "rev,rev-loss", "--json"]) == 0
    fronts = json.loads(capsys.readouterr().out)
    assert fronts["x"] == "rev" and {r["kind"] for r in fronts["merges"]} <= {"expert", "proxy"}


def test_recycling_candidates_are_chosen_on_dev_and_reported_on_test(dev_lab):
    from mixlab.recycle import recycle

    engine = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")
    rows = {r["candidate"]: r for r in recycle(engine, "rev-loss", sampler="random", trials=4)}
    assert list(rows) == ["best single checkpoint", "uniform average", "greedy soup", "searched (random)"]
    search = Search(engine, ["rev-loss"], allow_test=False)
    singles = {n: search.dev_values(engine.mixture([float(m == n) for m in engine.names]))[0] for n in engine.names}
    best = max(singles, key=singles.get)
    assert rows["best single checkpoint"]["weights"] == {best: 1.0}
    assert rows["best single checkpoint"]["dev_objective"] == pytest.approx(singles[best])
    assert rows["uniform average"]["weights"] == pytest.approx({n: 1 / 3 for n in engine.names})
    soup = rows["greedy soup"]
    assert best in soup["weights"] and soup["dev_objective"] >= singles[best] - 1e-12  # only kept what helped
    for r in rows.values():
        m = Mixture.of(engine.names, [r["weights"].get(n, 0.0) for n in engine.names], normalize=True)
        (test,) = engine.proxy(m, benchmarks=["rev-loss"])
        assert r["test"] == {"rev-loss": test.score} and r["test_objective"] == -test.score


def test_regression_baseline_leave_one_out_is_exact_on_a_linear_truth():
    import pandas as pd

    from mixlab.lab import BenchmarkSpec
    from mixlab.regression import leave_one_out, regression_report

    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=12)
    y = x @ np.array([0.2, 0.5, 0.9])  # a linear truth: leave-one-out recovers every run exactly
    np.testing.assert_allclose(leave_one_out(x, y, "linear"), y, atol=1e-9)
    assert np.abs(leave_one_out(x, y, "boosted") - y).max() > 1e-3  # trees only approximate it
    names = ["a", "b", "c"]
    proxy = y + 0.05 * rng.standard_normal(12)
    rows = [
        {"kind": k, "label": f"m{i}", "benchmark": "x", "score": s, "weights": dict(zip(names, w)), "method": m}
        for i, w in enumerate(x)
        for k, s, m in (("true", y[i], None), ("proxy", proxy[i], "linear"))
    ]
    df = pd.DataFrame(rows).assign(params=[None if r["method"] is None else {} for r in rows])
    df = df.assign(higher_is_better=True, metric="exact_match")
    rep = regression_report(df, names, [BenchmarkSpec(name="x", evaluator="exact_match", data="x")], "x", repeats=5)
    assert rep["n"] == 12 and rep["loo"]["linear"] == pytest.approx(1.0)
    from scipy import stats

    assert rep["proxy_spearman"] == pytest.approx(stats.spearmanr(proxy, y).statistic)
    assert [r["n_train"] for r in rep["curve"]] == [4, 6, 8] and rep["curve"][-1]["linear"] == pytest.approx(1.0)
    # scores equal up to float noise are one score here as in the report (the same rule: snap_ties)
    tied = y.copy()
    tied[1] = tied[0] + 1e-16 * (1 if proxy[1] < proxy[0] else -1)  # noise that ranks the pair against the proxy
    df_tied = df.assign(score=[tied[i // 2] if r["kind"] == "true" else r["score"] for i, r in enumerate(rows)])
    got = regression_report(
        df_tied, names, [BenchmarkSpec(name="x", evaluator="exact_match", data="x")], "x", repeats=5
    )
    snapped = tied.copy()
    snapped[1] = snapped[0]
    assert got["proxy_spearman"] == pytest.approx(stats.spearmanr(proxy, snapped).statistic)
    assert got["proxy_spearman"] != pytest.approx(stats.spearmanr(proxy, tied).statistic)  # noise would move it


@pytest.mark.parametrize("sampler", ["cmaes", "tpe", "gp"])
def test_samplers_find_a_known_optimum_on_the_simplex(sampler):
    """A synthetic objective with its maximum at w* inside the simplex: the sampler gets close."""
    from mixlab.search import create_study, suggest_weights

    target = np.array([0.6, 0.3, 0.1])
    study = create_study(3, 1, sampler, seed=0)
    # 40 trials (gp is the costly one): at seeds 0-2 every sampler ends within 0.045 of w*, so 0.1 still tells a miss
    study.optimize(lambda t: -float(((np.array(suggest_weights(t, 3, sampler)) - target) ** 2).sum()), n_trials=40)
    best = np.array(to_weights([study.best_params[f"u{i}"] for i in range(3)]))
    assert np.abs(best - target).max() < 0.1, (sampler, best)


def test_a_two_objective_front_matches_the_brute_force_front_on_the_lattice():
    from mixlab.search import create_study, suggest_weights
    from mixlab.simplex import lattice

    def f(w):  # two conflicting objectives: weight on the first expert vs closeness to the centre
        w = np.asarray(w)
        return [float(w[0]), float(-((w - 1 / 3) ** 2).sum())]

    points = lattice(3, 8)
    study = create_study(3, 2, "grid")
    study.optimize(lambda t: f(suggest_weights(t, 3, "grid")), n_trials=len(points))
    found = {tuple(np.round(t.values, 9)) for t in study.best_trials}
    values = np.array([f(p) for p in points])
    brute = {tuple(np.round(v, 9)) for v in values[pareto_front(values, [True, True])]}
    assert found == brute
    nsga = create_study(3, 2, "nsga2", seed=0)
    nsga.optimize(lambda t: f(suggest_weights(t, 3, "nsga2")), n_trials=40)
    vals = np.array([t.values for t in nsga.trials])
    front = np.array([t.values for t in nsga.best_trials])
    assert all(not ((vals >= v).all(1) & (vals > v).any(1)).any() for v in front)  # none dominated


def test_a_study_is_never_kept_outside_the_lab(dev_lab, tmp_path):
    from mixlab.engine import open_store
    from mixlab.errors import CacheError

    lab = load_lab(dev_lab)
    outside = tmp_path / "outside"
    outside.mkdir()
    (dev_lab / ".mixlab").mkdir(exist_ok=True)
    (dev_lab / ".mixlab" / "search.sqlite").symlink_to(outside / "study.sqlite")  # dangling: optuna would create it
    engine = Engine(lab, open_store(lab), device="cpu")
    with pytest.raises(CacheError, match="search.sqlite '.*search.sqlite' points outside the lab folder"):
        Search(engine, ["rev-loss"], sampler="random", seed=1)
    assert list(outside.iterdir()) == []


def _retrain(lab, expert: str = "add") -> None:
    """The expert's adapter weights change (as a retrained expert's do)."""
    from safetensors.torch import load_file, save_file

    path = lab / "experts" / expert / "adapter_model.safetensors"
    save_file({k: 2 * v for k, v in load_file(path).items()}, path)


def test_a_named_study_is_refused_when_its_models_or_objectives_changed(dev_lab, tmp_path):
    from mixlab.errors import StudyError

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    Search(engine, ["rev-loss"], sampler="random", name="s").run(1)
    with pytest.raises(StudyError, match=r"study 's' in .*search\.sqlite has 1 objective\(s\), this search has 2"):
        Search(engine, ["rev-loss", "rev"], sampler="random", name="s").run(1)
    with pytest.raises(StudyError, match=r"'s' .* other settings: seed: 0 then, 5 now\. A study holds one search"):
        Search(engine, ["rev-loss"], sampler="random", seed=5, name="s").run(1)
    _retrain(dev_lab)
    after = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    assert after.models_fp != engine.models_fp
    with pytest.raises(StudyError, match=r"models: '\w+' then, '\w+' now \(the base or an expert changed.*--study"):
        Search(after, ["rev-loss"], sampler="random", name="s").run(1)
    fresh = Search(after, ["rev-loss"], sampler="random").run(1)  # the default name follows the models
    assert len(fresh.trials) == 1


def test_a_named_study_of_an_older_mixlab_is_not_resumed_blindly(dev_lab, tmp_path):
    import optuna

    from mixlab.errors import StudyError

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    storage = f"sqlite:///{tmp_path / 'search.sqlite'}"
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    old.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}))  # no description recorded
    with pytest.raises(StudyError, match="does not record what it searched"):
        Search(engine, ["rev-loss"], sampler="random", name="old").run(1)


def test_a_resumed_study_fails_the_trials_a_killed_process_left_running(dev_lab, tmp_path):
    import datetime
    import os
    import subprocess
    import sys

    import optuna
    import psutil

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    search = Search(engine, ["rev-loss"], sampler="random", name="s")
    search.run(1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study = optuna.load_study(study_name="s", storage=search.storage)
    killed, elsewhere = study.ask(), study.ask()
    study.ask()  # just asked for: no owner yet
    killed.set_user_attr("owner", {"pid": int(gone.stdout), "host": None, "started": 1.0})
    parent = psutil.Process(os.getppid())  # a live process: another search still running its trial
    elsewhere.set_user_attr("owner", {"pid": parent.pid, "host": None, "started": parent.create_time()})
    legacy = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params={}, distributions={})
    legacy.datetime_start = datetime.datetime.now() - datetime.timedelta(hours=1)  # an older mixlab's, no owner
    study.add_trial(legacy)
    result = Search(engine, ["rev-loss"], sampler="random", name="s").run(1)
    states = [t["state"] for t in sorted(result.trials, key=lambda t: t["number"])]
    # complete, killed, elsewhere, just asked (no owner yet: another process's trial that has just begun), legacy
    assert states == ["complete", "fail", "running", "running", "fail", "complete"]


def _search_file_broken(path, how: str, monkeypatch):
    import os
    import sqlite3

    import mixlab.store

    if how == "corrupt":
        path.write_bytes(b"not sqlite" * 500)
    elif how == "folder":
        path.mkdir()
    elif how == "read-only":
        path.write_bytes(b"")
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if p == path and mode == os.W_OK else real(p, mode))
    elif how == "locked":
        monkeypatch.setattr(mixlab.store, "BUSY_SECONDS", 0.2)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("CREATE TABLE x (y)")
        holder.execute("BEGIN EXCLUSIVE")
        return holder


@pytest.mark.parametrize(
    ("how", "msg"),
    [
        ("corrupt", r"search\.sqlite: file is not a database \(the file is corrupt; .* starts a new study\)"),
        ("folder", r"search\.sqlite is a folder, not a file: move it aside"),
        ("read-only", r"search\.sqlite is read-only \(or its folder is\).*MIXLAB_CACHE"),
        ("locked", r"search\.sqlite: busy \(locked by another process for over 0\.2 s\) \(try again when it is"),
    ],
)
def test_an_unusable_study_file_is_a_specific_error(dev_lab, tmp_path, monkeypatch, capsys, how, msg):
    from mixlab.cli import main
    from mixlab.errors import StudyError

    path = tmp_path / "search.sqlite"
    holder = _search_file_broken(path, how, monkeypatch)
    before = path.read_bytes() if path.is_file() else None
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    with pytest.raises(StudyError, match=msg):
        Search(engine, ["rev-loss"], sampler="random").run(1)
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    assert main(["search", str(dev_lab), "--objective", "rev-loss", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "search.sqlite" in err and "unexpected" not in err, err
    if before is not None and how != "locked":
        assert path.read_bytes() == before  # left as it was
    if holder is not None:
        holder.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--budget", "nan"], "error: budget must be a positive number of full dev evaluations, like 10, got nan"),
        (["--budget", "-1"], "error: budget must be a positive number of full dev evaluations, like 10, got -1.0"),
        (["--budget", "0"], "error: budget must be a positive number"),
        (["--seed", "-1"], "error: seed must be a whole number from 0 to 4,294,967,295 (2**32 - 1), got -1"),
        (["--seed", str(2**32)], "error: seed must be a whole number from 0"),
    ],
)
def test_a_bad_budget_or_seed_is_refused_before_any_trial(dev_lab, tmp_path, monkeypatch, capsys, args, msg):
    from mixlab.cli import main

    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    assert main(["search", str(dev_lab), "--objective", "rev-loss", "--sampler", "random", *args]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(msg) and not (tmp_path / "search.sqlite").exists()  # refused before the study opened


def test_objectives_are_named_as_objectives():
    from mixlab.lab import BenchmarkSpec
    from mixlab.search import Objective

    specs = [BenchmarkSpec(name=n, evaluator="exact_match", data="d.jsonl") for n in ("add", "rev", "sort")]
    assert Objective.parse("mean", specs).describe() == "mean of add, rev, sort"
    assert Objective.parse("mean", specs).label() == "add=0.333333,rev=0.333333,sort=0.333333"  # a study's identity
    assert Objective.parse("rev", specs).describe() == "rev"
    assert Objective.parse("rev=0.7,sort=0.3", specs).describe() == "0.7·rev + 0.3·sort"
    mean = Objective.parse("mean", specs)
    assert Objective.from_label(mean.label()).describe() == "mean of add, rev, sort"  # as a stored study shows it


def test_importance_ranks_first_the_one_weight_the_objective_depends_on():
    from mixlab.search import weight_importance

    rng = np.random.default_rng(0)
    names = ["add", "rev", "sort", "count"]
    trials = [
        {"state": "complete", "weights": dict(zip(names, w)), "values": [-((w[2] - 0.3) ** 2)]}
        for w in rng.dirichlet(np.ones(4), size=60)
    ]
    importance = weight_importance(trials, names, seed=0)
    assert list(importance)[0] == "sort" and importance["sort"] > 0.5
    assert sum(importance.values()) == pytest.approx(1.0)
    assert weight_importance(trials[:2], names) == {}  # nothing to explain


def _brute_force_area(points, ref):
    """The area dominated by 2-D points (maximised) above ref, by cells of the grid their coordinates cut."""
    xs = sorted({ref[0], *(p[0] for p in points)})
    ys = sorted({ref[1], *(p[1] for p in points)})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:]):
        for y0, y1 in zip(ys, ys[1:]):
            if any(p[0] >= x1 and p[1] >= y1 for p in points):
                area += (x1 - x0) * (y1 - y0)
    return area


def test_the_hypervolume_history_is_the_area_the_trials_so_far_dominate():
    from mixlab.search import hypervolume_history, reference_point

    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1, size=(25, 2))
    ref = reference_point(values)
    assert (ref < values.min(axis=0)).all()
    history = hypervolume_history(values, ref)
    for i in (1, 2, 7, 25):
        assert history[i - 1] == pytest.approx(_brute_force_area(values[:i].tolist(), ref), rel=1e-9)
    assert all(b >= a for a, b in zip(history, history[1:]))  # never shrinks
    assert hypervolume_history([[0.5, 0.5]], [0.0, 0.0]) == [pytest.approx(0.25)]


def test_stored_studies_are_listed_with_their_best_and_keep_a_note(dev_lab, tmp_path):
    from mixlab.search import set_note, studies, study_file, study_note, study_trials

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    path = study_file(engine)
    assert studies(path) == []
    result = Search(engine, ["rev-loss"], sampler="random", seed=2, name="first").run(3)
    Search(engine, ["rev-loss", "rev"], sampler="nsga2", seed=0, name="front").run(2)
    listed = {s["study"]: s for s in studies(path, engine)}
    assert set(listed) == {"first", "front"}
    import optuna

    another = optuna.create_study(study_name="elsewhere", storage=f"sqlite:///{path}")  # one $MIXLAB_CACHE,
    another.set_user_attr("mixlab", {"lab": "another-lab", "models": engine.models_fp})  # several labs
    assert "elsewhere" not in {s["study"] for s in studies(path, engine)} and len(studies(path)) == 3
    assert listed["first"]["trials"] == 3 and listed["first"]["sampler"] == "random"
    assert listed["first"]["objectives"] == "rev-loss" and listed["front"]["objectives"] == "rev-loss and rev"
    assert listed["first"]["best"] == pytest.approx(max(t["values"][0] for t in result.trials))
    assert listed["front"]["best"] is None  # a Pareto front has no single best
    set_note(path, "first", "rev only; dev split of 12")
    assert study_note(path, "first") == "rev only; dev split of 12" == studies(path)[0]["note"]
    assert [t["weights"] for t in study_trials(path, "first", engine.names)] == [t["weights"] for t in result.trials]


def test_the_winner_is_shown_beside_its_baselines_scored_on_test(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    search = Search(engine, ["rev"], sampler="random", seed=0)
    result = search.run(3)
    rows = {r["candidate"].split(" (")[0]: r for r in search.baselines(result.best[0]["weights"])}
    # on test so far: the winner, the uniform mixture and the best expert's vertex (the trials were scored on dev)
    assert list(rows) == ["uniform", "best expert", "best of 3 cached mixtures"]  # the tiny lab has no true mixtures
    check = Engine(load_lab(dev_lab), Store(":memory:"), device="cpu")  # an independent engine, nothing cached
    (uniform,) = check.proxy(check.mixture([1 / 3] * 3), benchmarks=["rev"])
    assert rows["uniform"]["test"] == {"rev": pytest.approx(uniform.score)} and rows["uniform"]["n"] == {
        "rev": uniform.n
    }
    dev_spec = check.lab.benchmark("rev").model_copy(update={"name": "x", "data": "data/rev_dev.jsonl"})
    dev = {
        n: check.proxy(check.mixture([float(m == n) for m in check.names]), benchmarks=[dev_spec])[0].score
        for n in check.names
    }
    chosen = max(dev, key=dev.get)
    assert rows["best expert"]["weights"][chosen] == 1.0
    tested = [result.best[0]["weights"], dict(zip(check.names, [1 / 3] * 3)), rows["best expert"]["weights"]]
    on_test = [check.proxy(check.mixture([w[n] for n in check.names]), benchmarks=["rev"])[0].score for w in tested]
    top = rows["best of 3 cached mixtures"]
    assert top["test"]["rev"] == pytest.approx(max(on_test)) and top["test_objective"] == [pytest.approx(max(on_test))]


def test_the_objective_does_not_depend_on_the_order_of_its_benchmarks():
    from mixlab.search import Objective

    s = {"x": 0.035, "y": 0.035, "z": 0.105}  # exact-match means k/200
    hib = dict.fromkeys(s, True)
    forward = Objective(tuple((n, 1 / 3) for n in "xyz"))
    backward = Objective(tuple((n, 1 / 3) for n in "zyx"))
    assert sum(w * s[n] for n, w in backward.weights) != sum(w * s[n] for n, w in forward.weights)  # naive sums
    assert forward.value(s, hib) == backward.value(s, hib) == pytest.approx(0.175 / 3)


def test_a_search_winner_tied_up_to_float_noise_is_the_first_trial_that_reached_it():
    import optuna

    from mixlab.search import first_best_trial

    a, b = (0.1 + 0.7) / 2, (0.3 + 0.5) / 2  # equal by hand, b one ulp above a
    study = optuna.create_study(direction="maximize")
    for v in (0.2, a, 0.3, b):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=v))
    assert study.best_trial.number == 3  # optuna's choice: the last bit
    assert first_best_trial(study).number == 1
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=b + 1e-6))
    assert first_best_trial(study).number == 4  # a real improvement wins
    low = optuna.create_study(direction="minimize")
    for v in (b, a, 0.5):
        low.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=v))
    assert first_best_trial(low).number == 0


def test_the_sparse_box_covers_the_simplex_and_its_faces():
    """A uniform draw of the sparse box: each weight is 0 with probability p − p³, p = ZERO_BAND / (1 + ZERO_BAND
    − EPS) the slab's share of the box (by hand; minus the draws with every u_i in the slab, which are the
    centre), and where no u_i is in the slab, the weights are Dirichlet(1)."""
    from mixlab.search import EPS, ZERO_BAND, to_sparse_weights

    rng = np.random.default_rng(0)
    u = rng.uniform(EPS, 1 + ZERO_BAND, size=(40000, 3))
    w = np.array([to_sparse_weights(x) for x in u])
    assert np.allclose(w.sum(1), 1) and (w >= 0).all()
    p = ZERO_BAND / (1 + ZERO_BAND - EPS)
    np.testing.assert_allclose((w == 0).mean(0), [p - p**3] * 3, atol=0.01)
    inner = w[(u < 1).all(1)]
    np.testing.assert_allclose(inner.mean(0), [1 / 3] * 3, atol=0.01)
    np.testing.assert_allclose(inner.var(0), [1 / 18] * 3, atol=0.003)
    assert ((w == 0).sum(1) == 2).any()  # vertices are drawn: a single expert is a point the search can land on


@pytest.mark.parametrize("space", ["simplex", "sparse"])
def test_a_starting_point_maps_back_onto_its_weights(space):
    from mixlab.search import box_bounds, box_point, to_sparse_weights

    back = to_weights if space == "simplex" else to_sparse_weights
    lo, hi = box_bounds(space)
    for w in ([1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25] * 4, [0.7, 0.1, 0.1, 0.1], [0, 0, 0, 1]):
        u = box_point(w, space)
        assert all(lo <= x <= hi for x in u)
        np.testing.assert_allclose(back(u), w, atol=1e-9)
    with pytest.raises(MixlabError, match="search space must be one of simplex, sparse, got 'dense'"):
        box_point([1, 0], "dense")


SPARSE_OPTIMUM = np.array([0.6, 0.4, 0, 0, 0, 0, 0, 0])  # two of eight experts: a sparse merge


def _distance_found(sampler: str, space: str, seed: int, trials: int, start=()) -> tuple[float, list]:
    """L1 distance from SPARSE_OPTIMUM of the best point a search finds on −L1 distance, and its trials' weights."""
    from mixlab.search import create_study, start_params, suggest_weights

    k = len(SPARSE_OPTIMUM)
    x0 = start_params(start[0], sampler, space) if start and sampler == "cmaes" else None
    study = create_study(k, 1, sampler, seed, x0=x0)
    for w in start:
        study.enqueue_trial(start_params(w, sampler, space))
    seen = []

    def f(t):
        seen.append(np.array(suggest_weights(t, k, sampler, space)))
        return -float(np.abs(seen[-1] - SPARSE_OPTIMUM).sum())

    study.optimize(f, n_trials=trials)
    return float(np.abs(seen[study.best_trial.number] - SPARSE_OPTIMUM).sum()), seen


def test_cmaes_reaches_a_sparse_optimum_in_the_sparse_box_and_not_in_the_dense_one():
    """The optimum puts all weight on 2 of 8 experts. In 200 trials CMA-ES gets within 0.05 (L1) of it on
    seeds 0..2 in the sparse box; in the dense box it stays ≥ 0.15 away (weights never reach zero)."""
    sparse = [_distance_found("cmaes", "sparse", seed, 200)[0] for seed in range(3)]
    dense = [_distance_found("cmaes", "simplex", seed, 200)[0] for seed in range(3)]
    assert max(sparse) < 0.05, sparse
    assert min(dense) > 0.15, dense


@pytest.mark.parametrize("sampler", ["cmaes", "tpe"])
def test_starting_points_are_evaluated_first_and_lead_to_a_sparse_optimum(sampler):
    """Started at a two-expert soup and the best single expert (what recycling starts from: the greedy soup
    first, CMA-ES's x0), a 60-trial search in the sparse box ends within 0.1 (L1) of the sparse optimum on
    seeds 0..2."""
    start = [[0.5, 0.5, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]]
    for seed in range(3):
        distance, seen = _distance_found(sampler, "sparse", seed, 60, start)
        np.testing.assert_allclose(seen[0], start[0], atol=1e-9)
        np.testing.assert_allclose(seen[1], start[1], atol=1e-9)
        assert distance < 0.1, (sampler, seed, distance)


def test_a_search_starts_where_it_is_told_and_records_its_space(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    search = Search(engine, ["rev-loss"], sampler="cmaes", seed=0, space="sparse")
    assert search.desc["space"] == "sparse" and "space" not in Search(engine, ["rev-loss"], sampler="cmaes").desc
    names = engine.names
    result = search.run(3, start=[{names[0]: 1.0}, {names[0]: 0.5, names[1]: 0.5}])
    assert result.trials[0]["weights"] == pytest.approx({n: float(n == names[0]) for n in names}, abs=1e-9)
    assert result.trials[1]["weights"] == pytest.approx({n: 0.5 * (n in names[:2]) for n in names}, abs=1e-9)
    with pytest.raises(MixlabError, match="starting point 0 names unknown expert"):
        search.run(1, start=[{"nope": 1.0}])
    with pytest.raises(MixlabError, match="search space must be one of"):
        Search(engine, ["rev-loss"], space="dense")


def test_the_command_line_offers_every_search_space(capsys):
    from mixlab.cli import main, parser
    from mixlab.search import SPACES

    for command in ("search", "recycle"):
        assert parser().parse_args([command]).space == "simplex"
        assert parser().parse_args([command, "--space", "sparse"]).space == "sparse"
        assert main([command, "--space", "dense"]) != 0
        assert "search space must be one of simplex, sparse, got 'dense'" in capsys.readouterr().err
    help_text = parser()._subparsers._group_actions[0].choices["recycle"].format_help()
    assert all(name in help_text for name in SPACES) and "--start" in help_text


def test_a_study_file_has_one_storage_per_process_and_its_reads_see_new_trials(tmp_path):
    """The page polls a running search: its reads reuse one optuna storage per file (building one checks the
    schema each time), and still see every trial the search writes after that storage was built."""
    import optuna

    from mixlab.search.stored import _storage, study_trials

    path = tmp_path / "search.sqlite"
    writer = optuna.create_study(study_name="s", storage=f"sqlite:///{path}")  # the search: its own storage
    writer.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    assert _storage(path) is _storage(tmp_path / "." / "search.sqlite")
    assert [t["values"] for t in study_trials(path, "s", ["a"])] == [[0.5]]
    writer.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.7))
    assert [t["values"] for t in study_trials(path, "s", ["a"])] == [[0.5], [0.7]]
