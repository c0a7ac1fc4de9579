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

A lab can also ship its summaries (:data:`SHIPPED`, ``<lab>/summaries.json``, written by :func:`ship`: every
demo build does): a fresh cache — the first ``streamlit run app.py`` of a fresh clone — then draws the first
page without the model stack too. The shipped file is only read, under the same key (which names no path, so
it holds wherever the lab is), and a summary whose key does not match it is computed as before.
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

from mixlab.errors import CacheError, MixlabError

SHIPPED = "summaries.json"  # in the lab folder: {name: {"key": ..., "value": ...}}, read-only for the app
FORMAT = 1  # bump when what a summary holds changes: older files are recomputed, never misread
MAX_BYTES = 16 << 20  # a summaries file is kilobytes (demo-recycle's, 15 checkpoints: 12 KB); a bigger one is not read
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


def _held(path: Path | None, key: dict, name: str | None = None):
    """The value kept in the JSON file ``path`` (under ``name`` in a shipped file) if its key is ``key``, else
    None: a missing, unreadable or stale file is not an error, the summary is computed instead."""
    if path is None:
        return None
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        held = json.loads(path.read_text(encoding="utf-8"))
        if name is not None:
            held = held.get(name) if isinstance(held, dict) else None
        if isinstance(held, dict) and held.get("key") == key and isinstance(held.get("value"), dict):
            return held["value"]
    except (OSError, ValueError, RecursionError):
        pass
    return None


def _shipped(engine) -> Path | None:
    try:
        return engine.lab.inside(SHIPPED, "the lab's shipped page summaries")
    except MixlabError:  # a link out of the lab: not read
        return None


def kept(engine, name: str, compute: Callable[[], dict]) -> dict:
    """The summary ``name`` of the engine's lab: read from its file beside the cache, or from the lab's
    shipped ``summaries.json``, when the key matches; else computed (with the model stack) and written beside
    the cache atomically. A file that is unreadable or stale is recomputed."""
    key = _key(engine, name)
    path = _file(engine, name)
    value = _held(path, key)
    if value is None:
        value = _held(_shipped(engine), key, name)
    if value is not None:
        return value
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
    return kept(engine, "lab", lambda: _lab(engine))


def _lab(engine) -> dict:
    """The Lab page's summary, computed from the loaded checkpoints."""
    base, experts = engine.base, engine.experts
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
        "kept_at_base": [[k, n] for k, n in engine.excluded_tensors()],
        "warnings": [w for w in engine.warnings() if w not in engine.store.notices],
    }


def expert_diagnostics(engine) -> dict:
    """:func:`mixlab.diagnostics.interference` over the lab's experts (the Experts page), kept like
    :func:`lab_summary`: the same dict, its tables as DataFrames again."""
    value = kept(engine, "experts", lambda: _experts(engine))
    return {k: _frame(v) if isinstance(v, dict) else v for k, v in value.items()}


def _experts(engine) -> dict:
    from mixlab.diagnostics import interference

    d = interference(engine.experts)
    return {k: v.to_dict(orient="split") if isinstance(v, pd.DataFrame) else v for k, v in d.items()}


COMPUTE = {"lab": _lab, "experts": _experts}  # every summary a page shows, by name


def ship(root: Path) -> Path:
    """Write the lab at ``root``'s page summaries to ``<root>/summaries.json`` (every one in :data:`COMPUTE`,
    computed from its checkpoints, with its key): the file a fresh cache reads them from (:func:`kept`).
    Every demo build calls it; written atomically."""
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    engine = Engine(load_lab(root), Store(":memory:"), device="cpu")
    shipped = {name: {"key": _key(engine, name), "value": compute(engine)} for name, compute in COMPUTE.items()}
    path = engine.lab.inside(SHIPPED, "the lab's shipped page summaries")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(shipped, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)  # a file of the lab, read by whoever opens it (mkstemp makes it private)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _frame(split: dict) -> pd.DataFrame:
    return pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
