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
        (
            '[[true_mixtures]]\nweights = { ocr = 1.0 }\npath = "true/mix"\npaths = ["true/mix", "experts/ocr"]\n',
            r"give exactly one of 'path' \(a checkpoint\), 'paths' \(replicates\) or 'scores'",
        ),
        (
            '[[true_mixtures]]\nweights = { ocr = 1.0 }\npaths = ["true/mix"]\n',
            r"paths lists replicates: give at least 2, or one checkpoint as path = \['true/mix'\]",
        ),
        (
            '[[true_mixtures]]\nweights = { ocr = 1.0 }\npaths = ["true/mix", "true/mix"]\n',
            "paths: 'true/mix' is listed twice",
        ),
        (
            '[[true_mixtures]]\nweights = { ocr = 1.0 }\npaths = ["true/mix", "true/seed2"]\n',
            r"true_mixtures\[0\].paths\[1\] = 'true/seed2': no such file",
        ),
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
        (
            '[merge]\nmethod = "ties"\nparams = { density = 1.5 }\n',
            r"merge: .*parameter density must be in \(0.0, 1.0\]",
        ),
        ('[merge]\nmethod = "ties"\nparams = { densty = 0.5 }\n', r"merge: .*has no parameter 'densty'"),
        ('[merge]\nmethod = "slerp"\n', r"merge: unknown merge method 'slerp'"),
        (
            '[[experts]]\nname = "OCR"\npath = "experts/chart"\n',
            r"experts\[2\].name: name equal up to case to 'ocr': 'OCR'",
        ),
        (
            '[[benchmarks]]\nname = "x"\nevaluator = "exact_match"\ndata = "data/ocr.jsonl"\nstop = [""]\n',
            "stop strings must be non-empty",
        ),
        (
            '[[benchmarks]]\nname = "x"\nevaluator = "lm_loss"\ndata = "data/ocr.jsonl"\nlower_is_better = true\n',
            "lower_is_better is for plugin evaluators",
        ),
        ('[[true_mixtures]]\nweights = { ocr = 1.0 }\npath = "true/\\u0000mix"\n', "contains a NUL byte"),
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


def test_only_a_file_named_lab_toml_opens_and_other_tomls_are_not_echoed(lab_dir):
    other = lab_dir / "pyproject.toml"
    other.write_text('[tool.secret]\napi_key = "abc"\n')
    with pytest.raises(ManifestError, match="no lab manifest") as err:
        load_lab(other)
    assert "api_key" not in str(err.value) and "secret" not in str(err.value)


def test_an_oversized_manifest_is_refused_before_it_is_parsed(lab_dir):
    write(lab_dir, BASE + "#" * (1 << 20) + "\n")
    with pytest.raises(ManifestError, match="larger than 1048576 bytes; not a lab manifest"):
        load_lab(lab_dir)


def test_a_nul_byte_in_the_lab_path_is_a_clear_error(lab_dir):
    with pytest.raises(ManifestError, match="contains a NUL byte"):
        load_lab(str(lab_dir) + "\0x")


def test_benchmark_direction_has_one_home(lab_dir):
    lab = load_lab(
        write(
            lab_dir,
            BASE
            + '[[benchmarks]]\nname = "loss"\nevaluator = "lm_loss"\ndata = "data/ocr.jsonl"\n'
            + '[[benchmarks]]\nname = "ppl"\nevaluator = "mypkg.evals:perplexity"\ndata = "data/ocr.jsonl"\n'
            + "lower_is_better = true\n"
            + '[[benchmarks]]\nname = "bleu"\nevaluator = "mypkg.evals:bleu"\ndata = "data/ocr.jsonl"\n',
        )
    )
    assert {b.name: b.higher_is_better for b in lab.benchmarks} == {
        "ocr-val": True,
        "loss": False,
        "ppl": False,
        "bleu": True,
    }


def test_export_names_are_names_not_paths(lab_dir):
    lab = load_lab(write(lab_dir, BASE))
    assert lab.export_path("ties_ocr50") == lab.root / "exports" / "ties_ocr50"
    for bad in ("../x", "/etc", ".hidden", "a/b", "", "-rf", "x" * 101):
        with pytest.raises(ManifestError, match="must be 1-100 letters"):
            lab.export_path(bad)


