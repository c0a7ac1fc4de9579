"""The resident model: one lab's base model held in memory once, into which merges and checkpoints are
written in place (the :class:`~mixlab.merge.Merger`), and restored to θ_0 tensor by tensor."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cached_property

import psutil

from mixlab.checkpoint import Checkpoint
from mixlab.errors import ExpertError
from mixlab.evaluate import auto_batch_size, default_dtype, quiet_transformers
from mixlab.experts import TaskVector
from mixlab.lazy import torch
from mixlab.merge import Merger, MergeSpec
from mixlab.names import auto_class, is_multimodal


class ResidentModel:
    """The base model on ``device`` and the state of what it currently holds."""

    def __init__(
        self,
        base: Checkpoint,
        experts: Sequence[TaskVector],
        exclude: Sequence[str],
        device: torch.device,
        batch_size: int | None = None,
    ):
        self.base, self.experts, self.exclude, self.device = base, list(experts), tuple(exclude), device
        self._batch_size = batch_size  # None: from free memory (see batch_size)
        self._batch_sizes: dict[tuple[int, int], int] = {}  # (seq_len, logit rows) → rows, from free memory
        self._merger: Merger | None = None
        self._theta0: dict[str, torch.Tensor] = {}  # float32 θ_0 on the device, shared by every merger
        self._loaded: object = "base"  # what the in-memory model currently holds
        self._dirty: set[str] = set()

    @cached_property
    def multimodal(self) -> bool:
        """A vision-language base (its config has a vision_config): loaded as an image-text-to-text model."""
        try:
            return is_multimodal(json.loads((self.base.folder / "config.json").read_text()))
        except (OSError, ValueError, TypeError):
            return False

    @cached_property
    def model(self):
        quiet_transformers()
        folder = self.base.folder
        auto = auto_class(self.multimodal)
        try:
            model = auto.from_pretrained(
                folder,
                dtype=default_dtype(self.device),
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
            )
        except Exception as e:  # transformers raises many types for a config that disagrees with the weights
            raise ExpertError(f"base: transformers cannot load {folder}: {type(e).__name__}: {e}") from None
        for name, p in model.state_dict().items():  # the merge reads only changed tensors; check them all once
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise ExpertError(f"base: tensor {name} in {folder} contains NaN or inf")
        return model.to(self.device).eval()

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.base.folder, local_files_only=True, trust_remote_code=False)
        except Exception as e:
            raise ExpertError(f"base: no usable tokenizer in {self.base.folder}: {type(e).__name__}: {e}") from None

    @cached_property
    def processor(self):
        """The base folder's processor (image benchmarks): its tokenizer and image processor
        (:func:`mixlab.processors.load_processor`)."""
        from mixlab.processors import load_processor

        try:
            return load_processor(self.base.folder)
        except Exception as e:
            raise ExpertError(f"base: no usable processor in {self.base.folder}: {type(e).__name__}: {e}") from None

    @property
    def batch_size(self) -> int:
        """Rows per forward pass: as given, else from the device's free memory for rows of 512 tokens (OOM
        still halves it). Large batches matter on a CPU too: the batched-mixture path gains with every row it
        shares. :meth:`batch_size_for` sizes them for a benchmark's own rows."""
        return self.batch_size_for(512, 512)

    def batch_size_for(self, seq_len: int, logit_rows: int) -> int:
        """Rows per forward pass for rows of at most ``seq_len`` tokens whose logits are kept at
        ``logit_rows`` positions: as given, else from the device's free memory when first asked for this
        shape (then kept, as :attr:`batch_size` is: a benchmark's batches do not change between mixtures)."""
        if self._batch_size is not None:
            return self._batch_size
        shape = (seq_len, logit_rows)
        if shape not in self._batch_sizes:
            self._batch_sizes[shape] = self._free_memory_batch(seq_len, logit_rows)
        return self._batch_sizes[shape]

    def _free_memory_batch(self, seq_len: int, logit_rows: int) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return auto_batch_size(self.model.config, free, seq_len, logit_rows=logit_rows)
        if self.device.type == "cpu":
            available = psutil.virtual_memory().available
            return auto_batch_size(self.model.config, available, seq_len, dtype_bytes=4, logit_rows=logit_rows)
        return 64

    @cached_property
    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict(keep_vars=False))

    def _experts_merger(self) -> Merger:
        if self._merger is None:
            self._merger = Merger(self.base, self.experts, self.exclude, self.device, theta0=self._theta0)
        return self._merger

    def _restore(self, keys: Iterable[str]) -> None:
        for k in keys:  # every dirty key was written by a merger, which put its θ_0 in self._theta0
            self._params[k].copy_(self._theta0[k])

    def _write(self, merger: Merger, spec: MergeSpec, state: object) -> None:
        if self._loaded == state:
            return
        missing = [k for k in merger.keys if k not in self._params]
        if missing:
            raise ExpertError(f"base: the loaded model has no parameter {missing[0]} (from the checkpoint)")
        self._restore(self._dirty - set(merger.keys))
        self._loaded = None  # a failure mid-write leaves an unknown state
        merger.write(self._params, spec)
        self._dirty = set(merger.keys)
        self._loaded = state

    def load_merge(self, spec: MergeSpec) -> None:
        """Put θ_0 + merge(τ, w) into the in-memory model."""
        self._write(self._experts_merger(), spec, ("merge", spec))

    def load_checkpoint(self, tv: TaskVector) -> None:
        """Put a checkpoint (θ_0 + its task vector) into the in-memory model."""
        merger = Merger(self.base, [tv], (), self.device, theta0=self._theta0)
        self._write(merger, MergeSpec("linear", (1.0,)), ("ckpt", tv.fingerprint))

    def load_base(self) -> None:
        self._restore(self._dirty)
        self._dirty, self._loaded = set(), "base"
