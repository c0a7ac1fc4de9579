"""A folder written whole or not at all: the one way mixlab publishes a folder (an export, a demo lab).

The folder is written into a hidden temp folder beside its target, ``.<name>.mixlab-tmp-<pid>-…``, and
moved into place with ``os.replace`` only when complete; a folder already there is moved aside first
(``.<name>.mixlab-old-<pid>``), put back if the move fails, and removed only once the new one is in
place. Temp folders left by a process that died are removed by the next writer to the same place
(the pid in the name says whose they are; :class:`mixlab.owner.Owner` says whether it still runs).
Errors are the OS's (``OSError``): callers say what they were writing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mixlab.owner import Owner

TMP = ".mixlab-tmp-"
OLD = ".mixlab-old-"


def remove_stale(out: Path) -> list[Path]:
    """Remove temp/old folders that a writer of ``out`` left behind when its process died."""
    removed = []
    for p in out.parent.glob(f".{out.name}.mixlab-*"):
        tag = p.name[len(out.name) + 1 :]
        for prefix in (TMP, OLD):
            if tag.startswith(prefix):
                pid = tag[len(prefix) :].split("-", 1)[0]
                if pid.isdigit() and not Owner(int(pid)).alive() and p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
    return removed


def stage(out: Path) -> Path:
    """A new temp folder beside ``out`` to write into (readable by others, as the published folder will be),
    after removing the leftovers of dead writers; ``out``'s parent is created if missing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP}{os.getpid()}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should not be
    return tmp


def publish(tmp: Path, out: Path) -> Path:
    """Move the finished ``tmp`` into place at ``out``; a folder already at ``out`` is removed only after
    the new one is in place, and is put back if the move fails (the OSError is raised)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}{OLD}{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)  # the earlier folder goes back where it was
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def discard(tmp: Path) -> None:
    """Remove an unfinished temp folder."""
    shutil.rmtree(tmp, ignore_errors=True)
