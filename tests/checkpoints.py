"""Tiny checkpoints of the real transformers model classes, written the way users get them: a random base
built from the class's own config class and saved with ``save_pretrained``, PEFT LoRA experts saved with
PEFT's ``save_pretrained``, full fine-tunes saved with ``save_pretrained``. Shared by the table-driven tests
(tests/test_checkpoints.py) and any test that needs a model family other than the demo's Llama.

Every builder returns a config of about hidden 32, 1-2 layers and a tiny vision tower, so a whole family
(base + 3 adapters + 2 full experts) builds in a second or two on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mixlab.demo.tasks import build_tokenizer

H = 32  # hidden size of every language model here
LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _text(cls_name: str, vocab: int, **kw):
    import transformers

    cfg = dict(
        vocab_size=vocab,
        hidden_size=H,
        intermediate_size=2 * H,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    cfg.update(kw)
    return getattr(transformers, cls_name)(**cfg)


def _siglip(**kw):
    from transformers import SiglipVisionConfig

    cfg = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    cfg.update(kw)
    return SiglipVisionConfig(**cfg)


@dataclass(frozen=True)
class Family:
    """One model class: how to build its tiny config, which class ``from_pretrained`` loads it as, and the
    LoRA target modules on its language model (a regex where names clash with the vision tower's)."""

    name: str
    model_class: str
    config: Callable[[int, dict[str, int]], object]  # (vocab size, special token ids) → config
    targets: list[str] | str = field(default_factory=lambda: list(LM_TARGETS))
    vision: bool = True
    # live-name prefixes of the vision tower and the connector, written here from the modeling code (not
    # from mixlab's table), so the presets are checked against an independent statement
    tower: tuple[str, ...] = ("model.vision_tower.",)
    connector: tuple[str, ...] = ("model.multi_modal_projector.",)


def _llama(vocab, ids):
    return _text("LlamaConfig", vocab)


def _qwen2(vocab, ids):
    return _text("Qwen2Config", vocab)


def _gemma2(vocab, ids):
    return _text("Gemma2Config", vocab, head_dim=8, query_pre_attn_scalar=8, sliding_window=16)


def _phi3(vocab, ids):
    return _text("Phi3Config", vocab, num_key_value_heads=4, pad_token_id=0)


def _gpt2(vocab, ids):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=H, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2)


def _qwen2_vl(vocab, ids):
    from transformers import Qwen2VLConfig

    text = dict(
        vocab_size=vocab,
        hidden_size=H,
        intermediate_size=2 * H,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
    )
    vision = dict(depth=1, embed_dim=16, hidden_size=H, num_heads=2, mlp_ratio=2, patch_size=4, spatial_merge_size=2)
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["start"],
        vision_end_token_id=ids["end"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _qwen2_5_vl(vocab, ids):
    from transformers import Qwen2_5_VLConfig

    text = dict(
        vocab_size=vocab,
        hidden_size=H,
        intermediate_size=2 * H,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
    )
    vision = dict(
        depth=1,
        hidden_size=16,
        intermediate_size=32,
        num_heads=2,
        out_hidden_size=H,
        patch_size=4,
        spatial_merge_size=2,
        window_size=16,
        fullatt_block_indexes=[0],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["start"],
        vision_end_token_id=ids["end"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def _llava(vocab, ids):
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=_siglip(),
        text_config=_text("LlamaConfig", vocab),
        image_token_index=ids["image"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_seq_length=4,
    )


def _llava_onevision(vocab, ids):
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config=_siglip(),
        text_config=_text("Qwen2Config", vocab),
        image_token_index=ids["image"],
        video_token_index=ids["video"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[16, 16]],
    )


def _internvl(vocab, ids):
    from transformers import InternVLConfig

    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=[16, 16],
        patch_size=[8, 8],
    )
    return InternVLConfig(
        vision_config=vision,
        text_config=_text("Qwen2Config", vocab).to_dict(),
        image_token_id=ids["image"],
        image_seq_length=1,
        downsample_ratio=0.5,
    )


def _gemma3(vocab, ids):
    from transformers import Gemma3Config

    text = _text("Gemma3TextConfig", vocab, head_dim=8, query_pre_attn_scalar=8, sliding_window=16).to_dict()
    return Gemma3Config(
        text_config=text,
        vision_config=_siglip(image_size=32, patch_size=8).to_dict(),
        mm_tokens_per_image=4,
        image_token_index=ids["image"],
        boi_token_index=ids["start"],
        eoi_token_index=ids["end"],
    )


def _idefics3(vocab, ids, cls="Idefics3Config"):
    import transformers

    vision = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    return getattr(transformers, cls)(
        vision_config=vision,
        text_config=_text("LlamaConfig", vocab).to_dict(),
        image_token_id=ids["image"],
        scale_factor=2,
    )


def _smolvlm(vocab, ids):
    return _idefics3(vocab, ids, "SmolVLMConfig")


def _mllama(vocab, ids):
    from transformers import MllamaConfig

    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_global_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        max_num_tiles=1,
        intermediate_layers_indices=[0],
        vision_output_dim=32,
        supported_aspect_ratios=[[1, 1]],
    )
    text = dict(
        vocab_size=vocab,
        hidden_size=H,
        intermediate_size=2 * H,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        cross_attention_layers=[1],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids["image"])


