"""The job panel: evaluations run on the process's background worker, after the start-up stages a first
evaluation waits for; a page submits them, and shows the session's last job with a cancel button."""

from __future__ import annotations

import cProfile
import importlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from mixlab.engine import Engine
from mixlab.run import jobs as run_jobs
from mixlab.run.jobs import Job, Worker
from mixlab.run.requests import JobRequest, ProxyJob
from mixlab.scoring.request import Method, ProxyRequest
from mixlab.simplex import Mixture
from mixlab.warmup import Warmup
from views.state import backend_name, engine
from views.text import escape


@st.cache_resource
def worker() -> Worker:
    return Worker()


@st.cache_resource
def _warmup() -> Warmup:
    """Once per server process: the work the first evaluation would otherwise wait for (importing torch and
    transformers, loading the fused merge kernels), in the background, each step once the server has been
    idle for a moment (mixlab.warmup), so that neither the first paint nor the next page switch shares the
    GIL with it. MIXLAB_NO_WARMUP=1 leaves it to the first evaluation (tests/test_first_paint.py: what a
    page imports by itself)."""
    from mixlab.merge import fused
    from mixlab.names import import_stack

    return Warmup([lambda: importlib.import_module("torch"), import_stack, fused.available])


@contextmanager
def page_run(page: str = "") -> Iterator[None]:
    """Around a page run (app.py): the warm-up waits while one is open, and starts after the first.

    For bench/app_speed.py, which splits a page's time into the server's part and the browser's:
    $MIXLAB_PAGE_TIMES names a file that gets one JSON line per run (the page, the script's wall and CPU
    seconds), and $MIXLAB_PAGE_PROFILE a folder that gets each run's cProfile (``<n>-<page>.prof``)."""
    warmup = _warmup()
    times, profile = os.environ.get("MIXLAB_PAGE_TIMES"), os.environ.get("MIXLAB_PAGE_PROFILE")
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        with warmup.busy():
            if profiler:
                profiler.enable()
            yield
    finally:  # also after st.stop() or a rerun
        if profiler:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile, f"{time.time_ns()}-{page or 'lab'}.prof"))
        if times:
            line = {
                "page": page,
                "wall": time.perf_counter() - wall,
                "cpu": time.thread_time() - cpu,
                "at": time.time(),
            }
            with open(times, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        if not os.environ.get("MIXLAB_NO_WARMUP"):
            warmup.start()


def _stages(eng: Engine, progress, cancel) -> None:
    """Report what a first evaluation waits for, stage by stage, and stop between stages on cancel."""
    from mixlab.errors import Cancelled
    from mixlab.merge import fused

    def warm() -> None:  # the background warm-up's steps now, but let a cancel through every half second
        warmup = _warmup()
        warmup.hurry()
        while warmup.is_alive():
            if cancel.is_set():
                raise Cancelled("cancelled")
            warmup.join(0.5)
        from mixlab.names import import_stack

        import_stack()  # never started (MIXLAB_NO_WARMUP) or a step failed: here, where its error is reported

    stages = (
        ("importing the model stack", warm),
        ("building the merge kernels (first run only)", fused.available),
        ("loading the base and the experts", lambda: eng.model),
    )
    for message, step in stages:
        if cancel.is_set():
            raise Cancelled("cancelled")
        progress(0, 0, message)
        step()


def submit(job: JobRequest, description: str | None = None) -> Job:
    """Run the typed request ``job`` on the worker, after the start-up stages, recorded in the lab's store
    (listed after a restart, resumable; a second request for the same work while it runs joins it); the
    page shows its progress."""
    eng = engine()
    submitted = run_jobs.submit(worker(), eng, job, description, before=lambda p, c: _stages(eng, p, c))
    st.session_state.last_job = submitted.id
    return submitted


def submit_evaluation(eng: Engine, m: Mixture, method: str, params: dict, benchmarks: list[str] | None = None) -> Job:
    """One mixture's proxy scores as a recorded job, on the session's executor: the request the page made."""
    request = ProxyRequest((m,), Method.for_lab(eng.lab, method, params), tuple(benchmarks or ()) or None)
    return submit(ProxyJob(request, backend_name()))


def current_job() -> Job | None:
    jid = st.session_state.get("last_job")
    return next((j for j in worker().jobs if j.id == jid), None)


def job_panel() -> None:
    """Progress and a cancel button for this session's last job; reruns the page when it ends. The panel
    polls twice a second only while the job runs (an idle page does not rerun)."""
    job = current_job()
    if job is None:
        return
    st.fragment(_job_panel, run_every=0.5 if job.active else None)()


def _job_panel() -> None:
    job = current_job()
    if job is None:
        return
    if job.active:
        eta = f" · about {job.eta:.0f} s left" if job.eta is not None else ""
        text = f"{job.state}: {escape(job.description)} — {escape(job.message or worker().waiting_reason(job))}{eta}"
        st.progress(job.fraction, text=text)
        if st.button("Cancel", key=f"cancel_{job.id}"):
            job.cancel()
        st.session_state.job_was_active = job.id
    else:
        if job.state == "done":
            summary = job.scores_summary()
            st.success(f"Done: {escape(job.description)}" + (f" — {summary}." if summary else "."))
        elif job.state == "cancelled":
            st.warning(f"Cancelled: {escape(job.description)}")
        else:
            st.error(f"Failed: {escape(job.description)}: {escape(job.error)}")
        if st.session_state.get("job_was_active") == job.id:
            st.session_state.job_was_active = None
            st.rerun()  # redraw the whole page with the new point
