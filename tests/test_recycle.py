"""Checkpoint recycling as the dashboard runs it: asked again it never grows a study silently, it says how
its searched merge was found, and its verdict compares every candidate with the noise of the test data."""

import dataclasses
import json
import math

import numpy as np
import pytest

from mixlab.engine import Engine
from mixlab.lab import load_lab
from mixlab.recycle import RECORD, compare, verdicts
from mixlab.run.jobs import Worker, submit
from mixlab.run.requests import RecycleJob, SearchJob
from mixlab.search import Objective, standard_error
from mixlab.store import Store


def _row(name, p, n=100, metric="accuracy"):
    return {"candidate": name, "test": {"a": p}, "n": {"a": n}, "metric": {"a": metric}, "test_objective": p}


def test_the_standard_error_is_the_binomial_one_by_hand():
    # objective 0.5·a + 0.5·b; a: p = 0.5 on 100 examples, b: p = 0.9 on 400
    row = {"test": {"a": 0.5, "b": 0.9}, "n": {"a": 100, "b": 400}, "metric": {"a": "accuracy", "b": "accuracy"}}
    by_hand = math.sqrt(0.25 * 0.25 / 100 + 0.25 * 0.09 / 400)  # = √(0.000625 + 0.00005625) = 0.026101…
    assert (
        standard_error(row, Objective((("a", 0.5), ("b", 0.5))))
        == pytest.approx(by_hand)
        == pytest.approx(0.0261008, abs=1e-6)
    )
    row["metric"]["b"] = "loss"
    assert (
        standard_error(row, Objective((("a", 0.5), ("b", 0.5)))) is None
    )  # a loss's spread is not known from its mean


def _paired(d, low, high, p=None):
    return {"difference": d, "low": low, "high": high, "n": 200, "p": p}


def test_the_verdict_reads_the_recorded_paired_intervals_of_the_searched_merge_against_every_candidate():
    rows = [_row("best single checkpoint", 0.58, 200), _row("uniform average", 0.40, 200), _row("greedy soup", 0.60)]
    rows.append(_row("searched (cmaes)", 0.5883, 200))
    rows[-1]["vs"] = {
        "best single checkpoint": _paired(0.0083, -0.01, 0.027),  # the interval holds 0: within noise
        "uniform average": _paired(0.1883, 0.15, 0.22),  # above 0: better
        "greedy soup": _paired(-0.0117, -0.02, -0.003),  # below 0: worse, though small
    }
    said = {v["candidate"]: v for v in verdicts(rows)}
    assert list(said) == ["best single checkpoint", "uniform average", "greedy soup"]
    assert said["best single checkpoint"]["verdict"] == "within noise"
    assert said["best single checkpoint"]["difference"] == pytest.approx(0.0083)
    assert said["uniform average"]["verdict"] == "better" and said["greedy soup"]["verdict"] == "worse"
    assert (said["greedy soup"]["low"], said["greedy soup"]["high"]) == (-0.02, -0.003)
    # a table without per-example values (an older cache): no interval, the sign alone, and it says so
    rows[-1]["vs"]["uniform average"] = _paired(None, None, None)
    del rows[-1]["vs"]["greedy soup"]
    said = {v["candidate"]: v for v in verdicts(rows)}
    assert not said["uniform average"]["noise_known"] and said["uniform average"]["verdict"] == "better"
    assert not said["greedy soup"]["noise_known"] and said["greedy soup"]["verdict"] == "worse"


