"""The demo lab: a quick build is a real, valid lab; the shipped labs load and their cached scores
are reproducible."""

import contextlib
import io
import json
import shutil

import pytest

from mixlab.cli import main
from mixlab.demo import DEMO_LAB
from mixlab.demo.build import build_demo
from mixlab.demo.tasks import DOMAINS, build_tokenizer, examples
from mixlab.engine import Engine
from mixlab.lab import load_lab
from mixlab.scoring import cached as cached_scores
from mixlab.scoring import checkpoints, proxy
from mixlab.store import Store
from mixlab.values import VALUES_FILE

K4 = DEMO_LAB.parent / "demo-k4"


@pytest.fixture(scope="module")
def quick_lab(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "lab", quick=True, show_progress=False)


def test_quick_build_is_a_valid_lab(quick_lab, capsys):
    assert main(["info", str(quick_lab)]) == 0
    out = capsys.readouterr().out
    assert "experts (3):" in out and "lora" in out and "true mixtures: 3" in out
    lab = load_lab(quick_lab)
    assert [b.name for b in lab.benchmarks] == ["add", "add-loss", "rev", "rev-loss", "sort", "sort-loss"]
    info = json.loads((quick_lab / "build_info.json").read_text())
    assert info["quick"]  # how long it took is bench material, not a test


def test_training_really_happened(quick_lab):
    engine = Engine(load_lab(quick_lab), Store(quick_lab / "check.sqlite"))
    base = {e.benchmark: e.score for e in checkpoints.base_scores(engine)}
    experts = {(e.label, e.benchmark): e.score for e in checkpoints.expert_scores(engine)}
    for domain in ("add", "rev", "sort"):  # each expert is better than the base on its own domain (lower loss)
        assert experts[(domain, f"{domain}-loss")] < base[f"{domain}-loss"] - 0.05, domain


def test_the_shipped_cache_matches_a_fresh_evaluation(tmp_path):
    lab = load_lab(DEMO_LAB)
    shipped = Engine(lab, Store(tmp_path / "shipped.sqlite", seed_from=DEMO_LAB / "evaluations.jsonl"))
    cached = {(e.label, e.benchmark): e.score for e in cached_scores.cached(shipped, "expert")}
    # 46 true mixtures, each trained twice: 92 checkpoints
    assert (
        len(cached) == 18
        and len(cached_scores.cached(shipped, "true")) == 92 * 6
        and len(cached_scores.cached(shipped, "proxy")) >= 106 * 6
    )
    fresh = Engine(lab, Store(tmp_path / "fresh.sqlite"), device="cpu")
    for e in checkpoints.expert_scores(fresh, ["rev", "rev-loss"]):
        # another CPU sums in another order: a loss moves in its 5th digit, and greedy decoding of a near-tie
        # can flip an answer, so exact match may differ by an example or two of its 1000 (never bit-identical)
        tol = dict(rel=1e-4) if e.benchmark == "rev-loss" else dict(abs=2 / e.n + 1e-9)
        assert e.score == pytest.approx(cached[(e.label, e.benchmark)], **tol)


def test_the_k4_lab_ships_with_its_presets():
    lab = load_lab(K4)
    assert lab.expert_names == ["add", "rev", "sort", "count"] and len(lab.manifest.true_mixtures) == 21
    engine = Engine(lab, Store(":memory:", seed_from=K4 / "evaluations.jsonl"))
    proxies = cached_scores.cached(engine, "proxy")
    linear = [e for e in proxies if e.method == "linear"]
    assert (
        len(cached_scores.cached(engine, "true")) == 42 * 8 and len(linear) == 77 * 8
    )  # 21 true mixtures × 2 seeds; true points + the step-0.2 grid
    others = {(e.method, tuple(sorted(e.params.items()))) for e in proxies if e.method != "linear"}
    assert len(others) == 4 and len(proxies) == 77 * 8 + 4 * 21 * 8  # each other method at the true points


