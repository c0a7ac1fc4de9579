"""Disk → disk merges: :func:`iter_merged` streams a merge one tensor at a time from the checkpoints,
and :func:`save_merged` writes it as a Hugging Face model folder (safetensors shards, bounded memory,
atomic: see :mod:`mixlab.merge.output`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mixlab.checkpoint import Checkpoint
from mixlab.experts import TaskVector
from mixlab.lazy import safetensors_torch, torch
from mixlab.merge import output
from mixlab.merge.methods import MergeSpec, active, generator_for, is_excluded

if TYPE_CHECKING:
    from torch import Tensor


def iter_merged(base: Checkpoint, experts: Sequence[TaskVector], spec: MergeSpec) -> Iterator[tuple[str, Tensor]]:
    """Yield (key, merged tensor in the base's dtype) for every base tensor, one at a time."""
    method, params = spec.resolved()
    chosen = active(experts, spec.weights)
    changes = [set(e.keys()) for e, _ in chosen]
    for key in base.keys():
        theta0 = base.get(key)
        if not any(key in c for c in changes) or is_excluded(key, spec.exclude) or not theta0.is_floating_point():
            yield key, theta0
            continue
        deltas, gens = [], []
        for e, _ in chosen:
            d = e.delta(key, theta0)
            deltas.append(torch.zeros(theta0.shape, dtype=torch.float32) if d is None else d)
            gens.append(generator_for(params["seed"], e.name, key) if method.seeded else None)
        w = [w for _, w in chosen]
        yield key, method.merge(theta0.float(), deltas, w, params, gens).to(theta0.dtype)


def save_merged(
    base: Checkpoint,
    experts: Sequence[TaskVector],
    spec: MergeSpec,
    out: Path,
    *,
    overwrite: bool = False,
    shard_bytes: int = 2 * 1024**3,
    progress: Callable[[int, int], None] | None = None,
    provenance: dict | None = None,
    within: Path | None = None,
) -> Path:
    """Stream a merge into a Hugging Face model folder: the base's model files (config, generation config,
    tokenizer: :meth:`Checkpoint.model_files`, never code) plus safetensors shards of at most
    ``shard_bytes`` (memory stays bounded by one shard), each tensor under the name the base's files give it. The folder appears only when complete; on any
    error nothing is left behind."""
    out, tmp = output.start(out, overwrite, within)
    try:
        for f in base.model_files():
            shutil.copyfile(f, tmp / f.name)
        shards: list[list[str]] = []
        pending: dict[str, Tensor] = {}
        size = total_size = 0

        def flush() -> None:
            safetensors_torch.save_file(
                pending, str(tmp / f"shard-{len(shards) + 1}.safetensors"), metadata={"format": "pt"}
            )
            shards.append(list(pending))
            pending.clear()

        total = len(base.keys())
        for i, (key, t) in enumerate(iter_merged(base, experts, spec)):
            nbytes = t.numel() * t.element_size()
            if pending and size + nbytes > shard_bytes:
                flush()
                size = 0
            pending[base.disk_name(key)] = t.contiguous()  # stored as the base stores it: loads like the base
            size += nbytes
            total_size += nbytes
            if progress:
                progress(i + 1, total)
        flush()
        n = len(shards)
        if n == 1:
            os.replace(tmp / "shard-1.safetensors", tmp / "model.safetensors")
        else:
            weight_map = {}
            for j, keys in enumerate(shards, start=1):
                name = f"model-{j:05d}-of-{n:05d}.safetensors"
                os.replace(tmp / f"shard-{j}.safetensors", tmp / name)
                weight_map.update(dict.fromkeys(keys, name))
            index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return output.finish(tmp, out, provenance or {})
    except BaseException:
        output.abort(tmp)
        raise
