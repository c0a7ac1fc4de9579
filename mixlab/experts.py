"""Base models and experts read from safetensors, lazily, one tensor at a time.

An expert is a *task vector* τ = θ_expert − θ_base over the base's tensors:
- a full fine-tune dir (config.json + *.safetensors, sharded or not): τ[key] = θ_i[key] − θ_0[key];
- a PEFT LoRA adapter dir: τ[module.weight] = s·B·A per adapted module, s = alpha/r (alpha/√r with
  rsLoRA), honouring rank_pattern/alpha_pattern and fan_in_fan_out; factors stay factored until a
  merge asks for a dense tensor. Tensors saved whole in the adapter (modules_to_save) count as
  replacements: τ = saved − base.
Pickle checkpoints are refused: loading them can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors import safe_open

from mixlab.errors import ExpertError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) for this process."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FINGERPRINTS:
        with open(path, "rb") as f:
            _FINGERPRINTS[memo] = hashlib.file_digest(f, "sha256").hexdigest()
    return _FINGERPRINTS[memo]


def _refuse_pickle(folder: Path, label: str) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ExpertError(
            f"{label}: {folder / pickles[0]} is a pickle checkpoint, which mixlab refuses to load (it can run "
            "code). Convert it to safetensors, e.g. for a transformers model: "
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True); "
            "for a PEFT adapter: PeftModel.from_pretrained(base, dir).save_pretrained(dir)"
        )
    raise ExpertError(f"{label}: no *.safetensors file in {folder}")


def check_finite(t: torch.Tensor, label: str, key: str) -> torch.Tensor:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ExpertError(f"{label}: tensor {key} contains NaN or inf")
    return t


class Checkpoint:
    """A folder of safetensors files read lazily: keys, shapes and dtypes without loading tensors."""

    def __init__(self, folder: Path, label: str):
        self.folder = Path(folder)
        self.label = label
        if not self.folder.is_dir():
            raise ExpertError(f"{label}: {self.folder} is not a folder")
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            _refuse_pickle(self.folder, label)
        self.files = files
        self._where: dict[str, Path] = {}
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}
        for file in files:
            try:
                with safe_open(file, "pt") as f:
                    for key in f.keys():
                        if key in self._where:
                            raise ExpertError(
                                f"{label}: tensor {key} is stored twice ({self._where[key].name}, {file.name})"
                            )
                        self._where[key] = file
                        sl = f.get_slice(key)
                        self._meta[key] = (tuple(sl.get_shape()), sl.get_dtype())
            except ExpertError:
                raise
            except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
                raise ExpertError(f"{label}: cannot read {file}: {e}") from None
        self._handles: dict[Path, object] = {}

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._meta[key][0]

    def dtype(self, key: str) -> str:
        return self._meta[key][1]

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        """Load one tensor (checked finite)."""
        if key not in self._where:
            raise ExpertError(f"{self.label}: no tensor {key}")
        file = self._where[key]
        if file not in self._handles:
            self._handles[file] = safe_open(file, "pt")
        return check_finite(self._handles[file].get_tensor(key), self.label, key)

    @property
    def n_params(self) -> int:
        return sum(math.prod(self.shape(k)) for k in self.keys())

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.name.encode() + b"\0" + file_fingerprint(f).encode())
        return h.hexdigest()


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


class TaskVector:
    """τ_i for one expert, over the base checkpoint's tensors. Subclasses: full and LoRA."""

    kind: str
    name: str
    base: Checkpoint

    def keys(self) -> list[str]:
        """Base tensors this expert changes."""
        raise NotImplementedError

    def delta(self, key: str, theta0: torch.Tensor | None = None) -> torch.Tensor | None:
        """Dense float32 τ[key] with the base tensor's shape, or None where the expert changes nothing.
        ``theta0``: the base tensor, when the caller has it already (saves re-reading it)."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

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
        self.name, self.base = name, base
        self.ckpt = Checkpoint(folder, f"expert {name!r}")
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

    def keys(self) -> list[str]:
        return self.base.keys()

    def delta(self, key: str, theta0: torch.Tensor | None = None) -> torch.Tensor | None:
        theta0 = self.base.get(key) if theta0 is None else theta0
        return self.ckpt.get(key).to(theta0.device, torch.float32) - theta0.float()

    @cached_property
    def fingerprint(self) -> str:
        return self.ckpt.fingerprint

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
    """A PEFT LoRA adapter, kept factored: τ[m.weight] = s_m · B_m @ A_m."""

    kind = "lora"
    _LORA = re.compile(r"^(?P<module>.+)\.(?:lora_A|lora_B)\.weight$|^(?P<emb>.+)\.lora_embedding_(?:A|B)$")

    def __init__(self, name: str, folder: Path, base: Checkpoint):
        self.name, self.base, self.folder = name, base, Path(folder)
        label = f"expert {name!r}"
        cfg_path = self.folder / ADAPTER_CONFIG
        try:
            self.config = json.loads(cfg_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ExpertError(f"{label}: cannot read {cfg_path}: {e}") from None
        if not (self.folder / ADAPTER_WEIGHTS).is_file():
            _refuse_pickle(self.folder, label)
        cfg = self.config
        if cfg.get("peft_type", "LORA") != "LORA":
            raise ExpertError(f"{label}: peft_type {cfg.get('peft_type')!r} in {cfg_path} is not supported; only LORA")
        for flag in ("use_dora", "use_qalora", "lora_bias"):
            if cfg.get(flag):
                raise ExpertError(f"{label}: {flag}=true in {cfg_path} is not supported (the merge would not be exact)")
        if cfg.get("bias", "none") != "none":
            raise ExpertError(f"{label}: bias={cfg['bias']!r} in {cfg_path} is not supported; train with bias='none'")
        for field in ("r", "lora_alpha"):
            if not isinstance(cfg.get(field), (int, float)) or cfg[field] <= 0:
                raise ExpertError(
                    f"{label}: {cfg_path} field {field} must be a positive number, got {cfg.get(field)!r}"
                )

        self.ckpt = Checkpoint(self.folder, label)
        raw: dict[str, dict[str, torch.Tensor]] = {}
        self.replaced: dict[str, str] = {}  # base key → adapter key saved whole (modules_to_save)
        for akey in self.ckpt.keys():
            if not akey.startswith(PEFT_PREFIX):
                raise ExpertError(f"{label}: tensor {akey} in {ADAPTER_WEIGHTS} does not start with {PEFT_PREFIX!r}")
            key = akey[len(PEFT_PREFIX) :]
            m = self._LORA.match(key)
            if m:
                module = m.group("module") or m.group("emb")
                part = "A" if ("lora_A" in key or "lora_embedding_A" in key) else "B"
                raw.setdefault(module, {})[part] = self.ckpt.get(akey)
                raw[module]["emb"] = m.group("emb") is not None
                continue
            key = key.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
            if key not in base:
                raise ExpertError(f"{label}: adapter tensor {akey} matches no base tensor ({key})")
            if self.ckpt.shape(akey) != base.shape(key):
                raise ExpertError(
                    f"{label}: tensor {key} has shape {self.ckpt.shape(akey)} but the base has {base.shape(key)}"
                )
            self.replaced[key] = akey

        r, alpha = cfg["r"], cfg["lora_alpha"]
        rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
        self.factors: dict[str, LoraFactors] = {}
        for module, parts in raw.items():
            if "A" not in parts or "B" not in parts:
                raise ExpertError(f"{label}: module {module} has lora_{'A' if 'A' not in parts else 'B'} missing")
            a, b, emb = parts["A"], parts["B"], parts["emb"]
            key = f"{module}.weight"
            if key not in base:
                raise ExpertError(f"{label}: adapted module {module} has no tensor {key} in the base")
            r_m = _pattern_value(rank_pattern, module, r)
            alpha_m = _pattern_value(alpha_pattern, module, alpha)
            if a.shape[0] != r_m or b.shape[1] != r_m:
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

    def keys(self) -> list[str]:
        return sorted(set(self.factors) | set(self.replaced))

    def delta(self, key: str, theta0: torch.Tensor | None = None) -> torch.Tensor | None:
        out = None
        if key in self.replaced:
            theta0 = self.base.get(key) if theta0 is None else theta0
            out = self.ckpt.get(self.replaced[key]).to(theta0.device, torch.float32) - theta0.float()
        if key in self.factors:
            d = self.factors[key].dense()
            out = d if out is None else out + d.to(out.device)
        return out

    @cached_property
    def fingerprint(self) -> str:  # the tensors were read once at load; so is their fingerprint
        h = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        h.update(self.ckpt.fingerprint.encode())
        return h.hexdigest()

    @property
    def n_params(self) -> int:
        return sum(f.a.numel() + f.b.numel() for f in self.factors.values()) + sum(
            math.prod(self.base.shape(k)) for k in self.replaced
        )

    @property
    def rank(self) -> int | None:
        ranks = {f.a.shape[0] for f in self.factors.values()}
        return max(ranks) if ranks else None


def load_base(folder: Path) -> Checkpoint:
    """The base model's checkpoint; a config.json must sit beside its safetensors."""
    ckpt = Checkpoint(folder, "base")
    if not (Path(folder) / "config.json").is_file():
        raise ExpertError(f"base: {folder} has no config.json; the base must be a Hugging Face model folder")
    return ckpt


def load_task_vector(name: str, folder: Path, base: Checkpoint) -> TaskVector:
    """Auto-detect a PEFT adapter (adapter_config.json) or a full fine-tune in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExpertError(f"expert {name!r}: {folder} is not a folder")
    if (folder / ADAPTER_CONFIG).is_file():
        return LoraTaskVector(name, folder, base)
    return FullTaskVector(name, folder, base)
