"""Interference between experts, read off their task vectors: per-layer norms, pairwise cosine
similarity, and the fraction of entries whose signs conflict (what TIES's sign election resolves)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from mixlab.experts import TaskVector

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_of(key: str) -> str:
    """'model.layers.3.mlp.up_proj.weight' → 'layer 3'; other tensors keep their module name."""
    m = _LAYER.search(key)
    return f"layer {int(m.group(1))}" if m else key.removesuffix(".weight")


def sign_conflicts(deltas: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(entries where ≥ 2 task vectors are non-zero, of those, entries whose signs disagree)."""
    signs = torch.stack([torch.sign(d.float()).reshape(-1) for d in deltas])  # (K, n)
    nonzero = (signs != 0).sum(0)
    both = nonzero >= 2
    conflict = both & (signs.max(0).values > 0) & (signs.min(0).values < 0)
    return int(both.sum()), int(conflict.sum())


def interference(experts: Sequence[TaskVector]) -> dict[str, pd.DataFrame]:
    """Diagnostics over the experts' task vectors (dense float32, one tensor at a time).

    Returns ``norms`` (expert × layer L2 norms), ``cosine`` (expert × expert cosine similarity of the
    whole flattened task vectors) and ``conflicts`` (per layer: entries where ≥2 experts are non-zero,
    and the fraction of those with disagreeing signs).
    """
    names = [e.name for e in experts]
    keys = sorted(set().union(*(e.keys() for e in experts)), key=lambda k: (layer_of(k), k))
    layers = list(dict.fromkeys(layer_of(k) for k in keys))
    sq = pd.DataFrame(0.0, index=names, columns=layers)
    dots = np.zeros((len(experts), len(experts)))
    overlap = dict.fromkeys(layers, 0)
    conflict = dict.fromkeys(layers, 0)
    for key in keys:
        ds = []
        for e in experts:
            d = e.delta(key)
            ds.append(torch.zeros(e.base.shape(key)) if d is None else d.float())
        flat = torch.stack([d.reshape(-1) for d in ds]).double()  # (K, n)
        dots += (flat @ flat.T).numpy()
        layer = layer_of(key)
        sq[layer] += (flat**2).sum(1).numpy()
        both, bad = sign_conflicts(ds)
        overlap[layer] += both
        conflict[layer] += bad
    norm = np.sqrt(np.diag(dots))
    cosine = dots / np.where(np.outer(norm, norm) > 0, np.outer(norm, norm), 1.0)
    conflicts = pd.DataFrame(
        {
            "layer": layers,
            "overlapping": [overlap[layer] for layer in layers],
            "conflict_fraction": [conflict[layer] / overlap[layer] if overlap[layer] else np.nan for layer in layers],
        }
    )
    return {"norms": np.sqrt(sq), "cosine": pd.DataFrame(cosine, index=names, columns=names), "conflicts": conflicts}
