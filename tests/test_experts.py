import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mixlab.checkpoint import load_base
from mixlab.errors import ExpertError
from mixlab.experts import load_task_vector


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


# --- hardening: links out of the lab, pickles beside safetensors, bad adapter configs ---------------


def test_a_symlinked_file_must_resolve_inside_the_lab(tiny_lab_dir, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text('{"secret": true}')
    tok = tiny_lab_dir / "base" / "tokenizer.json"
    tok.unlink()
    tok.symlink_to(outside)
    with pytest.raises(ExpertError, match=r"base: .*tokenizer.json is a link to .*secret.json, outside the lab folder"):
        load_base(tiny_lab_dir / "base", tiny_lab_dir)
    inside = tiny_lab_dir / "data" / "tok.json"  # a link that stays inside the lab is fine
    shutil.copy(outside, inside)
    tok.unlink()
    tok.symlink_to(inside)
    load_base(tiny_lab_dir / "base", tiny_lab_dir)


def test_a_symlinked_adapter_file_must_resolve_inside_the_lab(tiny_lab_dir, tmp_path):
    weights = tiny_lab_dir / "experts" / "add" / "adapter_model.safetensors"
    shutil.move(weights, tmp_path / "w.safetensors")
    weights.symlink_to(tmp_path / "w.safetensors")
    base = load_base(tiny_lab_dir / "base", tiny_lab_dir)
    with pytest.raises(ExpertError, match="adapter_model.safetensors is a link to .* outside the lab folder"):
        load_task_vector("add", tiny_lab_dir / "experts" / "add", base)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "adapter_model.bin"])
def test_pickle_weights_beside_safetensors_are_refused(tiny_lab_dir, name):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("open('/tmp/mixlab-pwned', 'w').write('x')",))

    folder = tiny_lab_dir / ("experts/add" if name.startswith("adapter") else "base")
    (folder / name).write_bytes(pickle.dumps(Boom()))
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    with pytest.raises(ExpertError, match=f"{name} is a pickle checkpoint, which mixlab refuses"):
        Engine(load_lab(tiny_lab_dir), device="cpu").model  # noqa: B018
    assert not __import__("os").path.exists("/tmp/mixlab-pwned")


def test_other_pickles_of_a_training_run_are_left_alone(tiny_root, tmp_path):
    folder = tmp_path / "add"
    shutil.copytree(tiny_root / "experts" / "add", folder)
    (folder / "training_args.bin").write_bytes(b"never loaded")
    load_task_vector("add", folder, load_base(tiny_root / "base"))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: {**c, "lora_alpha": float("inf")}, "field lora_alpha must be a finite positive number, got inf"),
        (lambda c: {**c, "r": float("nan")}, "field r must be a finite positive number, got nan"),
        (lambda c: {**c, "lora_alpha": True}, "field lora_alpha must be a finite positive number, got True"),
        (lambda c: {**c, "rank_pattern": "q_proj"}, "field rank_pattern must be an object of pattern → number"),
        (lambda c: {**c, "rank_pattern": {"q_proj(": 2}}, r"rank_pattern pattern 'q_proj\(' is not a valid regex"),
        (lambda c: {**c, "alpha_pattern": {"k_proj": float("inf")}}, r"alpha_pattern\['k_proj'\] must be a finite"),
        (lambda c: [], "must hold a JSON object, got list"),
    ],
)
def test_bad_adapter_configs_name_the_file_and_field(tiny_root, tmp_path, edit, match):
    folder = tmp_path / "add"
    shutil.copytree(tiny_root / "experts" / "add", folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(edit(cfg)))  # Python writes inf/nan as Infinity/NaN
    with pytest.raises(ExpertError, match=match):
        load_task_vector("add", folder, load_base(tiny_root / "base"))


def test_non_utf8_adapter_config_is_a_clear_error(tiny_root, tmp_path):
    folder = tmp_path / "add"
    shutil.copytree(tiny_root / "experts" / "add", folder)
    (folder / "adapter_config.json").write_bytes(b'{"r": 4, "name": "\xff\xfe"}')
    with pytest.raises(ExpertError, match=r"adapter_config.json is not UTF-8 text \(invalid start byte at byte"):
        load_task_vector("add", folder, load_base(tiny_root / "base"))


def test_lora_factors_must_be_floating_point(tiny_root, tmp_path):
    bad = edited_copy(
        tiny_root / "experts" / "add",
        tmp_path / "add",
        lambda s: {k: (v * 100).to(torch.int32) for k, v in s.items()},
        file="adapter_model.safetensors",
    )
    with pytest.raises(ExpertError, match="has dtype torch.int32; LoRA weights must be floating point"):
        load_task_vector("add", bad, load_base(tiny_root / "base"))


def test_an_expert_that_is_not_a_fine_tune_of_the_base_is_flagged(tiny_root, tmp_path):
    unrelated = edited_copy(
        tiny_root / "full" / "a", tmp_path / "u", lambda s: {k: torch.randn_like(v) for k, v in s.items()}
    )
    base = load_base(tiny_root / "base")
    assert load_task_vector("a", tiny_root / "full" / "a", base).warnings == []
    (warning,) = load_task_vector("u", unrelated, base).warnings
    assert "expert 'u': its weights have cosine" in warning and "fine-tuned from this base?" in warning


def test_an_adapter_for_another_hub_model_is_flagged(tiny_root, tmp_path):
    folder = tmp_path / "add"
    shutil.copytree(tiny_root / "experts" / "add", folder)
    base_dir = tmp_path / "base"
    shutil.copytree(tiny_root / "base", base_dir)
    cfg = json.loads((base_dir / "config.json").read_text())
    (base_dir / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "org/tiny-base"}))
    acfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**acfg, "base_model_name_or_path": "org/other-model"}))
    (warning,) = load_task_vector("add", folder, load_base(base_dir)).warnings
    assert "names base model 'org/other-model', but this lab's base is 'org/tiny-base'" in warning


@pytest.mark.parametrize("folder", ["base", "experts/add", "experts/rev", "full/a"])
def test_a_folders_fingerprint_from_its_files_equals_the_loaded_ones(tiny_root, folder):
    from mixlab.checkpoint import folder_fingerprint

    base = load_base(tiny_root / "base")
    loaded = base if folder == "base" else load_task_vector("x", tiny_root / folder, base)
    assert folder_fingerprint(tiny_root / folder, "x") == loaded.fingerprint


def test_a_folders_fingerprint_refuses_what_loading_refuses(tiny_root, tmp_path):
    from mixlab.checkpoint import folder_fingerprint

    shutil.copytree(tiny_root / "experts" / "add", tmp_path / "add")
    (tmp_path / "add" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ExpertError, match="pickle checkpoint"):
        folder_fingerprint(tmp_path / "add", "expert 'add'")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExpertError, match=r"no \*\.safetensors file"):
        folder_fingerprint(tmp_path / "empty", "expert 'e'")
