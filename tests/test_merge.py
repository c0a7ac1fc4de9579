"""Merge kernels vs hand computations; whole-model merges vs PEFT's merge_and_unload; the drivers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mixlab.checkpoint import load_base
from mixlab.errors import MergeError, MixtureWeightsError
from mixlab.experts import load_task_vector
from mixlab.merge import Merger, MergeSpec, get_method, iter_merged, save_lora_merge, save_merged

B = torch.tensor([1.0, 2.0, 3.0, 4.0])
T1 = torch.tensor([0.5, -1.0, 0.25, 2.0])
T2 = torch.tensor([-0.75, 1.5, 0.125, -0.5])
T3 = torch.tensor([0.1, -0.2, -3.0, 0.0])


def test_linear_is_the_weighted_sum():
    out = get_method("linear").merge(B, [T1, T2, T3], [0.2, 0.3, 0.5])
    expected = torch.tensor([1 + 0.1 - 0.225 + 0.05, 2 - 0.2 + 0.45 - 0.1, 3 + 0.05 + 0.0375 - 1.5, 4 + 0.4 - 0.15])
    torch.testing.assert_close(out, expected)


def test_linear_one_hot_returns_that_expert_exactly():
    out = get_method("linear").merge(B, [T1, T2], [0.0, 1.0])
    assert torch.equal(out, B + T2)


def test_task_arithmetic_scales_the_sum():
    out = get_method("task_arithmetic").merge(B, [T1, T2], [0.5, 0.5], {"scale": 2.0})
    torch.testing.assert_close(out, B + 2.0 * (0.5 * T1 + 0.5 * T2))


def test_ties_by_hand():
    # density 0.5 keeps the 2 largest |τ| of each: t̂1 = [0, -1, 0, 2], t̂2 = [-0.75, 1.5, 0, 0], t̂3 = [0, -0.2, -3, 0]
    w = [0.5, 0.25, 0.25]
    out = get_method("ties").merge(B, [T1, T2, T3], w, {"density": 0.5})
    # entry 0: Σ w t̂ = -0.1875 → sign −; agreeing: t̂2 → (0.25·-0.75)/0.25 = -0.75
    # entry 1: Σ = -0.5 + 0.375 - 0.05 = -0.175 → −; agreeing: t̂1, t̂3 → (0.5·-1 + 0.25·-0.2)/(0.75) = -0.7333…
    # entry 2: only t̂3 = -3 → -3;  entry 3: only t̂1 = 2 → 2
    expected = B + torch.tensor([-0.75, (-0.5 - 0.05) / 0.75, -3.0, 2.0])
    torch.testing.assert_close(out, expected)
    # normalize=false: Σ over agreeing of w·t̂, and λ scales it
    out = get_method("ties").merge(B, [T1, T2, T3], w, {"density": 0.5, "normalize": False, "scale": 2.0})
    torch.testing.assert_close(out, B + 2.0 * torch.tensor([-0.1875, -0.55, -0.75, 1.0]))


def test_ties_with_no_agreement_keeps_the_base():
    out = get_method("ties").merge(
        B, [torch.tensor([1.0, 0, 0, 0]), torch.tensor([-1.0, 0, 0, 0])], [0.5, 0.5], {"density": 1.0}
    )
    torch.testing.assert_close(out, B)  # Σ = 0 elects no sign: nothing agrees


def test_ties_one_hot_is_the_trimmed_expert():
    out = get_method("ties").merge(B, [T1, T2], [1.0, 0.0], {"density": 0.5})
    torch.testing.assert_close(out, B + torch.tensor([0.0, -1.0, 0.0, 2.0]))


def test_dare_drops_and_rescales_reproducibly():
    big = torch.randn(10_000)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    m = get_method("dare_linear")
    a = m.merge(torch.zeros_like(big), [big], [1.0], {"drop_rate": 0.75}, [g1])
    b = m.merge(torch.zeros_like(big), [big], [1.0], {"drop_rate": 0.75}, [g2])
    assert torch.equal(a, b)
    kept = a != 0
    assert 0.2 < kept.float().mean() < 0.3
    torch.testing.assert_close(a[kept], big[kept] / 0.25)  # survivors ×1/(1−p)


def test_dare_ties_by_hand():
    # the documented draw: entry j of expert i survives where rand(shape, generator_i)[j] >= p
    p, w = 0.5, [0.25, 0.75]
    keep = [(torch.rand(4, generator=torch.Generator().manual_seed(s)) >= p).tolist() for s in (1, 2)]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    out = get_method("dare_ties").merge(B, [T1, T2], w, {"drop_rate": p}, gens)
    want = []
    for j in range(4):  # drop, rescale 1/(1−p), elect the sign of Σ w τ̃, weighted mean of the agreeing entries
        t = [T[j].item() / (1 - p) if keep[i][j] else 0.0 for i, T in enumerate((T1, T2))]
        total = w[0] * t[0] + w[1] * t[1]
        sign = (total > 0) - (total < 0)
        agree = [i for i in range(2) if t[i] * sign > 0]
        num, den = sum(w[i] * t[i] for i in agree), sum(w[i] for i in agree)
        want.append(B[j].item() + (num / den if den else 0.0))
    assert any(not k for row in keep for k in row) and any(k for row in keep for k in row)  # some drops, some kept
    torch.testing.assert_close(out, torch.tensor(want))


@pytest.mark.parametrize(
    ("method", "params", "match"),
    [
        ("nope", {}, "unknown merge method 'nope'; available: linear, task_arithmetic, ties"),
        ("ties", {"densty": 0.2}, "has no parameter 'densty'; parameters: density, normalize, scale"),
        ("ties", {"density": 0.0}, r"density must be in \(0.0, 1.0\], got 0.0"),
        ("ties", {"density": "lots"}, "density must be a number, got 'lots'"),
        ("dare_linear", {"drop_rate": 1.0}, r"drop_rate must be in \[0.0, 0.99\]"),
        ("dare_linear", {"seed": 1.5}, "seed must be an integer, got 1.5"),
        ("ties", {"normalize": "maybe"}, "normalize must be true or false"),
    ],
)
def test_bad_methods_and_params_are_named(method, params, match):
    with pytest.raises(MergeError, match=match):
        get_method(method).resolve(params)


def test_registry_declares_parameters_for_the_ui():
    ties = get_method("ties")
    assert [(p.name, p.kind, p.default) for p in ties.params] == [
        ("density", float, 0.2),
        ("normalize", bool, True),
        ("scale", float, 1.0),
    ]
    assert all(
        p.help for m in ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties") for p in get_method(m).params
    )


def test_each_method_names_its_paper_and_its_fused_kernel():
    papers = {m: get_method(m).reference_url for m in ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties")}
    assert papers == {
        "linear": "https://arxiv.org/abs/2203.05482",  # model soups
        "task_arithmetic": "https://arxiv.org/abs/2212.04089",
        "ties": "https://arxiv.org/abs/2306.01708",
        "dare_linear": "https://arxiv.org/abs/2311.03099",
        "dare_ties": "https://arxiv.org/abs/2311.03099",
    }
    # the sign-consensus methods declare the fused TIES kernel; linear ones use the fused weighted sum
    assert [m for m in papers if get_method(m).fused is not None] == ["ties", "dare_ties"]


# --- whole checkpoints -----------------------------------------------------------------------------


def _peft_merged_state(root, name):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(root / "base"), root / "experts" / name)
    return {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


@pytest.fixture(scope="module")
def lora(tiny_root):
    base = load_base(tiny_root / "base")
    experts = [load_task_vector(n, tiny_root / "experts" / n, base) for n in ("add", "rev", "sort")]
    return base, experts


def test_lora_task_vectors_match_peft_merge_and_unload(tiny_root, lora):
    # rank_pattern, alpha_pattern and rsLoRA (expert 'rev') all change s; PEFT is the reference
    base, experts = lora
    for e in experts:
        merged = _peft_merged_state(tiny_root, e.name)
        for key in base.keys():
            d = e.delta(key)
            want = merged[key].float() - base.get(key).float()
            if d is None:
                assert torch.equal(want, torch.zeros_like(want)), key
            else:
                torch.testing.assert_close(d, want, atol=1e-6, rtol=1e-5)
        assert any(e.delta(k) is not None and e.delta(k).abs().max() > 1e-3 for k in e.keys())


def test_linear_lora_merge_matches_expert_by_expert_peft_merges(tiny_root, lora):
    base, experts = lora
    w = [0.2, 0.3, 0.5]
    states = [_peft_merged_state(tiny_root, e.name) for e in experts]
    merged = dict(iter_merged(base, experts, MergeSpec("linear", tuple(w))))
    for key in base.keys():
        theta0 = base.get(key).float()
        want = theta0 + sum(wi * (s[key].float() - theta0) for wi, s in zip(w, states))
        torch.testing.assert_close(merged[key].float(), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "method,params",
    [
        ("linear", {}),
        ("task_arithmetic", {"scale": 0.7}),
        ("ties", {"density": 0.3}),
        ("dare_ties", {"drop_rate": 0.5, "seed": 4}),
    ],
)
def test_in_memory_merger_equals_streamed_merge(lora, method, params):
    base, experts = lora
    spec = MergeSpec(method, (0.1, 0.6, 0.3), get_method(method).resolve(params))
    streamed = dict(iter_merged(base, experts, spec))
    target = {k: base.get(k).clone() for k in base.keys()}
    merger = Merger(base, experts)
    merger.write(target, spec)
    merger.write(target, spec)  # re-merging is idempotent (prepared trims/drops are reused)
    for k in base.keys():
        torch.testing.assert_close(target[k], streamed[k], atol=1e-6, rtol=1e-5)


def test_one_hot_linear_merge_of_a_full_expert_is_that_expert(tiny_root):
    base = load_base(tiny_root / "base")
    experts = [load_task_vector(n, tiny_root / "full" / n, base) for n in ("a", "b")]
    merged = dict(iter_merged(base, experts, MergeSpec("linear", (0.0, 1.0))))
    expert_b = load_file(tiny_root / "full" / "b" / "model.safetensors")
    for k in base.keys():
        torch.testing.assert_close(merged[k], expert_b[k], atol=1e-7, rtol=0)


def test_exclude_keeps_base_tensors(lora):
    base, experts = lora
    spec = MergeSpec("linear", (0.5, 0.5, 0.0), exclude=("model.layers.0.*",))
    merged = dict(iter_merged(base, experts, spec))
    assert torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], base.get("model.layers.0.self_attn.q_proj.weight")
    )
    assert not torch.equal(
        merged["model.layers.1.self_attn.q_proj.weight"], base.get("model.layers.1.self_attn.q_proj.weight")
    )


def test_saved_merge_loads_in_transformers_and_shards(tiny_root, lora, tmp_path):
    from transformers import AutoModelForCausalLM

    base, experts = lora
    w = (0.2, 0.3, 0.5)
    spec = MergeSpec("linear", w, {})
    states = [_peft_merged_state(tiny_root, e.name) for e in experts]  # the reference: PEFT, expert by expert
    expected = {}
    for k in base.keys():
        theta0 = base.get(k).float()
        expected[k] = theta0 + sum(wi * (s[k].float() - theta0) for wi, s in zip(w, states))
    for shard_bytes, files in ((2**30, ["model.safetensors"]), (20_000, None)):
        out = save_merged(base, experts, spec, tmp_path / f"m{shard_bytes}", shard_bytes=shard_bytes)
        names = sorted(p.name for p in out.glob("*.safetensors"))
        if files:
            assert names == files
        else:
            assert len(names) > 1 and (out / "model.safetensors.index.json").is_file()
        state = AutoModelForCausalLM.from_pretrained(out).state_dict()
        for k in base.keys():
            torch.testing.assert_close(state[k], expected[k], atol=1e-6, rtol=1e-5)
        assert (out / "tokenizer.json").is_file()


def test_save_refuses_to_clobber_and_leaves_nothing_on_failure(lora, tmp_path):
    base, experts = lora
    out = tmp_path / "m"
    save_merged(base, experts, MergeSpec("linear", (1.0, 0.0, 0.0)), out)
    with pytest.raises(MergeError, match="exists and is not empty.*'Replace an earlier export.*--overwrite"):
        save_merged(base, experts, MergeSpec("linear", (1.0, 0.0, 0.0)), out)
    with pytest.raises(MixtureWeightsError):
        save_merged(base, experts, MergeSpec("linear", (0.5, 0.0, 0.0)), tmp_path / "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_lora_adapter_export_is_exact(tiny_root, lora, tmp_path):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base, experts = lora
    spec = MergeSpec("task_arithmetic", (0.2, 0.3, 0.5), {"scale": 0.8})
    out = save_lora_merge(experts, spec, tmp_path / "adapter")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 10 and cfg["lora_alpha"] == 10  # 4 + 4 + 2 concatenated, scale 1
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_root / "base"), out).merge_and_unload()
    expected = dict(iter_merged(base, experts, spec))
    state = model.state_dict()
    for k in base.keys():
        torch.testing.assert_close(state[k], expected[k], atol=1e-6, rtol=1e-5)
    with pytest.raises(MergeError, match="only linear merges"):
        save_lora_merge(
            experts,
            MergeSpec("ties", (1.0, 0.0, 0.0), {"density": 0.2, "normalize": True, "scale": 1.0}),
            tmp_path / "x",
        )


# --- export folders: whole or nothing, never over a folder mixlab did not write ---------------------


def test_overwrite_replaces_only_an_earlier_export(lora, tmp_path):
    base, experts = lora
    spec = MergeSpec("linear", (1.0, 0.0, 0.0))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(MergeError, match="refusing to replace .*mine: it is not a mixlab export"):
        save_merged(base, experts, spec, mine, overwrite=True)
    with pytest.raises(MergeError, match="not a mixlab export"):
        save_lora_merge(experts, spec, mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    out = save_merged(base, experts, spec, tmp_path / "export")
    save_merged(base, experts, MergeSpec("linear", (0.0, 1.0, 0.0)), out, overwrite=True)  # an export: replaced
    assert json.loads((out / "mixlab_merge.json").read_text()) == {}


def test_an_export_copies_only_model_files_and_never_code(tiny_lab_dir, tmp_path):
    base_dir = tiny_lab_dir / "base"
    (base_dir / "modeling_evil.py").write_text("import os; os.system('echo pwned')")
    (base_dir / "notes.txt").write_text("private")
    base = load_base(base_dir, tiny_lab_dir)
    experts = [load_task_vector("add", tiny_lab_dir / "experts" / "add", base)]
    out = save_merged(base, experts, MergeSpec("linear", (1.0,)), tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "mixlab.json",
        "mixlab_merge.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


@pytest.mark.parametrize("target", ["file", "cwd", "parent_of_cwd", "link"])
def test_bad_output_folders_are_refused(lora, tmp_path, monkeypatch, target):
    base, experts = lora
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "x.txt").write_text("x")
    monkeypatch.chdir(tmp_path / "work")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "work")
    out, match = {
        "file": (tmp_path / "afile", "is a file, not a folder"),
        "cwd": (Path("."), "is the current folder or contains it"),
        "parent_of_cwd": (tmp_path, "is the current folder or contains it"),
        "link": (tmp_path / "link", "is a symbolic link"),
    }[target]
    with pytest.raises(MergeError, match=match):
        save_merged(base, experts, MergeSpec("linear", (1.0, 0.0, 0.0)), out, overwrite=True)
    assert (tmp_path / "work" / "x.txt").read_text() == "x" and (tmp_path / "afile").read_text() == "x"


def test_a_killed_export_leaves_nothing_behind_on_the_next_run(lora, tmp_path):
    base, experts = lora
    dead = tmp_path / ".m.mixlab-tmp-999999999-abc"  # a temp folder of a process that no longer exists
    dead.mkdir()
    (dead / "shard-1.safetensors").write_bytes(b"half")
    old = tmp_path / ".m.mixlab-old-999999999"
    old.mkdir()
    alive = tmp_path / f".m.mixlab-tmp-{os.getpid()}-xyz"  # a live export's temp folder is not touched
    alive.mkdir()
    save_merged(base, experts, MergeSpec("linear", (1.0, 0.0, 0.0)), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "m"]


def test_exports_carry_a_model_card_and_their_facts(tiny_lab_dir, tmp_path):
    """Every export explains itself: README.md with the Hugging Face metadata block (base, experts with
    fingerprints, method, params, weights, the merge's cached scores, mixlab's version) and mixlab.json."""
    import json
    import tomllib

    import mixlab
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    engine = Engine(load_lab(tiny_lab_dir), Store(tmp_path / "c.sqlite"), device="cpu")
    m = engine.mixture([0.2, 0.3, 0.5])
    (score,) = engine.proxy(m, "ties", {"density": 0.5}, ["rev-loss"])
    out = engine.export(m, tmp_path / "model", "ties", {"density": 0.5})
    facts = json.loads((out / "mixlab.json").read_text())
    assert facts["weights"] == {"add": 0.2, "rev": 0.3, "sort": 0.5} and facts["method"] == "ties"
    assert facts["scores"] == [
        {"benchmark": "rev-loss", "metric": score.metric, "score": score.score, "n": score.n, "higher_is_better": False}
    ]
    assert [e["fingerprint"] for e in facts["expert_info"]] == [tv.fingerprint for tv in engine.experts]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\ntags:\n")  # a local base: no base_model (not a Hub id)
    assert f"| rev-loss | {score.metric} | {score.score:.4f} | ↓ | {score.n} |" in card
    assert "--weights add=0.2,rev=0.3,sort=0.5 --method ties --param density=0.5" in card
    assert facts["mixlab"] == mixlab.__version__
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == mixlab.__version__
    adapter = engine.export(m, tmp_path / "adapter", "linear", adapter=True)
    assert "library_name: peft" in (adapter / "README.md").read_text()
    assert "No scores of this merge were cached" in (adapter / "README.md").read_text()


def test_an_export_into_the_labs_exports_never_follows_a_link_out(lora, tmp_path):
    base, experts = lora
    lab, outside = tmp_path / "lab", tmp_path / "outside"
    lab.mkdir()
    outside.mkdir()
    (lab / "exports").symlink_to(outside, target_is_directory=True)
    spec = MergeSpec("linear", (1.0, 0.0, 0.0))
    with pytest.raises(MergeError, match="output .* points outside the lab folder .*exports is a link"):
        save_merged(base, experts, spec, lab / "exports" / "m", within=lab / "exports")
    with pytest.raises(MergeError, match="points outside the lab folder"):
        save_lora_merge(experts, spec, lab / "exports" / "m", within=lab / "exports")
    assert list(outside.iterdir()) == []


def test_a_failed_replace_puts_the_earlier_export_back(lora, tmp_path, monkeypatch):
    from mixlab import staging

    base, experts = lora
    out = save_merged(base, experts, MergeSpec("linear", (1.0, 0.0, 0.0)), tmp_path / "export", provenance={"n": 1})
    before = sorted(p.name for p in out.iterdir())
    real = os.replace

    def failing(src, dst):
        if ".mixlab-tmp-" in Path(src).name and Path(dst) == out:  # moving the new export into place
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(staging.os, "replace", failing)
    with pytest.raises(
        MergeError, match="cannot move the finished export into place .*; the earlier export is unchanged"
    ):
        save_merged(base, experts, MergeSpec("linear", (0.0, 1.0, 0.0)), out, overwrite=True, provenance={"n": 2})
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "mixlab_merge.json").read_text()) == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temp or old folder left behind


def test_a_model_cards_base_model_is_a_hub_id_or_absent():
    from mixlab.merge.output import hub_id

    assert hub_id("Qwen/Qwen2-VL-2B-Instruct") == "Qwen/Qwen2-VL-2B-Instruct"
    for local in ("base", "/models/llama", "./org/name", "~/x/y", "a/b/c", None, ""):
        assert hub_id(local) is None, local