def test_plugin_folders_resolve_inside_the_lab(lab_dir):
    (lab_dir / "evals").mkdir()
    assert load_lab(write(lab_dir, 'plugins = ["evals"]\n' + BASE)).plugin_dirs == [lab_dir.resolve() / "evals"]
    with pytest.raises(ManifestError, match=r"plugins\[0\] = '../elsewhere' points outside the lab folder"):
        load_lab(write(lab_dir, 'plugins = ["../elsewhere"]\n' + BASE))


def test_exports_of_a_shipped_lab_land_outside_the_tracked_cache_folder(tmp_path):
    """The shipped labs live in git-tracked cache/: their exports go to exports/<lab> beside it; any other
    lab keeps <lab>/exports."""
    import shutil

    from mixlab.demo import DEMO_LAB, LABS_DIR

    shipped = load_lab(DEMO_LAB)
    assert shipped.exports == LABS_DIR.parent / "exports" / "demo-k3"
    assert LABS_DIR.resolve() not in shipped.export_path("x").resolve().parents
    copy = tmp_path / "demo-k3"
    shutil.copytree(DEMO_LAB, copy, ignore=shutil.ignore_patterns(".mixlab", "true"))
    text = (copy / "lab.toml").read_text().split("[[true_mixtures]]")[0]
    (copy / "lab.toml").write_text(text)
    assert load_lab(copy).exports == copy / "exports"


def test_true_mixture_weights_may_be_fractions(lab_dir):
    lab = load_lab(
        write(lab_dir, BASE + '[[true_mixtures]]\nweights = { ocr = "1/3", chart = "2/3" }\npath = "true/mix"\n')
    )
    assert lab.true_mixture_weights(lab.manifest.true_mixtures[0]).weights == pytest.approx((1 / 3, 2 / 3))
    with pytest.raises(ManifestError, match="weight 'a/3' is not a number or a fraction"):
        load_lab(
            write(lab_dir, BASE + '[[true_mixtures]]\nweights = { ocr = "a/3", chart = 0.5 }\npath = "true/mix"\n')
        )


def test_the_manifest_writer_escapes_what_it_writes_and_reads_it_back():
    import tomllib

    from mixlab.manifest_writer import ManifestWriter

    doc = ManifestWriter()
    hostile = 'x\nplugins = ["evals"]\r\n[[benchmarks]]\u2028"\\\x7f\t'
    doc.comment(f"from {hostile}")
    doc.set("name", "lab")
    doc.set("description", hostile, comment=hostile)
    doc.item("experts", comment=hostile)
    doc.set("name", "a")
    doc.set("path", hostile)
    text = doc.text()
    assert tomllib.loads(text) == {"name": "lab", "description": hostile, "experts": [{"name": "a", "path": hostile}]}
    assert all(line.startswith(("#", "name", "description", "[[experts]]", "path")) for line in text.splitlines())


@pytest.mark.parametrize(
    "value, match",
    [
        (float("nan"), "finite numbers"),
        (float("inf"), "finite numbers"),
        ("a\udcffb", "not valid Unicode"),
        (object(), "cannot write a object"),
    ],
)
def test_toml_value_refuses_what_toml_cannot_hold(value, match):
    from mixlab.manifest_writer import toml_value

    with pytest.raises(ManifestError, match=match):
        toml_value(value)


def test_the_manifest_writer_never_writes_through_a_link(lab_dir, tmp_path_factory):
    from mixlab.manifest_writer import ManifestWriter

    outside = tmp_path_factory.mktemp("outside") / "created.toml"
    (lab_dir / "lab.toml").symlink_to(outside)  # dangling: lab_dir/lab.toml "does not exist"
    doc = ManifestWriter()
    for k, v in (("name", "lab"), ("base", "base")):
        doc.set(k, v)
    doc.item("experts")
    doc.set("name", "ocr")
    doc.set("path", "experts/ocr")
    with pytest.raises(ManifestError, match="lab.toml is a link; move it away first"):
        doc.write(lab_dir)
    assert not outside.exists()
    (lab_dir / "lab.toml").unlink()
    assert doc.write(lab_dir).read_text() == doc.text() and load_lab(lab_dir).expert_names == ["ocr"]


