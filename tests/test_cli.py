import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixlab.cli import main

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
        "error: mixture weights must sum to 1 (±1e-06), got Σ=1.1 for [0.5, 0.6, 0.0]; "
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
