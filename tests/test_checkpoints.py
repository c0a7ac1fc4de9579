"""The checkpoints researchers really have, table-driven over the real transformers classes: a tiny random
base saved with ``save_pretrained``, three PEFT LoRA experts saved with PEFT's ``save_pretrained`` and two
full fine-tunes saved with ``save_pretrained``, taken through the CLI as a user would (``lab init`` →
``info`` → ``eval`` → ``merge --out`` → ``merge --adapter``) and checked against plain transformers and
PEFT: the merged tensors against base + Σ w_i·(PEFT's own ``merge_and_unload`` delta of expert i), the
export's logits against that reference model's, mixlab's loss against one computed here by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from checkpoints import FAMILIES, VISION, build_base, build_full, build_lora, load, model_class, tokenizer

from mixlab.checkpoint import load_base
from mixlab.cli import main
from mixlab.demo.tasks import examples
from mixlab.merge.methods import is_excluded
from mixlab.presets import model_type, preset_patterns
from mixlab.scoring import images

WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}
FULL_WEIGHTS = {"x": 0.6, "y": 0.4}


def _rows() -> list[dict]:
    return [{"prompt": p, "completion": a} for p, a in examples("rev", 6, 3)]


def _cli(capsys, *argv: str) -> str:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}


def _reference(family, base_dir: Path, experts: dict[str, Path], weights: dict[str, float], lora: bool):
    """base + Σ w_i·(θ_i − θ_0), every θ_i as plain PEFT / transformers make it, as a model of the class; for
    full fine-tunes of a VL base (the ``full`` preset) the vision tower stays the base's."""
    from peft import PeftModel

    model = load(family, base_dir)
    theta0 = _state(model)
    total = {k: torch.zeros_like(v) for k, v in theta0.items()}
    for name, folder in experts.items():
        expert = (
            PeftModel.from_pretrained(load(family, base_dir), folder).merge_and_unload()
            if lora
            else load(family, folder)
        )
        for k, v in _state(expert).items():
            if lora or not k.startswith(family.tower if family.vision else ()):
                total[k] += weights[name] * (v - theta0[k])
    with torch.no_grad():
        for k, p in model.state_dict().items():
            p.copy_(theta0[k] + total[k])
    return model


