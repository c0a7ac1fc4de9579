"""The live model's names: every tensor a lab reads is named as the base's model class holds it in memory.

Since transformers 4.52 the vision-language classes hold their weights under new names
(``model.language_model.*``, ``model.visual.*``, ``model.vision_tower.*``, ``model.multi_modal_projector.*``)
while ``save_pretrained`` still writes the names of their checkpoints (Qwen2-VL: ``model.layers.*``,
``visual.*``; LLaVA-family: ``language_model.model.*``, ``vision_tower.*``), and transformers renames on load.
PEFT names adapter modules after the live model (or, for adapters trained before 4.52, the old one).

:func:`live_names` asks transformers itself how the base's class renames a checkpoint — the conversion
mapping ``from_pretrained`` applies (``transformers.conversion_mapping.get_model_conversion_mapping`` on the
class built on the meta device, so no memory) — and returns that renaming as a function of one name. A key
both conventions agree on is left as it is, so a checkpoint already written under the live names (and its
cache keys) are unchanged. A tensor that transformers converts by computation (a ``WeightConverter``:
fused MoE experts, split qkv) keeps its on-disk name: mixlab merges it as stored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

_MEMO: dict[tuple, LiveNames] = {}
_STACK_LOCK = threading.Lock()


def import_stack() -> None:
    """Import transformers' classes mixlab uses, one thread at a time. transformers resolves its names
    lazily, and two threads resolving them at once (the app's background warm-up and a page that opens a
    lab) can meet a half-imported module: "cannot import name 'AutoConfig' from 'transformers'"."""
    with _STACK_LOCK:
        import transformers

        for name in ("AutoConfig", "AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoTokenizer"):
            getattr(transformers, name)


def is_multimodal(config: dict) -> bool:
    """A vision-language base (its config has a vision_config): loaded as an image-text-to-text model."""
    return "vision_config" in config


def auto_class(multimodal: bool):
    """The transformers auto class mixlab loads a base with: the one rule the resident model and the names share."""
    import_stack()
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if multimodal else AutoModelForCausalLM


@dataclass(eq=False)
class LiveNames:
    """On-disk name → the name the model class holds it by (:meth:`__call__`), for one model class.

    ``model_class`` is None when transformers has no class for the config (then names are kept as they are)."""

    model_class: str | None = None
    renamings: list = field(default_factory=list)
    converters: list = field(default_factory=list)
    prefix: str | None = None
    params: dict[str, bool] = field(default_factory=dict)  # the live names (meta state dict), ties included
    _memo: dict[str, str] = field(default_factory=dict, repr=False)

    def __call__(self, name: str) -> str:
        if not (self.renamings or self.converters):
            return name
        if name not in self._memo:
            from transformers.core_model_loading import rename_source_key

            live, converted = rename_source_key(name, self.renamings, self.converters, self.prefix, self.params)
            self._memo[name] = name if converted is not None else live
        return self._memo[name]

    def holds(self, name: str) -> bool:
        """Whether the model class holds a parameter or buffer of this (live) name (False without a class):
        a name it holds that its checkpoint lacks is a tied one (lm_head with tie_word_embeddings)."""
        return name in self.params


IDENTITY = LiveNames()


def live_names(folder: Path) -> LiveNames:
    """The renaming transformers applies when it loads the model folder ``folder`` (its config.json decides the
    class: :func:`auto_class`). Memoised per config file; :data:`IDENTITY` where the config names no class
    transformers can build (a custom or unknown architecture: loading it would fail in transformers anyway)."""
    cfg_path = Path(folder) / "config.json"
    try:
        st = os.stat(cfg_path)
        sig = (str(cfg_path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return IDENTITY
    if not isinstance(raw, dict):
        return IDENTITY
    if sig not in _MEMO:
        _MEMO[sig] = _build(Path(folder), is_multimodal(raw))
    return _MEMO[sig]


def _build(folder: Path, multimodal: bool) -> LiveNames:
    import_stack()
    import torch
    from transformers import AutoConfig
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a tiny or unusual config draws warnings that say nothing about names
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        cls = auto_class(multimodal)._model_mapping[type(config)]
        with torch.device("meta"):
            model = cls._from_config(config)
        conversions = get_model_conversion_mapping(model)
    except Exception:  # no class for this config (custom code, unknown model_type): names stay as written
        return IDENTITY
    finally:
        logger.setLevel(level)
    return LiveNames(
        model_class=cls.__name__,
        renamings=[c for c in conversions if isinstance(c, WeightRenaming)],
        converters=[c for c in conversions if isinstance(c, WeightConverter)],
        prefix=model.base_model_prefix,
        params=dict.fromkeys(model.state_dict(), True),
    )
