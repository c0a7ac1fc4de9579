"""The Ray backend on a local Ray (2 CPUs, its files in a temp dir): the same scores as the local backend
for a sweep and a search, and a worker killed mid-sweep loses only the mixtures it was computing."""

import json
import os
import sys
from pathlib import Path

import pytest

from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.lab import load_lab
from mixlab.run.executors import LocalBackend, RayBackend, backend, shared
from mixlab.scoring import cached as cached_scores
from mixlab.search import Search
from mixlab.simplex import Mixture, grid_from_step
from mixlab.store import Store

ray = pytest.importorskip("ray", reason="the Ray backend's tests need requirements-ray.txt (requirements-dev has it)")


@pytest.fixture(scope="module")
def cluster():
    yield
    shared.cache_clear()
    ray.shutdown()


def _grid(names):
    return [Mixture.of(names, w) for w in grid_from_step(3, 0.25)]  # 15 mixtures


def test_ray_address_in_the_environment_does_not_redirect_the_local_cluster(cluster, monkeypatch):
    """$RAY_ADDRESS names a cluster (here none answers there): --backend ray without --address still starts
    its own (the module's other tests then use it)."""
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    rb = RayBackend(num_cpus=2)
    assert ray.is_initialized() and rb.cpus == 2


def test_a_ray_client_address_without_ray_client_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    monkeypatch.setitem(sys.modules, "grpc", None)  # as where ray is installed without the [client] extra
    with pytest.raises(
        MixlabError,
        match=rf"ray://head:10001 is a Ray Client address, which needs ray\[client\]: pip install 'ray\[client\]=={ray.__version__}'",
    ):
        RayBackend("ray://head:10001")
    from mixlab.cli import main

    code = main(["sweep", "--backend", "ray", "--address", "ray://head:10001"])  # on the demo lab
    assert code == 2 and "needs ray[client]" in capsys.readouterr().err


DRIVER = """
import sys, time
sys.path.insert(0, {root!r})
from mixlab.run.executors import RayBackend
RayBackend(num_cpus=1)
print("up", flush=True)
time.sleep(300)
"""


