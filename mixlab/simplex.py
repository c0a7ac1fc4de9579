"""Points of the mixture simplex Δ^{K-1}: validation, parsing, lattice grids, the seed paper's
presets, seeded Dirichlet samples, and 2-D coordinates for plotting."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from mixlab.errors import MixlabError, MixtureWeightsError

TOLERANCE = 1e-6  # |Σw − 1| allowed before a mixture is rejected (for K ≤ 2; see tolerance())
ROUND = 6  # decimals kept in cache keys and displays
MAX_SEED = 2**32 - 1  # numpy's generators and optuna's samplers take seeds in [0, 2**32)


def tolerance(k: int) -> float:
    """|Σw − 1| allowed for K weights: 1e-6, or what rounding each weight to ROUND decimals can add up to,
    so every mixture mixlab writes (``as_dict()``, recycle.json, search --json) reads back as written."""
    return max(TOLERANCE, k * 0.5 * 10.0**-ROUND)


@dataclass(frozen=True)
class Mixture:
    """Weights over named experts, validated to lie on the simplex.

    ``groups``: a merge whose weights differ per layer group (:mod:`mixlab.merge.groups`), one point of the
    simplex per group, shallowest first; ``weights`` is then their mean (what a plot places it at). None: the
    same weights everywhere (every mixture before layer groups, and their cache keys)."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    groups: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.weights):
            raise MixtureWeightsError(
                f"mixture has {len(self.weights)} weights for {len(self.names)} experts {list(self.names)}"
            )
        validate_weights(self.weights)
        for g, row in enumerate(self.groups or ()):
            if len(row) != len(self.names):
                raise MixtureWeightsError(f"layer group {g} has {len(row)} weights for {len(self.names)} experts")
            validate_weights(row)

    @classmethod
    def of(cls, names: Sequence[str], weights: Sequence[float], normalize: bool = False) -> Mixture:
        return cls(tuple(names), tuple(validate_weights(weights, normalize=normalize)))

    @classmethod
    def grouped(cls, names: Sequence[str], rows: Sequence[Sequence[float]], normalize: bool = False) -> Mixture:
        """A merge with one point of the simplex per layer group (``rows``, shallowest group first); one row is
        a plain mixture."""
        groups = tuple(tuple(validate_weights(r, len(names), normalize=normalize)) for r in rows)
        if not groups:
            raise MixtureWeightsError("a grouped mixture needs at least one layer group")
        if all(g == groups[0] for g in groups):  # the same weights everywhere: a plain mixture (and its key)
            return cls(tuple(names), groups[0])
        mean = validate_weights([math.fsum(col) / len(groups) for col in zip(*groups)], normalize=True)
        return cls(tuple(names), tuple(mean), groups)

    def group_dict(self) -> dict[str, list[float]] | None:
        """Each expert's weight in each layer group (rounded as :meth:`as_dict`), or None for a plain mixture."""
        if self.groups is None:
            return None
        return {n: [round(row[i], ROUND) for row in self.groups] for i, n in enumerate(self.names)}

    def as_dict(self) -> dict[str, float]:
        return {n: round(w, ROUND) for n, w in zip(self.names, self.weights)}

    def label(self) -> str:
        if self.groups is not None:
            return " | ".join(", ".join(f"{n}={w:.3g}" for n, w in zip(self.names, r)) for r in self.groups)
        return ", ".join(f"{n}={w:.3g}" for n, w in zip(self.names, self.weights))


