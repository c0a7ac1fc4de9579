import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mixlab.errors import ExpertError
from mixlab.experts import load_base, load_task_vector


def edited_copy(src, dst, edit, file="model.safetensors"):
    """A copy of checkpoint folder ``src`` at ``dst`` whose ``file`` went through ``edit(state) -> state``."""
    shutil.copytree(src, dst)
    save_file(edit(load_file(dst / file)), dst / file)
    return dst


def test_full_expert_shape_mismatch_names_expert_tensor_and_shapes(tiny_root, tmp_path):
    bad = edited_copy(
        tiny_root / "full" / "a",
        tmp_path / "bad",
        lambda s: {**s, "model.layers.0.mlp.up_proj.weight": torch.zeros(48, 16)},
    )
    with pytest.raises(
        ExpertError,
        match=r"expert 'ocr': tensor model.layers.0.mlp.up_proj.weight has shape \(48, 16\) but the base has \(32, 16\)",
    ):
        load_task_vector("ocr", bad, load_base(tiny_root / "base"))


def test_full_expert_missing_tensor(tiny_root, tmp_path):
    bad = edited_copy(
        tiny_root / "full" / "a", tmp_path / "bad", lambda s: {k: v for k, v in s.items() if k != "lm_head.weight"}
    )
    with pytest.raises(ExpertError, match=r"lacks 1 base tensors \(e.g. lm_head.weight\)"):
        load_task_vector("a", bad, load_base(tiny_root / "base"))


def test_pickle_checkpoints_are_refused_with_a_fix(tiny_root, tmp_path):
    d = tmp_path / "pkl"
    d.mkdir()
    torch.save({"w": torch.zeros(2)}, d / "pytorch_model.bin")
    with pytest.raises(ExpertError, match=r"pytorch_model.bin is a pickle checkpoint.*safe_serialization=True"):
        load_task_vector("x", d, load_base(tiny_root / "base"))
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(ExpertError, match="pickle checkpoint"):
        load_task_vector("x", d, load_base(tiny_root / "base"))


def test_nan_tensor_is_named(tiny_root, tmp_path):
    def nan_at_3(state):
        state["model.norm.weight"][3] = float("nan")
        return state

    bad = edited_copy(tiny_root / "full" / "a", tmp_path / "nan", nan_at_3)
    tv = load_task_vector("a", bad, load_base(tiny_root / "base"))
    with pytest.raises(ExpertError, match="expert 'a': tensor model.norm.weight contains NaN or inf"):
        tv.delta("model.norm.weight")


def test_lora_rank_disagreeing_with_config(tiny_root, tmp_path):
    bad = tmp_path / "lora"
    shutil.copytree(tiny_root / "experts" / "add", bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "r": 8}))
    with pytest.raises(ExpertError, match=r"has rank 4 .* but adapter_config.json says r=8"):
        load_task_vector("add", bad, load_base(tiny_root / "base"))
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(ExpertError, match="use_dora=true is not supported"):
        load_task_vector("add", bad, load_base(tiny_root / "base"))


def test_lora_for_another_architecture(tiny_root, tmp_path):
    bad = edited_copy(
        tiny_root / "experts" / "add",
        tmp_path / "lora",
        lambda s: {k.replace("layers.0.", "layers.7."): v for k, v in s.items()},
        "adapter_model.safetensors",
    )
    with pytest.raises(
        ExpertError, match=r"adapted module model.layers.7.\S+ has no tensor model.layers.7.\S+ in the base"
    ):
        load_task_vector("add", bad, load_base(tiny_root / "base"))


def test_fingerprint_follows_content_not_path(tiny_root, tmp_path):
    base = load_base(tiny_root / "base")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_root / "experts" / "add", copy)
    a = load_task_vector("add", tiny_root / "experts" / "add", base)
    b = load_task_vector("add", copy, base)
    c = load_task_vector("rev", tiny_root / "experts" / "rev", base)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.kind == "lora" and a.rank == 4 and load_task_vector("a", tiny_root / "full" / "a", base).kind == "full"


def test_fan_in_fan_out_gpt2_matches_peft(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=40, n_positions=16)).save_pretrained(
        tmp_path / "base"
    )
    model = GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    cfg = LoraConfig(r=2, lora_alpha=6, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(tmp_path / "lora")
    base = load_base(tmp_path / "base")
    tv = load_task_vector("g", tmp_path / "lora", base)
    merged = PeftModel.from_pretrained(
        GPT2LMHeadModel.from_pretrained(tmp_path / "base"), tmp_path / "lora"
    ).merge_and_unload()
    state = merged.state_dict()
    assert tv.keys()
    for k in tv.keys():
        torch.testing.assert_close(base.get(k) + tv.delta(k), state[k], atol=1e-6, rtol=1e-5)
