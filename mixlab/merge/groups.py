"""Layer groups: the tensors a merge changes, split by depth, so each expert's weight can differ per group
(LoRA-Soups, mergekit-evolve style: a merge that takes one checkpoint's early blocks and another's late ones).

A tensor's **depth level** comes from its name alone, so one rule covers Llama/Qwen2/Mistral (``model.layers.7.``),
GPT-2 (``transformer.h.7.``), LLaVA-style models (``model.language_model.layers.7.``) and the demo's Llama:

- the *input side*, before every block: embeddings (``embed``, ``wte``, ``wpe``) and, in a vision-language
  model, the vision tower and the projector (``vision``, ``visual``, ``multi_modal_projector``, ``mm_projector``:
  they feed the language model's first block, whatever their own block numbers);
- block ``i`` of the language model (``.layers.i.``, ``.h.i.``, ``.blocks.i.``, ``.layer.i.``);
- the *output side*, after every block: the final norm, the head, anything else.

``n`` groups are ``n`` runs of consecutive levels, as equal as :func:`numpy.array_split` makes them, over the
levels that the experts change (a LoRA pool that changes only the blocks' projections has no input or output
level). So with 2 blocks and LoRA experts, 2 groups are block 0 and block 1; with 24 blocks and full fine-tunes,
4 groups are embeddings with blocks 0-5, blocks 6-11, 12-17, and 18-23 with the head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from mixlab.errors import MergeError

RULE = 1  # the partition rule's version: part of a grouped merge's cache key
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_INPUT = ("vision", "visual", "multi_modal_projector", "mm_projector", "embed", "wte", "wpe")
INPUT, OUTPUT = -1, 1 << 30  # the depth of the input side and of the output side


def depth(key: str) -> int:
    """A tensor's depth level (see the module docstring): -1 input side, the block number, or 2³⁰ output side."""
    if any(part in key for part in _INPUT[:4]):
        return INPUT
    m = _BLOCK.search(key)
    if m:
        return int(m.group(1))
    return INPUT if any(part in key for part in _INPUT[4:]) else OUTPUT


def _level_name(level: int) -> str:
    return "input" if level == INPUT else "output" if level == OUTPUT else f"block {level}"


def layer_groups(keys: Sequence[str], n: int) -> list[tuple[str, list[str]]]:
    """The ``n`` groups of ``keys`` (the tensors the experts change), shallowest first: (name, keys in the
    order given). Raises MergeError when ``n`` exceeds the number of depth levels."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MergeError(f"layer groups must be a positive whole number, got {n!r}")
    levels = sorted({depth(k) for k in keys})
    if n > len(levels):
        names = ", ".join(_level_name(v) for v in levels)
        raise MergeError(
            f"{n} layer groups asked for, but the experts change tensors at {len(levels)} depth(s): {names}"
        )
    out = []
    for run in np.array_split(np.asarray(levels), n):
        run = [int(v) for v in run]
        first, last = _level_name(run[0]), _level_name(run[-1])
        if len(run) == 1:
            name = first
        elif INPUT < run[0] and run[-1] < OUTPUT:
            name = f"blocks {run[0]} – {run[-1]}"
        else:
            name = f"{first} – {last}"
        members = set(run)
        out.append((name, [k for k in keys if depth(k) in members]))
    return out


def group_index(keys: Sequence[str], n: int) -> dict[str, int]:
    """Each key's group number (0 = shallowest) among ``n`` groups of ``keys``."""
    return {k: g for g, (_, members) in enumerate(layer_groups(keys, n)) for k in members}
