"""lm-evaluation-harness as an evaluator: tasks in the lab over the lab's own JSONL give mixlab's own
evaluators' accuracy on the same examples (generation and multiple choice), on the in-memory merge. On the
demo lab's trained models, so the accuracies are neither 0 nor 1 and a difference would show."""

import json
import re
import shutil
import sys

import pytest

from mixlab.engine import Engine
from mixlab.errors import ManifestError, MixlabError
from mixlab.lab import load_lab
from mixlab.scoring import cached as cached_scores
from mixlab.store import Store

pytest.importorskip("lm_eval", reason="lm-eval comes with requirements-lmeval.txt (requirements-dev has it)")

TASKS = {
    "rev_gen.yaml": """task: rev_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/nowhere.jsonl  # replaced by the benchmark's data
test_split: test
output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""",
    "pick_mc.yaml": """task: pick_mc
dataset_path: json
test_split: test
output_type: multiple_choice
doc_to_text: "{{prompt}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
}
LAB = """name = "harness"
base = "base"

[[experts]]
name = "add"
path = "experts/add"

[[experts]]
name = "rev"
path = "experts/rev"

[[experts]]
name = "sort"
path = "experts/sort"

[[benchmarks]]
name = "rev"
evaluator = "exact_match"
data = "data/rev.jsonl"
max_new_tokens = 8
limit = 60

[[benchmarks]]
name = "pick"
evaluator = "choice"
data = "data/pick.jsonl"

[[benchmarks]]
name = "rev-harness"
evaluator = "lm_eval"
task = "rev_gen"
include_path = "tasks"
data = "data/rev.jsonl"
limit = 60

[[benchmarks]]
name = "pick-harness"
evaluator = "lm_eval"
task = "pick_mc"
include_path = "tasks"
data = "data/pick.jsonl"
"""


@pytest.fixture
def harness_lab(tmp_path):
    from mixlab.demo import LABS_DIR

    root = tmp_path / "harness"
    for part in ("base", "experts", "data"):
        shutil.copytree(LABS_DIR / "demo-k3" / part, root / part)
    rows = [json.loads(line) for line in (root / "data" / "rev.jsonl").read_text().splitlines()[:40]]
    with open(root / "data" / "pick.jsonl", "w") as f:  # reversal as multiple choice: the answer among look-alikes
        for i, r in enumerate(rows):
            a = r["answer"]
            options = [a[::-1], a[:-1] + "abcdefgha"["abcdefgh".index(a[-1]) + 1]]  # the input; a last-letter slip
            options.insert(i % 3, a)
            f.write(json.dumps({"prompt": r["prompt"], "choices": options, "label": i % 3}) + "\n")
    (root / "tasks").mkdir()
    for name, text in TASKS.items():
        (root / "tasks" / name).write_text(text)
    (root / "lab.toml").write_text(LAB)
    return root


def test_lm_eval_tasks_score_as_mixlabs_own_evaluators(harness_lab, tmp_path):
    engine = Engine(load_lab(harness_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    for weights in ([1, 0, 0], [0.2, 0.3, 0.5]):  # an expert, and a merge held in memory
        m = engine.mixture(weights)
        ours = {e.benchmark: e for e in engine.proxy(m, benchmarks=["rev", "pick"])}
        theirs = {e.benchmark: e for e in engine.proxy(m, benchmarks=["rev-harness", "pick-harness"])}
        assert theirs["rev-harness"].score == pytest.approx(ours["rev"].score)  # generation: exact match
        assert theirs["pick-harness"].score == pytest.approx(ours["pick"].score)  # multiple choice: accuracy
        assert (theirs["rev-harness"].metric, theirs["pick-harness"].metric) == ("exact_match", "acc")
        assert 0 < ours["rev"].score < 1 and 0 < ours["pick"].score < 1, (weights, ours)
        assert theirs["rev-harness"].n == ours["rev"].n == 60 and theirs["pick-harness"].n == 40
    scores = {b: e.score for e in cached_scores.cached(engine, "proxy") for b in [e.benchmark]}
    assert set(scores) >= {"rev-harness", "pick-harness"}
    assert (harness_lab / ".mixlab" / "hf-datasets").is_dir() or (tmp_path / "hf-datasets").is_dir()


def test_the_task_yaml_is_part_of_the_cache_key(harness_lab, tmp_path):
    engine = Engine(load_lab(harness_lab), Store(tmp_path / "c.sqlite"), device="cpu")
    m = engine.mixture([0, 1, 0])
    (first,) = engine.proxy(m, benchmarks=["rev-harness"])
    text = (harness_lab / "tasks" / "rev_gen.yaml").read_text().replace("max_gen_toks: 8", "max_gen_toks: 1")
    (harness_lab / "tasks" / "rev_gen.yaml").write_text(text)
    (again,) = engine.proxy(m, benchmarks=["rev-harness"])
    assert again.key != first.key  # a new task is a new score, not the old one served
    assert first.score > 0 and again.score < first.score  # one token cannot spell most reversed strings


def test_lm_eval_benchmarks_are_checked_and_explained(harness_lab, tmp_path, monkeypatch):
    text = (harness_lab / "lab.toml").read_text()
    (harness_lab / "lab.toml").write_text(text.replace('task = "rev_gen"\n', ""))
    with pytest.raises(ManifestError, match='evaluator "lm_eval" needs task'):
        load_lab(harness_lab)
    (harness_lab / "lab.toml").write_text(text.replace('include_path = "tasks"', 'include_path = "../elsewhere"', 1))
    with pytest.raises(ManifestError, match="points outside the lab folder"):
        load_lab(harness_lab)
    (harness_lab / "lab.toml").write_text(text.replace('task = "rev_gen"', 'task = "hellaswag"'))
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    with pytest.raises(MixlabError, match="no lm-eval task 'hellaswag' in"):  # lm-eval's own tasks: not indexed
        engine.proxy(engine.mixture([1, 0, 0]), benchmarks=["rev-harness"])
    (harness_lab / "lab.toml").write_text(text.replace('task = "rev_gen"', 'task = "rev_gen"\nlower_is_better = true'))
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    with pytest.raises(MixlabError, match="set lower_is_better = false"):
        engine.proxy(engine.mixture([1, 0, 0]), benchmarks=["rev-harness"])
    assert not cached_scores.cached(engine, "proxy")
    shutil.rmtree(harness_lab / ".mixlab", ignore_errors=True)
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    (harness_lab / "lab.toml").write_text(text)
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    with pytest.raises(MixlabError, match="pip install -r requirements-lmeval.txt"):
        engine.proxy(engine.mixture([1, 0, 0]), benchmarks=["pick-harness"])


def _bench(engine, name="rev-harness"):
    return engine.lab.benchmark(name)


def _pick_task(harness_lab, text):
    (harness_lab / "tasks" / "pick_mc.yaml").write_text(TASKS["pick_mc.yaml"] + text)


def test_a_function_outside_the_lab_is_refused_before_lm_eval_runs_it(harness_lab, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    ran = tmp_path / "ran"
    (outside / "evil.py").write_text(f"open({str(ran)!r}, 'w').close()\ndef fn(doc):\n    return doc['prompt']\n")
    spec = str(outside / "evil").replace("/", ".") + ".fn"  # lm-eval reads .a.b.evil.fn as the file /a/b/evil.py
    _pick_task(harness_lab, f"process_docs: !function {spec}\n")
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    with pytest.raises(MixlabError, match=rf"pick_mc.yaml, line 13: !function '{re.escape(spec)}': .*points outside"):
        engine.proxy(engine.mixture([1, 0, 0]), benchmarks=["pick-harness"])
    assert not ran.exists()


def test_a_function_that_names_no_file_is_refused(harness_lab):
    _pick_task(harness_lab, "process_docs: !function os.system\n")
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    with pytest.raises(MixlabError, match=r"line 13: !function 'os.system': no file .*os.py, so lm-eval would import"):
        engine.proxy(engine.mixture([1, 0, 0]), benchmarks=["pick-harness"])


def test_includes_and_task_links_that_leave_the_lab_are_refused(harness_lab, tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("doc_to_text: '{{prompt}}'\n")
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    m = engine.mixture([1, 0, 0])
    for include in (str(secret), "../../secret.yaml"):
        (harness_lab / "tasks" / "pick_mc.yaml").write_text(f"include: {include}\n" + TASKS["pick_mc.yaml"])
        with pytest.raises(
            MixlabError, match=rf"pick_mc.yaml, line 1: include '{re.escape(include)}' = .* points outside"
        ):
            engine.proxy(m, benchmarks=["pick-harness"])
    (harness_lab / "tasks" / "pick_mc.yaml").unlink()
    (harness_lab / "tasks" / "pick_mc.yaml").symlink_to(secret)
    with pytest.raises(MixlabError, match=r"pick_mc.yaml: task file .*points outside the lab folder.*is a link to"):
        engine.proxy(m, benchmarks=["pick-harness"])


def test_every_file_a_task_includes_is_in_the_cache_key(harness_lab):
    shared = harness_lab / "shared"
    shared.mkdir()
    base = (
        "output_type: multiple_choice\nprocess_docs: !function helpers.docs\n"  # shared/helpers.py, as lm-eval reads it
    )
    (shared / "base.yaml").write_text(base + "target_delimiter: ''\n")
    (shared / "helpers.py").write_text("def docs(ds):\n    return ds.select(range(20))\n")
    text = TASKS["pick_mc.yaml"].replace('target_delimiter: ""\n', "").replace("output_type: multiple_choice\n", "")
    (harness_lab / "tasks" / "pick_mc.yaml").write_text("include: ../shared/base.yaml\n" + text)
    engine = Engine(load_lab(harness_lab), Store(":memory:"), device="cpu")
    (theirs,) = engine.proxy(engine.mixture([0, 1, 0]), benchmarks=["pick-harness"])
    assert theirs.n == 20  # lm-eval read the include and ran shared/helpers.py, where mixlab found them
    first = engine.sources.benchmark(_bench(engine, "pick-harness")).desc
    (shared / "base.yaml").write_text(base + "target_delimiter: ' '\n")
    edited = engine.sources.benchmark(_bench(engine, "pick-harness")).desc
    assert edited["data"] != first["data"]  # an included YAML outside the task folder, edited: a new key
    (shared / "helpers.py").write_text("def docs(ds):\n    return ds  # changed\n")
    assert engine.sources.benchmark(_bench(engine, "pick-harness")).desc["data"] != edited["data"]


def test_task_keys_without_files_elsewhere_are_as_they_were(harness_lab):
    from mixlab.harness import folder_digest, task_digest

    assert task_digest(harness_lab / "tasks", harness_lab) == folder_digest(harness_lab / "tasks")


def test_task_templates_render_in_jinjas_sandbox():
    from jinja2.exceptions import SecurityError
    from lm_eval import utils

    from mixlab.harness import sandbox_templates

    sandbox_templates()
    assert (
        utils.apply_template("{{prompt}} → {{ x | regex_replace('a', 'b') }}", {"prompt": "p", "x": "aa"}) == "p → bb"
    )
    with pytest.raises(SecurityError):
        utils.apply_template("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
