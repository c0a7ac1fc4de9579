"""Base models and experts read from safetensors, lazily, one tensor at a time.

An expert is a *task vector* τ = θ_expert − θ_base over the base's tensors:
- a full fine-tune dir (config.json + *.safetensors, sharded or not): τ[key] = θ_i[key] − θ_0[key];
- a PEFT LoRA adapter dir: τ[module.weight] = s·B·A per adapted module, s = alpha/r (alpha/√r with
  rsLoRA), honouring rank_pattern/alpha_pattern and fan_in_fan_out; factors stay factored until a
  merge asks for a dense tensor. Tensors saved whole in the adapter (modules_to_save) count as
  replacements: τ = saved − base.
Every tensor is keyed by the name the base's model class holds it under in memory (:mod:`mixlab.names`:
transformers' own conversion mapping), whichever convention a checkpoint or adapter was written in; each
checkpoint remembers its on-disk names to read them. Pickle checkpoints are refused, also beside
safetensors: loading them can run arbitrary code. Every file a checkpoint reads (symlinks included) must
resolve inside the lab folder it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from safetensors import safe_open

from mixlab.errors import ExpertError, ManifestError
from mixlab.lab import confined
from mixlab.lazy import safetensors_torch, torch
from mixlab.names import IDENTITY, LiveNames, live_names

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# Files of a Hugging Face model folder that change what a model computes, besides its weights: fingerprinted
# (an edited config or tokenizer makes new cache keys) and the only files an export copies (never code).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
)
# weight files in pickle format (transformers/PEFT would load them); other pickles (optimizer.pt, training_args.bin)
# are never loaded and are left alone
_PICKLE = re.compile(r"^(pytorch_model|adapter_model|model|consolidated)[\w.-]*\.(bin|pt|pth)$|\.(ckpt|pkl)$")
_FINGERPRINTS: dict[tuple, str] = {}
FINE_TUNE_COSINE = 0.5  # below this cos(θ_i, θ_0), an expert is flagged as perhaps not a fine-tune of the base


def file_signature(path: Path) -> tuple:
    """What changes whenever a file's bytes may have changed: which file (device, inode), its size, mtime
    and ctime (a rewrite that keeps size and mtime still moves ctime, which no user call can set back).
    One stat: cheap enough to ask before every score."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def folder_signature(folder: Path) -> tuple:
    """:func:`file_signature` of every file in a folder, in name order."""
    return tuple(file_signature(p) for p in sorted(Path(folder).iterdir()) if p.is_file())


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, memoised per :func:`file_signature` for this process."""
    memo = file_signature(path)
    if memo not in _FINGERPRINTS:
        with open(path, "rb") as f:
            _FINGERPRINTS[memo] = hashlib.file_digest(f, "sha256").hexdigest()
    return _FINGERPRINTS[memo]


def read_text(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ExpertError(f"{label}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ExpertError(f"{label}: cannot read {path}: {e.strerror or e}") from None


def check_folder(folder: Path, label: str, root: Path | None) -> None:
    """Refuse a folder holding pickle weights (transformers would load them even beside safetensors)
    and, given the lab's ``root``, any symlink in it that resolves outside the lab."""
    for p in sorted(folder.iterdir()):
        if _PICKLE.search(p.name):
            raise ExpertError(
                f"{label}: {p} is a pickle checkpoint, which mixlab refuses to load or keep beside safetensors "
                "(loading it can run code). Convert it to safetensors and remove it, e.g. for a transformers "
                "model: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True); "
                "for a PEFT adapter: PeftModel.from_pretrained(base, dir).save_pretrained(dir)"
            )
        if root is not None and p.is_symlink():
            try:
                confined(root, p, label)  # the lab's one rule for a path that must stay inside it
            except ManifestError:
                raise ExpertError(f"{label}: {p} is a link to {p.resolve()}, outside the lab folder {root}") from None


def check_finite(t: torch.Tensor, label: str, key: str) -> torch.Tensor:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ExpertError(f"{label}: tensor {key} contains NaN or inf")
    return t


