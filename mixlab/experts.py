"""Experts as task vectors, read from safetensors lazily, one tensor at a time.

An expert is a *task vector* τ = θ_expert − θ_base over the base's tensors:
- a full fine-tune dir (config.json + *.safetensors, sharded or not): τ[key] = θ_i[key] − θ_0[key];
- a PEFT LoRA adapter dir: τ[module.weight] = s·B·A per adapted module, s = alpha/r (alpha/√r with
  rsLoRA), honouring rank_pattern/alpha_pattern and fan_in_fan_out; factors stay factored until a
  merge asks for a dense tensor. Tensors saved whole in the adapter (modules_to_save) count as
  replacements: τ = saved − base.
Every tensor is keyed by the name the base's model class holds it under in memory (:mod:`mixlab.names`:
transformers' own conversion mapping), whichever convention a checkpoint or adapter was written in. The
folders themselves are read by :mod:`mixlab.checkpoint` (lazy safetensors, the pickle and symlink rules) and
fingerprinted by :mod:`mixlab.fingerprints`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mixlab.checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, Checkpoint, check_finite, check_folder, read_text
from mixlab.errors import ExpertError
from mixlab.fingerprints import file_signature, lora_fingerprint
from mixlab.lazy import safetensors_torch, torch

PEFT_PREFIX = "base_model.model."
FINE_TUNE_COSINE = 0.5  # below this cos(θ_i, θ_0), an expert is flagged as perhaps not a fine-tune of the base


@dataclass(frozen=True)
class LoraFactors:
    """One adapted module: τ = scale · B @ A, transposed when ``transpose`` (fan_in_fan_out, embeddings)."""

    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float
    transpose: bool

    def dense(self) -> torch.Tensor:
        delta = (self.b.float() @ self.a.float()) * self.scale  # (out, in)
        return delta.T if self.transpose else delta


def concat_factors(
    factors: Sequence[tuple[int, LoraFactors]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Several experts' LoRA factors of one module, concatenated along the rank, so that
    Σ_i c_i s_i B_i A_i = (B · diag(c[group])) @ A with no cross terms.

    Args:
        factors: (expert index i, its factors) for the experts that adapt the module.

    Returns:
        A (Σr, in) float32, B (out, Σr) float32 with each expert's columns scaled by its s_i, the expert
        index of each rank column (Σr,), and whether τ is B@A transposed (fan_in_fan_out, embeddings).
    """
    transposes = {f.transpose for _, f in factors}
    if len(transposes) != 1:
        raise ExpertError("the experts disagree on fan_in_fan_out for one module; their factors cannot be concatenated")
    a = torch.cat([f.a.float() for _, f in factors])  # (Σr, in)
    b = torch.cat([f.b.float() * f.scale for _, f in factors], 1)  # (out, Σr)
    group = torch.cat([torch.full((f.a.shape[0],), i, dtype=torch.long) for i, f in factors])  # (Σr,)
    return a, b, group, transposes.pop()


class TaskVector:
    """τ_i for one expert, over the base checkpoint's tensors. Subclasses: full and LoRA."""

    kind: str
    name: str
    base: Checkpoint
    fingerprint: str  # content hash of everything that changes τ
    loaded_signature: tuple  # the files' signatures (see file_signature) before they were read

    def signature(self) -> tuple:
        """The files' signatures now: differs from ``loaded_signature`` once a file may have changed."""
        raise NotImplementedError

    def __init__(self) -> None:
        self.warnings: list[str] = []  # doubts about the expert that do not stop a merge

    def keys(self) -> list[str]:
        """Base tensors this expert changes."""
        raise NotImplementedError

    def delta(self, key: str, theta0: torch.Tensor | None = None) -> torch.Tensor | None:
        """Dense float32 τ[key] with the base tensor's shape, or None where the expert changes nothing.
        ``theta0``: the base tensor, when the caller has it already (saves re-reading it)."""
        raise NotImplementedError

    @cached_property
    def changed(self) -> list[str]:
        """The tensors this expert actually changes (a non-zero τ): reads every tensor it touches once (then
        kept), so it is for ``info`` and the Lab page, not the merge path. A LoRA adapter with zero B factors (PEFT's initialisation),
        or a full fine-tune saved unchanged, changes none."""
        return [k for k in self.keys() if (d := self.delta(k)) is not None and bool(d.any())]

    @property
    def n_params(self) -> int:
        raise NotImplementedError

    @property
    def rank(self) -> int | None:
        return None