def test_confined_refuses_links_out_of_the_lab_at_every_component(lab_dir, tmp_path_factory):
    from mixlab.lab import confined

    outside = tmp_path_factory.mktemp("outside")
    root = lab_dir.resolve()
    (lab_dir / ".mixlab").symlink_to(outside, target_is_directory=True)
    with pytest.raises(
        ManifestError, match=r"the cache '.mixlab/e.sqlite' points outside the lab folder .*\.mixlab is a link"
    ):
        confined(lab_dir, ".mixlab/e.sqlite", "the cache")
    (lab_dir / ".mixlab").unlink()
    (lab_dir / ".mixlab").mkdir()
    (lab_dir / ".mixlab" / "e.sqlite").symlink_to(outside / "new.sqlite")  # dangling, leading out
    with pytest.raises(ManifestError, match="points outside the lab folder"):
        confined(lab_dir, ".mixlab/e.sqlite", "the cache")
    (lab_dir / ".mixlab" / "e.sqlite").unlink()
    (lab_dir / ".mixlab" / "e.sqlite").symlink_to(lab_dir / "data" / "ocr.jsonl")  # a link inside the lab is fine
    assert confined(lab_dir, ".mixlab/e.sqlite", "the cache") == root / "data" / "ocr.jsonl"
    assert confined(lab_dir, ".mixlab/new/x", "the cache") == root / ".mixlab" / "new" / "x"
    with pytest.raises(ManifestError, match="points outside the lab folder"):
        confined(lab_dir, "../x", "the cache")


def test_a_lab_toml_link_is_refused_and_its_target_never_echoed(lab_dir, tmp_path_factory):
    secrets = tmp_path_factory.mktemp("home") / "secrets.toml"
    secrets.write_text('password = "hunter2"\n')
    (lab_dir / "lab.toml").symlink_to(secrets)
    for opened in (lab_dir, lab_dir / "lab.toml"):
        with pytest.raises(ManifestError, match="lab.toml is a symbolic link") as err:
            load_lab(opened)
        assert "hunter2" not in str(err.value) and "password" not in str(err.value)


def test_exports_that_link_out_of_the_lab_are_refused(lab_dir, tmp_path_factory):
    lab = load_lab(write(lab_dir, BASE))
    outside = tmp_path_factory.mktemp("outside")
    (lab_dir / "exports").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ManifestError, match="the exports folder 'exports' points outside the lab folder"):
        lab.export_path("m")
    (lab_dir / "exports").unlink()
    (lab_dir / "exports").mkdir()
    (lab_dir / "exports" / "m").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ManifestError, match="export 'm' 'exports/m' points outside the lab folder"):
        lab.export_path("m")
    assert lab.export_path("n") == lab_dir.resolve() / "exports" / "n"


def test_replicates_are_listed_as_paths_and_written_by_the_one_writer(lab_dir):
    from mixlab.manifest_writer import ManifestWriter

    (lab_dir / "true" / "mix2").mkdir()
    w = ManifestWriter()
    w.set("name", "rep")
    w.set("base", "base")
    for name in ("ocr", "chart"):
        w.item("experts")
        w.set("name", name)
        w.set("path", f"experts/{name}")
    w.item("true_mixtures")
    w.set("weights", {"ocr": 0.5, "chart": 0.5})
    w.set("paths", ["true/mix", "true/mix2"], comment="two seeds")
    w.item("true_mixtures")
    w.set("weights", {"ocr": 1.0})
    w.set("path", "experts/ocr")
    w.write(lab_dir)
    assert 'paths = ["true/mix", "true/mix2"]  # two seeds' in (lab_dir / "lab.toml").read_text()
    lab = load_lab(lab_dir)
    t0, t1 = lab.manifest.true_mixtures
    assert t0.checkpoints == ("true/mix", "true/mix2") and t1.checkpoints == ("experts/ocr",)