def test_the_local_clusters_processes_end_with_a_killed_driver(tmp_path):
    import signal
    import subprocess
    import time

    import psutil

    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER.format(root=root)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert driver.stdout.readline().strip() == "up"
        cluster = psutil.Process(driver.pid).children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in cluster), [p.name() for p in cluster]
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()

    def running(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(map(running, cluster)):
        time.sleep(0.5)
    left = [p for p in cluster if running(p)]
    for p in left:  # not to leave them to the next test
        p.kill()
    assert not left, [" ".join(p.cmdline())[:80] for p in left]


def test_a_sweep_on_ray_equals_the_local_sweep(cluster, tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    here = Engine(lab, Store(tmp_path / "a.sqlite"), device="cpu")
    there = Engine(lab, Store(tmp_path / "b.sqlite"), device="cpu")
    grid = _grid(lab.expert_names)
    local = LocalBackend().run(here, here.request(grid))
    rb = RayBackend(workers=2, num_cpus=2)
    seen = []
    remote = rb.run(there, there.request(grid), progress=lambda d, n, m: seen.append((d, n)))
    assert not remote.failed and len(remote.evaluations) == len(local.evaluations) == 15 * 3
    for x, y in zip(local.evaluations, remote.evaluations):
        assert (x.key, x.benchmark, x.weights) == (y.key, y.benchmark, y.weights)
        assert x.score == pytest.approx(y.score, rel=1e-5, abs=1e-7), (x.label, x.benchmark)
    assert there.store.count() == 15 * 3  # stored here, by the driver, as results came back
    assert seen[-1] == (15, 15)
    again = rb.run(there, there.request(grid))  # all cached: nothing is sent
    assert again.evaluations == remote.evaluations


def test_a_killed_worker_loses_only_its_in_flight_mixtures(cluster, tiny_lab_dir, tmp_path):
    lab = load_lab(tiny_lab_dir)
    engine = Engine(lab, Store(tmp_path / "c.sqlite"), device="cpu")
    grid = _grid(lab.expert_names)
    rb = RayBackend(workers=2)
    victim = rb.actors(engine)[0]
    killed = []

    def progress(done, total, message):
        if done >= 2 and not killed:  # mid-sweep: some scored, more to come
            ray.kill(victim)
            killed.append(done)

    result = rb.run(engine, engine.request(grid), progress=progress, chunk=1)
    assert killed and len(result.failed) == 1  # one mixture at a time per worker: one was in flight
    (reason,) = result.failed.values()
    assert "Ray worker died" in reason
    assert len(result.evaluations) == 14 * 3 and engine.store.count() == 14 * 3  # the rest went on, stored
    assert "1 mixture(s) failed: Ray worker died" in result.summary()
    rows = engine.store.count()
    rerun = rb.run(engine, engine.request(grid))  # a replacement worker computes only the lost mixture
    assert not rerun.failed and engine.store.count() == rows + 3
    fresh = Engine(lab, Store(tmp_path / "d.sqlite"), device="cpu")
    reference = LocalBackend().run(fresh, fresh.request(grid))
    for x, y in zip(reference.evaluations, rerun.evaluations):
        assert x.key == y.key and x.score == pytest.approx(y.score, rel=1e-5, abs=1e-7)


def test_a_search_on_ray_equals_the_local_search(cluster, dev_lab, tmp_path):  # noqa: F811
    """One worker: the same trials in the same order. Two: trials run in parallel (so the sampler's draws
    interleave differently), each trial's value equal to the local engine's at its weights."""
    lab = load_lab(dev_lab)
    engines = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()  # each its own cache, and its study next to it
        engines.append(Engine(lab, Store(tmp_path / name / "c.sqlite"), device="cpu"))
    local = Search(engines[0], ["rev-loss"], sampler="random", seed=4).run(6)
    one = Search(engines[1], ["rev-loss"], sampler="random", seed=4, backend=RayBackend(workers=1)).run(6)
    assert [t["weights"] for t in one.trials] == [t["weights"] for t in local.trials]
    assert [t["values"][0] for t in one.trials] == pytest.approx([t["values"][0] for t in local.trials], rel=1e-5)
    assert one.best[0]["weights"] == local.best[0]["weights"]
    assert one.best[0]["test"] == pytest.approx(local.best[0]["test"], rel=1e-5)
    ray.shutdown()  # a fresh cluster for two workers
    two = Search(engines[2], ["rev-loss"], sampler="random", seed=4, backend=RayBackend(workers=2)).run(6)
    assert len(two.trials) == 6
    for t in two.trials:
        m = Mixture.of(lab.expert_names, list(t["weights"].values()))
        assert t["values"][0] == pytest.approx(Search(engines[0], ["rev-loss"]).dev_values(m)[0], rel=1e-5)


def test_sweep_search_and_eval_from_the_command_line_on_ray(cluster, dev_lab, tmp_path, capsys):  # noqa: F811
    """The CLI's --backend ray for each command. One worker for eval and search (one mixture; three trials): each
    actor is a process that imports torch, and two workers, or the default count, are tested above and below."""
    from mixlab.cli import main

    def run(*argv):
        assert main([*argv]) == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    lab = str(dev_lab)
    remote = run("sweep", lab, "--grid", "0.5", "--backend", "ray", "--workers", "2", "--json")
    monkey = dict(os.environ, MIXLAB_CACHE=str(tmp_path / "local.sqlite"))
    os.environ.update(monkey)
    try:
        local = run("sweep", lab, "--grid", "0.5", "--json")
    finally:
        del os.environ["MIXLAB_CACHE"]
    assert [(r["label"], r["benchmark"]) for r in remote] == [(r["label"], r["benchmark"]) for r in local]
    assert [r["score"] for r in remote] == pytest.approx([r["score"] for r in local], rel=1e-5)
    one_worker = ("--backend", "ray", "--workers", "1")
    (one,) = [r for r in run("eval", lab, "--weights", "0.5,0.5,0", *one_worker, "--json") if r["benchmark"] == "rev"]
    assert one["score"] == next(r["score"] for r in remote if r["label"] == one["label"] and r["benchmark"] == "rev")
    found = run("search", lab, "--objective", "rev-loss", "--trials", "3", "--sampler", "random", *one_worker, "--json")
    assert len(found["trials"]) == 3 and found["split"] == "dev"
    assert main(["sweep", lab, "--checkpoints", "--backend", "ray"]) == 2
    assert "drop --backend ray" in capsys.readouterr().err


def test_backend_names_and_a_missing_ray_are_explained(monkeypatch):
    assert isinstance(backend("local"), LocalBackend)
    with pytest.raises(MixlabError, match="unknown backend 'slurm'; use one of local, ray"):
        backend("slurm")
    with pytest.raises(MixlabError, match="--address is for --backend ray"):
        backend("local", address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MixlabError, match="pip install -r requirements-ray.txt"):
        RayBackend()


def test_the_dashboard_runs_an_evaluation_on_ray_when_asked(cluster, tiny_lab_dir, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from views.jobs import worker

    monkeypatch.setenv("MIXLAB_CACHE", str(tiny_lab_dir / "cache.sqlite"))
    st.cache_resource.clear()
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.query_params["lab"] = str(tiny_lab_dir)
    at.run()
    (radio,) = [r for r in at.radio if r.label == "Evaluations run on"]
    assert radio.options == ["local", "ray"] and radio.value == "local"
    radio.set_value("ray").run()
    at.switch_page("views/2_simplex.py").run()
    at.button(key="simplex_evaluate").click().run()
    for job in list(worker().jobs):
        worker().wait(job, 300)
    engine = Engine(load_lab(tiny_lab_dir), Store(tiny_lab_dir / "cache.sqlite"))
    (record,) = [r for r in engine.store.jobs() if r["kind"] == "proxy"]
    assert record["state"] == "done" and json.loads(record["spec"])["backend"] == "ray"
    got = cached_scores.cached(engine, "proxy")
    assert got and all(e.device == "cpu" for e in got)
    local = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    for e in got:
        (ref,) = local.proxy(local.mixture(list(e.weights.values()), normalize=True), benchmarks=[e.benchmark])
        assert e.score == pytest.approx(ref.score, rel=1e-5)
