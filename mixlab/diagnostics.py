"""Interference between experts, read off their task vectors: per-layer norms, pairwise cosine
similarity, and the fraction of entries whose signs conflict (what TIES's sign election resolves) —
each statistic beside its chance level, so a number is read against what unrelated experts would give:
signs that are fair coins conflict on an entry that m experts change with probability 1 − 2·0.5^m
(0.75 at m = 3, not alarming), and two random directions in d dimensions have |cosine| < 1.96/√d
95% of the time."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.experts import TaskVector
from mixlab.lazy import torch

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_of(key: str) -> str:
    """'model.layers.3.mlp.up_proj.weight' → 'layer 3'; other tensors keep their module name."""
    m = _LAYER.search(key)
    return f"layer {int(m.group(1))}" if m else key.removesuffix(".weight")


def sign_conflicts(deltas: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(entries where ≥ 2 task vectors are non-zero, of those, entries whose signs disagree)."""
    both, bad, _ = sign_conflicts_and_chance(deltas)
    return both, bad


def sign_conflicts_and_chance(deltas: Sequence[torch.Tensor]) -> tuple[int, int, float]:
    """:func:`sign_conflicts` and the conflicts expected by chance over the same entries: Σ (1 − 2·0.5^m)
    over the entries that m ≥ 2 task vectors change, if each sign were a fair coin."""
    signs = torch.stack([torch.sign(d.float()).reshape(-1) for d in deltas])  # (K, n)
    nonzero = (signs != 0).sum(0)
    both = nonzero >= 2
    conflict = both & (signs.max(0).values > 0) & (signs.min(0).values < 0)
    m = nonzero[both].double()
    chance = float((1 - 2 * torch.pow(0.5, m)).sum())
    return int(both.sum()), int(conflict.sum()), chance


def cosine_chance(d: int, z: float = 1.959963984540054) -> float:
    """|cosine| below which two independent random directions in d dimensions fall 95% of the time
    (cosine ≈ N(0, 1/d) for large d)."""
    return z / np.sqrt(d) if d > 0 else float("nan")


def interference(experts: Sequence[TaskVector]) -> dict[str, pd.DataFrame]:
    """Diagnostics over the experts' task vectors (dense float32, one tensor at a time).

    Returns ``norms`` (expert × layer L2 norms), ``cosine`` (expert × expert cosine similarity of the
    whole flattened task vectors), ``conflicts`` (per layer: entries where ≥2 experts are non-zero, the
    fraction of those with disagreeing signs, and ``chance_fraction``, the fraction fair-coin signs would
    give on the same entries), ``dims`` (entries in a flattened task vector) and ``cosine_chance``
    (:func:`cosine_chance` of ``dims``).
    """
    names = [e.name for e in experts]
    keys = sorted(set().union(*(e.keys() for e in experts)), key=lambda k: (layer_of(k), k))
    layers = list(dict.fromkeys(layer_of(k) for k in keys))
    sq = pd.DataFrame(0.0, index=names, columns=layers)
    dots = np.zeros((len(experts), len(experts)))
    overlap = dict.fromkeys(layers, 0)
    conflict = dict.fromkeys(layers, 0)
    chance = dict.fromkeys(layers, 0.0)
    dims = 0
    for key in keys:
        ds = []
        for e in experts:
            d = e.delta(key)
            ds.append(torch.zeros(e.base.shape(key)) if d is None else d.float())
        flat = torch.stack([d.reshape(-1) for d in ds]).double()  # (K, n)
        dots += (flat @ flat.T).numpy()
        layer = layer_of(key)
        sq[layer] += (flat**2).sum(1).numpy()
        both, bad, expected = sign_conflicts_and_chance(ds)
        overlap[layer] += both
        conflict[layer] += bad
        chance[layer] += expected
        dims += flat.shape[1]
    norm = np.sqrt(np.diag(dots))
    cosine = dots / np.where(np.outer(norm, norm) > 0, np.outer(norm, norm), 1.0)
    conflicts = pd.DataFrame(
        {
            "layer": layers,
            "overlapping": [overlap[layer] for layer in layers],
            "conflict_fraction": [conflict[layer] / overlap[layer] if overlap[layer] else np.nan for layer in layers],
            "chance_fraction": [chance[layer] / overlap[layer] if overlap[layer] else np.nan for layer in layers],
        }
    )
    return {
        "norms": np.sqrt(sq),
        "cosine": pd.DataFrame(cosine, index=names, columns=names),
        "conflicts": conflicts,
        "cosine_chance": cosine_chance(dims),
        "dims": dims,
    }
