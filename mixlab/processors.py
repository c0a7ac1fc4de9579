"""A vision-language base's processor for image rows, and the image placeholder its prompts carry.

``AutoProcessor`` also builds a class's video processor (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, InternVL,
SmolVLM), which needs torchvision; mixlab's pinned CPU torch has no matching torchvision on PyPI (the wheel
there is built for CUDA torch and fails to register its operators). Image rows never use the video part, so
where it cannot be built the same processor class is built from the folder's image processor and tokenizer
without it (with the settings of the folder's ``processor_config.json``): the text and images come out as
``AutoProcessor`` would make them.

An image row's prompt gets the class's own placeholder where it has none (:func:`image_inputs`); each
class's processor expands it into the image's tokens. Checked against inputs written by hand from the
modelling code (tests/test_checkpoints.py): Qwen2-VL / Qwen2.5-VL, LLaVA, LLaVA-OneVision, Gemma 3 (the
processor's image token is its ``boi_token``), InternVL (``<IMG_CONTEXT>``, wrapped in ``<img>…</img>``) and
Mllama (``<|image|>``).
"""

from __future__ import annotations

from pathlib import Path

# Prompts whose class's processor expands a bare image token but whose model expects it wrapped (the chat
# template writes the wrapper): processor class name → the placeholder put before a prompt that has none.
IMAGE_PLACEHOLDER = {
    "Qwen2VLProcessor": "<|vision_start|><|image_pad|><|vision_end|>",
    "Qwen2_5_VLProcessor": "<|vision_start|><|image_pad|><|vision_end|>",
}


def image_placeholder(processor) -> str:
    """What a prompt without an image placeholder gets in front: the class's own (:data:`IMAGE_PLACEHOLDER`),
    else the processor's image token."""
    for cls in type(processor).__mro__:
        if cls.__name__ in IMAGE_PLACEHOLDER:
            return IMAGE_PLACEHOLDER[cls.__name__]
    return getattr(processor, "image_token", "<image>")


def image_inputs(processor, prompts: list[str], images: list) -> dict:
    """The processor's batch for image rows: each prompt with the placeholder in front where it lacks the
    image token, one image per row (as a list per row: a flat list is one row's images to some processors,
    Gemma 3's), padded on the left (generation continues each row from its last token)."""
    token = getattr(processor, "image_token", "<image>")
    placeholder = image_placeholder(processor)
    processor.tokenizer.padding_side = "left"
    texts = [p if token in p else placeholder + p for p in prompts]
    return processor(text=texts, images=[[im] for im in images], return_tensors="pt", padding=True)


def load_processor(folder: Path):
    """The model folder's processor: ``AutoProcessor``, or its class without the video processor where that
    part cannot be built (see the module docstring). Raises what transformers raises otherwise."""
    from transformers import AutoProcessor

    kw = dict(local_files_only=True, trust_remote_code=False)
    try:
        return AutoProcessor.from_pretrained(folder, **kw)
    except Exception as first:
        cls = _processor_class(folder)
        if cls is None or set(cls.get_attributes()) != {"image_processor", "tokenizer", "video_processor"}:
            raise first from None
        from transformers import AutoImageProcessor, AutoTokenizer

        image_only = type(cls.__name__, (cls,), {"check_argument_for_proper_class": _skip_missing_video})
        parts = {"image_processor": AutoImageProcessor.from_pretrained(folder, **kw)}
        parts["tokenizer"] = AutoTokenizer.from_pretrained(folder, **kw)
        parts["video_processor"] = None
        # the processor's own settings (processor_config.json: LLaVA-OneVision's num_image_tokens and
        # vision_feature_select_strategy, …), read as AutoProcessor reads them
        settings, _ = cls.get_processor_dict(folder, **kw)
        return image_only.from_args_and_dict([parts[a] for a in cls.get_attributes()], settings)


def _skip_missing_video(self, name, arg):
    if name == "video_processor" and arg is None:
        return None
    return super(type(self), self).check_argument_for_proper_class(name, arg)


def _processor_class(folder: Path):
    """The processor class transformers maps the folder's config to (None if it maps none)."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        return PROCESSOR_MAPPING[type(config)]
    except Exception:  # no config or no processor for it: the first error stands
        return None
