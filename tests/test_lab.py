from pathlib import Path

import pytest

from mixlab.errors import ManifestError
from mixlab.lab import load_lab

BASE = """
name = "lab"
base = "base"
[[experts]]
name = "ocr"
path = "experts/ocr"
[[experts]]
name = "chart"
path = "experts/chart"
[[benchmarks]]
name = "ocr-val"
evaluator = "exact_match"
data = "data/ocr.jsonl"
"""


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    for d in ("base", "experts/ocr", "experts/chart", "true/mix"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ocr.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')
    return tmp_path


def write(lab_dir: Path, text: str) -> Path:
    (lab_dir / "lab.toml").write_text(text)
    return lab_dir


def test_valid_manifest(lab_dir):
    lab = load_lab(
        write(
            lab_dir,
            BASE + '[[true_mixtures]]\nweights = { ocr = 0.5, chart = 0.5 }\npath = "true/mix"\n'
            '[[true_mixtures]]\nweights = { ocr = 1.0 }\nscores = { "ocr-val" = 0.61 }\n'
            '[merge]\nexclude = ["visual.*"]\n',
        )
    )
    assert lab.expert_names == ["ocr", "chart"]
    t0, t1 = lab.manifest.true_mixtures
    assert lab.true_mixture_name(t0) == "ocr50_chart50"
    assert lab.true_mixture_weights(t1).weights == (1.0, 0.0)
    assert lab.resolve("data/ocr.jsonl") == lab_dir.resolve() / "data/ocr.jsonl"
    assert load_lab(lab_dir / "lab.toml").name == "lab"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("colour = 'red'\n", r"unknown key 'benchmarks\[0\].colour'"),
        ('[[experts]]\nname = "ocr"\npath = "experts/chart"\n', r"experts\[2\].name: duplicate name 'ocr'"),
        ("[[true_mixtures]]\nweights = { ocr = nan, chart = 0.5 }\nscores = {}\n", r"true_mixtures\[0\].weights.ocr"),
        ("[[true_mixtures]]\nweights = { ocr = 0.5, tables = 0.5 }\nscores = {}\n", "unknown expert 'tables'"),
        ("[[true_mixtures]]\nweights = { ocr = 0.5, chart = 0.4 }\nscores = {}\n", "weights must sum to 1, got 0.9"),
        ("[[true_mixtures]]\nweights = { ocr = 1.0 }\n", "give exactly one of 'path'"),
        ("[[true_mixtures]]\nweights = { ocr = 1.0 }\nscores = { nope = 1.0 }\n", "unknown benchmark 'nope'"),
        ('[[true_mixtures]]\nweights = { ocr = 1.0 }\npath = "../outside"\n', "points outside the lab folder"),
        (
            '[[true_mixtures]]\nweights = { ocr = 1.0 }\npath = "true/missing"\n',
            r"true_mixtures\[0\].path = 'true/missing': no such file",
        ),
        ('[[benchmarks]]\nname = "x"\nevaluator = "bleu"\ndata = "data/ocr.jsonl"\n', "unknown evaluator 'bleu'"),
        (
            '[[benchmarks]]\nname = "x y"\nevaluator = "lm_loss"\ndata = "data/ocr.jsonl"\n',
            r"benchmarks\[1\].name: String should match",
        ),
        ('[merge]\nmethod = "linear"\nparams = { scale = inf }\n', r"merge.params.scale"),
    ],
)
def test_manifest_errors_name_the_field(lab_dir, extra, match):
    with pytest.raises(ManifestError, match=match):
        load_lab(write(lab_dir, BASE + extra))


def test_bad_toml_and_missing_manifest(lab_dir, tmp_path):
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_lab(write(lab_dir, "name = \n"))
    with pytest.raises(ManifestError, match="no lab manifest"):
        load_lab(tmp_path / "nowhere")


def test_missing_base_names_the_field(lab_dir):
    with pytest.raises(ManifestError, match="base = 'nobase': no such file"):
        load_lab(write(lab_dir, BASE.replace('base = "base"', 'base = "nobase"')))
