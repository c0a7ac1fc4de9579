"""Merge methods: pure kernels over tensors, their declared parameters, and the registry.

Kernels are pure functions of tensors: ``prepare(τ_i, params, generator) → τ̂_i`` holds the work that
does not depend on the mixture (TIES trims, DARE drops) and ``combine(θ_0, [τ̂_i], w, params) → θ``
the rest. Everything accumulates in float32. No files, devices, caches or UI here. The registry maps
names to :class:`MergeMethod`s, which declare their parameters (type, default, range, help) so the CLI
and the UI render them generically.

Papers: task arithmetic (Ilharco et al. 2023, arXiv:2212.04089); TIES (Yadav et al. 2023,
arXiv:2306.01708); DARE (Yu et al. 2024, arXiv:2311.03099).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mixlab.errors import MergeError
from mixlab.lazy import torch
from mixlab.simplex import Mixture, validate_weights

if TYPE_CHECKING:
    from torch import Tensor
Params = Mapping[str, float | int | bool]

# ---------------------------------------------------------------------------------------------------
# Kernels


def _weights_like(weights: Tensor, stacked: Tensor) -> Tensor:
    return weights.to(stacked).view(-1, *([1] * (stacked.dim() - 1)))  # (K, 1, …, 1) against (K, *shape)


def task_arithmetic(base: Tensor, deltas: Sequence[Tensor], weights: Tensor, params: Params) -> Tensor:
    """θ = θ_0 + λ Σ_i w_i τ_i (Ilharco et al. 2023), λ = ``scale``; experts with w_i = 0 are skipped."""
    out = base.clone()
    for w, d in zip(weights.tolist(), deltas):
        if w:
            out.add_(d, alpha=params["scale"] * w)
    return out


def linear(base: Tensor, deltas: Sequence[Tensor], weights: Tensor, params: Params) -> Tensor:
    """θ = θ_0 + Σ_i w_i τ_i: task arithmetic with λ = 1. With one-hot w this is that expert exactly."""
    return task_arithmetic(base, deltas, weights, {"scale": 1.0})


def trim_top_magnitude(delta: Tensor, params: Params, generator: torch.Generator | None = None) -> Tensor:
    """TIES step 1: keep the k = ⌊density·n⌋ entries of largest |τ| (as PEFT and mergekit), zero the rest."""
    density = params["density"]
    if density >= 1:
        return delta
    flat = delta.reshape(-1)
    k = int(density * flat.numel())
    out = torch.zeros_like(flat)
    if k > 0:
        idx = torch.topk(flat.abs(), k, sorted=False).indices
        out[idx] = flat[idx]
    return out.view_as(delta)


def dare_drop(delta: Tensor, params: Params, generator: torch.Generator | None = None) -> Tensor:
    """DARE (Yu et al. 2024): drop each entry with probability p, rescale survivors by 1/(1−p)."""
    p = params["drop_rate"]
    if p == 0:
        return delta
    # drawn on the CPU whatever the device: the same seed drops the same entries on a GPU as on disk
    keep = (torch.rand(delta.shape, generator=generator) >= p).to(delta.device)
    return delta * keep / (1.0 - p)


def sign_consensus(base: Tensor, deltas: Sequence[Tensor] | Tensor, weights: Tensor, params: Params) -> Tensor:
    """TIES steps 2-3 on (already trimmed) τ̂_i, then θ = θ_0 + λ·τ_m.

    Elect γ = sign(Σ_i w_i τ̂_i) per entry; the agreeing experts A = {i : τ̂_i ≠ 0, sign τ̂_i = γ}
    (equivalently τ̂_i·γ > 0); τ_m = Σ_{i∈A} w_i τ̂_i / Σ_{i∈A} w_i with ``normalize`` (the weighted
    disjoint mean, as mergekit), or Σ_{i∈A} w_i τ̂_i without; τ_m = 0 where A is empty.
    """
    stacked = deltas if isinstance(deltas, torch.Tensor) else torch.stack(list(deltas))  # (K, *shape)
    w = _weights_like(weights, stacked)
    weighted = stacked * w
    elected = torch.sign(weighted.sum(0))
    agree = stacked * elected > 0  # τ̂_i ≠ 0 with the elected sign
    merged = torch.where(agree, weighted, 0.0).sum(0)
    if params["normalize"]:
        denom = torch.where(agree, w, 0.0).sum(0)
        merged = torch.where(denom > 0, merged / denom.clamp_min(1e-30), 0.0)
    return base + params["scale"] * merged


def fused_sign_consensus(base: Tensor, stacked: Tensor, weights: Tensor, out: Tensor, params: Params) -> bool:
    """:func:`sign_consensus` written into ``out`` by the fused CPU kernel (:mod:`mixlab.merge.fused`);
    False where it does not apply (another device or dtype, no kernels), and the caller runs the torch one."""
    from mixlab.merge import fused  # the kernels build on first use: only when a merge asks for them

    return fused.sign_consensus(base, stacked, weights, out, params["scale"], bool(params["normalize"]))


# ---------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Param:
    """A method parameter the CLI and UI can render: ``kind`` is float, int or bool."""

    name: str
    kind: type
    default: float | int | bool
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded

    def check(self, method: str, value: object) -> float | int | bool:
        where = f"merge method {method!r}: parameter {self.name}"
        if self.kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                value = value.lower() in ("true", "1")
            if not isinstance(value, bool):
                raise MergeError(f"{where} must be true or false, got {value!r}")
            return value
        what = "an integer" if self.kind is int else "a number"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MergeError(f"{where} must be {what}, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number) or (self.kind is int and not number.is_integer()):
            raise MergeError(f"{where} must be {what}, got {value!r}")
        number = self.kind(number)
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        if too_low or (self.high is not None and number > self.high):
            lo = "(" if self.low_open else "["
            raise MergeError(f"{where} must be in {lo}{self.low}, {self.high}], got {value!r}")
        return number


@dataclass(frozen=True)
class MergeMethod:
    name: str
    help: str
    combine: Callable[[Tensor, Sequence[Tensor], Tensor, Params], Tensor]
    prepare: Callable[[Tensor, Params, torch.Generator | None], Tensor] | None = None
    params: tuple[Param, ...] = ()
    seeded: bool = False  # prepare draws random numbers
    linear_in_task_vectors: bool = False  # θ = θ_0 + Σ c_i τ_i exactly: LoRA stays factored
    # combine(θ_0, (K, n) stacked τ̂, w, params) written into ``out`` in one pass; returns False where it
    # does not apply, and the resident merger runs ``combine`` instead (linear methods use the fused weighted sum)
    fused: Callable[[Tensor, Tensor, Tensor, Tensor, Params], bool] | None = None
    reference_url: str | None = None  # the paper the method comes from

    def coefficients(self, weights: Sequence[float], params: Params) -> list[float]:
        """c_i = λ·w_i for methods linear in the task vectors (θ = θ_0 + Σ c_i τ_i); λ = ``scale`` (1 if
        the method has none). The one place that knows how λ enters a linear merge."""
        lam = float(params.get("scale", 1.0))
        return [lam * float(w) for w in weights]

    def resolve(self, params: Mapping[str, object] | None = None) -> dict[str, float | int | bool]:
        """Fill defaults and validate; unknown names raise MergeError listing the known ones."""
        params = dict(params or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            names = ", ".join(known) or "none"
            raise MergeError(f"merge method {self.name!r} has no parameter {unknown[0]!r}; parameters: {names}")
        return {p.name: p.check(self.name, params.get(p.name, p.default)) for p in self.params}

    def merge(
        self,
        base: Tensor,
        deltas: Sequence[Tensor],
        weights: Tensor | Sequence[float],
        params: Mapping[str, object] | None = None,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> Tensor:
        """The whole method on one tensor: combine(θ_0, [prepare(τ_i)], w). float32 in and out."""
        p = self.resolve(params)
        w = torch.as_tensor(weights, dtype=torch.float32)
        if self.prepare is not None:
            gens = generators or [None] * len(deltas)
            deltas = [self.prepare(d, p, g) for d, g in zip(deltas, gens)]
        return self.combine(base, deltas, w, p)


SCALE = Param("scale", float, 1.0, "λ: multiplies the merged task vector", 0.0, 10.0)
DENSITY = Param("density", float, 0.2, "fraction of each task vector's entries kept (largest |τ|)", 0.0, 1.0, True)
NORMALIZE = Param("normalize", bool, True, "divide by the summed weights of agreeing experts (disjoint mean)")
DROP = Param("drop_rate", float, 0.9, "p: probability of dropping each entry; survivors ×1/(1−p)", 0.0, 0.99)
SEED = Param("seed", int, 0, "seed of the random drops", 0, 2**31 - 1)

_REGISTRY: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    if method.name in _REGISTRY:
        raise MergeError(f"merge method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    if name not in _REGISTRY:
        raise MergeError(f"unknown merge method {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def methods() -> list[MergeMethod]:
    return list(_REGISTRY.values())


register(
    MergeMethod(
        "linear",
        "θ_0 + Σ w_i τ_i: the weighted average of the experts",
        linear,
        linear_in_task_vectors=True,
        reference_url="https://arxiv.org/abs/2203.05482",  # model soups (Wortsman et al. 2022)
    )
)
register(
    MergeMethod(
        "task_arithmetic",
        "θ_0 + λ Σ w_i τ_i",
        task_arithmetic,
        params=(SCALE,),
        linear_in_task_vectors=True,
        reference_url="https://arxiv.org/abs/2212.04089",
    )
)
register(
    MergeMethod(
        "ties",
        "TIES (Yadav et al. 2023): trim each τ_i to its top-density magnitudes, elect the sign of Σ w_i τ̂_i, "
        "average the agreeing entries (weighted disjoint mean), θ_0 + λ·that",
        sign_consensus,
        trim_top_magnitude,
        params=(DENSITY, NORMALIZE, SCALE),
        fused=fused_sign_consensus,
        reference_url="https://arxiv.org/abs/2306.01708",
    )
)
register(
    MergeMethod(
        "dare_linear",
        "DARE: drop entries of each τ_i with probability p, rescale by 1/(1−p), then θ_0 + λ Σ w_i τ̃_i",
        task_arithmetic,  # over the dropped τ̃_i
        dare_drop,
        params=(DROP, SEED, SCALE),
        seeded=True,
        reference_url="https://arxiv.org/abs/2311.03099",
    )
)
register(
    MergeMethod(
        "dare_ties",
        "DARE drops, then TIES sign election and disjoint mean over the τ̃_i",
        sign_consensus,
        dare_drop,
        params=(DROP, SEED, NORMALIZE, SCALE),
        seeded=True,
        fused=fused_sign_consensus,
        reference_url="https://arxiv.org/abs/2311.03099",
    )
)


def generator_for(seed: int, expert: str, key: str) -> torch.Generator:
    """A CPU generator seeded by (seed, expert, tensor), so drops depend neither on streaming order nor
    on the device that merges (a CUDA generator draws another stream from the same seed)."""
    digest = hashlib.sha256(f"{seed}\0{expert}\0{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@dataclass(frozen=True)
class MergeSpec:
    """What to merge: a method with its params, the weights (one per expert) and excluded tensors.

    ``weights`` may be given as a :class:`~mixlab.simplex.Mixture`: the spec then keeps it as
    :attr:`mixture`, so the experts' names travel with their weights (``weights`` is its tuple).
    ``kernel``: the method already looked up with ``params`` already resolved (what
    :meth:`mixlab.scoring.request.Method.spec` passes), so nothing on the way resolves it again."""

    method: str
    weights: tuple[float, ...]
    params: dict = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    mixture: Mixture | None = None
    kernel: MergeMethod | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.weights, Mixture):
            object.__setattr__(self, "mixture", self.weights)
        if self.mixture is not None:
            object.__setattr__(self, "weights", tuple(self.mixture.weights))

    @property
    def groups(self) -> tuple[tuple[float, ...], ...] | None:
        """Per-layer-group weights (:mod:`mixlab.merge.groups`), from the mixture; None: ``weights`` everywhere."""
        return None if self.mixture is None else self.mixture.groups

    def resolved(self) -> tuple[MergeMethod, dict]:
        """The method and its params, resolved here unless the spec was made from a resolved method."""
        if self.kernel is not None:
            return self.kernel, self.params
        m = get_method(self.method)
        return m, m.resolve(self.params)


def is_excluded(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def active(experts: Sequence, weights: Sequence[float]) -> list[tuple[object, float]]:
    """(expert, w_i) for w_i > 0: an expert with w_i = 0 changes no method's result (it adds 0 to every sum)."""
    validate_weights(weights, len(experts))
    return [(e, w) for e, w in zip(experts, weights) if w > 0]
