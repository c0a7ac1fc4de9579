"""Merge methods and the drivers that apply them.

Kernels are pure functions of tensors: ``prepare(τ_i, params, generator) → τ̂_i`` holds the work that
does not depend on the mixture (TIES trims, DARE drops) and ``combine(θ_0, [τ̂_i], w, params) → θ``
the rest. Everything accumulates in float32. The registry maps names to :class:`MergeMethod`s, which
declare their parameters (type, default, range, help) so the CLI and the UI render them generically.

Drivers: :func:`iter_merged`/:func:`save_merged` stream a merge tensor by tensor from checkpoints to a
Hugging Face model folder (bounded memory, atomic); :class:`Merger` keeps base and task vectors in
memory and re-merges a new mixture into a model's parameters in place; :func:`save_lora_merge` writes
a linear merge of LoRA experts as one rank-concatenated PEFT adapter (exact).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from mixlab import kernels
from mixlab.errors import MergeError
from mixlab.experts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    PEFT_PREFIX,
    Checkpoint,
    LoraTaskVector,
    TaskVector,
)
from mixlab.simplex import validate_weights

Tensor = torch.Tensor
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
    stacked = deltas if isinstance(deltas, Tensor) else torch.stack(list(deltas))  # (K, *shape)
    w = _weights_like(weights, stacked)
    weighted = stacked * w
    elected = torch.sign(weighted.sum(0))
    agree = stacked * elected > 0  # τ̂_i ≠ 0 with the elected sign
    merged = torch.where(agree, weighted, 0.0).sum(0)
    if params["normalize"]:
        denom = torch.where(agree, w, 0.0).sum(0)
        merged = torch.where(denom > 0, merged / denom.clamp_min(1e-30), 0.0)
    return base + params["scale"] * merged


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
CHUNK = 1 << 18  # elements per chunk in the in-memory merger (~1 MB float32: stays in cache)


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
    MergeMethod("linear", "θ_0 + Σ w_i τ_i: the weighted average of the experts", linear, linear_in_task_vectors=True)
)
register(
    MergeMethod("task_arithmetic", "θ_0 + λ Σ w_i τ_i", task_arithmetic, params=(SCALE,), linear_in_task_vectors=True)
)
register(
    MergeMethod(
        "ties",
        "TIES (Yadav et al. 2023): trim each τ_i to its top-density magnitudes, elect the sign of Σ w_i τ̂_i, "
        "average the agreeing entries (weighted disjoint mean), θ_0 + λ·that",
        sign_consensus,
        trim_top_magnitude,
        params=(DENSITY, NORMALIZE, SCALE),
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
    )
)


def generator_for(seed: int, expert: str, key: str) -> torch.Generator:
    """A CPU generator seeded by (seed, expert, tensor), so drops depend neither on streaming order nor
    on the device that merges (a CUDA generator draws another stream from the same seed)."""
    digest = hashlib.sha256(f"{seed}\0{expert}\0{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


# ---------------------------------------------------------------------------------------------------
# Drivers


@dataclass(frozen=True)
class MergeSpec:
    """What to merge: a method with resolved params, the weights (one per expert) and excluded tensors."""

    method: str
    weights: tuple[float, ...]
    params: dict = field(default_factory=dict)
    exclude: tuple[str, ...] = ()

    def resolved(self) -> tuple[MergeMethod, dict]:
        m = get_method(self.method)
        return m, m.resolve(self.params)


def is_excluded(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _active(experts: Sequence[TaskVector], weights: Sequence[float]) -> list[tuple[TaskVector, float]]:
    # experts with w_i = 0 change no method's result (they add 0 to every sum), so they are skipped
    validate_weights(weights, len(experts))
    return [(e, w) for e, w in zip(experts, weights) if w > 0]


def iter_merged(base: Checkpoint, experts: Sequence[TaskVector], spec: MergeSpec) -> Iterator[tuple[str, Tensor]]:
    """Yield (key, merged tensor in the base's dtype) for every base tensor, one at a time."""
    method, params = spec.resolved()
    active = _active(experts, spec.weights)
    changes = {i: set(e.keys()) for i, (e, _) in enumerate(active)}
    for key in base.keys():
        theta0 = base.get(key)
        touching = [i for i in changes if key in changes[i]]
        if not touching or is_excluded(key, spec.exclude) or not theta0.is_floating_point():
            yield key, theta0
            continue
        deltas, gens = [], []
        for e, _ in active:
            d = e.delta(key, theta0)
            deltas.append(torch.zeros(theta0.shape, dtype=torch.float32) if d is None else d)
            gens.append(generator_for(params["seed"], e.name, key) if method.seeded else None)
        w = [w for _, w in active]
        yield key, method.merge(theta0.float(), deltas, w, params, gens).to(theta0.dtype)


def _atomic_dir(out: Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MergeError(f"output folder {out} exists and is not empty; choose another or pass overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should not be
    return tmp


def _publish(tmp: Path, out: Path) -> Path:
    """Move a finished temp folder into place; an old ``out`` is removed only after the new one is whole."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


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
) -> Path:
    """Stream a merge into a Hugging Face model folder: the base's config/tokenizer files plus
    safetensors shards of at most ``shard_bytes`` (memory stays bounded by one shard). The folder
    appears only when complete; on any error nothing is left behind."""
    out = Path(out)
    tmp = _atomic_dir(out, overwrite)
    try:
        for f in base.folder.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".index.json"):
                shutil.copy2(f, tmp / f.name)
        shards: list[list[str]] = []
        pending: dict[str, Tensor] = {}
        size = total_size = 0

        def flush() -> None:
            save_file(pending, str(tmp / f"shard-{len(shards) + 1}.safetensors"), metadata={"format": "pt"})
            shards.append(list(pending))
            pending.clear()

        total = len(base.keys())
        for i, (key, t) in enumerate(iter_merged(base, experts, spec)):
            nbytes = t.numel() * t.element_size()
            if pending and size + nbytes > shard_bytes:
                flush()
                size = 0
            pending[key] = t.contiguous()
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
        (tmp / "mixlab_merge.json").write_text(json.dumps(provenance or {}, indent=2, sort_keys=True))
        return _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_lora_merge(
    experts: Sequence[TaskVector],
    spec: MergeSpec,
    out: Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write θ_0 + λ Σ w_i τ_i for LoRA experts as one PEFT adapter, exactly.

    Per module the factors are concatenated along the rank: A = [A_1; …; A_K] (Σr, in) and
    B = [c_1 B_1, …, c_K B_K] (out, Σr) with c_i = λ·w_i·s_i, so B@A = Σ c_i B_i A_i with no cross
    terms (unlike PEFT's ``add_weighted_adapter(..., "linear")``, which scales A and B by √w). The
    adapter's scale is 1 (lora_alpha = r for every module).
    """
    method, params = spec.resolved()
    if not method.linear_in_task_vectors:
        raise MergeError(f"a PEFT adapter can hold only linear merges (linear, task_arithmetic), not {method.name!r}")
    if spec.exclude:
        raise MergeError("a PEFT adapter export cannot honour 'exclude' patterns; export a full model instead")
    if not all(isinstance(e, LoraTaskVector) for e in experts):
        full = [e.name for e in experts if not isinstance(e, LoraTaskVector)]
        raise MergeError(f"a PEFT adapter export needs LoRA experts; {', '.join(full)} are full fine-tunes")
    active = _active(experts, spec.weights)
    lam = params.get("scale", 1.0)
    modules: dict[str, tuple[list[Tensor], list[Tensor], bool]] = {}
    for e, w in active:
        if e.replaced:
            raise MergeError(f"expert {e.name!r} saves whole tensors (modules_to_save); export a full model instead")
        fan = bool(e.config.get("fan_in_fan_out"))
        for key, f in e.factors.items():
            a_list, b_list, transpose = modules.setdefault(key, ([], [], f.transpose))
            if f.transpose != transpose:
                raise MergeError(f"experts disagree on fan_in_fan_out for {key}")
            a_list.append(f.a)
            b_list.append(f.b * (lam * w * f.scale))
    tmp = _atomic_dir(Path(out), overwrite)
    try:
        tensors, ranks, targets = {}, {}, set()
        for key, (a_list, b_list, transpose) in modules.items():
            module = key.removesuffix(".weight")
            emb = transpose and not fan
            a, b = torch.cat(a_list, 0).contiguous(), torch.cat(b_list, 1).contiguous()  # (Σr, in), (out, Σr)
            suffix = ("lora_embedding_A", "lora_embedding_B") if emb else ("lora_A.weight", "lora_B.weight")
            tensors[f"{PEFT_PREFIX}{module}.{suffix[0]}"] = a
            tensors[f"{PEFT_PREFIX}{module}.{suffix[1]}"] = b
            ranks[module] = a.shape[0]
            targets.add(module.rsplit(".", 1)[-1])
        r = max(ranks.values())
        pattern = {m.replace(".", "\\."): rank for m, rank in ranks.items() if rank != r}
        cfg = dict(active[0][0].config)
        cfg.update(
            r=r,
            lora_alpha=r,
            use_rslora=False,
            rank_pattern=pattern,
            alpha_pattern=dict(pattern),
            target_modules=sorted(targets),
            modules_to_save=None,
            fan_in_fan_out=fan,
        )
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        (tmp / "mixlab_merge.json").write_text(json.dumps(provenance or {}, indent=2, sort_keys=True))
        return _publish(tmp, Path(out))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
            own = [(i, e.factors[key]) for i, e in enumerate(self.experts) if key in e.factors]
            self._cat[key] = (
                torch.cat([f.a for _, f in own]).to(self.device, torch.float32),
                torch.cat([f.b * f.scale for _, f in own], 1).to(self.device, torch.float32),
                torch.cat([torch.full((f.a.shape[0],), i) for i, f in own]).to(self.device),
                own[0][1].transpose,
            )
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

    @torch.no_grad()
    def write(self, target: Mapping[str, Tensor], spec: MergeSpec) -> None:
        """Overwrite ``target[key]`` (a model's parameters) with the merge of ``spec`` for every changed key."""
        method, params = spec.resolved()
        w = validate_weights(spec.weights, len(self.experts))
        lam = params.get("scale", 1.0)
        if method.linear_in_task_vectors and self.factored:
            coef = torch.tensor([lam * wi for wi in w], dtype=torch.float32, device=self.device)
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
        coef = lam * wt
        for k in self.keys:
            base, dst = self.base[k], target[k]
            d = self.stack(k) if stacks is None else stacks[k]  # (K, *shape)
            out = dst if dst.dtype == torch.float32 and dst.is_contiguous() else torch.empty_like(base)
            if stacks is None:
                done = kernels.weighted_sum(base, d, coef, out)
            elif method.combine is sign_consensus:
                done = kernels.sign_consensus(base, d, wt, out, lam, bool(params["normalize"]))
            else:
                done = False
            if not done:
                self._combine_chunked(
                    method, params, base.view(-1), d.view(len(w), -1), wt, coef, out.view(-1), stacks is None
                )
            if out is not dst:
                dst.copy_(out)

    @staticmethod
    def _combine_chunked(method, params, base, d, wt, coef, out, linear: bool) -> None:
        """The pure-torch path, chunk by chunk so each chunk stays in cache between its passes."""
        for s0 in range(0, base.numel(), CHUNK):
            s1 = s0 + CHUNK
            if linear:  # θ_0 + Σ c_i τ_i as chained adds
                o = out[s0:s1]
                o.copy_(base[s0:s1])
                for i, c in enumerate(coef.tolist()):
                    if c:
                        o.add_(d[i, s0:s1], alpha=c)
            else:
                out[s0:s1] = method.combine(base[s0:s1], d[:, s0:s1], wt, params)
