import os
import time

import psutil
import pytest

from mixlab.errors import Cancelled, MixlabError
from mixlab.run.jobs import Worker


def test_jobs_run_in_order_with_progress():
    w = Worker()

    def body(progress, cancel):
        for i in range(3):
            progress(i + 1, 3, f"step {i}")
        return "ok"

    job = w.wait(w.submit("a", body))
    assert (job.state, job.result, job.fraction, job.message) == ("done", "ok", 1.0, "step 2")


def test_cancel_and_failures_keep_the_worker_alive():
    w = Worker()

    def slow(progress, cancel):
        while not cancel.is_set():
            time.sleep(0.01)
        raise Cancelled("stop")

    job = w.submit("slow", slow)
    time.sleep(0.05)
    job.cancel()
    assert w.wait(job).state == "cancelled"
    bad = w.wait(w.submit("bad", lambda p, c: (_ for _ in ()).throw(MixlabError("clear message"))))
    assert (bad.state, bad.error) == ("failed", "clear message")
    bug = w.wait(w.submit("bug", lambda p, c: 1 / 0))
    assert bug.state == "failed" and bug.error.startswith("ZeroDivisionError")
    assert w.wait(w.submit("after", lambda p, c: 42)).result == 42


def test_wait_returns_once_the_jobs_end_is_recorded():
    """A caller that reads a job's record after wait() reads it ended: the record's last write (on_update)
    happens before wait() returns, even when that write is slow (a busy machine's SQLite)."""
    w = Worker()
    recorded = []

    def slow_record(job):
        if not job.active:
            time.sleep(0.3)
        recorded.append(job.state)

    for fn, end in ((lambda p, c: 1, "done"), (lambda p, c: 1 / 0, "failed")):
        recorded.clear()
        job = w.wait(w.submit("x", fn, on_update=slow_record), timeout=10)
        assert recorded[-1] == end == job.state


def test_a_running_job_estimates_the_time_left():
    import time

    from mixlab.run.jobs import Job

    job = Job("x", lambda p, c: None)
    assert job.eta is None
    job.started, job.done, job.total = time.time() - 10, 2, 6
    assert job.eta == pytest.approx(20, abs=0.5)  # 5 s per step so far, 4 steps left


def test_jobs_are_recorded_survive_their_process_and_resume(tiny_lab_dir, tmp_path):
    """A recorded job: its record follows it; one left running by a process that is gone reads as
    interrupted, and a resume computes only what is not cached."""
    import json
    import subprocess
    import sys

    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.run.jobs import resume, submit
    from mixlab.run.requests import ProxyJob
    from mixlab.scoring.request import Method, ProxyRequest
    from mixlab.store import Store

    engine = Engine(load_lab(tiny_lab_dir), Store(tmp_path / "c.sqlite"), device="cpu")
    spec = {
        "mixtures": [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]],
        "method": "linear",
        "params": {},
        "benchmarks": ["rev-loss"],
    }
    worker = Worker()
    mixtures = tuple(engine.mixture(w) for w in spec["mixtures"])
    job = submit(worker, engine, ProxyJob(ProxyRequest(mixtures, Method.of("linear"), ("rev-loss",))), "two mixtures")
    worker.wait(job, timeout=120)
    (record,) = engine.store.jobs("tiny")
    assert record["state"] == "done" and record["kind"] == "proxy" and json.loads(record["spec"]) == spec
    assert record["done"] == record["total"] > 0

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**record, "id": "x1", "state": "running", "done": 1, "pid": int(gone.stdout), "finished": None}
    dead["spec"] = json.dumps({**spec, "mixtures": [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]}, sort_keys=True)
    engine.store.put_job(dead)
    fresh = Engine(load_lab(tiny_lab_dir), Store(tmp_path / "c.sqlite"), device="cpu")  # the app, restarted
    states = {r["id"]: r["state"] for r in fresh.store.jobs("tiny")}
    assert states["x1"] == "interrupted"
    rows = fresh.store.count()
    again = worker.wait(resume(worker, fresh, next(r for r in fresh.store.jobs() if r["id"] == "x1")), timeout=120)
    assert again.state == "done" and fresh.store.count() == rows + 1  # one new mixture; the other was cached
    assert {r["id"]: r["state"] for r in fresh.store.jobs("tiny")}["x1"] == "done"  # the same record


