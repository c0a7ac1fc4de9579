"""Where jobs run. The in-process :class:`Worker` runs one job at a time on a background thread (one
model in memory, so evaluations queue rather than compete), reports progress, and cancels between
batches. The UI polls :class:`Job` objects; the CLI calls the engine directly."""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mixlab.errors import Cancelled, MixlabError

# a job body: fn(progress(done, total, message), cancel_event) -> result
JobFn = Callable[[Callable[[int, int, str], None], threading.Event], Any]
_ids = itertools.count(1)


@dataclass
class Job:
    description: str
    fn: JobFn = field(repr=False)
    id: int = field(default_factory=lambda: next(_ids))
    state: str = "queued"  # queued → running → done | failed | cancelled
    done: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    result: Any = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

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
        return self.state in ("queued", "running")

    def cancel(self) -> None:
        self.cancel_event.set()

    def _progress(self, done: int, total: int, message: str = "") -> None:
        self.done, self.total, self.message = done, total, message


class Worker:
    """One background thread that runs submitted jobs in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Job] = queue.Queue()
        self.jobs: list[Job] = []
        self._thread = threading.Thread(target=self._loop, name="mixlab-worker", daemon=True)
        self._thread.start()

    def submit(self, description: str, fn: JobFn) -> Job:
        job = Job(description, fn)
        self.jobs.append(job)
        self._queue.put(job)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job.cancel_event.is_set():
                job.state, job.finished = "cancelled", time.time()
                continue
            job.state, job.started = "running", time.time()
            try:
                job.result = job.fn(job._progress, job.cancel_event)
                job.state = "done"
            except Cancelled:
                job.state = "cancelled"
            except MixlabError as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # a bug or a plugin's error: keep the worker alive, show what happened
                job.state, job.error = "failed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
            job.finished = time.time()

    def wait(self, job: Job, timeout: float = 60.0) -> Job:
        deadline = time.time() + timeout
        while job.active and time.time() < deadline:
            time.sleep(0.02)
        return job