class FullTaskVector(TaskVector):
    """A full fine-tune: τ[key] = θ_i[key] − θ_0[key] for every tensor of the base."""

    kind = "full"

    def __init__(self, name: str, folder: Path, base: Checkpoint):
        super().__init__()
        self.name, self.base = name, base
        self.ckpt = Checkpoint(folder, f"expert {name!r}", base.root, base.names)
        missing = [k for k in base.keys() if k not in self.ckpt]
        extra = [k for k in self.ckpt.keys() if k not in base]
        if missing or extra:
            what = f"lacks {len(missing)} base tensors (e.g. {missing[0]})" if missing else ""
            what += (" and " if missing and extra else "") + (
                f"has {len(extra)} tensors the base lacks (e.g. {extra[0]})" if extra else ""
            )
            raise ExpertError(f"expert {name!r}: {folder} {what}; is it fine-tuned from this base?")
        for k in base.keys():
            if self.ckpt.shape(k) != base.shape(k):
                raise ExpertError(
                    f"expert {name!r}: tensor {k} has shape {self.ckpt.shape(k)} but the base has {base.shape(k)}"
                )
        cos = self.base_cosine()
        if cos is not None and cos < FINE_TUNE_COSINE:
            self.warnings.append(
                f"expert {name!r}: its weights have cosine {cos:.2f} to the base's (a fine-tune stays near 1); "
                "is it fine-tuned from this base?"
            )

    def base_cosine(self, n_tensors: int = 3) -> float | None:
        """cos(θ_i, θ_0) over the ``n_tensors`` smallest matrices: a cheap check (it reads little, not the
        embeddings or lm_head) that the expert is a fine-tune of this base, not another model of that shape."""
        matrices = [k for k in self.base.keys() if len(self.base.shape(k)) == 2]
        keys = sorted(matrices, key=lambda k: (math.prod(self.base.shape(k)), k))[:n_tensors]
        if not keys:
            return None
        a = torch.cat([self.ckpt.get(k).float().reshape(-1) for k in keys])
        b = torch.cat([self.base.get(k).float().reshape(-1) for k in keys])
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    def keys(self) -> list[str]:
        return self.base.keys()

    def delta(self, key: str, theta0: torch.Tensor | None = None) -> torch.Tensor | None:
        theta0 = self.base.get(key) if theta0 is None else theta0
        return self.ckpt.get(key).to(theta0.device, torch.float32) - theta0.float()

    @cached_property
    def fingerprint(self) -> str:
        return self.ckpt.fingerprint

    @property
    def loaded_signature(self) -> tuple:
        return self.ckpt.loaded_signature

    def signature(self) -> tuple:
        return self.ckpt.signature()

    @property
    def n_params(self) -> int:
        return self.base.n_params


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rule (utils.other.get_pattern_key): the first pattern p with module =~ (.*\\.)?(p)$."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


