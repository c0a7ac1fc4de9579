"""The batched-mixture LoRA path: many mixtures in one forward pass, nothing materialised.

Every adapted linear layer computes, for batch row b with mixture coefficients c[b] (c = λ·w),
    y_b = W x_b + Σ_k c[b, k] · s_k · B_k (A_k x_b)
with the experts' factors concatenated along the rank, A = [A_1; …; A_K] (R, in) and
B = [B_1 … B_K] (out, R), so it is two thin matmuls per layer — as multi-LoRA serving does. For
linear/task-arithmetic merges this equals the materialised θ_0 + Σ c_k s_k B_k A_k exactly (up to
float rounding), and a grid of M mixtures × N examples becomes one stream of batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mixlab.errors import MergeError
from mixlab.experts import LoraTaskVector, TaskVector, concat_factors


def supports_batched(experts: Sequence[TaskVector]) -> str | None:
    """None if the batched path applies to these experts, else why not."""
    for e in experts:
        if not isinstance(e, LoraTaskVector):
            return f"expert {e.name!r} is a full fine-tune"
        if e.replaced:
            return f"expert {e.name!r} saves whole tensors (modules_to_save)"
        if any(f.transpose for f in e.factors.values()):
            return f"expert {e.name!r} adapts embeddings or fan_in_fan_out layers"
    return None


def low_rank_share(experts: Sequence[LoraTaskVector]) -> float:
    """The batched path's extra work per token as a share of the adapted layers' own:
    Σ R·(in + out) / Σ in·out over the adapted modules, R the ranks of every expert on a module summed (the
    concatenated factors). Thin layers against the ranks make it large (the demo labs': hidden 64 against
    three rank-8 experts); at real shapes it is a few percent (Qwen2-0.5B, three rank-16 experts on every
    linear layer: 0.074; Qwen2-1.5B: 0.042)."""
    modules: dict[str, tuple[int, int, int]] = {}  # module → (summed rank, in, out)
    for e in experts:
        for key, f in e.factors.items():
            r, fan_in = f.a.shape
            rank, _, _ = modules.get(key, (0, 0, 0))
            modules[key] = (rank + r, fan_in, f.b.shape[0])
    own = sum(i * o for _, i, o in modules.values())
    return sum(r * (i + o) for r, i, o in modules.values()) / own if own else float("inf")


class MixtureLinear(nn.Module):
    """A base nn.Linear plus every expert's LoRA factors, mixed per batch row."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, group: torch.Tensor, state: MixtureState):
        """``a`` (R, in), ``b`` (out, R) with each expert's s_k folded in, ``group`` (R,): the expert of each
        rank column — as :func:`mixlab.experts.concat_factors` makes them."""
        super().__init__()
        self.base = base
        self.register_buffer("a_t", a.T.contiguous(), persistent=False)  # (in, R)
        self.register_buffer("b_t", b.T.contiguous(), persistent=False)  # (R, out)
        self.register_buffer("group", group, persistent=False)  # (R,) expert index of each rank column
        self.state = state
        self._seen = -1
        self._per_rank: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, in)
        if self._seen != self.state.version:  # once per batch, not once per generated token
            self._per_rank = self.state.coef[:, self.group].to(x.dtype)  # (B, R): c[b, k] of each rank column
            self._seen = self.state.version
        lead = x.shape[:-1]
        low = (x @ self.a_t) * self._per_rank[:, None, :]  # (B, T, R)
        y = self.base(x).reshape(-1, self.b_t.shape[1])  # (B·T, out)
        return y.addmm_(low.reshape(-1, low.shape[-1]), self.b_t).view(*lead, -1)


class MixtureState:
    """The per-row coefficients shared by every MixtureLinear of one model."""

    def __init__(self, k: int, device: torch.device):
        self.coef = torch.zeros((1, k), device=device)
        self.version = 0

    def set(self, coef: torch.Tensor) -> None:
        self.coef = coef
        self.version += 1


class BatchedLora:
    """Installs MixtureLinear layers into a model whose parameters hold θ_0, and removes them."""

    def __init__(self, model: nn.Module, experts: Sequence[LoraTaskVector], device: torch.device):
        why = supports_batched(experts)
        if why:
            raise MergeError(f"the batched LoRA path does not apply: {why}")
        self.model, self.experts = model, list(experts)
        self.state = MixtureState(len(experts), device)
        self._original: dict[str, nn.Module] = {}
        modules = dict(model.named_modules())
        keys = sorted(set().union(*(e.factors for e in experts)))
        for key in keys:
            name = key.removesuffix(".weight")
            base = modules.get(name)
            if not isinstance(base, nn.Linear):
                raise MergeError(f"the batched LoRA path needs nn.Linear at {name}, found {type(base).__name__}")
            a, b, group, _ = concat_factors([(k, e.factors[key]) for k, e in enumerate(experts) if key in e.factors])
            self._original[name] = base
            dtype = base.weight.dtype  # the layer's dtype: no cast per forward
            self._install(
                name, MixtureLinear(base, a.to(device, dtype), b.to(device, dtype), group.to(device), self.state)
            )

    def _install(self, name: str, module: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        setattr(parent, child, module)

    def remove(self) -> None:
        for name, base in self._original.items():
            self._install(name, base)
        self._original.clear()

    def __enter__(self) -> BatchedLora:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