def validate_weights(weights: Sequence[float], k: int | None = None, normalize: bool = False) -> list[float]:
    """Check that ``weights`` is a point of the simplex and return it as floats.

    Args:
        weights: one weight per expert.
        k: the expected number of weights, if known.
        normalize: divide by the sum instead of requiring Σw = 1 (weights must still be ≥ 0, Σ > 0).

    Raises:
        MixtureWeightsError: wrong length, non-finite or negative entries, or Σw ≠ 1.
    """
    w = [float(x) for x in weights]
    if k is not None and len(w) != k:
        raise MixtureWeightsError(f"expected {k} weights (one per expert), got {len(w)}: {w}")
    if not w:
        raise MixtureWeightsError("mixture weights are empty")
    bad = [x for x in w if not math.isfinite(x)]
    if bad:
        raise MixtureWeightsError(f"mixture weights must be finite, got {w}")
    if min(w) < 0:
        negative = ", ".join(f"{x:g}" for x in w if x < 0)
        raise MixtureWeightsError(f"mixture weights must be ≥ 0, got {negative} in {w}")
    if normalize:
        top = max(w)  # scaled by the largest first: weights near the float maximum sum without overflowing
        if top <= 0:
            raise MixtureWeightsError(f"cannot normalise mixture weights that sum to 0: {w}")
        scaled = [x / top for x in w]
        total = math.fsum(scaled)
        return [x / total for x in scaled]
    total = math.fsum(w)
    if abs(total - 1.0) > tolerance(len(w)):
        raise MixtureWeightsError(
            f"mixture weights must sum to 1 (±{tolerance(len(w)):.2g}), got Σ={total:.9g} for {w}; "
            "pass normalize=True (CLI: --normalize) to rescale them"
        )
    return w


def parse_weights(text: str, names: Sequence[str], normalize: bool = False) -> Mixture:
    """Parse ``"0.2,0.3,0.5"`` (in expert order) or ``"ocr=0.2,chart=0.8"`` (missing names = 0)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise MixtureWeightsError(f"no weights in {text!r}; write e.g. 0.5,0.5 or {names[0]}=1")
    if all("=" in p for p in parts):
        by_name: dict[str, float] = {}
        for p in parts:
            name, _, value = p.partition("=")
            name = name.strip()
            if name not in names:
                raise MixtureWeightsError(f"unknown expert {name!r} in weights {text!r}; experts: {', '.join(names)}")
            if name in by_name:
                raise MixtureWeightsError(f"expert {name!r} appears twice in weights {text!r}")
            by_name[name] = _number(value, text)
        values = [by_name.get(n, 0.0) for n in names]
    elif any("=" in p for p in parts):
        raise MixtureWeightsError(f"mix of named and positional weights in {text!r}; use one form")
    else:
        values = [_number(p, text) for p in parts]
        if len(values) != len(names):
            raise MixtureWeightsError(
                f"{len(values)} weights in {text!r} for {len(names)} experts ({', '.join(names)})"
            )
    return Mixture.of(names, values, normalize=normalize)


def weight_value(value) -> float:
    """A weight as written: a number, or a fraction like ``"1/3"`` (exact thirds sum to 1)."""
    if isinstance(value, str) and "/" in value:
        return float(Fraction(value.strip()))
    return float(value)


def _number(value: str, text: str) -> float:
    try:
        return weight_value(value)
    except (ValueError, ZeroDivisionError):
        raise MixtureWeightsError(f"weight {value.strip()!r} in {text!r} is not a number") from None


def lattice(k: int, m: int) -> np.ndarray:
    """All points of the simplex with coordinates in steps of 1/m: C(m+K−1, K−1) rows of K."""
    if k < 1 or m < 1:
        raise MixtureWeightsError(f"lattice needs K ≥ 1 and m ≥ 1, got K={k}, m={m}")
    # stars and bars: choose K−1 bar positions among m+K−1 slots
    points = []
    for bars in itertools.combinations(range(m + k - 1), k - 1):
        edges = (-1, *bars, m + k - 1)
        points.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(points, dtype=np.float64) / m


def grid_from_step(k: int, step: float) -> np.ndarray:
    """The lattice whose step is ``step`` (1/step must be an integer, e.g. 0.1 → m=10)."""
    return lattice(k, _steps(step))


def check_seed(seed) -> int:
    """A seed for the seeded draws (here, a search's sampler, a regression's subsets): a whole number in
    [0, 2**32), else a MixlabError that says so."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise MixlabError(f"seed must be a whole number from 0 to {MAX_SEED:,} (2**32 - 1), got {seed!r}")
    return seed


