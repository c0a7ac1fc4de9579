"""Content fingerprints of the files a score depends on: a file's signature (one stat: which file, size,
mtime, ctime), its sha256 memoised per signature, and a checkpoint's or LoRA adapter's fingerprint from its
files' bytes. Pure file hashing: no tensor is read and nothing imports torch."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

_FINGERPRINTS: dict[tuple, str] = {}


def file_signature(path: Path) -> tuple:
    """What changes whenever a file's bytes may have changed: which file (device, inode), its size, mtime
    and ctime (a rewrite that keeps size and mtime still moves ctime, which no user call can set back).
    One stat: cheap enough to ask before every score."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def folder_signature(folder: Path) -> tuple:
    """:func:`file_signature` of every file in a folder, in name order."""
    return tuple(file_signature(p) for p in sorted(Path(folder).iterdir()) if p.is_file())


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, memoised per :func:`file_signature` for this process."""
    memo = file_signature(path)
    if memo not in _FINGERPRINTS:
        with open(path, "rb") as f:
            _FINGERPRINTS[memo] = hashlib.file_digest(f, "sha256").hexdigest()
    return _FINGERPRINTS[memo]


def files_fingerprint(files: Sequence[Path]) -> str:
    """A checkpoint's fingerprint (:attr:`Checkpoint.fingerprint`): sha256 over its files' names and bytes."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_fingerprint(f).encode())
    return h.hexdigest()


def lora_fingerprint(config_text: str, weights_sha256: bytes) -> str:
    """A LoRA adapter's fingerprint (:attr:`LoraTaskVector.fingerprint`): its config's text and the sha256
    of its weights file's bytes."""
    return hashlib.sha256(hashlib.sha256(config_text.encode()).digest() + weights_sha256).hexdigest()