def _loss(model, rows: list[dict]) -> float:
    """Mean token NLL of the completions given the prompts (prompt with the tokenizer's specials, as lm-eval)."""
    tok = tokenizer()
    nll, n = 0.0, 0
    for row in rows:
        p = tok(row["prompt"])["input_ids"]
        c = tok(row["completion"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0].float()
        logp = torch.log_softmax(logits[len(p) - 1 : -1], -1)
        nll -= float(logp[torch.arange(len(c)), torch.tensor(c)].sum())
        n += len(c)
    return nll / n


def _assert_same_model(family, out: Path, reference) -> None:
    """``out`` loads with plain transformers, no key missing or unexpected, and equals ``reference``."""
    exported, info = model_class(family).from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ref = _state(reference)
    for k, v in _state(exported).items():
        torch.testing.assert_close(v, ref[k], atol=1e-5, rtol=1e-5, msg=k)
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            exported.eval()(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-4, rtol=1e-4
        )


@pytest.fixture
def family_lab(request, tmp_path):
    family = FAMILIES[request.param]
    root = tmp_path / family.name
    build_base(family, root / "base")
    for i, name in enumerate(WEIGHTS):
        build_lora(family, root / "base", root / "experts" / name, seed=10 + i)
    for i, name in enumerate(FULL_WEIGHTS):
        build_full(family, root / "base", root / "full" / name, seed=20 + i)
    (root / "data").mkdir()
    (root / "data" / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return family, root


@pytest.mark.parametrize("family_lab", list(FAMILIES), indirect=True)
def test_users_checkpoints_merge_exactly(family_lab, capsys, tmp_path):
    family, root = family_lab
    _cli(capsys, "lab", "init", root, "--base", "base", "--experts", "experts/*")  # the adapters, not full/*
    assert "experts (3):" in _cli(capsys, "info", root)
    lab = (root / "lab.toml").read_text()
    assert ('preset = "lora"' in lab) == family.vision

    weights = ",".join(f"{k}={v}" for k, v in WEIGHTS.items())
    reference = _reference(family, root / "base", {n: root / "experts" / n for n in WEIGHTS}, WEIGHTS, lora=True)
    (row,) = json.loads(_cli(capsys, "eval", root, "--weights", weights, "--json"))
    assert row["score"] == pytest.approx(_loss(reference, _rows()), rel=1e-4)

    _cli(capsys, "merge", root, "--weights", weights, "--out", tmp_path / "merged")
    _assert_same_model(family, tmp_path / "merged", reference)

    from peft import PeftModel

    _cli(capsys, "merge", root, "--weights", weights, "--adapter", "--out", tmp_path / "adapter")
    adapted = PeftModel.from_pretrained(load(family, root / "base"), tmp_path / "adapter").merge_and_unload()
    ref = _state(reference)
    for k, v in _state(adapted).items():
        torch.testing.assert_close(v, ref[k], atol=1e-5, rtol=1e-5, msg=k)


@pytest.mark.parametrize("family_lab", list(FAMILIES), indirect=True)
def test_users_full_fine_tunes_merge_exactly(family_lab, capsys, tmp_path):
    family, root = family_lab
    _cli(capsys, "lab", "init", root, "--base", "base", "--experts", "full/*")
    assert ('preset = "full"' in (root / "lab.toml").read_text()) == family.vision
    assert "experts (2):" in _cli(capsys, "info", root)
    weights = ",".join(f"{k}={v}" for k, v in FULL_WEIGHTS.items())
    # the full preset of a VL base keeps the vision tower at the base: the reference merges the rest
    reference = _reference(
        family, root / "base", {n: root / "full" / n for n in FULL_WEIGHTS}, FULL_WEIGHTS, lora=False
    )
    (row,) = json.loads(_cli(capsys, "eval", root, "--weights", weights, "--json"))
    assert row["score"] == pytest.approx(_loss(reference, _rows()), rel=1e-4)
    _cli(capsys, "merge", root, "--weights", weights, "--out", tmp_path / "merged")
    _assert_same_model(family, tmp_path / "merged", reference)
    if family.vision:  # mergekit reads the checkpoint's stored names: the tower's weight-0 filters name those
        import yaml
        from safetensors import safe_open

        _cli(capsys, "merge", root, "--weights", weights, "--mergekit-yaml", tmp_path / "mk.yaml")
        models = yaml.safe_load((tmp_path / "mk.yaml").read_text())["models"]
        filters = {f["filter"] for m in models for f in m["parameters"]["weight"] if "filter" in f}
        with safe_open(root / "base" / "model.safetensors", "pt") as f:
            stored = set(f.keys())
        assert filters and filters <= stored


@pytest.mark.parametrize("name", [f.name for f in VISION])
def test_presets_keep_the_tower_and_connector_of_each_class(name, tmp_path):
    """lora keeps the tower, the connector, embeddings, lm_head and norms; full keeps exactly the tower (the
    parts as the family table in tests/checkpoints.py states them from the modeling code)."""
    family = FAMILIES[name]
    build_base(family, tmp_path / "base")
    base = load_base(tmp_path / "base")
    keys = base.keys()
    tower = {k for k in keys if k.startswith(family.tower)}
    connector = {k for k in keys if k.startswith(family.connector)}
    assert tower and connector and not tower & connector
    lm_kept = {k for k in keys if "embed_tokens" in k or "lm_head" in k or "norm" in k} - tower - connector
    for preset, want in (("lora", tower | connector | lm_kept), ("full", tower)):
        patterns, warnings = preset_patterns(preset, model_type(tmp_path / "base"), keys)
        assert {k for k in keys if is_excluded(k, patterns)} == want and not warnings, preset


def test_a_preset_that_keeps_nothing_warns(tmp_path, capsys):
    """A text base given a vision preset: the preset keeps none of its tensors, and ``info`` says so."""
    family = FAMILIES["llama"]
    build_base(family, tmp_path / "base")
    build_full(family, tmp_path / "base", tmp_path / "experts" / "x", seed=1)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    _cli(capsys, "lab", "init", tmp_path, "--base", "base")
    with open(tmp_path / "lab.toml", "a") as f:
        f.write('\n[merge]\npreset = "full"\n')
    main(["info", str(tmp_path)])
    assert "merge preset 'full' keeps none of the base's tensors" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["qwen2_vl", "llava", "gemma3"])
def test_adapters_saved_under_the_names_before_transformers_4_52_merge_the_same(name, tmp_path, capsys):
    """An adapter trained before transformers 4.52 names modules as the checkpoint does (Qwen2-VL:
    model.layers.*; LLaVA-family: language_model.model.layers.*). Its module names, made with transformers'
    own reverse mapping (what save_pretrained writes), merge exactly like the adapter PEFT writes today."""
    from safetensors.torch import load_file, save_file
    from transformers.core_model_loading import revert_weight_conversion

    family = FAMILIES[name]
    root = tmp_path / "lab"
    model = build_base(family, root / "base")
    build_lora(family, root / "base", root / "experts" / "a", seed=10)
    legacy = root / "experts" / "old"
    shutil.copytree(root / "experts" / "a", legacy)
    renamed = {}
    for key, t in load_file(legacy / "adapter_model.safetensors").items():
        module, _, part = key.removeprefix("base_model.model.").partition(".lora_")
        (old,) = revert_weight_conversion(model, {f"{module}.weight": t})
        renamed[f"base_model.model.{old.removesuffix('.weight')}.lora_{part}"] = t
    assert set(renamed) != set(load_file(root / "experts" / "a" / "adapter_model.safetensors"))
    save_file(renamed, legacy / "adapter_model.safetensors")
    (root / "data").mkdir()
    (root / "data" / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    _cli(capsys, "lab", "init", root, "--base", "base")
    _cli(capsys, "merge", root, "--weights", "a=0.5,old=0.5", "--out", tmp_path / "merged")
    reference = _reference(family, root / "base", {"a": root / "experts" / "a"}, {"a": 1.0}, lora=True)
    _assert_same_model(family, tmp_path / "merged", reference)


def test_an_adapter_export_is_refused_only_when_it_would_merge_a_kept_tensor(tmp_path, capsys):
    """LLaVA under preset lora: an expert that adapts the projector cannot be exported as an adapter (it
    would add the projector's delta the preset keeps out); without that expert the export is written."""
    family = FAMILIES["llava"]
    root = tmp_path / "lab"
    build_base(family, root / "base")
    build_lora(family, root / "base", root / "experts" / "lm", seed=1)
    build_lora(family, root / "base", root / "experts" / "proj", seed=2, target_modules=["linear_1", "q_proj"])
    (root / "data").mkdir()
    (root / "data" / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    _cli(capsys, "lab", "init", root, "--base", "base")
    rc = main(["merge", str(root), "--weights", "lm=0.5,proj=0.5", "--adapter", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2 and "expert 'proj' adapts model.multi_modal_projector.linear_1.weight" in err
    assert not (tmp_path / "a").exists()
    _cli(capsys, "merge", root, "--weights", "lm=1,proj=0", "--adapter", "--out", tmp_path / "b")
    assert (tmp_path / "b" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("lora", [dict(modules_to_save=["lm_head"]), dict(target_modules=["q_proj", "lm_head"])])
def test_an_adapter_of_a_tied_lm_head_is_refused_with_the_reason(lora, tmp_path, capsys):
    """Gemma 3 ties lm_head to the input embeddings (save_pretrained stores them once): an adapter that trains
    lm_head whole (modules_to_save) or by LoRA cannot be merged without changing the embeddings too."""
    family = FAMILIES["gemma3"]
    build_base(family, tmp_path / "base")
    assert "lm_head.weight" not in load_base(tmp_path / "base").keys()  # stored once: tied
    build_lora(family, tmp_path / "base", tmp_path / "experts" / "a", seed=1, **lora)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    _cli(capsys, "lab", "init", tmp_path, "--base", "base")
    assert main(["info", str(tmp_path)]) == 2
    assert "the adapter changes lm_head.weight, which this base ties" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_vl_image_rows_answer_as_plain_transformers(name, tmp_path, capsys):
    """Image rows of a Qwen2-VL / Qwen2.5-VL lab evaluate in mixlab's environment (no torchvision: the processor
    is built without its video part) with Qwen's own placeholder, <|vision_start|><|image_pad|>…<|vision_end|>.
    The reference builds the inputs by hand (image processor + the expanded pad tokens) and generates with plain
    transformers on base + Σ w_i·(PEFT delta); half the rows' answers are its outputs, so the accuracy is 0.5
    exactly when mixlab answers as it does, and the merge's answers are compared row by row."""
    from checkpoints import qwen_image_answers, save_image_processor
    from PIL import Image

    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    family = FAMILIES[name]
    root = tmp_path / "lab"
    build_base(family, root / "base")
    save_image_processor(family, root / "base")
    for i, expert in enumerate(("a", "b")):
        build_lora(family, root / "base", root / "experts" / expert, seed=10 + i)
    (root / "images").mkdir()
    colours = [(220, 40, 40), (40, 170, 60), (50, 80, 220), (230, 200, 30)]
    for i, c in enumerate(colours):
        Image.new("RGB", (16, 16), c).save(root / "images" / f"{i}.png")

    reference = _reference(family, root / "base", {n: root / "experts" / n for n in "ab"}, {"a": 0.5, "b": 0.5}, True)
    pictures = [root / "images" / f"{i}.png" for i in range(len(colours))]
    answers = qwen_image_answers(reference, root / "base", pictures, "shape:", max_new_tokens=6)
    (root / "data").mkdir()
    with open(root / "data" / "colour.jsonl", "w") as f:
        for i, a in enumerate(answers):
            f.write(
                json.dumps({"image": f"images/{i}.png", "prompt": "shape:", "answer": a if i % 2 == 0 else "~"}) + "\n"
            )
    _cli(capsys, "lab", "init", root, "--base", "base")
    with open(root / "lab.toml") as f:
        text = f.read()
    (root / "lab.toml").write_text(
        text.replace('data = "data/colour.jsonl"', 'data = "data/colour.jsonl"\nmax_new_tokens = 6')
    )

    (row,) = json.loads(_cli(capsys, "eval", root, "--weights", "a=0.5,b=0.5", "--json"))
    assert row["metric"] == "accuracy" and row["score"] == 0.5 and row["n"] == 4
    engine = Engine(load_lab(root), Store(":memory:"), device="cpu")
    got = images.answers(engine, engine.mixture([0.5, 0.5]), "colour", 4, engine.method())
    assert [g["output"].strip() for g in got] == answers


# Each class's image prompt written out by hand from its modelling code and the tiny configs in checkpoints.py
# (an independent statement of what its processor must produce): (image side, the text before the prompt).
IMAGE_PROMPTS = {
    # the 16×16 base view's 2×2 patches, plus the one 16×16 tile's 2 rows of 2 patches each ended by the
    # image newline: 4 + 2·(2 + 1)
    "llava_onevision": (16, "<image>" * 10),
    # the 32×32 image's 16 patches pooled to 4 soft tokens between boi and eoi, set off by blank lines
    "gemma3": (32, "\n\n<start>" + "<image>" * 4 + "<end>\n\n"),
    # one 16×16 tile of 2×2 patches, one token after the 0.5 pixel shuffle, between <img> and </img>
    "internvl": (16, "<start><image><end>"),
    # the image token, then the text begins again with bos; the text attends to the image by cross-attention
    "mllama": (16, "<image><bos>"),
    # the whole image (no splitting): its one token after the pixel shuffle, tagged global, between fake tokens
    "idefics3": (16, "<fake_token_around_image><global-img><image><fake_token_around_image>"),
    "smolvlm": (16, "<fake_token_around_image><global-img><image><fake_token_around_image>"),
}


@pytest.mark.parametrize("name", sorted(IMAGE_PROMPTS))
def test_vl_image_rows_answer_as_plain_transformers(name, tmp_path, capsys):
    """Image rows of LLaVA-OneVision (its processor built without the video part, with the settings of the
    folder's processor_config.json), Gemma 3, InternVL, Mllama, Idefics3 and SmolVLM (with num2words) evaluate in mixlab's environment with the class's
    own image prompt. The reference builds the inputs by hand (the image processor's pixels and the prompt of
    IMAGE_PROMPTS) and generates with plain transformers on base + Σ w_i·(PEFT delta); half the rows' answers
    are its outputs, so the accuracy is 0.5 exactly when mixlab answers as it does, and the merge's answers
    are compared row by row."""
    from checkpoints import save_image_processor
    from PIL import Image
    from transformers import AutoImageProcessor

    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    if name == "smolvlm":
        pytest.importorskip("num2words", reason="SmolVLM's processor needs num2words, which mixlab does not install")
    family, (side, before) = FAMILIES[name], IMAGE_PROMPTS[name]
    root = tmp_path / "lab"
    build_base(family, root / "base")
    save_image_processor(family, root / "base")
    for i, expert in enumerate(("a", "b")):
        build_lora(family, root / "base", root / "experts" / expert, seed=10 + i)
    (root / "images").mkdir()
    colours = [(220, 40, 40), (40, 170, 60), (50, 80, 220), (230, 200, 30)]
    for i, c in enumerate(colours):
        Image.new("RGB", (side, side), c).save(root / "images" / f"{i}.png")

    reference = _reference(family, root / "base", {n: root / "experts" / n for n in "ab"}, {"a": 0.5, "b": 0.5}, True)
    tok = tokenizer()
    pictures = [Image.open(root / "images" / f"{i}.png").convert("RGB") for i in range(len(colours))]
    feats = dict(AutoImageProcessor.from_pretrained(root / "base")(images=pictures, return_tensors="pt"))
    for count in (
        "num_patches",
        "num_crops",
        "num_tiles",
    ):  # tiles per image (InternVL, Gemma 3, Mllama): in the prompt
        feats.pop(count, None)
    ids = torch.tensor([tok(before + "shape:")["input_ids"]] * len(colours))
    if name == "gemma3":  # Gemma 3 attends both ways within an image: its positions are marked
        feats["token_type_ids"] = (ids == tok.convert_tokens_to_ids("<image>")).long()
    if name == "mllama":  # (B, T, images, tiles): every position from the image token on sees its one tile
        feats["cross_attention_mask"] = torch.zeros(*ids.shape, 1, 1, dtype=torch.long)
        feats["cross_attention_mask"][:, 1:] = 1
    with torch.no_grad():
        out = reference.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, **feats
        )
    answers = [t.split("\n")[0].strip() for t in tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)]
    (root / "data").mkdir()
    with open(root / "data" / "colour.jsonl", "w") as f:
        for i, a in enumerate(answers):
            f.write(
                json.dumps({"image": f"images/{i}.png", "prompt": "shape:", "answer": a if i % 2 == 0 else "~"}) + "\n"
            )
    _cli(capsys, "lab", "init", root, "--base", "base")
    with open(root / "lab.toml") as f:
        text = f.read()
    (root / "lab.toml").write_text(
        text.replace('data = "data/colour.jsonl"', 'data = "data/colour.jsonl"\nmax_new_tokens = 6')
    )

    (row,) = json.loads(_cli(capsys, "eval", root, "--weights", "a=0.5,b=0.5", "--json"))
    assert row["metric"] == "accuracy" and row["score"] == 0.5 and row["n"] == 4
    engine = Engine(load_lab(root), Store(":memory:"), device="cpu")
    got = images.answers(engine, engine.mixture([0.5, 0.5]), "colour", 4, engine.method())
    assert [g["output"].strip() for g in got] == answers


def test_an_adapter_export_holds_every_experts_layers(tmp_path, capsys):
    """The first expert adapts layer 0 only (layers_to_transform): the exported adapter's config does not
    carry that selector over (it would claim layer 0 only while holding the other expert's layer-1 factors),
    and PEFT loads it as the merge."""
    from peft import PeftModel

    family = FAMILIES["llama"]
    root = tmp_path / "lab"
    build_base(family, root / "base")
    build_lora(family, root / "base", root / "experts" / "a", seed=1, layers_to_transform=[0])
    build_lora(family, root / "base", root / "experts" / "b", seed=2)
    (root / "data").mkdir()
    (root / "data" / "rev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    _cli(capsys, "lab", "init", root, "--base", "base")
    _cli(capsys, "merge", root, "--weights", "a=0.5,b=0.5", "--adapter", "--out", tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] is None and any(".layers.1." in m for m in config["target_modules"])
    reference = _reference(family, root / "base", {n: root / "experts" / n for n in "ab"}, {"a": 0.5, "b": 0.5}, True)
    adapted = PeftModel.from_pretrained(load(family, root / "base"), tmp_path / "adapter").merge_and_unload()
    ref = _state(reference)
    for k, v in _state(adapted).items():
        torch.testing.assert_close(v, ref[k], atol=1e-5, rtol=1e-5, msg=k)