def dirichlet(k: int, n: int, alpha: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n`` seeded draws from Dirichlet(alpha·1_K)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MixtureWeightsError(f"number of Dirichlet draws must be a positive integer, got {n!r}")
    if not math.isfinite(alpha) or alpha <= 0:
        raise MixtureWeightsError(f"Dirichlet concentration must be positive, got {alpha!r}")
    return np.random.default_rng(check_seed(seed)).dirichlet([alpha] * k, size=n)


def paper_grid(k: int, seed: int = 0) -> np.ndarray:
    """The seed paper's mixture presets.

    K=2: the 1/8 lattice (9 points). K=3: the 21 interior points of the 1/8 lattice plus the uniform
    mixture. K≥4: 20 seeded Dirichlet(1) draws plus the uniform mixture.
    """
    uniform = np.full((1, k), 1.0 / k)
    if k == 2:
        return lattice(2, 8)
    if k == 3:
        interior = lattice(3, 8)
        interior = interior[(interior > 0).all(axis=1)]
        return np.concatenate([interior, uniform])
    if k >= 4:
        return np.concatenate([dirichlet(k, 20, 1.0, seed), uniform])
    raise MixtureWeightsError(f"paper grid needs K ≥ 2, got {k}")


def rebalance(weights: Sequence[float], i: int, value: float) -> list[float]:
    """Set weight ``i`` to ``value`` (clipped to [0, 1]) and rescale the others so Σw = 1, keeping their
    proportions (equal shares when they were all 0): the rule behind the dashboard's sliders."""
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    new = min(max(float(value), 0.0), 1.0)
    rest = np.delete(np.arange(len(w)), i)
    if len(rest) == 0:
        return [1.0]
    others = w[rest]
    w[rest] = (1 - new) * (others / others.sum() if others.sum() > 0 else np.full(len(rest), 1 / len(rest)))
    w[i] = new
    return [float(x) for x in w]


def grid_size(k: int, step: float) -> int:
    """How many mixtures :func:`grid_from_step` makes: C(m + K − 1, K − 1) for m = 1/step."""
    return math.comb(_steps(step) + k - 1, k - 1)


def _steps(step: float) -> int:
    if not isinstance(step, (int, float)) or not math.isfinite(step) or not 0 < step <= 1:
        raise MixtureWeightsError(f"grid step must be a number in (0, 1], like 0.1, got {step!r}")
    m = round(1.0 / step)
    if abs(m * step - 1.0) > 1e-9:
        raise MixtureWeightsError(f"grid step must be 1/m for an integer m (0.5, 0.25, 0.1, …), got {step}")
    return m


def polygon_vertices(k: int) -> np.ndarray:
    """Vertices of a regular K-gon (first at the top), used to project Δ^{K-1} onto the plane."""
    angles = np.pi / 2 + 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (K, 2)


def projected_xy(weights: np.ndarray, vertices: np.ndarray | None = None) -> np.ndarray:
    """Barycentric projection of mixtures (N, K) onto a polygon with these (K, 2) vertices (default the
    regular K-gon): (N, 2)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return w @ (polygon_vertices(w.shape[1]) if vertices is None else vertices)


def separating_vertices(weights: np.ndarray, tries: int = 400, seed: int = 0) -> np.ndarray:
    """(K, 2) vertices on the unit circle, in order, chosen so that distinct mixtures land as far apart as
    possible: the regular K-gon maps symmetric mixtures (e.g. ½e₁+½e₃ and ½e₂+½e₄) onto one point. Tries
    the regular polygon and ``tries`` seeded random angle sets, keeps the one with the largest smallest
    distance between two distinct mixtures' points. Memoised on the set of mixtures: a page redrawn after
    a click asks again for the same points (the search takes ~0.13 s for 100 mixtures)."""
    w = np.unique(np.round(np.atleast_2d(np.asarray(weights, dtype=np.float64)), 6), axis=0)
    return _separating(w.shape[1], w.tobytes(), tries, seed).copy()


@functools.lru_cache(maxsize=32)
def _separating(k: int, points: bytes, tries: int, seed: int) -> np.ndarray:
    w = np.frombuffer(points, dtype=np.float64).reshape(-1, k)
    rng = np.random.default_rng(seed)

    def spread(verts: np.ndarray) -> float:
        if len(w) < 2:
            return 0.0
        xy = w @ verts
        d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
        return float(d[np.triu_indices(len(w), 1)].min())

    best, best_spread = polygon_vertices(k), spread(polygon_vertices(k))
    for _ in range(tries):
        gaps = rng.dirichlet(np.full(k, 4.0))  # angle gaps: no vertex too close to the next
        angles = np.pi / 2 + 2 * np.pi * np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        verts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        s = spread(verts)
        if s > best_spread:
            best, best_spread = verts, s
    return best
