"""Evaluators: score a causal LM on a benchmark's JSONL examples, in batches.

- ``lm_loss``: mean token NLL of the completion given the prompt (``{"prompt","completion"}``, or
  ``"answer"`` as the completion) or of the whole ``{"text"}``; lower is better.
- ``exact_match``: greedy generation until a stop string or ``max_new_tokens``, compared stripped to
  ``"answer"``; accuracy, higher is better. Rows with an ``"image"`` (a vision-language base) go through
  the base's processor (:func:`image_answers`).
- ``choice``: the option with the highest log-likelihood (``length_normalize``: per token) among
  ``"choices"`` must be ``"label"`` (an index); accuracy.
- ``package.module:function``: called as ``function(model, tokenizer, examples, device)``, returns a
  float or a dict with ``score`` and optionally ``metric``. Its direction is the manifest's
  (``lower_is_better``). The module is imported from the lab's ``plugins`` folders or from installed
  packages, never from the current folder or the app's folder.

A model whose forward pass gives NaN or inf logits fails its evaluation
(:data:`mixlab.evaluate.batches.NON_FINITE`) instead of scoring 0: a broken merge must never be cached as
a bad score.

The package, one concept a file: ``data`` (read and check a benchmark), ``tokens`` (the tokenisation
convention, in every cache key), ``batches`` (batches, padding, the finite-logits check), ``builtin`` (the
three built-in evaluators), ``plugins``, ``images`` (a VLM's image questions), ``runner`` (one benchmark on
one model, or many mixtures in one stream), ``devices``. The names callers use are importable from here;
each loads its module on first use, so reading :data:`TOKENIZATION` does not import torch.
"""

from __future__ import annotations

import importlib

_HOME = {
    "auto_batch_size": "devices",
    "default_dtype": "devices",
    "pick_device": "devices",
    "quiet_transformers": "devices",
    "has_images": "data",
    "read_benchmark": "data",
    "read_examples": "data",
    "TOKENIZATION": "tokens",
    "Batches": "batches",
    "BUILTIN": "builtin",
    "greedy_generate": "builtin",
    "image_answers": "images",
    "open_image": "images",
    "EvalResult": "runner",
    "context_length": "runner",
    "prepare": "runner",
    "run_benchmark": "runner",
    "run_benchmark_grouped": "runner",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
