"""The fused kernels' build, run as a child process (``python -m mixlab.merge.kernel_build NAME FOLDER
SOURCE FUNCTIONS CFLAGS``) so that it can be bounded and cannot leak: see :func:`mixlab.merge.fused._build`.

ninja runs each compile in a process group of its own, so the build cannot be killed as one group: its
whole process tree is frozen, then killed (:func:`kill_tree`). A watchdog thread here does that when the
parent dies (this process is re-parented), so stopping the app server never leaves a compiler behind; the
parent does it on a timeout or an interrupt.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import psutil


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and every process below it: freeze them first (so none spawns more), then kill."""
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
    for p in [*seen.values(), top]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            kill_tree(os.getpid())
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    name, folder, source, functions, cflags = argv
    threading.Thread(target=_watch, args=(os.getppid(),), daemon=True).start()
    from torch.utils.cpp_extension import load_inline

    with open(source) as f:
        cpp = f.read()
    load_inline(
        name=name,
        cpp_sources=cpp,
        functions=functions.split(","),
        extra_cflags=cflags.split(","),
        extra_ldflags=["-fopenmp"],
        build_directory=folder,
        verbose=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