def test_an_objective_difference_is_paired_and_weighted_as_the_objective_by_hand():
    """Σ c_b·(a_b − b_b) with its paired bootstrap interval: against the normal approximation of the paired
    per-example differences (by hand), and McNemar's exact p (scipy) for one accuracy."""
    from scipy import stats

    from mixlab.recycle import objective_difference
    from mixlab.values import ExampleValues

    rng = np.random.default_rng(4)
    a, b = {}, {}
    for name, n, p in (("x", 300, 0.6), ("y", 200, 0.4)):
        va = rng.random(n) < p
        vb = va ^ (rng.random(n) < 0.2)
        a[name], b[name] = ExampleValues(va), ExampleValues(vb)
    c = {"x": 0.75, "y": 0.25}  # a weighted objective
    d = objective_difference(a, b, c)
    diffs = {k: a[k].values.astype(float) - b[k].values.astype(float) for k in c}
    centre = sum(c[k] * diffs[k].mean() for k in c)
    half = 1.959964 * np.sqrt(sum(c[k] ** 2 * diffs[k].var(ddof=1) / len(diffs[k]) for k in c))
    assert d["difference"] == pytest.approx(centre) and d["n"] == 500 and d["p"] is None
    assert d["low"] == pytest.approx(centre - half, abs=0.006) and d["high"] == pytest.approx(centre + half, abs=0.006)
    # a loss counts negatively (c < 0): the same difference, mirrored
    m = objective_difference(a, b, {"x": -0.75, "y": -0.25})
    assert (m["difference"], m["low"], m["high"]) == pytest.approx((-d["difference"], -d["high"], -d["low"]))
    one = objective_difference(a, b, {"x": 1.0})
    ab = int(np.sum(a["x"].values > b["x"].values))
    ba = int(np.sum(a["x"].values < b["x"].values))
    assert one["p"] == pytest.approx(stats.binomtest(ab, ab + ba, 0.5).pvalue, rel=1e-9)
    assert one["difference"] == pytest.approx((ab - ba) / 300)
    assert objective_difference(a, {"x": None}, {"x": 1.0}) == {
        "difference": None, "low": None, "high": None, "n": None, "p": None
    }  # fmt: skip


def test_a_recycling_table_records_every_candidate_against_the_best_single_from_its_test_examples(dev_lab, tmp_path):
    """The recorded paired differences are those of the candidates' own per-example test values (read from
    the cache by key, counted by hand: McNemar's discordant examples, scipy's exact test)."""
    from scipy import stats

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    rows = compare(engine, "rev", sampler="random", trials=3).rows
    assert "vs_best_single" not in rows[0]
    assert set(rows[-1]["vs"]) == {r["candidate"] for r in rows[:-1]}
    names = engine.names
    bench = engine.lab.benchmark("rev")

    def values(row):
        from mixlab.simplex import Mixture

        m = Mixture.of(names, [row["weights"].get(n, 0.0) for n in names], normalize=True)
        (e,) = engine.proxy(m, "linear", None, [bench])
        return engine.store.values([e.key])[e.key].values.astype(int)

    best = values(rows[0])
    for r in rows[1:]:
        got, v = r["vs_best_single"], values(r)
        assert got["difference"] == pytest.approx(r["test_objective"] - rows[0]["test_objective"])
        assert got["difference"] == pytest.approx((v - best).mean())
        assert got["low"] <= got["difference"] <= got["high"]
        ab, ba = int(np.sum(v > best)), int(np.sum(v < best))
        want = stats.binomtest(ab, ab + ba, 0.5).pvalue if ab + ba else 1.0
        assert got["p"] == pytest.approx(want, rel=1e-9)
    assert rows[-1]["vs"]["best single checkpoint"] == rows[-1]["vs_best_single"]


