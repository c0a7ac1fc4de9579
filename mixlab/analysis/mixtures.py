"""Which cached mixture is which: weights as keys, the same point, the nearest point."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixlab.simplex import ROUND


def weights_key(weights: dict | None, names: Sequence[str]) -> tuple | None:
    if weights is None:
        return None
    return tuple(round(float(weights.get(n, 0.0)), ROUND) for n in names)


MATCH = 1e-3  # two mixtures are the same point when every weight agrees this closely (0.3334 ≈ 1/3)


def same_mixture(weights: Sequence[float], candidates: Sequence[Sequence[float]]) -> int | None:
    """Index of the candidate that is the same mixture as ``weights`` (every weight within :data:`MATCH`;
    the nearest such, by the largest difference), or None. Lattice points are ≥ 1/64 apart, so a weight
    written to 3–4 decimals in a lab matches its lattice point and no other."""
    if len(candidates) == 0:
        return None
    d = np.abs(np.asarray(candidates, dtype=float) - np.asarray(weights, dtype=float)).max(axis=1)
    i = int(np.argmin(d))
    return i if d[i] <= MATCH else None


def nearest(weights: Sequence[float], candidates: np.ndarray) -> tuple[int, float]:
    """Index of the candidate mixture nearest to ``weights`` (L1), and that distance."""
    d = np.abs(np.asarray(candidates, dtype=float) - np.asarray(weights, dtype=float)).sum(axis=1)
    i = int(np.argmin(d))
    return i, float(d[i])