class LoraTaskVector(TaskVector):
    """A PEFT LoRA adapter, kept factored: τ[m.weight] = s_m · B_m @ A_m.

    The adapter's config and weights are read once, and its fingerprint is the hash of those very
    bytes, so the factors in memory and the fingerprint they are cached under can never disagree."""

    kind = "lora"
    _LORA = re.compile(r"^(?P<module>.+)\.(?:lora_A|lora_B)\.weight$|^(?P<emb>.+)\.lora_embedding_(?:A|B)$")

    def __init__(self, name: str, folder: Path, base: Checkpoint):
        super().__init__()
        self.name, self.base, self.folder = name, base, Path(folder)
        label = f"expert {name!r}"
        check_folder(self.folder, label, base.root)
        cfg_path, weights_path = self.folder / ADAPTER_CONFIG, self.folder / ADAPTER_WEIGHTS
        self.loaded_signature = self.signature() if weights_path.is_file() and cfg_path.is_file() else ()
        cfg_text = read_text(cfg_path, label)
        try:
            cfg = json.loads(cfg_text)
        except json.JSONDecodeError as e:
            raise ExpertError(f"{label}: {cfg_path} is not valid JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise ExpertError(f"{label}: {cfg_path} must hold a JSON object, got {type(cfg).__name__}")
        self.config = cfg
        _check_lora_config(cfg, f"{label}: {cfg_path}")
        if not weights_path.is_file():
            raise ExpertError(f"{label}: no {ADAPTER_WEIGHTS} in {self.folder}")
        try:
            blob = weights_path.read_bytes()
            tensors = safetensors_torch.load(blob)
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ExpertError(f"{label}: cannot read {weights_path}: {e}") from None
        self.fingerprint = lora_fingerprint(cfg_text, hashlib.sha256(blob).digest())

        raw: dict[str, dict] = {}
        self.replaced: dict[str, torch.Tensor] = {}  # base key → tensor saved whole (modules_to_save)
        for akey, t in tensors.items():
            if not akey.startswith(PEFT_PREFIX):
                raise ExpertError(f"{label}: tensor {akey} in {ADAPTER_WEIGHTS} does not start with {PEFT_PREFIX!r}")
            if not t.is_floating_point():
                raise ExpertError(f"{label}: tensor {akey} has dtype {t.dtype}; LoRA weights must be floating point")
            check_finite(t, label, akey)
            key = akey[len(PEFT_PREFIX) :]
            m = self._LORA.match(key)
            if m:
                module = m.group("module") or m.group("emb")
                part = "A" if ("lora_A" in key or "lora_embedding_A" in key) else "B"
                raw.setdefault(module, {})[part] = t
                raw[module]["emb"] = m.group("emb") is not None
                continue
            key = base.names(key.replace(".base_layer.", ".").replace(".modules_to_save.default.", "."))
            if key not in base:
                _refuse_tied(label, key, base)
                raise ExpertError(f"{label}: adapter tensor {akey} matches no base tensor ({key})")
            if tuple(t.shape) != base.shape(key):
                raise ExpertError(
                    f"{label}: tensor {key} has shape {tuple(t.shape)} but the base has {base.shape(key)}"
                )
            self.replaced[key] = t

        r, alpha = cfg["r"], cfg["lora_alpha"]
        rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        self.factors: dict[str, LoraFactors] = {}
        for module, parts in raw.items():
            if "A" not in parts or "B" not in parts:
                raise ExpertError(f"{label}: module {module} has lora_{'A' if 'A' not in parts else 'B'} missing")
            a, b, emb = parts["A"], parts["B"], parts["emb"]
            key = base.names(f"{module}.weight")  # PEFT names modules as the model did when it was trained
            if key not in base:
                _refuse_tied(label, key, base)
                raise ExpertError(f"{label}: adapted module {module} has no tensor {key} in the base")
            if key in self.factors:
                raise ExpertError(f"{label}: module {module} is adapted twice (as {key.removesuffix('.weight')})")
            r_m = _pattern_value(rank_pattern, module, r)  # patterns matched as PEFT matched them: the saved name
            alpha_m = _pattern_value(alpha_pattern, module, alpha)
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != r_m or b.shape[1] != r_m:
                raise ExpertError(
                    f"{label}: module {module} has rank {a.shape[0]} (A {tuple(a.shape)}, B {tuple(b.shape)}) "
                    f"but {ADAPTER_CONFIG} says r={r_m}"
                )
            scale = alpha_m / math.sqrt(r_m) if cfg.get("use_rslora") else alpha_m / r_m
            transpose = emb or bool(cfg.get("fan_in_fan_out"))
            shape = (b.shape[0], a.shape[1])[::-1] if transpose else (b.shape[0], a.shape[1])
            if shape != base.shape(key):
                raise ExpertError(f"{label}: tensor {key}: B@A has shape {shape} but the base has {base.shape(key)}")
            self.factors[key] = LoraFactors(a.float(), b.float(), float(scale), transpose)
        if not self.factors and not self.replaced:
            raise ExpertError(f"{label}: adapter {self.folder} contains no LoRA weights")
        named, own = cfg.get("base_model_name_or_path"), base.name_or_path
        if _is_hub_id(named) and _is_hub_id(own) and named.rstrip("/").lower() != own.rstrip("/").lower():
            self.warnings.append(f"{label}: {cfg_path} names base model {named!r}, but this lab's base is {own!r}")

    def signature(self) -> tuple:
        return tuple(file_signature(self.folder / f) for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))

    def keys(self) -> list[str]:
        return sorted(set(self.factors) | set(self.replaced))

    def delta(self, key: str, theta0: torch.Tensor | None = None) -> torch.Tensor | None:
        out = None
        if key in self.replaced:
            theta0 = self.base.get(key) if theta0 is None else theta0
            out = self.replaced[key].to(theta0.device, torch.float32) - theta0.float()
        if key in self.factors:
            d = self.factors[key].dense()
            out = d if out is None else out + d.to(out.device)
        return out

    @property
    def n_params(self) -> int:
        return sum(f.a.numel() + f.b.numel() for f in self.factors.values()) + sum(
            math.prod(self.base.shape(k)) for k in self.replaced
        )

    @property
    def rank(self) -> int | None:
        ranks = {f.a.shape[0] for f in self.factors.values()}
        return max(ranks) if ranks else None