def test_the_same_work_asked_twice_runs_once():
    import threading

    gate = threading.Event()
    worker = Worker()
    calls = []

    def body(progress, cancel):
        calls.append(1)
        gate.wait(10)
        return []

    a = worker.submit("eval", body, key="lab:proxy:w")
    b = worker.submit("eval", body, key="lab:proxy:w")  # a second browser session, while it runs
    c = worker.submit("other", body, key="lab:proxy:v")
    gate.set()
    worker.wait(c)
    assert a is b and c is not a and len(calls) == 2


def test_jobs_from_the_command_line(tiny_lab_dir, tmp_path, monkeypatch, capsys):
    import json

    from mixlab.cli import main
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    store = Store(tmp_path / "c.sqlite")
    spec = {"mixtures": [[0.2, 0.3, 0.5]], "method": "linear", "params": {}, "benchmarks": ["rev-loss"]}
    record = {
        "id": "j1", "lab": "tiny", "kind": "proxy", "description": "one mixture", "spec": json.dumps(spec),
        "state": "failed", "done": 0, "total": 1, "message": "", "error": "out of memory", "created": 1.0,
        "started": 1.0, "finished": 2.0, "pid": 1,
    }  # fmt: skip
    store.put_job(record)
    assert main(["jobs", str(tiny_lab_dir)]) == 0
    assert "j1" in (out := capsys.readouterr().out) and "failed" in out and "out of memory" in out
    assert main(["jobs", str(tiny_lab_dir), "--resume", "j1"]) == 0
    assert "job j1 done: 1 scores" in capsys.readouterr().out
    assert Engine(load_lab(tiny_lab_dir), Store(tmp_path / "c.sqlite")).store.jobs()[0]["state"] == "done"
    assert main(["jobs", str(tiny_lab_dir), "--resume", "nope"]) == 2
    assert "no job 'nope'" in capsys.readouterr().err


def test_a_recorded_job_is_cancelled_from_another_process(tmp_path, monkeypatch, capsys):
    """The job list's cancel: a request written to the cache by another process (here the CLI, on another
    connection to the same file) stops the job at its next progress report; resuming clears the request."""
    from mixlab.cli import main
    from mixlab.run.jobs import recorder
    from mixlab.store import Store

    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))

    here, there = Store(tmp_path / "c.sqlite"), Store(tmp_path / "c.sqlite")
    steps = []

    def body(progress, cancel):
        for i in range(600):
            if cancel.is_set():
                raise Cancelled(f"stopped at step {i}")
            steps.append(i)
            progress(i + 1, 600, "")
            time.sleep(0.01)
        return "finished"

    worker = Worker()
    job = worker.submit("long", body, on_update=recorder(here, "demo-k3", "search", {}, record_id="j1"))
    while not steps:
        time.sleep(0.01)
    (record,) = there.jobs()
    assert record["state"] == "running"
    assert main(["jobs", "--cancel", "j1"]) == 0  # the demo lab, its cache at MIXLAB_CACHE
    assert "to cancel job j1" in capsys.readouterr().out
    assert worker.wait(job, 30).state == "cancelled" and len(steps) < 600
    assert [r["state"] for r in there.jobs()] == ["cancelled"]
    assert here.cancel_requested("j1")
    assert main(["jobs", "--cancel", "j1"]) == 2  # no longer running: said so
    assert "job 'j1' is cancelled" in capsys.readouterr().err
    here.forget_cancel("j1")  # what a resume does first
    assert not there.cancel_requested("j1")


