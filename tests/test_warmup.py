"""mixlab.warmup: the background steps wait for the server to be idle, in order, and hurry() drops the wait.

The clock the idle rule reads is a fake one the tests move; the thread's waits are real but bounded by the
idle time (one second here), so every join below has room to spare and nothing asserts a duration."""

from __future__ import annotations

import threading

from mixlab.warmup import Warmup


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def recorder() -> tuple[list[int], list]:
    ran: list[int] = []
    return ran, [lambda i=i: ran.append(i) for i in range(3)]


def test_steps_run_in_order_once_idle():
    ran, steps = recorder()
    clock = Clock()
    warmup = Warmup(steps, idle_seconds=1.0, clock=clock)
    clock.now = 5.0  # idle since construction for longer than idle_seconds
    warmup.start()
    warmup.join(30)
    assert ran == [0, 1, 2]
    assert not warmup.is_alive()


def test_no_step_while_a_page_runs_nor_until_it_has_been_idle():
    ran, steps = recorder()
    clock = Clock()
    warmup = Warmup(steps, idle_seconds=1.0, clock=clock)
    with warmup.busy():
        clock.now = 100.0  # long past idle_seconds, but a page run is open
        warmup.start()
        warmup.join(0.3)
        assert ran == [] and warmup.is_alive()
    warmup.join(0.3)  # the run just ended at t=100: not idle yet
    assert ran == [] and warmup.is_alive()
    clock.now = 101.5
    warmup.join(30)  # the thread re-reads the clock within idle_seconds of real time
    assert ran == [0, 1, 2]


def test_a_page_run_between_steps_holds_the_next_step():
    clock = Clock()
    ran: list[int] = []
    page = threading.Event()

    def first() -> None:
        ran.append(0)
        page.wait(30)  # the test opens a page run while this step runs

    warmup = Warmup([first, lambda: ran.append(1)], idle_seconds=1.0, clock=clock)
    clock.now = 5.0
    warmup.start()
    with warmup.busy():
        page.set()
        warmup.join(0.3)
        assert ran == [0]
    warmup.join(0.3)
    assert ran == [0]  # idle for 0 s of the fake clock
    clock.now = 10.0
    warmup.join(30)
    assert ran == [0, 1]


def test_hurry_runs_the_remaining_steps_at_once():
    ran, steps = recorder()
    warmup = Warmup(steps, idle_seconds=3600.0)  # the real clock: never idle long enough in this test
    warmup.start()
    with warmup.busy():
        warmup.join(0.3)
        assert ran == []
        warmup.hurry()  # an evaluation needs the stack, pages running or not
        warmup.join(30)
    assert ran == [0, 1, 2]


def test_start_is_once():
    ran, steps = recorder()
    warmup = Warmup(steps, idle_seconds=0.0)
    assert not warmup.started
    warmup.start()
    warmup.start()
    warmup.join(30)
    assert warmup.started and ran == [0, 1, 2]
