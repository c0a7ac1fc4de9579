"""What the pages show about a lab's checkpoints, kept beside its cache so a page draws it without the
model stack.

The Lab page shows the base's size, each expert's kind, rank and the tensors it changes, the tensors every
merge keeps at the base and the doubts about the experts; the Experts page shows the interference
diagnostics. Computing them loads the task vectors (torch, and transformers for the live names), which a
page that only shows a lab should not wait for. So each is computed once and written as JSON beside the
lab's cache (``<lab>/.mixlab/`` for a lab's own cache), under a key made of the checkpoints' content
fingerprints (read from the files alone: :func:`mixlab.checkpoint.folder_fingerprint`), the lab's merge
exclusions and the transformers version that names the tensors. A checkpoint that changes makes a new key,
and the summary is computed afresh; a cache that cannot be written (read-only, in memory) just computes it
each time, as before.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mixlab.errors import CacheError

FORMAT = 1  # bump when what a summary holds changes: older files are recomputed, never misread
COUNT_BYTES = 2**30  # full experts of a base under 1 GiB have their changed tensors counted


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _key(engine, name: str) -> dict:
    merge = engine.lab.manifest.merge
    return {
        "format": FORMAT,
        "what": name,
        "lab": engine.lab.root.as_posix(),
        "models": engine.models_fp,
        "experts": engine.names,
        "preset": merge.preset,
        "exclude": list(merge.exclude),
        "transformers": _version("transformers"),  # it decides the live tensor names (mixlab.names)
    }


def _file(engine, name: str) -> Path | None:
    """Where the summary ``name`` of this lab is kept, or None for a cache with no folder (in memory)."""
    tag = hashlib.sha256(engine.lab.root.as_posix().encode()).hexdigest()[:12]
    try:
        return engine.store.beside(f"pages-{name}-{tag}.json")
    except CacheError:
        return None


def kept(engine, name: str, compute: Callable[[], dict]) -> dict:
    """The summary ``name`` of the engine's lab: read from its file when its key matches, else computed
    (with the model stack) and written there atomically. A file that is unreadable or stale is recomputed."""
    key = _key(engine, name)
    path = _file(engine, name)
    if path is not None:
        try:
            held = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(held, dict) and held.get("key") == key:
                return held["value"]
        except (OSError, ValueError, KeyError):
            pass
    value = compute()
    if path is not None and not engine.store.readonly:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "value": value}, f)
            os.replace(tmp, path)
        except OSError:  # a folder we cannot write: the summary is computed again next time
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return value


def lab_summary(engine) -> dict:
    """What the Lab page shows about the checkpoints (loads the experts when not kept yet, which also
    checks them: a bad expert fails here). Keys: ``base`` (n_params, n_tensors, nbytes, fingerprint),
    ``experts`` (one dict each: name, kind, rank, n_params, n_tensors, changed — None where not counted —
    and fingerprint), ``kept_at_base`` ([tensor, parameters] pairs), ``warnings``."""

    def compute() -> dict:
        base, experts = engine.base, engine.experts
        kept_at_base = [[k, n] for k, n in engine.excluded_tensors()]
        count = base.nbytes() < COUNT_BYTES
        return {
            "base": {
                "n_params": base.n_params,
                "n_tensors": len(base.keys()),
                "nbytes": base.nbytes(),
                "fingerprint": base.fingerprint,
            },
            "experts": [
                {
                    "name": e.name,
                    "kind": e.kind,
                    "rank": e.rank,
                    "n_params": e.n_params,
                    "n_tensors": len(e.keys()),
                    # reads every tensor an expert touches: LoRA factors are small; a large full fine-tune
                    # is left to `mixlab info`
                    "changed": len(e.changed) if e.kind == "lora" or count else None,
                    "fingerprint": e.fingerprint,
                }
                for e in experts
            ],
            "kept_at_base": kept_at_base,
            "warnings": [w for w in engine.warnings() if w not in engine.store.notices],
        }

    return kept(engine, "lab", compute)


def expert_diagnostics(engine) -> dict:
    """:func:`mixlab.diagnostics.interference` over the lab's experts (the Experts page), kept like
    :func:`lab_summary`: the same dict, its tables as DataFrames again."""

    def compute() -> dict:
        from mixlab.diagnostics import interference

        d = interference(engine.experts)
        return {k: v.to_dict(orient="split") if isinstance(v, pd.DataFrame) else v for k, v in d.items()}

    value = kept(engine, "experts", compute)
    return {k: _frame(v) if isinstance(v, dict) else v for k, v in value.items()}


def _frame(split: dict) -> pd.DataFrame:
    return pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