# the LoRA targets of a VL model: linear layers of the language model only (the vision tower has q/k/v too)
def _lm_regex(prefix: str) -> str:
    return rf".*{prefix}.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


TEXT = [
    Family("llama", "LlamaForCausalLM", _llama, vision=False),
    Family("qwen2", "Qwen2ForCausalLM", _qwen2, vision=False),
    Family("gemma2", "Gemma2ForCausalLM", _gemma2, vision=False),
    Family("phi3", "Phi3ForCausalLM", _phi3, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], vision=False),
    Family("gpt2", "GPT2LMHeadModel", _gpt2, ["c_attn", "c_proj", "c_fc"], vision=False),
]
_QWEN = dict(tower=("model.visual.patch_embed.", "model.visual.blocks."), connector=("model.visual.merger.",))
_IDEFICS = dict(tower=("model.vision_model.",), connector=("model.connector.",))
VISION = [
    Family("qwen2_vl", "Qwen2VLForConditionalGeneration", _qwen2_vl, _lm_regex("language_model"), **_QWEN),
    Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", _qwen2_5_vl, _lm_regex("language_model"), **_QWEN),
    Family("llava", "LlavaForConditionalGeneration", _llava, _lm_regex("language_model")),
    Family(
        "llava_onevision",
        "LlavaOnevisionForConditionalGeneration",
        _llava_onevision,
        _lm_regex("language_model"),
        connector=("model.multi_modal_projector.", "model.image_newline"),
    ),
    Family("internvl", "InternVLForConditionalGeneration", _internvl, _lm_regex("language_model")),
    Family("gemma3", "Gemma3ForConditionalGeneration", _gemma3, _lm_regex("language_model")),
    Family("idefics3", "Idefics3ForConditionalGeneration", _idefics3, _lm_regex("text_model"), **_IDEFICS),
    Family("smolvlm", "SmolVLMForConditionalGeneration", _smolvlm, _lm_regex("text_model"), **_IDEFICS),
    Family(
        "mllama",
        "MllamaForConditionalGeneration",
        _mllama,
        _lm_regex("language_model"),
        tower=("model.vision_model.",),
    ),
]
FAMILIES = {f.name: f for f in TEXT + VISION}
SPECIAL = ("image", "video", "start", "end")
# Qwen2-VL's own names for them (its processor and prompts use these strings)
QWEN_SPECIAL = {
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
    "start": "<|vision_start|>",
    "end": "<|vision_end|>",
}


# Idefics3's processor adds these to a tokenizer that lacks them (new ids past the model's vocabulary)
IDEFICS_SPECIAL = ["<fake_token_around_image>", "<end_of_utterance>"]


def tokenizer():
    """The demo's character tokenizer plus the image/video/boundary tokens a VL config names by id (in the
    generic spelling and in Qwen2-VL's) and the ones Idefics3's processor wraps an image in."""
    tok = build_tokenizer()
    specials = [f"<{s}>" for s in SPECIAL] + list(QWEN_SPECIAL.values()) + IDEFICS_SPECIAL
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def _ids(tok, family: Family) -> dict[str, int]:
    names = QWEN_SPECIAL if family.name.startswith("qwen2") else {s: f"<{s}>" for s in SPECIAL}
    return {s: tok.convert_tokens_to_ids(t) for s, t in names.items()}


