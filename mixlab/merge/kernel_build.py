"""The fused kernels' build, run as a child process (``python -m mixlab.merge.kernel_build NAME FOLDER
SOURCE FUNCTIONS CFLAGS``) so that it can be bounded and cannot leak: see :func:`mixlab.merge.fused._build`.

ninja runs each compile in a process group of its own, so the build cannot be killed as one group: its
whole process tree is frozen, then killed (:func:`mixlab.owner.kill_tree`). A watchdog thread here does that when the
parent dies (this process is re-parented), so stopping the app server never leaves a compiler behind; the
parent does it on a timeout or an interrupt.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from mixlab.owner import kill_tree


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