def _refuse_tied(label: str, key: str, base: Checkpoint) -> None:
    """An adapter that changes a tensor the base does not store but its class holds: a tied one (lm_head
    sharing the input embeddings' tensor, tie_word_embeddings). Merging it would change the input
    embeddings too, and a tied export cannot hold the two apart, so it is refused with the way out."""
    if base.names.holds(key):
        raise ExpertError(
            f"{label}: the adapter changes {key}, which this base ties to another tensor (tie_word_embeddings: "
            "save_pretrained stores it once, as the input embeddings); merging it would change both, and an "
            "export could not keep them apart. Train without it in modules_to_save / target_modules, or untie "
            "the base (config tie_word_embeddings=false, lm_head saved) and train on that"
        )


def _is_hub_id(name) -> bool:
    """'org/model' as the hub writes it (a local path says nothing about which model it held)."""
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _positive(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ExpertError(f"{where} must be a finite positive number, got {value!r}")
    return value


def _check_lora_config(cfg: dict, where: str) -> None:
    """Every field the merge reads, checked: a bad value is an error naming the file and field."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExpertError(f"{where}: peft_type {cfg.get('peft_type')!r} is not supported; only LORA")
    for flag in ("use_dora", "use_qalora", "lora_bias"):
        if cfg.get(flag):
            raise ExpertError(f"{where}: {flag}=true is not supported (the merge would not be exact)")
    if cfg.get("bias", "none") != "none":
        raise ExpertError(f"{where}: bias={cfg['bias']!r} is not supported; train with bias='none'")
    for field in ("r", "lora_alpha"):
        _positive(cfg.get(field), f"{where}: field {field}")
    for field in ("rank_pattern", "alpha_pattern"):
        patterns = cfg.get(field) or {}
        if not isinstance(patterns, dict):
            raise ExpertError(f"{where}: field {field} must be an object of pattern → number, got {patterns!r}")
        for pattern, value in patterns.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ExpertError(f"{where}: {field} pattern {pattern!r} is not a valid regex: {e}") from None
            _positive(value, f"{where}: {field}[{pattern!r}]")


def load_task_vector(name: str, folder: Path, base: Checkpoint) -> TaskVector:
    """Auto-detect a PEFT adapter (adapter_config.json) or a full fine-tune in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExpertError(f"expert {name!r}: {folder} is not a folder")
    if (folder / ADAPTER_CONFIG).is_file():
        return LoraTaskVector(name, folder, base)
    return FullTaskVector(name, folder, base)