def _recorded(tmp_path, spec: str, state: str = "interrupted", **kw):
    from mixlab.store import Store

    store = Store(tmp_path / "c.sqlite")
    record = {
        "id": "j1", "lab": "tiny", "kind": "proxy", "description": "one mixture", "spec": spec, "state": state,
        "done": 0, "total": 1, "message": "", "error": None, "created": 1.0, "started": 1.0, "finished": None,
        "pid": 999_999_999,
    } | kw  # fmt: skip
    store.put_job(record)
    return store


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("{not json", "JSONDecodeError"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"method": "linear", "params": {}}', "KeyError: 'mixtures'"),
        ('{"mixtures": [[1, 0, 0]]}', "KeyError: 'method'"),
    ],
)
def test_a_corrupt_job_record_is_a_clear_error_and_is_left_stopped(
    tiny_lab_dir, tmp_path, monkeypatch, capsys, spec, why
):
    from mixlab.cli import main
    from mixlab.engine import Engine
    from mixlab.errors import JobError
    from mixlab.lab import load_lab
    from mixlab.run.jobs import resume

    store = _recorded(tmp_path, spec)
    engine = Engine(load_lab(tiny_lab_dir), store, device="cpu")
    with pytest.raises(JobError, match=rf"job j1 in .*c\.sqlite: its record is corrupt \(spec: .*{why}"):
        resume(Worker(), engine, store.jobs()[0])
    assert store.jobs()[0]["state"] == "interrupted"  # not claimed
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    assert main(["jobs", str(tiny_lab_dir), "--resume", "j1"]) == 2
    err = capsys.readouterr().err
    assert "its record is corrupt" in err and "unexpected" not in err


def test_a_job_resumed_by_another_live_process_is_not_run_again(tiny_lab_dir, tmp_path):
    """The record says 'running' in a live process (here: the pid of this test's parent, with its start time):
    a resume is refused with the process's number, and nothing runs."""
    import json

    from mixlab.engine import Engine
    from mixlab.errors import JobError
    from mixlab.lab import load_lab
    from mixlab.owner import Owner
    from mixlab.run.jobs import resume

    other = Owner(os.getppid(), Owner.here().host, psutil.Process(os.getppid()).create_time())
    spec = json.dumps({"mixtures": [[1, 0, 0]], "method": "linear", "params": {}, "benchmarks": ["rev-loss"]})
    store = _recorded(tmp_path, spec, state="running", pid=other.pid, host=other.host, pid_started=other.started)
    engine = Engine(load_lab(tiny_lab_dir), store, device="cpu")
    worker = Worker()
    with pytest.raises(JobError, match=rf"job j1 is already running in process {other.pid} \(resumed there"):
        resume(worker, engine, {**store.jobs()[0], "state": "interrupted"})  # as a page listed it a moment ago
    assert worker.jobs == [] and store.count() == 0


def test_a_finished_job_says_how_many_scores_it_computed_and_how_many_were_cached():
    from types import SimpleNamespace

    from mixlab.run.jobs import Job

    job = Job("j", lambda progress, cancel: None, started=100.0)
    old, new = SimpleNamespace(created=50.0), SimpleNamespace(created=150.0)
    job.result = [old, old, old]
    assert job.scores_summary() == "nothing to compute: all 3 scores were already cached"
    job.result = [old, new, new]
    assert job.scores_summary() == "2 new scores computed, 1 already cached"
    job.result = [new]
    assert job.scores_summary() == "1 new score computed"
    job.result = {"not": "scores"}
    assert job.scores_summary() == ""


def test_a_queued_job_says_what_it_waits_for():
    import threading

    w = Worker()
    release, running = threading.Event(), threading.Event()

    def held(progress, cancel):
        running.set()
        release.wait(10)

    first = w.submit("ties at add=1", held)
    assert running.wait(10)
    second = w.submit("linear at rev=1", lambda p, c: None)
    third = w.submit("dare at sort=1", lambda p, c: None)
    assert w.waiting_reason(second) == "queued behind running job 'ties at add=1' (one job runs at a time)"
    assert w.waiting_reason(third) == "queued behind running job 'ties at add=1' and 1 more (one job runs at a time)"
    release.set()
    assert w.wait(third).state == "done" and w.wait(first).state == "done"
    assert w.waiting_reason(first) == ""  # it has ended: nothing to wait for
