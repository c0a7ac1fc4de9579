"""Merge presets of a vision-language base: which of its tensors are the vision tower, the connector and the
language model, decided by its model class (the ``model_type`` of its config) in one table, :data:`PARTS`.

The seed paper merges the language model only: LoRA experts are trained on the LLM with the tower and the
projector frozen. ``lora`` keeps the tower, the connector and the language model's embeddings, lm_head and
norms at the base; ``full`` (full fine-tunes) keeps only the tower and merges the connector with the LLM.
Patterns are globs over the live names (:mod:`mixlab.names`), whichever names the checkpoint was saved with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mixlab.merge.methods import is_excluded


@dataclass(frozen=True)
class Parts:
    """Globs over a model class's live tensor names: its vision tower and its connector (the projector
    from vision features into the language model's embeddings)."""

    tower: tuple[str, ...]
    connector: tuple[str, ...]


_LLAVA = Parts(("model.vision_tower.*",), ("model.multi_modal_projector.*",))
_QWEN_VL = Parts(("model.visual.patch_embed.*", "model.visual.blocks.*"), ("model.visual.merger.*",))
_IDEFICS = Parts(("model.vision_model.*",), ("model.connector.*",))
PARTS: dict[str, Parts] = {  # model_type → parts; a model_type not here gets the generic parts (GENERIC)
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    "llava": _LLAVA,
    "llava_next": Parts(_LLAVA.tower, (*_LLAVA.connector, "model.image_newline")),
    "llava_onevision": Parts(_LLAVA.tower, (*_LLAVA.connector, "model.image_newline")),
    "internvl": _LLAVA,
    "gemma3": _LLAVA,
    "mistral3": _LLAVA,
    "idefics3": _IDEFICS,
    "smolvlm": _IDEFICS,
    "mllama": Parts(("model.vision_model.*",), ("model.multi_modal_projector.*",)),
}
# what a lab of an unlisted class gets, and (as the presets were before the table) the patterns that keep the
# cache keys of labs these already served: see preset_patterns
GENERIC = Parts(("*vision_tower*", "*visual.*"), ("*multi_modal_projector*", "*visual.merger*"))
LM_KEPT = ("*embed_tokens*", "lm_head.*", "*lm_head.weight", "*norm*")  # embeddings, lm_head, norms (LoRA)
PRESET_NAMES = ("lora", "full")
PRESET_HELP = {
    "lora": "LoRA experts on the language model: the vision tower, the connector, embeddings, lm_head and norms "
    "stay the base's",
    "full": "full fine-tunes: the vision tower stays the base's; the connector and the language model are merged",
}


def _patterns(preset: str, parts: Parts) -> tuple[str, ...]:
    return parts.tower + parts.connector + LM_KEPT if preset == "lora" else parts.tower


def model_type(folder: Path) -> str | None:
    """The ``model_type`` a model folder's config.json names, if any."""
    try:
        value = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def preset_patterns(preset: str, kind: str | None, keys: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The globs ``preset`` keeps at the base for a base of model_type ``kind`` with (live) tensor names
    ``keys``, and warnings (a preset that would keep none of the base's tensors).

    Cache keys hold the patterns, so where the generic patterns keep exactly the tensors the class's row
    keeps (LLaVA-style labs, which they already served), the generic ones are returned: the same merge keeps
    the same key."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESET_NAMES)}")
    generic = _patterns(preset, GENERIC)
    patterns = _patterns(preset, PARTS[kind]) if kind in PARTS else generic
    kept = {k for k in keys if is_excluded(k, patterns)}
    if patterns != generic and kept == {k for k in keys if is_excluded(k, generic)}:
        patterns = generic
    warnings = []
    if not kept:
        known = "" if kind in PARTS else f" (mixlab has no table row for model_type {kind!r}: use merge.exclude)"
        warnings.append(f"merge preset {preset!r} keeps none of the base's tensors at the base{known}")
    return patterns, warnings
