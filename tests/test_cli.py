import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixlab.cli import main
from mixlab.scoring import checkpoints

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def mixlab(*args) -> Result:
    """The CLI in-process (fast); test_entry_point runs it as `python -m mixlab` once."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse --help / usage errors
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


def test_entry_point(tiny_lab_dir):
    r = subprocess.run(
        [sys.executable, "-m", "mixlab", "eval", str(tiny_lab_dir), "--weights", "0.5,0.6,0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: mixture weights must sum to 1 (±1.5e-06), got Σ=1.1 for [0.5, 0.6, 0.0]; "
        "pass normalize=True (CLI: --normalize) to rescale them"
    )


def test_info(tiny_lab_dir):
    r = mixlab("info", tiny_lab_dir)
    assert r.returncode == 0, r.stderr
    assert (
        "experts (3):" in r.stdout
        and "rev              lora  r=4" in r.stdout
        and "pick             choice" in r.stdout
    )
    from transformers import AutoModelForCausalLM

    n = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_lab_dir / "base").parameters())
    assert f"base: base  {n:,} params" in r.stdout  # counted from the safetensors headers, checked by torch


def test_info_counts_the_tensors_an_expert_really_changes(tiny_lab_dir):
    """An expert identical to the base (its files copied; a PEFT adapter with B = 0, PEFT's own
    initialisation) changes 0 tensors; a trained adapter changes the modules it targets."""
    import shutil

    from conftest import write_lab_toml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_lab_dir / "base", tiny_lab_dir / "same")
    model = AutoModelForCausalLM.from_pretrained(tiny_lab_dir / "base")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tiny_lab_dir / "fresh")
    write_lab_toml(tiny_lab_dir, {"same": "same", "fresh": "fresh", "rev": "experts/rev"})
    r = mixlab("info", tiny_lab_dir)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.endswith("tensors changed")}
    n = len(AutoModelForCausalLM.from_pretrained(tiny_lab_dir / "base").state_dict())
    assert lines["same"].endswith(f"0 of {n} tensors changed"), lines["same"]
    assert lines["fresh"].endswith("0 of 2 tensors changed"), lines["fresh"]  # q_proj in each of 2 layers
    assert lines["rev"].endswith("of 6 tensors changed") and " 0 of" not in lines["rev"], lines["rev"]


def test_eval_json_then_sweep_then_merge(tiny_lab_dir, tmp_path):
    r = mixlab("eval", tiny_lab_dir, "--weights", "add=0.2,rev=0.8", "--benchmark", "rev-loss", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["benchmark"] == "rev-loss" and row["weights"] == {"add": 0.2, "rev": 0.8, "sort": 0.0}
    args = ("eval", tiny_lab_dir, "--weights", "add=0.2,rev=0.8", "--benchmark", "rev-loss", "--json", "--refresh")
    r = mixlab(*args, "--batch-size", "2")  # recomputed in batches of two rows: the same loss
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["score"] == pytest.approx(row["score"], rel=1e-5)
    r = mixlab(*args, "--batch-size", "0")
    assert r.returncode == 2 and "argument --batch-size: expected a positive integer, got '0'" in r.stderr
    r = mixlab(
        "sweep", tiny_lab_dir, "--grid", "0.5", "--benchmark", "rev-loss", "--method", "ties", "--param", "density=0.5"
    )
    assert r.returncode == 0, r.stderr
    assert "6 scores for 6 mixtures" in r.stdout
    r = mixlab(
        "merge",
        tiny_lab_dir,
        "--weights",
        "0.2,0.3,0.5",
        "--method",
        "ties",
        "--param",
        "density=0.2",
        "--out",
        tmp_path / "m",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()
    r = mixlab("merge", tiny_lab_dir, "--weights", "0.2,0.3,0.5", "--adapter", "--out", tmp_path / "a")
    assert r.returncode == 0 and (tmp_path / "a" / "adapter_config.json").is_file(), r.stderr


def test_errors_are_one_line_without_traceback(tiny_lab_dir, tmp_path):
    for args, msg in [
        (("eval", tiny_lab_dir, "--weights", "0.5,0.6,0"), "error: mixture weights must sum to 1"),
        (("eval", tiny_lab_dir, "--weights", "add=1", "--method", "slerp"), "error: unknown merge method 'slerp'"),
        (
            ("merge", tiny_lab_dir, "--weights", "add=1", "--param", "density", "--out", tmp_path / "x"),
            "error: --param expects NAME=VALUE",
        ),
        (("info", tmp_path / "nolab"), "error: no lab manifest at"),
        (("sweep", tiny_lab_dir, "--grid", "0.3"), "error: grid step must be 1/m"),
    ]:
        r = mixlab(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip().splitlines()[-1].startswith(msg), r.stderr
        assert "Traceback" not in r.stderr


def test_help_on_each_command():
    for cmd in ("info", "merge", "eval", "sweep"):
        r = mixlab(cmd, "--help")
        assert r.returncode == 0 and "usage: python -m mixlab " + cmd in r.stdout


def _edit_json(path, edit):
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _break(lab, how: str) -> None:
    """Damage a copy of the tiny lab in one of the ways users (and attackers) have."""
    toml = lab / "lab.toml"
    adapter = lab / "experts" / "add" / "adapter_config.json"
    if how == "nul_path":
        toml.write_text(toml.read_text().replace('path = "experts/add"', 'path = "experts/\\u0000add"'))
    elif how == "non_utf8_jsonl":
        (lab / "data" / "rev.jsonl").write_bytes(b'{"prompt": "\xff", "answer": "a"}\n')
    elif how == "null_prompt":
        (lab / "data" / "rev.jsonl").write_text('{"prompt": null, "answer": "a", "completion": "a"}\n')
    elif how == "rank_pattern_string":
        _edit_json(adapter, lambda c: {**c, "rank_pattern": "q_proj"})
    elif how == "rank_pattern_bad_regex":
        _edit_json(adapter, lambda c: {**c, "rank_pattern": {"q_proj[": 2}})
    elif how == "adapter_config_list":
        adapter.write_text("[]")
    elif how == "non_utf8_adapter_config":
        adapter.write_bytes(b'{"r": 4, "x": "\xff"}')
    elif how == "config_disagrees":
        _edit_json(lab / "base" / "config.json", lambda c: {**c, "hidden_size": 24})
    elif how == "plugin_raises":
        (lab / "evals").mkdir()
        (lab / "evals" / "myplug.py").write_text("def run(*a):\n    raise KeyError('boom')\n")
        text = toml.read_text().replace('name = "tiny"', 'name = "tiny"\nplugins = ["evals"]')
        toml.write_text(text + '\n[[benchmarks]]\nname = "p"\nevaluator = "myplug:run"\ndata = "data/rev.jsonl"\n')


@pytest.mark.parametrize(
    ("args", "how", "msg"),
    [
        (("sweep", "LAB", "--grid", "0"), None, "error: --grid step must be in (0, 1]"),
        (("sweep", "LAB", "--grid", "nan"), None, "error: --grid step must be in (0, 1]"),
        (("sweep", "LAB", "--grid", "dirichlet:abc"), None, "error: --grid dirichlet:N needs a positive whole number"),
        (("sweep", "LAB", "--grid", "dirichlet:-5"), None, "error: --grid dirichlet:N needs a positive whole number"),
        (("sweep", "LAB", "--grid", "0.0001"), None, "error: --grid 0.0001 makes 50,015,001 mixtures for K=3"),
        (("sweep", "LAB", "--grid", "dirichlet:3", "--seed", "-1"), None, "error: seed must be a whole number from 0"),
        (("regress", "LAB", "--seed", "-1"), None, "error: seed must be a whole number from 0"),
        (
            ("merge", "LAB", "--weights", "-0.2,0.6,0.6", "--out", "out"),
            None,
            "error: mixture weights must be ≥ 0, got -0.2 in [-0.2, 0.6, 0.6]",
        ),
        (("eval", "LAB", "--weights", "-1,1,1", "--normalize"), None, "error: mixture weights must be ≥ 0, got -1 in"),
        (("eval", "LAB", "--normalize", "--weights", "-.5,1,1"), None, "error: mixture weights must be ≥ 0, got -0.5"),
        (("eval", "LAB", "--weights", "add=1", "--device", "mps"), None, "error: device 'mps' asked for, but MPS"),
        (("merge", "LAB", "--weights", "add=1", "--out", "FILE", "--overwrite"), None, "error: output"),
        (("merge", "LAB", "--weights", "add=1", "--out", ".", "--overwrite"), None, "error: output"),
        (("info", "LAB"), "nul_path", "error: "),
        (("eval", "LAB", "--weights", "add=1", "--benchmark", "rev"), "non_utf8_jsonl", "error: "),
        (("eval", "LAB", "--weights", "add=1", "--benchmark", "rev"), "null_prompt", "error: "),
        (("info", "LAB"), "rank_pattern_string", "error: expert 'add'"),
        (("info", "LAB"), "rank_pattern_bad_regex", "error: expert 'add'"),
        (("info", "LAB"), "adapter_config_list", "error: expert 'add'"),
        (("info", "LAB"), "non_utf8_adapter_config", "error: expert 'add'"),
        (("eval", "LAB", "--weights", "add=1", "--benchmark", "rev"), "config_disagrees", "error: base: transformers"),
        (("eval", "LAB", "--weights", "add=1", "--benchmark", "p"), "plugin_raises", "error: evaluator 'myplug:run'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_never_a_traceback(tiny_lab_dir, tmp_path, monkeypatch, args, how, msg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    if how:
        _break(tiny_lab_dir, how)
    r = mixlab(*[tiny_lab_dir if a == "LAB" else a for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith(msg) and "Traceback" not in r.stderr, r.stderr
    assert "unexpected" not in lines[0], "a bad input reached the last-resort handler: give it its own message"
    assert (tmp_path / "FILE").read_text() == "x" and Path.cwd() == tmp_path and (tmp_path / "FILE").is_file()


def test_a_big_grid_runs_when_asked(tiny_lab_dir):
    r = mixlab("sweep", tiny_lab_dir, "--grid", "0.5", "--max-mixtures", "5", "--benchmark", "rev-loss")
    assert r.returncode == 2 and "makes 6 mixtures" in r.stderr and "--max-mixtures 6" in r.stderr
    r = mixlab("sweep", tiny_lab_dir, "--grid", "0.5", "--yes", "--benchmark", "rev-loss")
    assert r.returncode == 0 and "6 scores for 6 mixtures" in r.stdout, r.stderr


def test_merge_overwrite_refuses_a_folder_that_is_not_an_export(tiny_lab_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "paper.tex").write_text("draft")
    r = mixlab("merge", tiny_lab_dir, "--weights", "add=1", "--out", mine, "--overwrite")
    assert r.returncode == 2 and "not a mixlab export" in r.stderr
    assert (mine / "paper.tex").read_text() == "draft"


def test_cli_uses_the_labs_merge_defaults(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(toml.read_text() + '\n[merge]\nmethod = "ties"\nparams = { density = 0.5 }\n')
    r = mixlab("eval", tiny_lab_dir, "--weights", "0.2,0.3,0.5", "--benchmark", "rev-loss", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["method"] == "ties" and row["params"] == {"density": 0.5, "normalize": True, "scale": 1.0}
    r = mixlab(
        "eval", tiny_lab_dir, "--weights", "0.2,0.3,0.5", "--benchmark", "rev-loss", "--json", "--param", "scale=2"
    )
    assert json.loads(r.stdout)[0]["params"] == {"density": 0.5, "normalize": True, "scale": 2.0}


def test_report_names_the_method_and_uses_the_benchmarks_direction(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    text = toml.read_text()
    text += '\n[[benchmarks]]\nname = "chars"\nevaluator = "plugins:prompt_length"\ndata = "data/rev.jsonl"\n'
    text += "lower_is_better = true\n"  # a lower-is-better plugin: never part of the mean
    for i, w in enumerate(("add = 1.0", "add = 0.5, rev = 0.5", "sort = 1.0")):
        text += (
            f"\n[[true_mixtures]]\nweights = {{ {w} }}\nscores = {{ rev = {i / 4}, pick = {i / 3}, chars = {9 - i} }}\n"
        )
    toml.write_text(text)
    assert mixlab("sweep", tiny_lab_dir, "--grid", "0.5", "--benchmark", "rev", "--benchmark", "pick").returncode == 0
    r = mixlab("report", tiny_lab_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("proxy (linear) vs true mixtures in tiny; 'mean' = mean of rev, pick\n")
    assert any(line.startswith("mean ") and "  3  " in line for line in r.stdout.splitlines())
    r = mixlab("report", tiny_lab_dir, "--method", "task_arithmetic", "--param", "scale=2")
    assert r.stdout.startswith('proxy (task_arithmetic {"scale": 2.0}) vs true mixtures')


def test_report_json_has_every_metric(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    text = toml.read_text()
    for i, w in enumerate(("add = 1.0", "add = 0.5, rev = 0.5", "sort = 1.0", "rev = 1.0")):
        text += f'\n[[true_mixtures]]\nweights = {{ {w} }}\nscores = {{ rev = {i / 4}, "rev-loss" = {3 - i / 5} }}\n'
    toml.write_text(text)
    assert (
        mixlab("sweep", tiny_lab_dir, "--grid", "0.5", "--benchmark", "rev", "--benchmark", "rev-loss").returncode == 0
    )
    r = mixlab("report", tiny_lab_dir, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["method"], report["params"], report["mean_of"]) == ("linear", {}, ["rev"])
    assert [b["benchmark"] for b in report["benchmarks"]] == ["rev", "rev-loss", "mean"]
    row = report["benchmarks"][1]
    assert set(row) == {
        "benchmark",
        "higher_is_better",
        "n",
        "spearman",
        "spearman_low",
        "spearman_high",
        "kendall",
        "top25_spearman",
        "n_top25",
        "pairwise_accuracy",
        "pick",
        "pick_true_rank",
        "pick_tied",
        "pick_rank",
        "regret",
        "warning",
        "ceiling",
        "ceiling_low",
        "ceiling_high",
        "n_replicated",
        "replicates",
    }
    assert row["ceiling"] is None and row["n_replicated"] == 0  # no replicates in this lab
    assert [(s["subset"], s["summary"]) for s in report["summaries"]] == [
        ("all", "ρ of the mean"),
        ("all", "mean of per-benchmark ρ"),
        ("interior", "ρ of the mean"),
        ("interior", "mean of per-benchmark ρ"),
    ]
    assert row["n"] == 4 and row["higher_is_better"] is False and 1 <= row["pick_true_rank"] <= 4


def test_report_shows_the_noise_ceiling_of_replicates_beside_every_rho(tiny_lab_dir):
    from scipy import stats

    toml = tiny_lab_dir / "lab.toml"
    text = toml.read_text()
    seeds = {"add = 0.5, rev = 0.5": ("add", "rev"), "rev = 0.5, sort = 0.5": ("rev", "sort")}
    seeds |= {"add = 0.5, sort = 0.5": ("sort", "add"), "add = 0.25, rev = 0.75": ("rev", "add")}
    for w, (a, b) in seeds.items():  # any two checkpoints stand for two seeds
        text += f'\n[[true_mixtures]]\nweights = {{ {w} }}\npaths = ["experts/{a}", "experts/{b}"]\n'
    toml.write_text(text)
    r = mixlab("sweep", tiny_lab_dir, "--checkpoints", "--benchmark", "rev-loss", "--json")
    assert r.returncode == 0, r.stderr
    expert = {e["label"]: e["score"] for e in json.loads(r.stdout) if e["kind"] == "expert"}
    assert mixlab("sweep", tiny_lab_dir, "--grid", "true", "--benchmark", "rev-loss").returncode == 0
    r = mixlab("report", tiny_lab_dir, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (row,) = report["benchmarks"]
    first, second = [[expert[pair[i]] for pair in seeds.values()] for i in (0, 1)]
    assert row["n_replicated"] == 4 and row["replicates"] == 2
    assert row["ceiling"] == pytest.approx(stats.spearmanr(first, second).statistic)
    text = mixlab("report", tiny_lab_dir).stdout
    assert f"ceiling {row['ceiling']:+.2f} [" in text and "(n=4)" in text
    assert "interior  ρ of the mean" not in text  # rev-loss is lower-is-better: no mean, no summary rows


def test_sweep_checkpoints_scores_base_experts_and_true_mixtures(tiny_lab_dir):
    """A lab a researcher brings has no scores: `sweep --checkpoints` fills the base, every expert and
    every true mixture through the engine's cache, and equals what the engine computes for each."""
    import shutil

    from conftest import write_lab_toml
    from safetensors.torch import load_file, save_file

    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    t1 = tiny_lab_dir / "true" / "t1"
    shutil.copytree(tiny_lab_dir / "experts" / "rev", t1)  # a checkpoint of its own: rev, nudged
    state = load_file(t1 / "adapter_model.safetensors")
    save_file({k: v * 1.01 if "lora_B" in k else v for k, v in state.items()}, t1 / "adapter_model.safetensors")
    write_lab_toml(
        tiny_lab_dir,
        {"add": "experts/add", "rev": "experts/rev", "sort": "experts/sort"},
        '\n[[true_mixtures]]\nname = "t1"\nweights = { rev = 0.5, sort = 0.5 }\npath = "true/t1"\n',
    )
    assert checkpoints.unscored(Engine(load_lab(tiny_lab_dir))) == {"base": 1, "expert": 3, "true": 1}
    r = mixlab("report", tiny_lab_dir)
    assert "1 true mixtures have no scores yet" in r.stderr and "--checkpoints" in r.stderr
    r = mixlab("sweep", tiny_lab_dir, "--checkpoints", "--benchmark", "rev-loss", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted((x["kind"], x["label"]) for x in rows) == [
        ("base", "base"),
        ("expert", "add"),
        ("expert", "rev"),
        ("expert", "sort"),
        ("true", "t1"),
    ]
    scores = {x["label"]: x["score"] for x in rows}
    assert scores["t1"] != scores["rev"] and scores["t1"] == pytest.approx(scores["rev"], rel=0.05)
    r = mixlab("sweep", tiny_lab_dir, "--checkpoints")
    assert r.returncode == 0 and "the base, 3 experts and 1 true mixtures" in r.stdout, r.stderr
    eng = Engine(load_lab(tiny_lab_dir))
    assert checkpoints.unscored(eng) == {"base": 0, "expert": 0, "true": 0}
    assert json.loads(mixlab("report", tiny_lab_dir, "--json").stdout)["unscored_checkpoints"]["true"] == 0


def test_an_unreadable_image_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import shutil

    from mixlab.demo import DEMO_LAB

    lab = tmp_path / "vl"
    shutil.copytree(DEMO_LAB.parent / "demo-vl", lab, ignore=shutil.ignore_patterns(".mixlab", "exports"))
    first = json.loads((lab / "data" / "count.jsonl").read_text().splitlines()[0])
    (lab / first["image"]).write_text("not a picture")
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "c.sqlite"))
    r = mixlab("eval", lab, "--weights", "general=1", "--benchmark", "count", "--device", "cpu")
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: image {lab / first['image']}: not an image file PIL can read"), r.stderr


