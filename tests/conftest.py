"""Session fixtures: a tiny Llama base, LoRA experts (random A *and* B, so no delta is zero) with
varied PEFT configs, a full fine-tune, benchmark data, and labs over them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from mixlab.demo.build import model_config
from mixlab.demo.tasks import build_tokenizer, examples
from mixlab.evaluate import quiet_transformers

quiet_transformers()
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
ROOT = Path(__file__).resolve().parents[1]

LORA_CONFIGS = {
    "add": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
    "rev": dict(
        r=4,
        lora_alpha=4,
        use_rslora=True,
        target_modules=["q_proj", "k_proj", "down_proj"],
        rank_pattern={"layers.1.self_attn.q_proj": 2},
        alpha_pattern={"k_proj": 3},
    ),
    "sort": dict(r=2, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj"]),
}


def write_lab_toml(root: Path, experts: dict[str, str], extra: str = "") -> None:
    lines = ['name = "tiny"', 'base = "base"', ""]
    for name, path in experts.items():
        lines += ["[[experts]]", f'name = "{name}"', f'path = "{path}"', ""]
    lines += [
        "[[benchmarks]]",
        'name = "rev"',
        'evaluator = "exact_match"',
        'data = "data/rev.jsonl"',
        "max_new_tokens = 6",
        "",
        "[[benchmarks]]",
        'name = "rev-loss"',
        'evaluator = "lm_loss"',
        'data = "data/rev.jsonl"',
        "",
        "[[benchmarks]]",
        'name = "pick"',
        'evaluator = "choice"',
        'data = "data/pick.jsonl"',
        "",
    ]
    (root / "lab.toml").write_text("\n".join(lines) + extra)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A folder with base/, experts/{add,rev,sort} (LoRA), full/{a,b} (full fine-tunes), data/."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer()
    torch.manual_seed(0)
    base = LlamaForCausalLM(model_config(tok, hidden=16, intermediate=32, heads=2))
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    for i, (name, cfg) in enumerate(LORA_CONFIGS.items()):
        torch.manual_seed(100 + i)
        model = LlamaForCausalLM.from_pretrained(root / "base")
        peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **cfg))
        peft_model.save_pretrained(root / "experts" / name)
    for i, name in enumerate(("a", "b")):
        torch.manual_seed(200 + i)
        model = LlamaForCausalLM.from_pretrained(root / "base")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        model.save_pretrained(root / "full" / name)
    (root / "data").mkdir()
    with open(root / "data" / "rev.jsonl", "w") as f:
        for prompt, answer in examples("rev", 12, 1):
            f.write(json.dumps({"prompt": prompt, "answer": answer, "completion": answer + "\n"}) + "\n")
    with open(root / "data" / "pick.jsonl", "w") as f:
        for j, (prompt, answer) in enumerate(examples("sort", 8, 2)):
            f.write(json.dumps({"prompt": prompt, "choices": [answer, answer[::-1], "zz"], "label": j % 3}) + "\n")
    write_lab_toml(root, {"add": "experts/add", "rev": "experts/rev", "sort": "experts/sort"})
    return root


@pytest.fixture
def tiny_lab_dir(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny LoRA lab (tests may write its cache or break its files)."""
    dst = tmp_path / "lab"
    shutil.copytree(tiny_root, dst, ignore=shutil.ignore_patterns(".mixlab"))
    return dst


@pytest.fixture
def full_lab_dir(tiny_root, tmp_path) -> Path:
    dst = tmp_path / "fulllab"
    shutil.copytree(tiny_root, dst, ignore=shutil.ignore_patterns(".mixlab"))
    write_lab_toml(dst, {"a": "full/a", "b": "full/b"})
    return dst


# `pytest -m smoke`: a quick check of an install (the README names it); CI runs the whole suite.
SMOKE_MODULES = {
    "test_requirements",
    "test_simplex",
    "test_keys",
    "test_lab",
    "test_experts",
    "test_merge",
    "test_store",
    "test_analysis",
    "test_diagnostics",
}
SMOKE_TESTS = {"test_entry_point", "test_every_page_runs"}  # the CLI as a process; every page of the demo lab


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (minutes of CPU each)")


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.skip(reason="slow (minutes of CPU): run with pytest --slow")
    for item in items:
        if item.module.__name__ in SMOKE_MODULES or getattr(item, "originalname", "") in SMOKE_TESTS:
            item.add_marker(pytest.mark.smoke)
        if "slow" in item.keywords and not config.getoption("--slow"):
            item.add_marker(slow)


@pytest.fixture
def dev_lab(tiny_lab_dir):
    """The tiny lab with a dev file for rev and rev-loss (pick has none)."""
    import json

    from mixlab.demo.tasks import examples

    with open(tiny_lab_dir / "data" / "rev_dev.jsonl", "w") as f:
        for prompt, answer in examples("rev", 12, 99):
            f.write(json.dumps({"prompt": prompt, "answer": answer, "completion": answer + "\n"}) + "\n")
    write_lab_toml(tiny_lab_dir, {"add": "experts/add", "rev": "experts/rev", "sort": "experts/sort"})
    text = (tiny_lab_dir / "lab.toml").read_text()
    text = text.replace('data = "data/rev.jsonl"', 'data = "data/rev.jsonl"\nsearch_data = "data/rev_dev.jsonl"')
    (tiny_lab_dir / "lab.toml").write_text(text)
    return tiny_lab_dir
