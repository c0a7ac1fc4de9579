"""Jobs: the in-process :class:`Worker` runs one job at a time on a background thread (one model in memory,
so evaluations queue rather than compete), reports progress, and cancels between batches. The UI polls
:class:`Job` objects; the CLI calls the engine directly, except to resume a recorded job.

What a job runs is a typed request (:mod:`mixlab.run.requests`); :func:`submit` is the one entry that runs
one (keyed, recorded in the lab's store), and :func:`resume` runs a recorded one again from its JSON spec."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mixlab.errors import Cancelled, JobError, MixlabError
from mixlab.owner import Owner
from mixlab.run.records import ACTIVE, JobRecord, JobState
from mixlab.run.requests import JobFn, JobRequest, request

_ids = itertools.count(1)


@dataclass
class Job:
    description: str
    fn: JobFn = field(repr=False)
    id: int = field(default_factory=lambda: next(_ids))
    state: JobState = JobState.QUEUED  # queued → running → done | failed | cancelled
    done: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    key: str | None = None  # what it computes: a second submit of the same key while this runs gets this job
    on_update: Callable[[Job], None] | None = field(default=None, repr=False)  # keeps a record (see recorder)
    ended: threading.Event = field(default_factory=threading.Event, repr=False)  # set once its end is recorded

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first step is done)."""
        if self.started is None or not self.done or not self.total:
            return None
        return (time.time() - self.started) / self.done * (self.total - self.done)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def cancel(self) -> None:
        self.cancel_event.set()

    def scores_summary(self) -> str:
        """What a finished job's scores were: computed by it or read from the cache (an evaluation made
        after the job started is new); or the ``summary`` a result gives of itself (recycling: how its merge
        was found, how many scores are new). "" when it has neither."""
        summary = getattr(self.result, "summary", None)
        if isinstance(summary, str):
            return summary
        if not isinstance(self.result, list) or not all(hasattr(e, "created") for e in self.result):
            return ""
        n = len(self.result)
        new = sum(e.created >= (self.started or self.created) for e in self.result)
        if new == 0:
            return f"nothing to compute: all {n} score{'s' if n != 1 else ''} were already cached"
        return f"{new} new score{'s' if new != 1 else ''} computed" + (f", {n - new} already cached" if n > new else "")

    def _progress(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total, self.message = done, total, message
        self._update()

    def _update(self) -> None:
        if self.on_update is not None:
            self.on_update(self)

    def _end(self) -> None:
        """The job's end: recorded (its last update), then announced to :meth:`Worker.wait`."""
        try:
            self._update()
        finally:
            self.ended.set()


class Worker:
    """One background thread that runs submitted jobs in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Job] = queue.Queue()
        self.jobs: list[Job] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mixlab-worker", daemon=True)
        self._thread.start()

    def submit(
        self, description: str, fn: JobFn, key: str | None = None, on_update: Callable[[Job], None] | None = None
    ) -> Job:
        """Queue a job; while a job with the same ``key`` is queued or running, that job is returned instead
        (two browser sessions asking for one evaluation run it once)."""
        with self._lock:
            same = next((j for j in self.jobs if key is not None and j.key == key and j.active), None)
            if same is not None:
                return same
            job = Job(description, fn, key=key, on_update=on_update)
            self.jobs.append(job)
        job._update()
        self._queue.put(job)
        return job

    def waiting_reason(self, job: Job) -> str:
        """Why ``job`` has no progress to show yet: the jobs ahead of it (this worker runs one job at a
        time, in the order they were submitted), or that it is starting; "" once it has ended."""
        if job.state == JobState.RUNNING:
            return "starting…"
        if job.state != JobState.QUEUED:
            return ""
        with self._lock:
            ahead = [j for j in self.jobs if j.active and j.id < job.id]
        if not ahead:
            return "queued: starting…"
        first = next((j for j in ahead if j.state == "running"), ahead[0])
        more = len(ahead) - 1
        return (
            f"queued behind {first.state} job '{first.description}'"
            + (f" and {more} more" if more else "")
            + " (one job runs at a time)"
        )

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job.cancel_event.is_set():
                job.state, job.finished = JobState.CANCELLED, time.time()
                job._end()
                continue
            job.state, job.started = JobState.RUNNING, time.time()
            job._update()
            try:
                job.result = job.fn(job._progress, job.cancel_event)
                job.state = JobState.DONE
            except Cancelled:
                job.state = JobState.CANCELLED
            except MixlabError as e:
                job.state, job.error = JobState.FAILED, str(e)
            except Exception as e:  # a bug or a plugin's error: keep the worker alive, show what happened
                job.state, job.error = JobState.FAILED, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            job.finished = time.time()
            job._end()

    def wait(self, job: Job, timeout: float = 60.0) -> Job:
        """Until ``job`` has ended and its end is recorded (its ``on_update`` has run: a caller that reads the
        job's record next reads it ended), or ``timeout`` seconds."""
        job.ended.wait(timeout)
        return job


def recorder(store, lab: str, kind: str, spec: dict, record_id: str | None = None) -> Callable[[Job], None]:
    """An ``on_update`` that keeps a job's record in the lab's store (at most one progress write a second),
    so a restarted app or CLI lists it, and one interrupted can be resumed (:func:`resume`). It also reads
    whether any session asked to cancel the job (``store.request_cancel``), and cancels it if so."""
    record_id = record_id or uuid.uuid4().hex[:12]
    last = [0.0]
    me = Owner.here()

    def update(job: Job) -> None:
        if job.state == JobState.RUNNING and job.done and time.time() - last[0] < 1.0:
            return
        last[0] = time.time()
        if job.active and store.cancel_requested(record_id):
            job.cancel()
        store.put_job(
            JobRecord(
                id=record_id,
                lab=lab,
                kind=kind,
                description=job.description,
                spec=json.dumps(spec, sort_keys=True),
                state=job.state,
                done=job.done,
                total=job.total,
                message=job.message,
                error=job.error,
                created=job.created,
                started=job.started,
                finished=job.finished,
                pid=me.pid,
                host=me.host,
                pid_started=me.started,
            )
        )

    return update


def job_key(engine, kind: str, spec_json: str) -> str:
    """What a recorded job computes, as a dedup key: a second submit of it while it runs joins it."""
    return f"{engine.lab.root}:{kind}:{spec_json}"


def submit(
    worker: Worker,
    engine,
    job: JobRequest,
    description: str | None = None,
    *,
    record: bool = True,
    before: JobFn | None = None,
) -> Job:
    """Run the typed request ``job`` on ``worker`` over ``engine``'s lab: the one entry a page, a test or a
    resume passes a request to. ``record``: the job is kept in the lab's store (:func:`recorder`: listed
    after a restart, resumable) and a second submit of the same work while it runs joins it. ``before``:
    a step run first on the worker (the dashboard's start-up stages)."""
    body = job.body(engine)
    fn = body if before is None else lambda progress, cancel: (before(progress, cancel), body(progress, cancel))[1]
    key = update = None
    if record:
        spec = job.to_spec()
        key = job_key(engine, job.kind, json.dumps(spec, sort_keys=True))
        update = recorder(engine.store, engine.lab.name, job.kind, spec)
    return worker.submit(description or job.describe(), fn, key=key, on_update=update)


def resume(worker: Worker, engine, record: dict) -> Job:
    """Run an interrupted (or failed, or cancelled) recorded job again, under the same record. The record is
    claimed first, in one transaction (:meth:`~mixlab.store.Store.claim_job`): a job two processes resume
    runs once, and the second is told which process has it."""
    where = f"job {record['id']} in {engine.store.path}"
    try:
        spec = json.loads(record["spec"])
        if not isinstance(spec, dict):
            raise TypeError(f"a JSON {type(spec).__name__}, not an object")
        body = request(record["kind"], spec, engine.lab).body(engine)
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise JobError(
            f"{where}: its record is corrupt (spec: {type(e).__name__}: {e}); it cannot be resumed, run the work "
            "again from the page or the command line (cached scores are reused)"
        ) from None
    engine.store.claim_job(record["id"])
    engine.store.forget_cancel(record["id"])
    update = recorder(engine.store, record["lab"], record["kind"], spec, record_id=record["id"])
    key = job_key(engine, record["kind"], record["spec"])  # the record's own JSON: as a first run was keyed
    return worker.submit(record["description"], body, key=key, on_update=update)