def test_tasks_and_tokenizer():
    tok = build_tokenizer()
    for d in DOMAINS:
        for prompt, answer in examples(d, 20, 0):
            ids = tok(prompt + answer + "\n", add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids and tok.decode(ids) == prompt + answer + "\n"
    assert examples("rev", 3, 1) == examples("rev", 3, 1) != examples("rev", 3, 2)


def test_an_exported_demo_merge_scores_the_same_with_plain_transformers(tmp_path):
    """The ordinary way: AutoTokenizer + model.generate on the exported folder, no mixlab code."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lab = load_lab(DEMO_LAB)
    engine = Engine(lab, Store(":memory:"), device="cpu")
    m = engine.mixture([0.0, 0.0, 1.0])  # the sort expert, merged: the issue saw 0.98 in mixlab, 0.0 in transformers
    (mine,) = engine.proxy(m, benchmarks=["sort"])
    out = engine.export(m, tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    spec = lab.benchmark("sort")
    rows = [json.loads(line) for line in (DEMO_LAB / spec.data).read_text().splitlines() if line.strip()]
    hits = 0
    with torch.no_grad():
        for ex in rows:
            inputs = tok(ex["prompt"], return_tensors="pt")
            new = model.generate(**inputs, max_new_tokens=spec.max_new_tokens, do_sample=False)[
                0, inputs.input_ids.shape[1] :
            ]
            text = tok.decode(new, skip_special_tokens=True).split("\n")[0]
            hits += text.strip() == str(ex["answer"]).strip()
    assert mine.n == len(rows) and hits / len(rows) == pytest.approx(mine.score)
    assert mine.score > 0.3  # a real signal, not two zeros agreeing


def test_general_data_share_in_training_streams():
    import numpy as np

    from mixlab.demo.build import _Stream
    from mixlab.demo.tasks import GENERAL

    tok = build_tokenizer()
    for share in (0.0, 0.5):
        stream = _Stream(
            tok, ["add", "rev", "sort"], np.array([1.0, 0.0, 0.0]), seed=3, prompt_loss=False, general=share
        )
        drawn = stream.np_rng.choice(len(stream.names), size=4000, p=stream.w)
        names = np.array(stream.names)[drawn]
        assert set(names) <= {"add", GENERAL} and "rev" not in names  # the mixture's zero weights stay zero
        assert (names == GENERAL).mean() == pytest.approx(share, abs=0.03)
    ids, _, _ = _Stream(tok, ["add"], np.ones(1), 0, False, general=0.99).batch(8)
    assert any(tok.decode(row, skip_special_tokens=True).startswith("copy:") for row in ids)


def test_demo_build_flags_make_the_recipe():
    from mixlab.cli import demo_budget, parser
    from mixlab.demo.build import FULL, QUICK, SCRATCH, Budget
    from mixlab.errors import MixlabError

    def budget(*flags):
        return demo_budget(parser().parse_args(["demo", "build", *flags]))

    assert budget() == FULL and budget("--quick") == QUICK and budget("--scratch") == SCRATCH
    # what the shipped labs were built with
    assert (FULL.base_target, FULL.base_steps, FULL.pretrain_share, FULL.steps) == (0.2, 2000, 0.5, 60)
    b = budget("--base-steps", "700", "--pretrain-share", "0.25", "--replay", "0.25", "--expert-steps", "90")
    assert (b.base_steps, b.pretrain_share, b.replay, b.steps) == (700, 0.25, 0.25, 90)
    assert budget("--base-target", "0").base_target == 0.0
    b = budget("--lr", "1e-3", "--n-eval", "1000")  # demo-k3's recipe (issue #26's regime)
    assert (b.lr, b.n_eval, b.lr_base) == (1e-3, 1000, FULL.lr_base)
    with pytest.raises(MixlabError, match=r"replay must be in \[0, 1\), got 1.5"):
        budget("--replay", "1.5")
    # a lab's description names the command that builds its recipe, and that command builds it
    from mixlab.demo.build import build_command

    command = build_command(3, b, quick=False, full=False, replicates=2, subset="all")
    assert command == "python -m mixlab demo build --domains 3 --lr 0.001 --n-eval 1000 --replicates 2"
    assert budget(*command.split()[5:-2]) == b
    assert build_command(3, SCRATCH, False, False, 1, "all").endswith("--domains 3 --scratch")
    assert build_command(4, QUICK, True, False, 2, "interior+vertices").endswith(
        "--domains 4 --quick --replicates 2 --replicate-subset interior+vertices"
    )
    for bad in ("0", "-1e-3", "nan"):
        with pytest.raises(MixlabError, match=r"lr must be in \(0, 1\)"):
            budget(f"--lr={bad}")
    with pytest.raises(MixlabError, match="steps must be ≥ 1, got 0"):
        Budget(steps=0)


def test_base_pretrains_until_partly_able_in_every_domain(monkeypatch):
    """The base stops at the first check where every domain's dev exact match reaches the target, and runs
    its full steps when the target is 0 or never reached."""
    from dataclasses import replace

    import mixlab.demo.build as build

    seen = []

    def fake_ability(model, tok, names, seed):
        seen.append(len(seen))
        scores = {0: 0.5, 1: 0.1, 2: 0.3}  # check 1: one domain below 0.2; check 2 and after: all above
        return {n: scores[min(len(seen), 2)] if n == "rev" else 0.5 for n in names}

    monkeypatch.setattr(build, "dev_ability", fake_ability)
    recipe = replace(build.QUICK, base_steps=40, base_check=10, base_target=0.2)
    tok = build_tokenizer()
    _, steps, dev = build.pretrain_base(tok, ["add", "rev"], recipe, seed=0, show=False)
    assert steps == 20 and dev == {"add": 0.5, "rev": 0.3}
    seen.clear()
    _, steps, _ = build.pretrain_base(tok, ["add", "rev"], replace(recipe, base_target=0.0), seed=0, show=False)
    assert steps == 40 and len(seen) == 1  # no checks on the way; the final ability is still measured
    seen.clear()
    _, steps, _ = build.pretrain_base(tok, ["add", "rev"], replace(recipe, base_target=0.9), seed=0, show=False)
    assert steps == 40 and len(seen) == 4  # checks at 10, 20, 30 (none at the last step) and the final one


def test_dev_ability_is_exact_match_on_examples_seeded_apart_from_the_benchmarks():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixlab.demo.build import dev_ability

    lab = DEMO_LAB
    model = AutoModelForCausalLM.from_pretrained(lab / "base").eval()
    tok = AutoTokenizer.from_pretrained(lab / "base")
    dev = dev_ability(model, tok, ["rev"], seed=0, n=20)
    assert 0.0 <= dev["rev"] <= 1.0
    assert examples("rev", 100, seed=20_000) != examples("rev", 100, seed=10_000)[:100]  # seeded apart


# what `mixlab recycle cache/demo-recycle --space sparse --start --trials 140` says of the shipped table
VERDICT_BEST_SINGLE = (
    "the searched merge is worse than the best single checkpoint (0.5850 vs 0.6067, -0.0217; paired 95% CI ["
)
VERDICT_SOUP = "within noise of the greedy soup (0.5850 vs 0.5867, -0.0017; paired 95% CI ["


def test_the_recycling_lab_ships_its_scores_and_its_table_replays_from_them(tmp_path):
    """cache/demo-recycle: 14 checkpoints of one base, every one scored with its per-example values; its
    recycle.json records the 140 points its CMA-ES search (sparse box, from the greedy soup) evaluated, and
    `mixlab recycle` with those settings replays them from the shipped cache: the same table, paired intervals
    included, with 0 new evaluations on any machine (a new CMA-ES run can take another path on another CPU)."""
    from mixlab.demo.build import pool_names

    src = DEMO_LAB.parent / "demo-recycle"
    root = tmp_path / "demo-recycle"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns(".mixlab", "exports"))
    lab = load_lab(root)
    assert lab.expert_names == pool_names() and len(lab.expert_names) == 14
    assert all(b.search_data for b in lab.benchmarks)
    store = Store(":memory:", seed_from=root / "evaluations.jsonl")
    assert checkpoints.unscored(Engine(lab, store, device="cpu")) == {"base": 0, "expert": 0, "true": 0}
    shipped = json.loads((root / "recycle.json").read_text())
    record = shipped[-1]["search"]
    assert (record["sampler"], record["trials"], len(record["points"])) == ("cmaes", 140, 140)
    assert (record["space"], record["start"]) == ("sparse", True)

    # the command the Search page names for this table (mixlab.recycle.replay_command) replays it
    from mixlab.recycle import replay_command

    command = replay_command(root, record)
    assert command == f"python -m mixlab recycle {root} --trials 140 --space sparse --start"
    settings = command.split()[5:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["recycle", str(root), "--json", *settings]) == 0
    assert "replayed the 140 points recorded in recycle.json" in err.getvalue()
    assert "; 0 new evaluations" in err.getvalue()
    again = json.loads(out.getvalue())
    assert [r["candidate"] for r in again] == [r["candidate"] for r in shipped]
    for a, b in zip(again, shipped):
        assert a["test"] == pytest.approx(b["test"]) and a["weights"] == pytest.approx(b["weights"])
        assert a["dev_objective"] == pytest.approx(b["dev_objective"])
        for k in ("difference", "low", "high"):  # the paired intervals, from the shipped per-example values
            assert a.get("vs_best_single", {}).get(k) == pytest.approx(b.get("vs_best_single", {}).get(k))
    assert again[-1]["search"]["points"] == record["points"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["recycle", str(root), *settings]) == 0
    assert VERDICT_BEST_SINGLE in out.getvalue() and VERDICT_SOUP in out.getvalue()


def test_build_recycle_trains_a_pool_of_continuations_and_a_failed_build_leaves_nothing(
    quick_lab, tmp_path, monkeypatch
):
    """The pool is trained, not copied: a stage-1 LoRA run from the source's base and a continuation of it,
    each a PEFT adapter folder as users have them; the continuation starts from the generalist's matrices (its
    LoRA A moved from them, not from a fresh init), and its halfway checkpoint lies between; every seed's
    searched row is recorded."""
    import numpy as np

    import mixlab.recycle
    from mixlab.demo.build import PoolRun, build_recycle, pool_names
    from mixlab.errors import MixlabError

    recipe = (
        PoolRun("g", None, (1, 1, 1), 3e-3, 4),
        PoolRun("g-rev", "g", (0, 1, 0), 3e-3, 4, half=True),
    )
    assert pool_names(recipe) == ["g", "g-rev-half", "g-rev"]
    out = build_recycle(quick_lab, tmp_path / "pool", trials=2, seeds=(0, 1), recipe=recipe, show_progress=False)
    lab = load_lab(out)
    assert lab.expert_names == ["g", "g-rev-half", "g-rev"] and not lab.manifest.true_mixtures
    for n in lab.expert_names:
        assert (out / "experts" / n / "adapter_config.json").is_file()
        assert (out / "experts" / n / "adapter_model.safetensors").is_file()
    from safetensors.numpy import load_file

    a = [load_file(out / "experts" / n / "adapter_model.safetensors") for n in lab.expert_names]
    key = next(k for k in a[0] if "lora_A" in k)
    d_half, d_end = (np.linalg.norm(x[key] - a[0][key]) for x in a[1:])
    scale = np.linalg.norm(a[0][key])
    assert 0 < d_half < d_end < scale  # continued from the generalist (a fresh init would be ~√2·scale away)
    rows = json.loads((out / "recycle.json").read_text())
    assert [r["candidate"] for r in rows] == ["best single checkpoint", "uniform average", "greedy soup"] + [
        "searched (cmaes)"
    ]
    assert rows[-1]["search"]["space"] == "sparse" and rows[-1]["search"]["start"] is True
    assert all(r["vs_best_single"]["low"] is not None for r in rows[1:])  # per-example values kept: paired CIs
    info = json.loads((out / "build_info.json").read_text())
    assert [s["seed"] for s in info["searched_seeds"]] == [0, 1]
    assert info["searched_seeds"][0]["test_objective"] == pytest.approx(rows[-1]["test_objective"])
    assert -1 <= info["median_pairwise_cosine"] <= 1
    assert (out / "example_values.jsonl").is_file()
    with pytest.raises(MixlabError, match="exists; pass --overwrite"):
        build_recycle(quick_lab, out, trials=2, recipe=recipe, show_progress=False)
    with pytest.raises(MixlabError, match="mixes 2 domains"):
        build_recycle(quick_lab, tmp_path / "bad", recipe=(PoolRun("g", None, (1, 1), 3e-3, 2),), show_progress=False)

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(mixlab.recycle, "recycle", boom)
    with pytest.raises(RuntimeError):
        build_recycle(quick_lab, tmp_path / "half", trials=2, seeds=(0,), recipe=recipe, show_progress=False)
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half.*"))  # no half-built lab left


def test_the_vision_language_lab_ships_small_with_its_scores_recomputable(tmp_path):
    """cache/demo-vl: under 15 MB; a score in its evaluations.jsonl recomputes from its files."""
    from mixlab.demo import LABS_DIR

    root = LABS_DIR / "demo-vl"
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and ".mixlab" not in f.parts) < 15e6
    lab = load_lab(root)
    shipped = [json.loads(line) for line in (root / "evaluations.jsonl").read_text().splitlines()]
    (row,) = [r for r in shipped if r["kind"] == "expert" and r["label"] == "ocr" and r["benchmark"] == "ocr"]
    engine = Engine(lab, Store(tmp_path / "fresh.sqlite"), device="cpu")
    (fresh,) = [e for e in checkpoints.expert_scores(engine, ["ocr"]) if e.label == "ocr"]
    assert fresh.key == row["key"]  # the same files, the same key
    assert fresh.score == pytest.approx(row["score"], abs=2 / row["n"] + 1e-9)  # a near-tie may flip on another CPU
    assert len(lab.manifest.true_mixtures) == 21 and lab.manifest.merge.preset == "lora"


def test_the_vision_language_lab_stores_its_base_as_save_pretrained_writes_it(tmp_path):
    """cache/demo-vl's base holds the names a user's LLaVA checkpoint holds: those transformers'
    save_pretrained writes for the class (the hub's names), not the in-memory ones."""
    from safetensors import safe_open
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from mixlab.demo import LABS_DIR

    base = LABS_DIR / "demo-vl" / "base"
    LlavaForConditionalGeneration(LlavaConfig.from_pretrained(base)).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as ref, safe_open(base / "model.safetensors", "pt") as shipped:
        assert set(shipped.keys()) == set(ref.keys())
        assert "language_model.model.layers.0.self_attn.q_proj.weight" in set(shipped.keys())


def test_the_recycling_lab_ships_merges_of_its_pool_for_a_front():
    """cache/demo-recycle ships the pool merges its build sweeps (POOL_MERGES seeded Dirichlet(POOL_ALPHA)
    draws) on every higher-is-better benchmark, so the Pareto page's front of merges is a front, not 2 points."""
    import numpy as np

    from mixlab.analysis import pareto_points
    from mixlab.demo.build import POOL_ALPHA, POOL_MERGES
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from mixlab.simplex import Mixture, dirichlet
    from mixlab.store import Store

    lab = load_lab(DEMO_LAB.parent / "demo-recycle")
    engine = Engine(lab, Store(":memory:", seed_from=lab.root / "evaluations.jsonl"))
    up = [b.name for b in lab.benchmarks if b.higher_is_better]
    for w in dirichlet(len(engine.names), POOL_MERGES, POOL_ALPHA):
        m = Mixture.of(engine.names, list(w), normalize=True)
        assert proxy.lookup(engine, engine.request([m], "linear", {}, up)) is not None, w
    pts = pareto_points(engine.results("linear", {}), engine.names, "add", "rev")
    merged = pts[pts.proxy_front & (pts.kind == "proxy")]
    assert len(merged) >= 3, len(merged)
    # by brute force: no cached point (merge or checkpoint) is better on both benchmarks than a front merge
    xy = pts[["x", "y"]].to_numpy()
    for x, y in merged[["x", "y"]].to_numpy():
        assert not (((xy[:, 0] >= x) & (xy[:, 1] >= y)) & ((xy[:, 0] > x) | (xy[:, 1] > y))).any()
    assert np.isfinite(xy).all()


def test_a_demo_lab_is_published_whole_or_not_at_all(tmp_path):
    """staged_lab: a build that fails leaves the earlier lab as it was; one that succeeds replaces it whole;
    the temp folder of a build whose process died is removed by the next build."""
    from mixlab.demo.build import staged_lab
    from mixlab.errors import MixlabError

    out = tmp_path / "demo-k3"
    out.mkdir()
    (out / "lab.toml").write_text("old")
    dead = tmp_path / ".demo-k3.mixlab-tmp-999999999-abc"  # left by a killed build
    dead.mkdir()
    with pytest.raises(MixlabError, match="exists; pass --overwrite"):
        with staged_lab(out, overwrite=False):
            pass
    with pytest.raises(RuntimeError, match="training failed"):
        with staged_lab(out, overwrite=True) as root:
            (root / "lab.toml").write_text("half")
            raise RuntimeError("training failed")
    assert (out / "lab.toml").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["demo-k3"]
    with staged_lab(out, overwrite=True) as root:
        (root / "lab.toml").write_text("new")
    assert (out / "lab.toml").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["demo-k3"]


def test_replicates_are_seeded_apart_and_every_single_seed_run_stays_as_it_was():
    """By hand: lattice(3, 2) is 3 vertices and 3 edge midpoints; runs 0–2 are the experts, 3–8 the true
    mixtures (seed offsets 1 + run, as single-seed builds always trained them); interior+vertices gives
    the 3 vertices a second run, seeded 1 + run + 1000."""
    import numpy as np

    from mixlab.demo.build import training_runs
    from mixlab.simplex import lattice

    names, points = ["add", "rev", "sort"], lattice(3, 2)
    one, trues_one = training_runs(names, points)
    two, trues_two = training_runs(names, points, 2, "interior+vertices")
    assert [(r[0], r[3]) for r in two[: len(one)]] == [(r[0], r[3]) for r in one]
    assert [r[3] for r in one] == list(range(1, 10)) and all(r[0].startswith("true/") for r in one[3:])
    vertices = [j for j in range(3, 9) if np.count_nonzero(points[j - 3]) == 1]
    assert len(vertices) == 3
    assert [(r[0], r[3]) for r in two[len(one) :]] == [(one[j][0] + "-r2", 1 + j + 1000) for j in vertices]
    for j, r in zip(vertices, two[len(one) :]):
        assert np.array_equal(r[1], one[j][1])  # the same mixture, another seed
    assert len({r[3] for r in two}) == len(two)  # no two runs share a seed
    assert [t.get("path") for t in trues_one] == [r[0] for r in one[3:]]
    for j, t in enumerate(trues_two, start=3):
        replicated = j in vertices
        assert ("paths" in t) == replicated and ("path" in t) != replicated
        if replicated:
            assert t["paths"] == [one[j][0], one[j][0] + "-r2"]
    everything = training_runs(names, points, 3)[0]
    assert len(everything) == 9 + 2 * 6 and everything[-1][3] == 1 + 8 + 2000


def test_adding_replicates_keeps_every_score_and_checkpoint_and_gives_a_ceiling(quick_lab, tmp_path, capsys):
    """`demo replicates` on a copy of the quick lab: every earlier score is still in the export byte for
    byte, replicate 1 is the untouched checkpoint, the new seeds are scored (nothing left to evaluate), and
    the ceiling is Spearman ρ between the replicates' scores (scipy by hand)."""
    from scipy import stats

    from mixlab.analysis import proxy_report

    lab_dir = tmp_path / "lab"
    shutil.copytree(quick_lab, lab_dir, ignore=shutil.ignore_patterns(".mixlab", "check.sqlite"))
    before = (lab_dir / "evaluations.jsonl").read_text().splitlines()
    values_before = (lab_dir / VALUES_FILE).read_text().splitlines()
    first = (lab_dir / "true" / "add100" / "adapter_model.safetensors").read_bytes()
    assert main(["demo", "replicates", str(lab_dir), "--replicates", "2"]) == 0
    after = (lab_dir / "evaluations.jsonl").read_text().splitlines()
    assert set(before) <= set(after) and len(after) == len(before) + 3 * 6  # 3 new checkpoints × 6 benchmarks
    # the per-example values: every shipped row kept, and the new scores' values beside them
    values_after = (lab_dir / VALUES_FILE).read_text().splitlines()
    assert set(values_before) <= set(values_after) and len(values_after) == len(values_before) + 3 * 6
    assert (lab_dir / "true" / "add100" / "adapter_model.safetensors").read_bytes() == first
    assert (lab_dir / "true" / "add100-r2" / "adapter_model.safetensors").read_bytes() != first
    lab = load_lab(lab_dir)
    assert [t.checkpoints for t in lab.manifest.true_mixtures][0] == ("true/add100", "true/add100-r2")
    info = json.loads((lab_dir / "build_info.json").read_text())
    assert (info["replicates"], info["replicate_seed"], info["replicate_subset"]) == (2, 1000, "all")
    engine = Engine(lab, Store(":memory:", seed_from=lab_dir / "evaluations.jsonl"), device="cpu")
    assert checkpoints.unscored(engine) == {"base": 0, "expert": 0, "true": 0}
    df = engine.results("linear", {})
    true = df[(df.kind == "true") & (df.benchmark == "add-loss")].sort_values(["label", "replicate"])
    r1, r2 = (true[true.replicate == r].score.to_numpy() for r in (1, 2))
    (row,) = [r for r in proxy_report(df, lab.expert_names, lab.benchmarks) if r["benchmark"] == "add-loss"]
    assert row["n_replicated"] == 3 and row["replicates"] == 2
    assert row["ceiling"] == pytest.approx(stats.spearmanr(r1, r2).statistic)
    capsys.readouterr()
    assert main(["demo", "replicates", str(lab_dir)]) == 2  # a lab that has replicates is not given more this way
    assert "not a single-seed `demo build` lab" in capsys.readouterr().err
    vl = tmp_path / "vl"  # a vision-language lab's runs are not the text demo's: refused, said why
    shutil.copytree(lab_dir, vl, ignore=shutil.ignore_patterns(".mixlab"))
    info = json.loads((vl / "build_info.json").read_text()) | {"domains": ["general", "ocr"], "replicates": 1}
    (vl / "build_info.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["demo", "replicates", str(vl)]) == 2
    assert "are not the text demo's" in capsys.readouterr().err


@pytest.mark.slow
def test_a_fresh_build_with_replicates_trains_the_replicates_that_demo_replicates_added(quick_lab, tmp_path):
    """`demo build --replicates 2` and `demo replicates` on a single-seed build train the same runs: the
    same weights, byte for byte, on one machine (the seed is recorded; another CPU may differ in the bits)."""
    lab_dir = tmp_path / "added"
    shutil.copytree(quick_lab, lab_dir, ignore=shutil.ignore_patterns(".mixlab", "check.sqlite"))
    assert main(["demo", "replicates", str(lab_dir)]) == 0
    fresh = build_demo(tmp_path / "fresh", quick=True, show_progress=False, replicates=2)
    for t in load_lab(fresh).manifest.true_mixtures:
        for p in t.checkpoints:
            w = "adapter_model.safetensors"
            assert (fresh / p / w).read_bytes() == (lab_dir / p / w).read_bytes(), p


@pytest.mark.parametrize("name, n", [("demo-k3", 46), ("demo-k4", 21), ("demo-vl", 21)])
def test_every_shipped_lab_has_replicates_scored_and_its_ceiling_is_a_number(name, n):
    """Every shipped lab with true mixtures trains each twice (demo-k3 and demo-vl: `demo build
    --replicates 2`; demo-k4: `demo replicates`): every replicate is scored in the shipped export (nothing
    to evaluate), and the ceiling on the mean is Spearman ρ between the two seeds' means of the exact-match
    benchmarks (scipy)."""
    import numpy as np
    from scipy import stats

    from mixlab.analysis import proxy_report

    root = DEMO_LAB.parent / name
    lab = load_lab(root)
    replicated = [t for t in lab.manifest.true_mixtures if t.paths]
    assert len(replicated) == n and all(len(t.paths) == 2 and t.paths[1].endswith("-r2") for t in replicated)
    engine = Engine(lab, Store(":memory:", seed_from=root / "evaluations.jsonl"), device="cpu")
    assert checkpoints.unscored(engine) == {"base": 0, "expert": 0, "true": 0}
    df = engine.results("linear", {})
    exact = [b.name for b in lab.benchmarks if b.evaluator == "exact_match"]
    true = df[(df.kind == "true") & df.benchmark.isin(exact)]
    means = true.groupby(["label", "replicate"]).score.mean().unstack()  # label × replicate
    both = means.dropna()
    assert len(both) == n
    rows = {r["benchmark"]: r for r in proxy_report(df, lab.expert_names, lab.benchmarks)}
    ceiling = rows["mean"]["ceiling"]
    assert ceiling is not None and rows["mean"]["n_replicated"] == n
    first, second = (np.round(both[r].to_numpy(), 9) for r in (1, 2))  # means equal up to float noise tie
    assert ceiling == pytest.approx(stats.spearmanr(first, second).statistic)
    assert np.isfinite(rows["mean"]["ceiling_low"]) and rows["mean"]["ceiling_low"] < ceiling