def test_a_sweeps_progress_bar_names_what_it_counts(tmp_path, monkeypatch):
    """The local backend reports one mixture on one benchmark per step (M × B steps); Ray, whole mixtures."""
    from mixlab.demo import DEMO_LAB
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.run.executors import LocalBackend, RayBackend
    from mixlab.simplex import Mixture

    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "cache.sqlite"))
    eng = Engine(load_lab(DEMO_LAB))
    mixtures = [Mixture.of(eng.names, w) for w in ([1.0, 0.0, 0.0], [0.5, 0.5, 0.0])]  # cached: nothing runs
    steps = []
    LocalBackend().run(eng, eng.request(mixtures, "linear", {}), progress=lambda d, t, m="": steps.append((d, t)))
    assert steps[-1] == (2 * len(eng.lab.benchmarks),) * 2
    assert (LocalBackend.progress_unit, RayBackend.progress_unit) == ("score", "mixture")


def test_method_and_sampler_options_list_the_registries_without_importing_them_for_usage():
    from mixlab.merge import methods
    from mixlab.search import SAMPLERS

    eval_help = " ".join(mixlab("eval", "--help").stdout.split())  # argparse wraps lines
    assert ", ".join(m.name for m in methods()) + " (default: the lab's)" in eval_help
    search_help = " ".join(mixlab("search", "--help").stdout.split())
    assert ", ".join(SAMPLERS) + " (default tpe" in search_help
    # the top-level parser and its usage errors stay light: the registries are read when shown or checked
    code = (
        "import sys; from mixlab.cli import parser; parser().format_help(); "
        "print('torch' in sys.modules, 'optuna' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.split() == ["False", "False"], r.stderr


def test_pareto_on_three_objectives_prints_the_front_a_brute_force_finds(tmp_path, monkeypatch, capsys):
    """mixlab pareto --objectives add,rev,sort on the shipped demo-k3: the front of merges is exactly the
    experts and linear proxies no other of them matches or beats on all three (checked pair by pair)."""
    from mixlab.demo import DEMO_LAB

    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "cache.sqlite"))
    lab = DEMO_LAB.parent / "demo-k3"
    assert main(["pareto", str(lab), "--objectives", "add,rev,sort", "--method", "linear", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["x"], out["y"], out["z"]) == ("add", "rev", "sort")
    rows = [json.loads(line) for line in (lab / "evaluations.jsonl").read_text().splitlines()]
    scores: dict[tuple, dict] = {}
    for r in rows:  # experts and linear proxies, by (kind, label), as the cache holds them (the latest wins)
        if r["kind"] == "expert" or (r["kind"] == "proxy" and r["method"] == "linear" and not r["params"]):
            scores.setdefault((r["kind"], r["label"]), {})[r["benchmark"]] = r["score"]
    points = {k: (v["add"], v["rev"], v["sort"]) for k, v in scores.items() if {"add", "rev", "sort"} <= set(v)}
    want = {
        k
        for k, s in points.items()
        if not any(all(o >= v for o, v in zip(other, s)) and other != s for other in points.values())
    }
    assert {(r["kind"], r["label"]) for r in out["merges"]} == want
    assert all(set(r) >= {"x", "y", "z"} for r in out["merges"])
    assert main(["pareto", str(lab), "--objectives", "add,rev,sort,rev-loss"]) == 2
    assert "two or three different benchmarks" in capsys.readouterr().err


def test_report_proxies_sets_the_output_space_and_fitted_proxies_beside_the_merge(tiny_lab_dir):
    import numpy as np
    from scipy import stats

    toml = tiny_lab_dir / "lab.toml"
    text = toml.read_text()
    points = ("add = 1.0", "add = 0.5, rev = 0.5", "sort = 1.0", "rev = 1.0", "rev = 0.5, sort = 0.5")
    true = {"rev": [0.1, 0.4, 0.2, 0.6, 0.3], "pick": [0.5, 0.25, 0.75, 0.125, 0.625]}
    for i, w in enumerate(points):
        text += f"\n[[true_mixtures]]\nweights = {{ {w} }}\nscores = {{ rev = {true['rev'][i]}, pick = {true['pick'][i]} }}\n"
    toml.write_text(text)
    r = mixlab("sweep", tiny_lab_dir, "--grid", "true", "--benchmark", "rev", "--benchmark", "pick", "--json")
    assert r.returncode == 0, r.stderr
    order = [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, 0.5, 0.5)]
    proxy = {
        (tuple(round(e["weights"].get(n, 0.0), 6) for n in ("add", "rev", "sort")), e["benchmark"]): e["score"]
        for e in json.loads(r.stdout)
    }
    r = mixlab("report", tiny_lab_dir, "--proxies", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    rows = {(o["proxy"], o["subset"], o["summary"]): o for o in report["proxies"]}
    assert {o["proxy"] for o in report["proxies"]} == {
        "merge (linear)",
        "output-space",
        "calibrated (leave one out)",
    } | {
        "proxy features (leave one out)",
        "weights only (leave one out)",
    }
    merge = rows["merge (linear)", "all", "ρ of the mean"]
    assert merge["spearman"] == pytest.approx(report["summaries"][0]["spearman"]) and merge["n"] == 5
    # the output-space proxy cannot score 'pick' (a choice benchmark), so it has no mean to rank: undefined
    assert rows["output-space", "all", "ρ of the mean"]["spearman"] is None

    # the calibrated proxy of the mean, each mixture from the other four, by hand (np.polyfit per benchmark;
    # a proxy constant on the training runs predicts their mean)
    def fit(x, y):
        return np.polyfit(x, y, 1) if np.ptp(x) > 0 else np.array([0.0, np.mean(y)])

    p = {b: np.array([proxy[k, b] for k in order]) for b in ("rev", "pick")}
    t = {b: np.array(v) for b, v in true.items()}
    loo = [
        np.mean([np.polyval(fit(np.delete(p[b], i), np.delete(t[b], i)), p[b][i]) for b in ("rev", "pick")])
        for i in range(5)
    ]
    calibrated = rows["calibrated (leave one out)", "all", "ρ of the mean"]
    truth = (t["rev"] + t["pick"]) / 2
    expected = (
        None if np.ptp(np.round(loo, 12)) == 0 else pytest.approx(stats.spearmanr(np.round(loo, 12), truth).statistic)
    )
    assert calibrated["spearman"] == expected and calibrated["n"] == 5
    text = mixlab("report", tiny_lab_dir, "--proxies").stdout
    assert "proxies beside the merge" in text and "output-space" in text
