"""The one request value (mixlab.scoring.request) and the road it takes: the method resolved once, the cache
read once per score, the weights travelling with their experts' names, job records as before."""

import json

import pytest

from mixlab.engine import Engine
from mixlab.errors import EvaluationError, MergeError
from mixlab.keys import CacheKey
from mixlab.lab import load_lab
from mixlab.merge.methods import MergeMethod
from mixlab.run.requests import ProxyJob, request
from mixlab.scoring import proxy
from mixlab.scoring.request import Method, ProxyRequest, split_benchmark
from mixlab.simplex import Mixture
from mixlab.store import Store

M = [0.2, 0.3, 0.5]


@pytest.fixture
def engine(dev_lab, tmp_path):
    return Engine(load_lab(dev_lab), Store(tmp_path / "c.sqlite"), device="cpu")


def test_a_method_is_resolved_against_the_lab_defaults(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(toml.read_text() + '\n[merge]\nmethod = "ties"\nparams = { density = 0.5 }\n')
    lab = load_lab(tiny_lab_dir)
    assert Method.for_lab(lab) == Method("ties", {"density": 0.5, "normalize": True, "scale": 1.0})
    assert Method.for_lab(lab, "ties", {"scale": 2.0}).params == {"density": 0.5, "normalize": True, "scale": 2.0}
    assert Method.for_lab(lab, "task_arithmetic") == Method("task_arithmetic", {"scale": 1.0})
    with pytest.raises(MergeError, match="merge method 'ties' has no parameter 'rate'"):
        Method.for_lab(lab, "ties", {"rate": 1})


def test_a_request_checks_what_it_is_given(engine):
    m = engine.mixture(M)
    with pytest.raises(EvaluationError, match="unknown split 'train'"):
        engine.request([m], split="train")
    with pytest.raises(EvaluationError, match="unknown evaluation path 'fast'"):
        engine.request([m], path="fast")
    other = Mixture.of(["x", "y", "z"], M)
    with pytest.raises(EvaluationError, match="name different experts"):
        engine.request([m, other])


def test_the_merge_carries_its_mixture_and_the_resolved_method(engine):
    spec = engine.spec(engine.mixture(M), "ties", {"density": 0.5})
    assert spec.mixture.names == tuple(engine.names) and spec.weights == tuple(M)
    assert spec.params == {"density": 0.5, "normalize": True, "scale": 1.0}
    kernel, params = spec.resolved()
    assert kernel.name == "ties" and params is spec.params  # not resolved again


def test_the_dev_split_names_benchmarks_as_their_stored_scores_are_keyed(engine):
    lab = engine.lab
    rev, pick = lab.benchmark("rev-loss"), lab.benchmark("pick")
    assert split_benchmark(lab, rev) is rev
    dev = split_benchmark(lab, rev, "dev")
    assert (dev.name, dev.data, dev.limit) == ("rev-loss@dev", "data/rev_dev.jsonl", None)
    low = split_benchmark(lab, rev, "dev", 5)
    assert (low.name, low.data, low.limit) == ("rev-loss@dev:5", "data/rev_dev.jsonl", 5)
    assert split_benchmark(lab, pick, "dev").name == "pick@test"  # no search_data: its own data, named apart
    # the key of a dev score, built by hand the way the search built it before the request had a split
    by_hand = rev.model_copy(update={"name": "rev-loss@dev", "data": "data/rev_dev.jsonl"})
    m = engine.mixture(M)
    (ev,) = proxy.score(engine, engine.request([m], benchmarks=["rev-loss"], split="dev"))
    other = Engine(load_lab(lab.root), Store(":memory:"), device="cpu").sources  # its own read of the files
    data = other.benchmark(by_hand)
    key = CacheKey.merge(other.base_fp, other.expert_fps, engine.spec(m), data.desc)
    assert ev.key == key.digest and ev.benchmark == "rev-loss@dev"
    assert set(engine.results().benchmark) <= {"rev", "rev-loss", "pick"}  # never shown as a reported score


def test_the_cache_is_read_once_per_score_and_the_method_resolved_once(engine, monkeypatch):
    reads, resolves = [], []
    get, get_many = engine.store.get, engine.store.get_many
    monkeypatch.setattr(engine.store, "get", lambda k: reads.append(1) or get(k))
    monkeypatch.setattr(engine.store, "get_many", lambda ks: reads.append(len(ks)) or get_many(ks))
    resolve = MergeMethod.resolve
    monkeypatch.setattr(MergeMethod, "resolve", lambda self, p=None: resolves.append(self.name) or resolve(self, p))
    grid = [engine.mixture(w) for w in ([1.0, 0.0, 0.0], [0.5, 0.5, 0.0], M)]
    evals = engine.sweep(grid, "ties", {"density": 0.5}, ["rev-loss", "pick"], path="materialize")
    assert len(evals) == 6 and engine.store.count() == 6
    assert reads == [3, 3]  # one query per benchmark for the three mixtures, none again before computing
    assert resolves == ["ties"]  # once for the sweep: not again per mixture, nor in the merger
    reads.clear()
    again = engine.sweep(grid, "ties", {"density": 0.5}, ["rev-loss", "pick"])
    assert reads == [3, 3] and [e.score for e in again] == [e.score for e in evals]


def test_a_job_record_of_a_request_reads_as_before(engine):
    old = {"mixtures": [M], "method": "linear", "params": {}, "benchmarks": ["rev-loss"], "backend": "ray"}
    job = request("proxy", old, engine.lab)
    assert isinstance(job, ProxyJob) and job.executor == "ray"
    assert job.request.mixtures == (engine.mixture(M),) and job.request.method == Method("linear", {})
    assert job.to_spec() == old  # the same JSON: earlier records and their dedup keys read the same
    dev = ProxyJob(engine.request([engine.mixture(M)], split="dev", limit=4))
    spec = json.loads(json.dumps(dev.to_spec()))
    assert spec["split"] == "dev" and spec["limit"] == 4 and "backend" not in spec
    assert ProxyRequest.from_spec(spec, engine.lab) == dev.request
    with pytest.raises(KeyError):
        request("proxy", {"mixtures": [M]}, engine.lab)
