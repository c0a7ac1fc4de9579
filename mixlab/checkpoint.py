"""A folder of safetensors read lazily, one tensor at a time (:class:`Checkpoint`): keys, shapes and dtypes
without loading tensors, every tensor keyed by the name the base's model class holds it under in memory
(:mod:`mixlab.names`), each checkpoint remembering its on-disk names to read them. Pickle checkpoints are
refused, also beside safetensors (loading them can run arbitrary code); every file a checkpoint reads
(symlinks included) must resolve inside the lab folder it belongs to. :func:`folder_fingerprint` gives a
folder's fingerprint from its files alone."""

from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path

from safetensors import safe_open

from mixlab.errors import ExpertError, ManifestError
from mixlab.fingerprints import file_fingerprint, file_signature, files_fingerprint, lora_fingerprint
from mixlab.lab import confined
from mixlab.lazy import torch
from mixlab.names import IDENTITY, LiveNames, live_names

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
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


def load_base(folder: Path, root: Path | None = None) -> Checkpoint:
    """The base model's checkpoint; a config.json must sit beside its safetensors."""
    if not (Path(folder) / "config.json").is_file():
        Checkpoint(folder, "base", root)  # a folder that is not one, or holds no weights, says so first
        raise ExpertError(f"base: {folder} has no config.json; the base must be a Hugging Face model folder")
    if Path(folder).is_dir():  # refuse pickles and links out of the lab before transformers reads the config
        check_folder(Path(folder), "base", None if root is None else Path(root).resolve())
    return Checkpoint(folder, "base", root, live_names(folder))
