"""Where a model runs: the device (cuda → mps → cpu, or the one asked for), its dtype, the batch size that
fits in memory, and transformers kept quiet while models load."""

from __future__ import annotations

from mixlab.errors import EvaluationError
from mixlab.lazy import torch


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else cuda → mps → cpu."""
    if preference:
        try:
            dev = torch.device(preference)
        except RuntimeError:
            raise EvaluationError(f"unknown device {preference!r}; use cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise EvaluationError(f"device {preference!r} asked for, but CUDA is not available here")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EvaluationError(f"device {preference!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        if dev.type == "mps" and not _mps_available():
            raise EvaluationError(f"device {preference!r} asked for, but MPS (Apple GPU) is not available here")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise EvaluationError(f"device {preference!r} is not supported; use cpu, cuda, cuda:N or mps")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def quiet_transformers() -> None:
    """No per-load progress bars or deprecation chatter from transformers/peft on our users' terminals."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def auto_batch_size(
    config, free_bytes: int, seq_len: int = 512, dtype_bytes: int = 2, cap: int = 512, logit_rows: int | None = None
) -> int:
    """Rows per batch that fit in half of ``free_bytes``: per row, the float32 logits (``logit_rows`` × vocab;
    every position, ``seq_len``, unless fewer are asked for: greedy generation keeps the last one) plus the
    activations kept by a forward pass (≈ 16 · seq × hidden per layer at ``dtype_bytes``)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config  # a VLM's language model
    hidden = getattr(config, "hidden_size", 4096)
    layers = getattr(config, "num_hidden_layers", 32)
    vocab = getattr(config, "vocab_size", 32000)
    logit_rows = seq_len if logit_rows is None else logit_rows
    per_row = logit_rows * 4 * vocab + seq_len * 16 * hidden * layers * dtype_bytes
    return int(max(1, min(cap, (free_bytes // 2) // max(per_row, 1))))