class Checkpoint:
    """A folder of safetensors files read lazily: keys, shapes and dtypes without loading tensors.
    ``root``: the lab folder every file must resolve inside. ``names``: on-disk name → live name (the
    base's :class:`~mixlab.names.LiveNames`); keys are live names, :meth:`disk_name` gives the stored one."""

    def __init__(self, folder: Path, label: str, root: Path | None = None, names: LiveNames = IDENTITY):
        self.folder = Path(folder)
        self.label = label
        self.names = names
        self.root = None if root is None else Path(root).resolve()
        if not self.folder.is_dir():
            raise ExpertError(f"{label}: {self.folder} is not a folder")
        check_folder(self.folder, label, self.root)
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise ExpertError(f"{label}: no *.safetensors file in {self.folder}")
        self.files = files
        self._model_files = [self.folder / n for n in MODEL_FILES if (self.folder / n).is_file()]
        self.loaded_signature = self.signature()  # taken before anything is read
        self._where: dict[str, Path] = {}  # live name → file
        self._disk: dict[str, str] = {}  # live name → on-disk name
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}
        for file in files:
            try:
                with safe_open(file, "pt") as f:
                    for stored in f.keys():
                        key = names(stored)
                        if key in self._where:
                            twice = (
                                stored if stored == self._disk[key] else f"{self._disk[key]} and {stored} (as {key})"
                            )
                            raise ExpertError(
                                f"{label}: tensor {twice} is stored twice ({self._where[key].name}, {file.name})"
                            )
                        self._where[key] = file
                        self._disk[key] = stored
                        sl = f.get_slice(stored)
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

    def disk_name(self, key: str) -> str:
        """The name tensor ``key`` (a live name) is stored under in this checkpoint's files."""
        return self._disk[key]

    def get(self, key: str) -> torch.Tensor:
        """Load one tensor (checked finite)."""
        if key not in self._where:
            raise ExpertError(f"{self.label}: no tensor {key}")
        file = self._where[key]
        if file not in self._handles:
            self._handles[file] = safe_open(file, "pt")
        return check_finite(self._handles[file].get_tensor(self._disk[key]), self.label, key)

    @property
    def n_params(self) -> int:
        return sum(math.prod(self.shape(k)) for k in self.keys())

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @cached_property
    def name_or_path(self) -> str | None:
        """The ``_name_or_path`` its config.json records, if any."""
        try:
            value = json.loads((self.folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def model_files(self) -> list[Path]:
        """The folder's :data:`MODEL_FILES` (config, tokenizer, …), as found when it was opened."""
        return list(self._model_files)

    def signature(self) -> tuple:
        """Changes whenever a file this checkpoint reads may have changed (see :func:`file_signature`);
        the folder's own signature changes when a file is added or removed."""
        return (file_signature(self.folder), *(file_signature(f) for f in [*self.files, *self._model_files]))

    @property
    def fingerprint(self) -> str:
        """sha256 over the weights and the model files: anything that changes what the model computes."""
        return files_fingerprint([*self.files, *self.model_files()])


def files_fingerprint(files: Sequence[Path]) -> str:
    """A checkpoint's fingerprint (:attr:`Checkpoint.fingerprint`): sha256 over its files' names and bytes."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_fingerprint(f).encode())
    return h.hexdigest()


def lora_fingerprint(config_text: str, weights_sha256: bytes) -> str:
    """A LoRA adapter's fingerprint (:attr:`LoraTaskVector.fingerprint`): its config's text and the sha256
    of its weights file's bytes."""
    return hashlib.sha256(hashlib.sha256(config_text.encode()).digest() + weights_sha256).hexdigest()


def folder_fingerprint(folder: Path, label: str, root: Path | None = None) -> str:
    """The fingerprint the checkpoint or adapter in ``folder`` has once loaded (a base or full fine-tune:
    :attr:`Checkpoint.fingerprint`; a PEFT adapter: :attr:`LoraTaskVector.fingerprint`), from its files
    alone: no tensor is read and nothing imports torch, so a page can look up cached scores without the
    model stack. The same folder checks as loading (no pickle weights, no link out of the lab ``root``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExpertError(f"{label}: {folder} is not a folder")
    check_folder(folder, label, None if root is None else Path(root).resolve())
    if (folder / ADAPTER_CONFIG).is_file():
        weights = folder / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise ExpertError(f"{label}: no {ADAPTER_WEIGHTS} in {folder}")
        return lora_fingerprint(read_text(folder / ADAPTER_CONFIG, label), bytes.fromhex(file_fingerprint(weights)))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExpertError(f"{label}: no *.safetensors file in {folder}")
    return files_fingerprint([*files, *(folder / n for n in MODEL_FILES if (folder / n).is_file())])


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


def load_base(folder: Path, root: Path | None = None) -> Checkpoint:
    """The base model's checkpoint; a config.json must sit beside its safetensors."""
    if not (Path(folder) / "config.json").is_file():
        Checkpoint(folder, "base", root)  # a folder that is not one, or holds no weights, says so first
        raise ExpertError(f"base: {folder} has no config.json; the base must be a Hugging Face model folder")
    if Path(folder).is_dir():  # refuse pickles and links out of the lab before transformers reads the config
        check_folder(Path(folder), "base", None if root is None else Path(root).resolve())
    return Checkpoint(folder, "base", root, live_names(folder))


def load_task_vector(name: str, folder: Path, base: Checkpoint) -> TaskVector:
    """Auto-detect a PEFT adapter (adapter_config.json) or a full fine-tune in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExpertError(f"expert {name!r}: {folder} is not a folder")
    if (folder / ADAPTER_CONFIG).is_file():
        return LoraTaskVector(name, folder, base)
    return FullTaskVector(name, folder, base)