def save_image_processor(family: Family, folder: Path) -> None:
    """The image processor a hub folder of ``family`` carries (preprocessor_config.json), tiny, with the PIL
    backend (no torchvision here), and what else its processor reads from the folder (processor_config.json,
    the tokenizer's names for its image tokens). Qwen2-VL's: 16×16 images → a 4×4 grid of 4-pixel patches → 4
    image tokens after the 2×2 merge. LLaVA-OneVision's: one 16×16 grid pinpoint, so a 16×16 image is the
    base view plus one tile of 2×2 patches, and the processor_config.json its processor writes
    (num_image_tokens per view, vision_feature_select_strategy, as the hub's folders hold them), written as
    JSON because that processor cannot be saved without a video processor (which needs torchvision). Gemma 3,
    InternVL, Mllama, Idefics3 and SmolVLM: below."""
    if family.name.startswith("qwen2"):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        Qwen2VLImageProcessorPil(
            min_pixels=16 * 16, max_pixels=16 * 16, patch_size=4, merge_size=2, temporal_patch_size=2
        ).save_pretrained(folder)
    elif family.name == "llava_onevision":
        import json

        from transformers import LlavaOnevisionImageProcessorPil

        LlavaOnevisionImageProcessorPil(
            size={"height": 16, "width": 16}, image_grid_pinpoints=[[16, 16]]
        ).save_pretrained(folder)
        settings = {"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": 4}
        (folder / "processor_config.json").write_text(json.dumps(settings | {"vision_feature_select_strategy": "full"}))
    elif family.name in ("gemma3", "internvl"):
        import json

        from transformers import AutoTokenizer, Gemma3ImageProcessorPil, GotOcr2ImageProcessorPil

        if family.name == "gemma3":  # 32×32 images → 16 patches, pooled to 4 soft tokens, between boi and eoi
            Gemma3ImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
            names = {"boi_token": "<start>", "eoi_token": "<end>", "image_token": "<image>"}
        else:  # 16×16 tiles of 2×2 patches, each one token after the 0.5 pixel shuffle
            GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(folder)
            names = {"start_image_token": "<start>", "end_image_token": "<end>", "context_image_token": "<image>"}
            names["video_token"] = "<video>"
        # the tokenizer names its image tokens, as the hub's Gemma 3 / InternVL tokenizers do
        AutoTokenizer.from_pretrained(folder, extra_special_tokens=names).save_pretrained(folder)
        seq = {"gemma3": 4, "internvl": 1}[family.name]
        processor = {"gemma3": "Gemma3Processor", "internvl": "InternVLProcessor"}[family.name]
        (folder / "processor_config.json").write_text(
            json.dumps({"processor_class": processor, "image_seq_length": seq})
        )
    elif family.name == "mllama":  # one 16×16 tile; the tokenizer names "<image>" its image token
        from transformers import AutoTokenizer, MllamaImageProcessorPil

        MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=1).save_pretrained(folder)
        AutoTokenizer.from_pretrained(folder, extra_special_tokens={"image_token": "<image>"}).save_pretrained(folder)
        (folder / "processor_config.json").write_text('{"processor_class": "MllamaProcessor"}')
    elif family.name in ("idefics3", "smolvlm"):  # the whole 16×16 image: 2×2 patches → 1 token after the shuffle
        import transformers

        prefix = "Idefics3" if family.name == "idefics3" else "SmolVLM"
        getattr(transformers, f"{prefix}ImageProcessorPil")(
            do_image_splitting=False, size={"longest_edge": 16}, max_image_size={"longest_edge": 16}
        ).save_pretrained(folder)
        (folder / "processor_config.json").write_text(f'{{"processor_class": "{prefix}Processor", "image_seq_len": 1}}')
    else:
        raise NotImplementedError(family.name)


def model_class(family: Family):
    import transformers

    return getattr(transformers, family.model_class)


def build_base(family: Family, folder: Path, seed: int = 0):
    """A random base of ``family`` saved with ``save_pretrained`` (and the tokenizer beside it); returns it."""
    tok = tokenizer()
    torch.manual_seed(seed)
    model = model_class(family)(family.config(len(tok), _ids(tok, family))).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def load(family: Family, folder: Path):
    return model_class(family).from_pretrained(folder, dtype=torch.float32).eval()


def build_lora(family: Family, base: Path, folder: Path, seed: int, **lora) -> None:
    """A PEFT LoRA expert on the language model's linear layers with B ≠ 0, saved with PEFT's save_pretrained."""
    from peft import LoraConfig, get_peft_model

    model = load(family, base)
    torch.manual_seed(seed)
    cfg = dict(r=4, lora_alpha=8, target_modules=family.targets, init_lora_weights=False)
    if family.model_class == "GPT2LMHeadModel":
        cfg["fan_in_fan_out"] = True
    cfg.update(lora)
    get_peft_model(model, LoraConfig(**cfg)).save_pretrained(folder)


def build_full(family: Family, base: Path, folder: Path, seed: int, scale: float = 0.02) -> None:
    """A full fine-tune: every floating tensor of the base perturbed, saved with ``save_pretrained``."""
    model = load(family, base)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(scale * torch.randn_like(p))
    model.save_pretrained(folder)


def qwen_image_answers(model, base: Path, images: list[Path], prompt: str, max_new_tokens: int) -> list[str]:
    """Plain transformers' greedy answers of a Qwen2-VL-family ``model`` to ``prompt`` about each image, its
    inputs built by hand (the folder's image processor, Qwen's placeholder expanded to one pad token per merged
    patch), in one batch as mixlab runs equal-sized rows: the reference an image evaluation must equal."""
    from PIL import Image
    from transformers import AutoImageProcessor

    tok = tokenizer()
    feats = AutoImageProcessor.from_pretrained(base)(
        images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt"
    )
    n = int(feats["image_grid_thw"][0].prod()) // 4  # the 2×2 merge
    ids = torch.tensor([tok("<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" + prompt)["input_ids"]])
    ids = ids.repeat(len(images), 1)
    image_rows = (ids == tok.convert_tokens_to_ids("<|image_pad|>")).long()  # which positions hold the image (M-RoPE)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=image_rows,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **feats,
        )
    return [t.split("\n")[0].strip() for t in tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)]
