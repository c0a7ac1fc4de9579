"""The app's background warm-up: the work a first evaluation would otherwise wait for (importing torch,
then transformers, then loading the merge kernels), done in a daemon thread one step at a time, each step
only once the server has been idle for a moment.

Importing torch and transformers is seconds of Python under the GIL. Started right after the first paint,
it shared the GIL and the cores with the user's next page switch (bench/app_speed.py on 2 cores: a switch
0.75 s against 0.52 s without it). Waiting for :data:`IDLE_SECONDS` without a page run before each step
keeps it out of the way of someone clicking through pages; an evaluation that needs the stack calls
:meth:`Warmup.hurry`, and the remaining steps run at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

IDLE_SECONDS = 2.0  # no page run for this long: the user is reading, the warm-up may take a step


class Warmup:
    """Runs ``steps`` in order on a daemon thread (:meth:`start`), each once no :meth:`busy` block has been
    open for ``idle_seconds``; :meth:`hurry` drops the wait."""

    def __init__(
        self,
        steps: Iterable[Callable[[], object]],
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._steps = list(steps)
        self._idle = idle_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._busy = 0
        self._last = clock()
        self._hurry = False
        self._started = False
        self._thread = threading.Thread(target=self._run, name="mixlab-warmup", daemon=True)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around a page run: no step starts while one is open, nor until ``idle_seconds`` after the last closes."""
        with self._cond:
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._last = self._clock()
                self._cond.notify_all()

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        with self._cond:
            if self._started:
                return
            self._started = True
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._started

    def hurry(self) -> None:
        """Run the remaining steps without waiting for the server to be idle."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _wait_idle(self) -> None:
        with self._cond:
            while not self._hurry:
                if self._busy:
                    self._cond.wait()
                    continue
                left = self._last + self._idle - self._clock()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _run(self) -> None:
        for step in self._steps:
            self._wait_idle()
            step()
