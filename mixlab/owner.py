"""A process mixlab records or starts (a job's worker, a search trial, a temp folder's writer, a kernel
build, a local Ray cluster's agents): whether it still runs, and ending it.

A pid alone cannot say: once a process ends, the system gives its number to a new one, and a record
checked with ``kill(pid, 0)`` alone reads as running forever. An :class:`Owner` is the pid, the time that
process started (psutil's ``create_time``) and the host it runs on; a process with that pid but another
start time is another process, and the owner is gone. The same identity keeps :func:`end_when_gone`'s
watcher from ever signalling a reused pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

    def process(self) -> psutil.Process | None:
        """This machine's process, if it still runs and is this owner (not a pid reused since)."""
        try:
            proc = psutil.Process(self.pid)
            if self.started is not None and abs(proc.create_time() - self.started) > START_TOLERANCE:
                return None
            return None if proc.status() == psutil.STATUS_ZOMBIE else proc
        except psutil.Error:
            return None

    def arg(self) -> str:
        """``pid:started``, as :func:`end_when_gone` passes owners to its watcher."""
        return f"{self.pid}:{self.started!r}"

    @classmethod
    def of(cls, proc: psutil.Process) -> Owner:
        return cls(proc.pid, socket.gethostname(), proc.create_time())


def end(procs: Sequence[psutil.Process], grace: float) -> None:
    """Terminate ``procs``, then kill those still running after ``grace`` seconds."""
    for p in procs:
        try:
            p.terminate() if grace > 0 else p.kill()
        except psutil.Error:
            pass
    if grace > 0:
        for p in psutil.wait_procs([p for p in procs if p.is_running()], timeout=grace)[1]:
            try:
                p.kill()
            except psutil.Error:
                pass


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and every process below it: freeze them first (so none spawns more), then kill. For a
    tree that cannot be killed as one process group (a member may start a group of its own, as ninja does)."""
    try:
        top = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, psutil.Process] = {}
    for _ in range(5):  # look again for anything spawned before the freeze reached it
        new = [p for p in top.children(recursive=True) if p.pid not in seen]
        if not new:
            break
        for p in new:
            seen[p.pid] = p
            try:
                p.send_signal(signal.SIGSTOP)
            except psutil.NoSuchProcess:
                pass
    end([*seen.values(), top], grace=0)


def end_when_gone(procs: Sequence[psutil.Process]) -> None:
    """Start a watcher, in a session of its own, that ends ``procs`` (terminate, then kill) once this process
    is gone, a kill -9 included: a local Ray cluster's per-node agents notice their raylet's death and still
    do not exit. Run as ``python -m mixlab.owner WATCHED PROC…`` (each ``pid:started``)."""
    package_root = str(Path(__file__).resolve().parents[1])  # so the watcher imports this mixlab
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    subprocess.Popen(
        [sys.executable, "-m", "mixlab.owner", Owner.here().arg(), *(Owner.of(p).arg() for p in procs)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a Ctrl-C or a group kill leaves it to watch
    )


def _watch(argv: list[str]) -> None:
    def owner(arg: str) -> Owner:
        pid, started = arg.split(":")
        return Owner(int(pid), None, float(started))

    watched, *rest = map(owner, argv)
    procs = [p for p in (o.process() for o in rest) if p is not None]
    while watched.process() is not None:
        time.sleep(1)
    time.sleep(2)  # Ray's own fate-sharing first
    end([p for p in procs if p.is_running()], grace=3)


if __name__ == "__main__":
    _watch(sys.argv[1:])
