"""A job's record, as the lab's cache keeps it (the ``jobs`` table of :mod:`mixlab.store`): its fields
declared once (:class:`JobRecord`) and its states spelled once (:class:`JobState`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    """queued → running → done | failed | cancelled; ``interrupted``: the process running it stopped (a
    state only a record reaches). A StrEnum: a state reads, compares and stores as its name."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


ACTIVE = (JobState.QUEUED, JobState.RUNNING)  # a process is (or was, if it is gone) working on it
STOPPED = (JobState.INTERRUPTED, JobState.FAILED, JobState.CANCELLED)  # what a resume runs again


@dataclass(frozen=True)
class JobRecord:
    """One row of the ``jobs`` table: what ran (``kind`` and its JSON ``spec``), how far it got, and the
    process that runs it (``pid`` on ``host``, started at ``pid_started``: :class:`mixlab.owner.Owner`)."""

    id: str
    lab: str
    kind: str  # proxy | checkpoints | search | recycle
    description: str
    spec: str  # JSON: what to run again on resume
    state: JobState
    done: int
    total: int
    message: str
    error: str | None
    created: float
    started: float | None
    finished: float | None
    pid: int
    host: str | None = None  # added later: records of older versions lack these two
    pid_started: float | None = None

    @classmethod
    def from_row(cls, row) -> JobRecord:
        """From a row (a dict or sqlite3.Row) of the table; the optional fields may be missing."""
        row = dict(row)
        return cls(**{f.name: row.get(f.name, f.default) for f in dataclasses.fields(cls)})

    def row(self) -> dict:
        """The row as the table stores it (a state as its name)."""
        return dataclasses.asdict(self) | {"state": str(self.state)}


JOB_FIELDS = tuple(f.name for f in dataclasses.fields(JobRecord))
OPTIONAL_JOB_FIELDS = {"host": "TEXT", "pid_started": "REAL"}  # added later: older records and tables lack them