def test_asked_again_it_reads_its_study_back_and_says_so(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    first = compare(engine, "rev", sampler="random", trials=3)
    assert first.origin.startswith("new study recycle-3t-") and first.new_scores > 0
    assert [r["candidate"] for r in first.rows] == ["best single checkpoint", "uniform average", "greedy soup"] + [
        "searched (random)"
    ]
    assert first.rows[-1]["search"]["trials"] == 3 and len(first.rows[-1]["search"]["points"]) == 3
    again = compare(engine, "rev", sampler="random", trials=3)
    assert again.origin.startswith(f"read back study {first.study}") and again.new_scores == 0
    assert again.rows[-1]["weights"] == pytest.approx(first.rows[-1]["weights"])
    assert again.rows[-1]["search"]["points"] == first.rows[-1]["search"]["points"]  # the stored trials, exactly
    more = compare(engine, "rev", sampler="random", trials=5)  # other settings: another study, not a resumed one
    assert more.origin.startswith("new study recycle-5t-") and len(more.rows[-1]["search"]["points"]) == 5
    assert "5 trials" in more.summary and f"{more.new_scores} new score" in more.summary

    # the lab's recorded table with these settings is replayed (every score cached: nothing new)
    (dev_lab / RECORD).write_text(json.dumps(first.rows))
    replayed = compare(engine, "rev", sampler="random", trials=3)
    assert replayed.origin.startswith(f"replayed the 3 points recorded in {RECORD}") and replayed.new_scores == 0
    assert replayed.study is None and replayed.rows[-1]["test"] == first.rows[-1]["test"]


def test_an_interrupted_recycling_study_is_finished_not_restarted(dev_lab, tmp_path):
    from mixlab.recycle import study_name
    from mixlab.search import Search

    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    search = Search(engine, ["rev"], sampler="random", seed=0)
    Search(engine, ["rev"], sampler="random", seed=0, name=study_name(4, search.default_name)).run(2)
    done = compare(engine, "rev", sampler="random", trials=4)
    assert done.origin.endswith("2 trials were done, 2 more run") and len(done.rows[-1]["search"]["points"]) == 4


def test_searches_and_recycling_runs_are_recorded_jobs_that_resume_where_they_stopped(dev_lab, tmp_path):
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    worker = Worker()
    search = SearchJob(["rev"], "random", target=3, seed=0, study="s")
    job = worker.wait(submit(worker, engine, search, "search"))
    assert job.state == "done", job.error
    assert len(job.result.trials) == 3
    again = worker.wait(submit(worker, engine, search, "search again", record=False))
    assert len(again.result.trials) == 3  # the study already has its 3 trials: a resume runs none
    grown = worker.wait(submit(worker, engine, dataclasses.replace(search, target=5), "search more", record=False))
    assert len(grown.result.trials) == 5
    rspec = {"objective": "rev", "sampler": "random", "trials": 2, "seed": 0}
    rjob = worker.wait(submit(worker, engine, RecycleJob("rev", "random", trials=2, seed=0), "recycle"))
    assert rjob.state == "done", rjob.error
    assert rjob.result.origin.startswith("new study")
    records = {r["kind"]: r for r in engine.store.jobs("tiny")}
    assert records["search"]["state"] == "done" and records["recycle"]["state"] == "done"
    assert json.loads(records["recycle"]["spec"]) == rspec


def test_a_recycling_search_can_start_from_the_soup_in_the_sparse_box_and_says_so(dev_lab, tmp_path):
    """start=True: the search's first two trials are the greedy soup and the best single checkpoint (the rows
    the table reports for them); its study and its record name the settings, so an older record or study with
    the defaults is neither replayed nor read back for it."""
    engine = Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    plain = compare(engine, "rev", sampler="cmaes", trials=3)
    (dev_lab / RECORD).write_text(json.dumps(plain.rows))
    started = compare(engine, "rev", sampler="cmaes", trials=3, space="sparse", start=True)
    assert started.origin.startswith("new study recycle-3t-start-") and started.study != plain.study
    rows = {r["candidate"]: r for r in started.rows}
    points = started.rows[-1]["search"]["points"]
    names = engine.names
    for point, candidate in zip(points, ("greedy soup", "best single checkpoint")):
        want = [rows[candidate]["weights"].get(n, 0.0) for n in names]
        assert [point[n] for n in names] == pytest.approx(want, abs=1e-6)  # a row's weights: 6 decimals
    record = started.rows[-1]["search"]
    assert record["space"] == "sparse" and record["start"] is True
    assert "space" not in plain.rows[-1]["search"]  # a default-settings record is as it always was
    again = compare(engine, "rev", sampler="cmaes", trials=3, space="sparse", start=True)
    assert again.origin.startswith(f"read back study {started.study}") and again.new_scores == 0


def test_a_verdict_in_words_is_what_the_cli_and_the_page_say():
    from mixlab.recycle import interval_text, verdict_text

    near = {"candidate": "greedy soup", "searched": 0.58, "other": 0.5917, "difference": -0.0117}
    near |= {"low": -0.03, "high": 0.0067, "p": None, "verdict": "within noise", "noise_known": True}
    assert verdict_text(near) == (
        "within noise of the greedy soup (0.5800 vs 0.5917, -0.0117; paired 95% CI [-0.0300, +0.0067])"
    )
    assert verdict_text(near | {"p": 0.0412}).endswith("[-0.0300, +0.0067], McNemar p = 0.0412)")
    far = near | {"candidate": "a*b", "difference": 0.2, "low": None, "high": None, "verdict": "better"}
    far["noise_known"] = False
    assert verdict_text(far, strong=lambda s: f"**{s}**", name=lambda s: s.replace("*", "\\*")) == (
        "**better** than the a\\*b (0.5800 vs 0.5917, +0.2000; noise unknown: no per-example values)"
    )
    assert verdict_text(far | {"verdict": "equal", "difference": 0.0}).startswith("equal to the a*b")
    assert interval_text({"difference": 0.0117, "low": -0.0067, "high": 0.03}) == "+0.0117 [-0.0067, +0.0300]"
    assert interval_text(None) == "—" and interval_text({"difference": 0.01, "low": None}) == "+0.0100"
