"""The search space: the box a sampler sees and its map onto the simplex, dense or sparse, the grid's lattice,
and the box points of starting mixtures (see :mod:`mixlab.search`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mixlab.errors import MixlabError
from mixlab.simplex import lattice, validate_weights

EPS = 1e-6
SPACES = ("simplex", "sparse")  # the dense box (Dirichlet(1)) and the spike-and-slab box (module docstring)
ZERO_BAND = 1 / 3  # the sparse box's slab u_i ∈ [1, 1 + ZERO_BAND] that means w_i = 0: P(w_i = 0) = 1/4
GRID_M = 8  # the grid sampler's lattice: steps of 1/8 (45 points for K=3)


def to_weights(u: Sequence[float]) -> list[float]:
    """A point of the box ``[EPS, 1]^K`` as mixture weights (see the module docstring)."""
    e = -np.log(np.clip(np.asarray(u, dtype=float), EPS, 1.0))
    if e.sum() <= 0:  # every u_i = 1: the centre
        return [1.0 / len(e)] * len(e)
    return [float(x) for x in e / e.sum()]


def to_sparse_weights(u: Sequence[float]) -> list[float]:
    """A point of the sparse box ``[EPS, 1 + ZERO_BAND]^K`` as mixture weights: ``u_i ≥ 1`` is weight zero, the
    rest as :func:`to_weights` (see the module docstring)."""
    return to_weights(np.minimum(np.asarray(u, dtype=float), 1.0))


def box_bounds(space: str) -> tuple[float, float]:
    """The range of each box coordinate ``u_i`` in ``space``."""
    if space not in SPACES:
        raise MixlabError(f"search space must be one of {', '.join(SPACES)}, got {space!r}")
    return (EPS, 1.0) if space == "simplex" else (EPS, 1.0 + ZERO_BAND)


def box_point(weights: Sequence[float], space: str = "simplex") -> list[float]:
    """A box point that ``space``'s map sends to ``weights`` (a starting point for a sampler): ``u_i =
    exp(−c·w_i)`` with ``c = min(K, −log EPS)`` (an average weight 1/K sits at u = 1/e, mid-box in log scale);
    a zero weight is ``u_i = 1`` in the dense box (its face) and the middle of the zero slab in the sparse one."""
    box_bounds(space)
    w = np.asarray(validate_weights(weights, normalize=True), dtype=float)
    c = min(len(w), -math.log(EPS))
    u = np.exp(-c * w)
    if space == "sparse":
        u = np.where(w == 0, 1.0 + ZERO_BAND / 2, u)
    return [float(x) for x in u]


def suggest_weights(trial, k: int, sampler: str, space: str = "simplex") -> list[float]:
    """A trial's mixture: a lattice point for the grid sampler, else the box point of ``space`` mapped onto the
    simplex (:func:`to_weights`, :func:`to_sparse_weights`)."""
    if sampler == "grid":
        points = lattice(k, GRID_M)
        return [float(x) for x in points[trial.suggest_categorical("point", list(range(len(points))))]]
    lo, hi = box_bounds(space)
    u = [trial.suggest_float(f"u{i}", lo, hi) for i in range(k)]
    return to_weights(u) if space == "simplex" else to_sparse_weights(u)


def start_params(weights: Sequence[float], sampler: str, space: str = "simplex") -> dict:
    """The parameters of the trial that evaluates ``weights`` first: its box point, or for the grid sampler
    the nearest lattice point (L1)."""
    if sampler == "grid":
        points = np.asarray(lattice(len(weights), GRID_M), dtype=float)
        w = np.asarray(validate_weights(weights, normalize=True))
        return {"point": int(np.abs(points - w).sum(axis=1).argmin())}
    return {f"u{i}": u for i, u in enumerate(box_point(weights, space))}
