"""The resident merger: base and task vectors held in memory once, re-merged into a model in place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mixlab.checkpoint import Checkpoint
from mixlab.experts import LoraTaskVector, TaskVector, concat_factors
from mixlab.lazy import no_grad, torch
from mixlab.merge import fused
from mixlab.merge.methods import MergeMethod, MergeSpec, generator_for, is_excluded
from mixlab.simplex import validate_weights

if TYPE_CHECKING:
    from torch import Tensor
CHUNK = 1 << 18  # elements per chunk in the pure-torch path on the CPU (~1 MB float32: stays in cache)
GPU_CHUNK = 1 << 26  # on a GPU a chunk only bounds the temporaries; smaller ones would cost a launch each


class Merger:
    """Base and task vectors held in memory once; :meth:`write` re-merges any mixture into a model's
    tensors in place, so scoring a new mixture costs one pass over memory instead of K+1 model loads.

    - LoRA experts stay factored: a linear merge of a module is one addmm with the rank-concatenated
      factors (concatenated once), θ = θ_0 + [c_1 B_1 … c_K B_K] @ [A_1; …; A_K].
    - Dense task vectors are stacked per tensor as D (K, n) float32, so a linear merge is one fused
      addmm, θ = θ_0 + c @ D, written straight into the model's tensor: K+1 reads and one write.
    - Work that does not depend on w (TIES trims, DARE drops) is done once per (method, params) and
      kept (one prepared set at a time, so memory stays about 2K copies of the changed tensors).
    """

    def __init__(
        self,
        base: Checkpoint,
        experts: Sequence[TaskVector],
        exclude: Sequence[str] = (),
        device="cpu",
        theta0: dict[str, Tensor] | None = None,
    ):
        """``theta0``: a float32 θ_0 cache (key → tensor on ``device``) shared between mergers; it is
        filled with the keys this merger needs, so several mergers over one base read it once."""
        self.device = torch.device(device)
        self.experts = list(experts)
        self.exclude = tuple(exclude)
        changed = set().union(*(e.keys() for e in self.experts))
        self.keys = [k for k in base.keys() if k in changed and not is_excluded(k, self.exclude)]
        # θ_0 in float32: merges accumulate in float32, and a float32 base saves a cast per merge
        theta0 = {} if theta0 is None else theta0
        for k in self.keys:
            if k not in theta0:
                theta0[k] = base.get(k).to(self.device, torch.float32)
        self.base = {k: theta0[k] for k in self.keys}
        self.factored = all(isinstance(e, LoraTaskVector) and not e.replaced for e in self.experts)
        self._stacks: dict[str, Tensor] = {}
        self._cat: dict[str, tuple[Tensor, Tensor, Tensor, bool]] = {}
        self._prepared: tuple[tuple, dict[str, Tensor]] | None = None

    def _factors(self, key: str) -> tuple[Tensor, Tensor, Tensor, bool]:
        """The experts' LoRA factors of one module, rank-concatenated once: A (Σr, in), B·diag(s)
        (out, Σr), the expert index of each rank column, and fan_in_fan_out."""
        if key not in self._cat:
            a, b, group, transpose = concat_factors(
                [(i, e.factors[key]) for i, e in enumerate(self.experts) if key in e.factors]
            )
            self._cat[key] = (a.to(self.device), b.to(self.device), group.to(self.device), transpose)
        return self._cat[key]

    def stack(self, key: str) -> Tensor:
        """D[key]: the experts' dense τ for one tensor, (K, *shape) float32, built once."""
        if key not in self._stacks:
            theta0 = self.base[key]
            rows = [e.delta(key, theta0) if key in set(e.keys()) else None for e in self.experts]
            zeros = torch.zeros_like(theta0)
            self._stacks[key] = torch.stack([zeros if r is None else r.to(self.device, torch.float32) for r in rows])
        return self._stacks[key]

    def prepared(self, method: MergeMethod, params: dict) -> dict[str, Tensor]:
        """τ̂ = prepare(τ) per tensor for methods with a w-independent step (cached for one (method, params))."""
        cache_key = (method.name, tuple(sorted(params.items())))
        if self._prepared is None or self._prepared[0] != cache_key:
            self._prepared = None  # free the previous set first
            out = {}
            for k in self.keys:
                d = self.stack(k)
                out[k] = torch.stack(
                    [
                        method.prepare(
                            d[i],
                            params,
                            generator_for(params["seed"], e.name, k) if method.seeded else None,
                        )
                        for i, e in enumerate(self.experts)
                    ]
                )
            self._prepared = (cache_key, out)
        return self._prepared[1]

    @no_grad
    def write(self, target: Mapping[str, Tensor], spec: MergeSpec) -> None:
        """Overwrite ``target[key]`` (a model's parameters) with the merge of ``spec`` for every changed key."""
        method, params = spec.resolved()
        w = validate_weights(spec.weights, len(self.experts))
        coef = torch.tensor(
            method.coefficients(w, params) if method.linear_in_task_vectors else w,
            dtype=torch.float32,
            device=self.device,
        )  # (K,) c_i = λ·w_i for linear methods
        if method.linear_in_task_vectors and self.factored:
            for k in self.keys:
                base, dst = self.base[k], target[k]
                a, b, group, transpose = self._factors(k)
                b = b * coef[group]  # (out, Σr): each rank column scaled by c_i·s_i of its expert
                m1, m2 = (a.T, b.T) if transpose else (b, a)
                if dst.dtype == torch.float32 and dst.is_contiguous():
                    torch.addmm(base, m1, m2, out=dst)  # θ_0 + B·A in one pass, into the model
                else:
                    dst.copy_(torch.addmm(base, m1, m2))
            return
        wt = torch.tensor(w, dtype=torch.float32, device=self.device)
        stacks = None
        if not method.linear_in_task_vectors:
            stacks = (
                self.prepared(method, params) if method.prepare is not None else {k: self.stack(k) for k in self.keys}
            )
        for k in self.keys:
            base, dst = self.base[k], target[k]
            d = self.stack(k) if stacks is None else stacks[k]  # (K, *shape)
            out = dst if dst.dtype == torch.float32 and dst.is_contiguous() else torch.empty_like(base)
            if stacks is None:
                done = fused.weighted_sum(base, d, coef, out)
            else:
                done = method.fused is not None and method.fused(base, d, wt, out, params)
            if not done:
                self._combine_chunked(
                    method, params, base.view(-1), d.view(len(w), -1), wt, coef, out.view(-1), stacks is None
                )
            if out is not dst:
                dst.copy_(out)

    @staticmethod
    def _combine_chunked(method, params, base, d, wt, coef, out, linear: bool) -> None:
        """The pure-torch path: on the CPU chunk by chunk so each chunk stays in cache between its passes;
        on a GPU a linear merge is one matrix-vector product (θ_0 + τᵀc: each tensor read once)."""
        if linear and not base.is_cpu:
            torch.addmv(base, d.T, coef, out=out)
            return
        chunk = CHUNK if base.is_cpu else GPU_CHUNK
        coefs = coef.tolist() if linear else None  # read once: on a GPU each read is a device sync
        for s0 in range(0, base.numel(), chunk):
            s1 = s0 + chunk
            if linear:  # θ_0 + Σ c_i τ_i as chained adds
                o = out[s0:s1]
                o.copy_(base[s0:s1])
                for i, c in enumerate(coefs):
                    if c:
                        o.add_(d[i, s0:s1], alpha=c)
            else:
                out[s0:s1] = method.combine(base[s0:s1], d[:, s0:s1], wt, params)
