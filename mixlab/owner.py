"""The process that holds a record (a recorded job, a search trial), and whether it still runs.

A pid alone cannot say: once a process ends, the system gives its number to a new one, and a record
checked with ``kill(pid, 0)`` alone reads as running forever. An :class:`Owner` is the pid, the time that
process started (psutil's ``create_time``) and the host it runs on; a process with that pid but another
start time is another process, and the owner is gone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil

START_TOLERANCE = 0.5  # seconds: psutil's start time of one process reads the same, give or take rounding


def _start_time(pid: int) -> float | None:
    """The start time of process ``pid``, or None if there is none (a zombie counts as none: it has ended)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # it exists, but is another user's: its start time is unknown
        return float("nan")


@dataclass(frozen=True)
class Owner:
    """A process: ``pid`` on ``host``, started at ``started`` (None where an older record lacks them)."""

    pid: int
    host: str | None = None
    started: float | None = None

    @classmethod
    def here(cls) -> Owner:
        """This process."""
        return cls(os.getpid(), socket.gethostname(), _start_time(os.getpid()))

    def alive(self) -> bool:
        """Whether the owner still runs. A process on another host cannot be checked from here: it counts
        as running (a record of an older mixlab, without a host, is taken to be of this host)."""
        if self.host is not None and self.host != socket.gethostname():
            return True
        now = _start_time(self.pid)
        if now is None:
            return False
        if self.started is None or now != now:  # an older record, or a start time we may not read
            return True
        return abs(now - self.started) <= START_TOLERANCE

    def describe(self) -> str:
        """``process 123`` (``on host h`` when the owner is another machine's)."""
        far = self.host is not None and self.host != socket.gethostname()
        return f"process {self.pid}" + (f" on host {self.host}" if far else "")
