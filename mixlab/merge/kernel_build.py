"""The fused kernels' build, run as a child process (``python -m mixlab.merge.kernel_build COMPILER ARGS…``)
so that it can be bounded and cannot leak: see :func:`mixlab.merge.fused._build`.

The compiler runs in a process group of its own (the driver, cc1plus, as and ld all stay in it); a watchdog
thread here kills that group in one signal when the parent dies (this process is re-parented), so stopping
the app server never leaves a compiler behind. The parent kills this process's tree on a timeout or an
interrupt (:func:`mixlab.owner.kill_tree`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time


def _watch(parent: int, compiler: subprocess.Popen) -> None:
    while True:
        if os.getppid() != parent:
            try:
                os.killpg(compiler.pid, signal.SIGKILL)  # one signal for the whole group: nothing left half-killed
            except ProcessLookupError:
                pass
            os._exit(1)
        time.sleep(0.2)


def main(command: list[str]) -> int:
    parent = os.getppid()
    compiler = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=_watch, args=(parent, compiler), daemon=True).start()
    return compiler.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
