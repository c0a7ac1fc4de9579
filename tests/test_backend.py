import time

import pytest

from mixlab.backend import Worker
from mixlab.errors import Cancelled, MixlabError


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


def test_a_running_job_estimates_the_time_left():
    import time

    from mixlab.backend import Job

    job = Job("x", lambda p, c: None)
    assert job.eta is None
    job.started, job.done, job.total = time.time() - 10, 2, 6
    assert job.eta == pytest.approx(20, abs=0.5)  # 5 s per step so far, 4 steps left
