"""Running work on a model in batches: a batch that halves on out-of-memory, padding, and the check that
fails any forward pass with NaN or inf logits (:data:`NON_FINITE`): a broken merge is never scored 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mixlab.errors import Cancelled, EvaluationError
from mixlab.lazy import torch

Progress = Callable[[int, int], None]


NON_FINITE = (
    "the model's forward pass gave NaN or inf logits: the merged weights overflow or hold NaN (check the "
    "experts' scales, lora_alpha and the method's parameters); no score was stored"
)


class Batches:
    """Runs ``fn`` over items in batches, halving the batch on CUDA out-of-memory. ``before`` sees
    each batch's items first (the batched-mixture path sets per-row mixture weights there)."""

    def __init__(
        self, batch_size: int, progress: Progress | None, cancel, before: Callable[[Sequence], None] | None = None
    ):
        self.batch_size, self.progress, self.cancel, self.before = batch_size, progress, cancel, before

    def run(self, items: Sequence, fn: Callable[[Sequence], list]) -> list:
        out, i, size = [], 0, self.batch_size
        while i < len(items):
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("evaluation cancelled")
            batch = items[i : i + size]
            try:
                if self.before is not None:
                    self.before(batch)
                out.extend(fn(batch))
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not _is_oom(e):
                    raise
                if size == 1:
                    raise EvaluationError(
                        "out of memory at batch size 1; use a smaller model or a device with more memory"
                    ) from None
                size = max(1, size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            i += size
            if self.progress:
                self.progress(min(i, len(items)), len(items))
        return out


def _is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)


def padded(seqs: Sequence[list[int]], pad: int, device, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token lists padded to one width, on the right or (``left``) on the left."""
    width = max(len(s) for s in seqs)
    rows = [[pad] * (width - len(s)) + s if left else s + [pad] * (width - len(s)) for s in seqs]
    marks = [[0] * (width - len(s)) + [1] * len(s) if left else [1] * len(s) + [0] * (width - len(s)) for s in seqs]
    return torch.tensor(rows, device=device), torch.tensor(marks, device=device)


class FiniteLogits:
    """A forward hook that fails any forward pass with NaN/inf logits (for plugins, whose loops we do not own)."""

    def __init__(self, model):
        self.model, self.handle = model, None

    def __enter__(self):
        def check(_module, _args, out):
            logits = getattr(out, "logits", None)
            if isinstance(logits, torch.Tensor) and not bool(torch.isfinite(logits).all()):
                raise EvaluationError(NON_FINITE)

        if hasattr(self.model, "register_forward_hook"):
            self.handle = self.model.register_forward_hook(check)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
