"""The multimodal setting: a vision-language lab (a tiny LLaVA-style model, LoRA on its language model,
image benchmarks) built for real at a tiny budget; merge presets that keep the vision tower (and for
LoRA the projector, embeddings, lm_head and norms) at the base; image benchmarks keyed by their images;
an export that transformers loads and that answers as mixlab does; the dashboard on it."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mixlab.demo.build import Budget
from mixlab.demo.vision import build_vl
from mixlab.engine import Engine
from mixlab.lab import load_lab
from mixlab.merge.methods import is_excluded
from mixlab.presets import preset_patterns
from mixlab.scoring import images
from mixlab.store import Store

TINY = Budget(base_steps=20, base_target=0.0, steps=8, batch=8, n_eval=12, pretrain_share=0.5)


@pytest.fixture(scope="module")
def vl_built(tmp_path_factory):
    return build_vl(tmp_path_factory.mktemp("vl") / "lab", quick=True, budget=TINY, show=False)


@pytest.fixture
def vl_lab(vl_built, tmp_path):
    dst = tmp_path / "vl"
    shutil.copytree(vl_built, dst, ignore=shutil.ignore_patterns(".mixlab"))
    return dst


def test_the_build_is_a_real_vision_language_lab(vl_lab):
    lab = load_lab(vl_lab)
    assert lab.expert_names == ["general", "ocr", "count", "chart"] and lab.manifest.merge.preset == "lora"
    rows = [json.loads(line) for line in (vl_lab / "data" / "ocr.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all((vl_lab / r["image"]).is_file() for r in rows)
    config = json.loads((vl_lab / "base" / "config.json").read_text())
    assert config["model_type"] == "llava" and "vision_config" in config
    adapter = json.loads((vl_lab / "experts" / "ocr" / "adapter_config.json").read_text())
    assert "language_model" in adapter["target_modules"]  # LoRA on the language model only
    base = load_file(vl_lab / "base" / "model.safetensors")
    expert = load_file(vl_lab / "experts" / "ocr" / "adapter_model.safetensors")
    assert not any("vision_tower" in k or "projector" in k for k in expert)  # the tower and projector froze
    assert any(k.startswith("vision_tower.") for k in base)  # save_pretrained's names, as users' checkpoints
    scores = [json.loads(line) for line in (vl_lab / "evaluations.jsonl").read_text().splitlines()]
    assert {s["kind"] for s in scores} == {"base", "expert", "true", "proxy"} and all(s["n"] == 12 for s in scores)


def test_presets_keep_what_the_paper_keeps_at_the_base(vl_lab, tmp_path):
    engine = Engine(load_lab(vl_lab), Store(":memory:"), device="cpu")
    kept = {engine.base.disk_name(k): n for k, n in engine.excluded_tensors()}  # as the files name them
    base = load_file(vl_lab / "base" / "model.safetensors")
    full = preset_patterns("full", "llava", engine.base.keys())[0]
    for key in base:
        lora_kept = any(p in key for p in ("vision_tower", "multi_modal_projector", "embed_tokens", "lm_head", "norm"))
        assert (key in kept) == lora_kept, key
    for key in engine.base.keys():
        assert is_excluded(key, full) == key.startswith("model.vision_tower."), key
    assert sum(kept.values()) < sum(t.numel() for t in base.values())
    out = engine.export(engine.mixture([0.25, 0.25, 0.25, 0.25]), tmp_path / "merged")
    merged = load_file(out / "model.safetensors")
    for key, tensor in base.items():
        same = torch.equal(merged[key].float(), tensor.float())
        if key in kept:
            assert same, key  # left out of the merge
    changed = [k for k in base if not torch.equal(merged[k].float(), base[k].float())]
    assert changed and all(k.startswith("language_model.model.layers.") and k.endswith("proj.weight") for k in changed)


def test_an_export_loads_in_transformers_and_answers_as_in_mixlab(vl_lab, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mixlab.evaluate import Batches, image_answers

    engine = Engine(load_lab(vl_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    m = engine.mixture([0.1, 0.6, 0.2, 0.1])
    ours = images.answers(engine, m, "ocr", 12, engine.method())
    (score,) = engine.proxy(m, benchmarks=["ocr"])
    assert score.score == pytest.approx(sum(r["output"].strip() == r["answer"] for r in ours) / 12)
    out = engine.export(m, tmp_path / "exported")
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    rows = engine._bench(engine.lab.benchmark("ocr")).examples
    spec = engine.lab.benchmark("ocr")
    theirs = image_answers(model, processor, rows, spec, torch.device("cpu"), Batches(4, None, None))
    assert theirs == [r["output"] for r in ours]  # the same answers, one image at a time or in a batch


def test_an_image_is_part_of_the_cache_key(vl_lab, tmp_path):
    from PIL import Image

    engine = Engine(load_lab(vl_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    m = engine.mixture([0.25, 0.25, 0.25, 0.25])
    (first,) = engine.proxy(m, benchmarks=["count"])
    row = json.loads((vl_lab / "data" / "count.jsonl").read_text().splitlines()[0])
    Image.new("RGB", (32, 32), "white").save(vl_lab / row["image"])  # the rows are the same, an image is not
    (again,) = engine.proxy(m, benchmarks=["count"])
    assert again.key != first.key
    bad = vl_lab / "data" / "bad.jsonl"
    bad.write_text(json.dumps({"image": "../../etc/passwd", "prompt": "count:", "answer": "1"}) + "\n")
    text = (vl_lab / "lab.toml").read_text()
    (vl_lab / "lab.toml").write_text(
        text + '\n[[benchmarks]]\nname = "bad"\nevaluator = "exact_match"\ndata = "data/bad.jsonl"\n'
    )
    from mixlab.errors import MixlabError

    with pytest.raises(MixlabError, match="points outside the lab folder"):
        Engine(load_lab(vl_lab), Store(":memory:"), device="cpu").proxy(m, benchmarks=["bad"])


def test_every_page_works_on_the_vision_language_lab_and_shows_examples(vl_lab, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MIXLAB_CACHE", str(vl_lab / "cache.sqlite"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.query_params["lab"] = str(vl_lab)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Kept at the base by every merge" in md.value and "preset **lora**" in md.value for md in at.markdown)
    for page in ("views/2_simplex.py", "views/3_merge.py", "views/4_proxy_vs_true.py", "views/5_pareto.py",
                 "views/6_experts.py", "views/7_search.py"):  # fmt: skip
        at.switch_page(page).run()
        assert not at.exception, (page, [e.message for e in at.exception])
    at.switch_page("views/2_simplex.py").run()

    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    assert sum(getattr(e, "type", "") == "image" for e in walk(at._tree)) == 6
    at.button(key="strip_answer").click().run()
    assert not at.exception
    assert sum("merge:" in md.value for md in at.markdown) == 6
    assert not [b for b in at.button if b.key == "strip_answer"]  # answered: the button gives way to the answers


def test_the_full_preset_merges_the_connector_and_keeps_the_tower(vl_built, tmp_path):
    """The paper's full fine-tune setting: full experts; the vision tower stays the base's, the projector
    (connector) and the language model are merged (checked against a hand-computed weighted sum)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from mixlab.demo.vision import save_model

    root = tmp_path / "full"
    shutil.copytree(vl_built / "base", root / "base")
    processor = AutoProcessor.from_pretrained(root / "base")
    for i, name in enumerate(("a", "b")):
        model = LlavaForConditionalGeneration.from_pretrained(root / "base")
        torch.manual_seed(10 + i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))  # every tensor moves, the tower's too
        save_model(model, processor, root / name)
    (root / "lab.toml").write_text(
        'name = "full"\nbase = "base"\n[[experts]]\nname = "a"\npath = "a"\n[[experts]]\nname = "b"\npath = "b"\n'
        '[merge]\npreset = "full"\n'
    )
    engine = Engine(load_lab(root), Store(":memory:"), device="cpu")
    out = engine.export(engine.mixture([0.3, 0.7]), tmp_path / "merged")
    merged, base = load_file(out / "model.safetensors"), load_file(root / "base" / "model.safetensors")
    a, b = load_file(root / "a" / "model.safetensors"), load_file(root / "b" / "model.safetensors")
    assert {engine.base.disk_name(k) for k, _ in engine.excluded_tensors()} == {
        k for k in base if k.startswith("vision_tower.")
    }
    for key in base:
        if key.startswith("vision_tower."):
            assert torch.equal(merged[key], base[key]), key
        else:  # projector and language model: θ0 + 0.3 τa + 0.7 τb = 0.3 θa + 0.7 θb
            want = base[key] + 0.3 * (a[key] - base[key]) + 0.7 * (b[key] - base[key])
            torch.testing.assert_close(merged[key], want, rtol=1e-5, atol=1e-6, msg=key)
    assert any(k.startswith("multi_modal_projector.") for k in base)
