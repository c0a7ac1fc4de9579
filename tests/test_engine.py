import json
import os

import pytest
import torch

import mixlab.engine as engine_mod
import mixlab.resident as resident_mod
from mixlab.engine import Engine
from mixlab.errors import EvaluationError, ExpertError
from mixlab.evaluate import read_examples, run_benchmark
from mixlab.lab import load_lab
from mixlab.scoring import cached as cached_scores
from mixlab.scoring import checkpoints, proxy
from mixlab.scoring.request import Method
from mixlab.simplex import Mixture
from mixlab.store import Store


@pytest.fixture
def engine(tiny_lab_dir):
    return Engine(load_lab(tiny_lab_dir), device="cpu")


def _score_from_disk(folder, lab, bench_name):
    """Independent path: a model folder loaded by transformers, then the evaluator."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    b = lab.benchmark(bench_name)
    return run_benchmark(model, tok, b, read_examples(lab.resolve(b.data), b), torch.device("cpu")).score


@pytest.mark.parametrize("method,params", [("linear", {}), ("ties", {"density": 0.5})])
def test_proxy_equals_evaluating_the_saved_merge(engine, tmp_path, method, params):
    m = Mixture.of(engine.names, [0.2, 0.3, 0.5])
    scores = {e.benchmark: e.score for e in engine.proxy(m, method, params)}
    out = engine.export(m, tmp_path / "merged", method, params)
    for bench in ("rev-loss", "pick"):
        assert scores[bench] == pytest.approx(_score_from_disk(out, engine.lab, bench), rel=1e-5)


def test_cached_scores_are_not_recomputed(engine, monkeypatch):
    m = Mixture.of(engine.names, [0.5, 0.5, 0.0])
    first = engine.proxy(m)
    assert engine.store.count() == 3

    def boom(*a, **k):
        raise AssertionError("recomputed a cached score")

    monkeypatch.setattr(engine_mod, "run_benchmark", boom)
    again = Engine(engine.lab, device="cpu").proxy(Mixture.of(engine.names, [0.5 + 1e-9, 0.5 - 1e-9, 0.0]))
    assert [e.score for e in again] == [e.score for e in first]


def test_model_state_is_restored_between_merges_and_checkpoints(engine):
    m = Mixture.of(engine.names, [0.1, 0.1, 0.8])
    a = [e.score for e in engine.proxy(m, benchmarks=["rev-loss"])]
    checkpoints.expert_scores(engine, ["rev-loss"])  # loads each expert checkpoint into the same model
    checkpoints.base_scores(engine, ["rev-loss"])
    b = [e.score for e in engine.proxy(m, benchmarks=["rev-loss"], refresh=True)]
    assert a == pytest.approx(b, rel=1e-6)


def test_full_lab_reads_the_base_once_across_merges_and_checkpoints(full_lab_dir, monkeypatch):
    engine = Engine(load_lab(full_lab_dir), device="cpu")
    engine.model  # noqa: B018 - transformers reads the base itself; count mixlab's reads after it
    reads: dict[str, int] = {}
    get = engine.base.get

    def counting_get(key):
        reads[key] = reads.get(key, 0) + 1
        return get(key)

    monkeypatch.setattr(engine.base, "get", counting_get)
    m = Mixture.of(engine.names, [0.3, 0.7])
    a = [e.score for e in engine.proxy(m, benchmarks=["rev-loss"])]
    checkpoints.expert_scores(engine, ["rev-loss"])  # each full checkpoint in turn
    checkpoints.base_scores(engine, ["rev-loss"])
    b = [e.score for e in engine.proxy(m, "ties", {"density": 0.5}, benchmarks=["rev-loss"])]
    c = [e.score for e in engine.proxy(m, benchmarks=["rev-loss"], refresh=True)]
    assert reads and max(reads.values()) == 1  # one float32 θ_0 serves every merger and every restore
    assert a == pytest.approx(c, rel=1e-6) and b != a
    # the expert's score is its own checkpoint's: the same as a one-hot linear merge
    onehot = engine.proxy(Mixture.of(engine.names, [1.0, 0.0]), benchmarks=["rev-loss"])[0].score
    assert cached_scores.cached(engine, "expert")[0].score == pytest.approx(onehot, rel=1e-6)


def test_benchmarks_are_tokenised_once_per_engine(engine, monkeypatch):
    calls = []
    prepare = engine_mod.prepare

    def counting(tokenizer, spec, examples, max_len=None):
        calls.append(spec.name)
        return prepare(tokenizer, spec, examples, max_len)

    monkeypatch.setattr(engine_mod, "prepare", counting)
    grid = [Mixture.of(engine.names, w) for w in ([1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5])]
    engine.sweep(grid, benchmarks=["rev-loss", "pick"], path="materialize")
    engine.sweep(grid, benchmarks=["rev"], path="batched")
    checkpoints.expert_scores(engine, ["rev-loss"])
    assert sorted(calls) == ["pick", "rev", "rev-loss"]


def test_cpu_batch_size_comes_from_available_memory(engine, monkeypatch):
    from types import SimpleNamespace

    from mixlab.evaluate import auto_batch_size

    cfg = engine.model.config
    monkeypatch.setattr(resident_mod.psutil, "virtual_memory", lambda: SimpleNamespace(available=2**20))
    assert engine.batch_size == auto_batch_size(cfg, 2**20, dtype_bytes=4) == 1  # 1 MiB free: one row
    monkeypatch.setattr(resident_mod.psutil, "virtual_memory", lambda: SimpleNamespace(available=16 * 2**30))
    assert Engine(engine.lab, engine.store, device="cpu").batch_size == 512  # a tiny model: the cap
    assert engine.batch_size == 1  # kept once sized: an engine's batches do not change between mixtures
    assert Engine(engine.lab, engine.store, device="cpu", batch_size=7).batch_size == 7


def test_expert_score_equals_peft_model(engine, tiny_lab_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoTokenizer, LlamaForCausalLM

    scores = {(e.label, e.benchmark): e.score for e in checkpoints.expert_scores(engine, ["rev-loss"])}
    model = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(tiny_lab_dir / "base"), tiny_lab_dir / "experts" / "rev"
    )
    model.merge_and_unload().save_pretrained(tmp_path / "rev")
    AutoTokenizer.from_pretrained(tiny_lab_dir / "base").save_pretrained(tmp_path / "rev")
    assert scores[("rev", "rev-loss")] == pytest.approx(
        _score_from_disk(tmp_path / "rev", engine.lab, "rev-loss"), rel=1e-5
    )


def test_results_table(engine):
    checkpoints.base_scores(engine)
    checkpoints.expert_scores(engine)
    engine.proxy(Mixture.of(engine.names, [0.2, 0.3, 0.5]))
    engine.proxy(Mixture.of(engine.names, [0.2, 0.3, 0.5]), "ties")
    df = engine.results()
    assert set(df["kind"]) == {"base", "expert", "proxy"}
    assert len(df[df.kind == "proxy"]) == 6
    assert len(engine.results("ties").query("kind == 'proxy'")) == 3
    row = df[(df.kind == "expert") & (df.label == "rev")].iloc[0]
    assert (row["add"], row["rev"], row["sort"]) == (0.0, 1.0, 0.0)


def test_failed_evaluation_leaves_the_cache_unchanged(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(
        toml.read_text() + '\n[[benchmarks]]\nname = "bad"\nevaluator = "plugins:broken"\ndata = "data/rev.jsonl"\n'
    )
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    m = Mixture.of(engine.names, [1.0, 0.0, 0.0])
    engine.proxy(m, benchmarks=["rev-loss"])
    with pytest.raises(EvaluationError, match="evaluator 'plugins:broken' raised RuntimeError: plugin exploded"):
        engine.proxy(m, benchmarks=["bad"])
    assert engine.store.count() == 1


def test_cancel_stops_between_batches(engine):
    import threading

    from mixlab.errors import Cancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        engine.proxy(Mixture.of(engine.names, [0.3, 0.3, 0.4]), cancel=cancel)
    assert engine.store.count() == 0


def test_manifest_scores_for_true_mixtures(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(
        toml.read_text() + '\n[[true_mixtures]]\nweights = { add = 0.5, rev = 0.5 }\nscores = { "rev-loss" = 1.25 }\n'
    )
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    (t,) = checkpoints.true_scores(engine)
    assert (t.label, t.score, t.higher_is_better, t.weights) == (
        "add50_rev50",
        1.25,
        False,
        {"add": 0.5, "rev": 0.5, "sort": 0.0},
    )


def test_unknown_benchmark(engine):
    from mixlab.errors import ManifestError

    with pytest.raises(ManifestError, match="has no benchmark 'nope'; benchmarks: rev, rev-loss, pick"):
        engine.proxy(Mixture.of(engine.names, [1.0, 0.0, 0.0]), benchmarks=["nope"])
    with pytest.raises(EvaluationError, match="unknown evaluation path 'fast'; use auto, materialize or batched"):
        engine.sweep([Mixture.of(engine.names, [1.0, 0.0, 0.0])], path="fast")


@pytest.mark.parametrize("method,params", [("linear", {}), ("task_arithmetic", {"scale": 0.6})])
def test_batched_lora_path_equals_the_materialised_merge(tiny_lab_dir, tmp_path, method, params):
    from mixlab.simplex import grid_from_step
    from mixlab.store import Store

    lab = load_lab(tiny_lab_dir)
    grid = [Mixture.of(lab.expert_names, w) for w in grid_from_step(3, 0.5)] + [
        Mixture.of(lab.expert_names, [0.2, 0.3, 0.5])
    ]
    a = Engine(lab, Store(tmp_path / "a.sqlite"), device="cpu", batch_size=5)
    b = Engine(lab, Store(tmp_path / "b.sqlite"), device="cpu", batch_size=5)
    batched = a.sweep(grid, method, params, path="batched")
    materialised = b.sweep(grid, method, params, path="materialize")
    assert len(batched) == len(grid) * 3
    for x, y in zip(batched, materialised):
        assert (x.benchmark, x.weights) == (y.benchmark, y.weights)
        assert x.score == pytest.approx(y.score, rel=1e-4, abs=1e-6), (x.benchmark, x.label)
        assert x.key == y.key and x.device.endswith("(batched)")
    assert a.sweep(grid, method, params, path="batched") == batched  # now all cached


def test_batched_path_refuses_what_it_cannot_do(full_lab_dir, tiny_lab_dir):
    full = Engine(load_lab(full_lab_dir), device="cpu")
    with pytest.raises(
        EvaluationError, match="the batched path does not apply to this lab: expert 'a' is a full fine-tune"
    ):
        full.sweep([Mixture.of(full.names, [0.5, 0.5]), Mixture.of(full.names, [1.0, 0.0])], path="batched")
    lora = Engine(load_lab(tiny_lab_dir), device="cpu")
    with pytest.raises(EvaluationError, match="method 'ties' needs path='materialize'"):
        lora.sweep(
            [Mixture.of(lora.names, [0.5, 0.5, 0.0]), Mixture.of(lora.names, [1.0, 0.0, 0.0])], "ties", path="batched"
        )
    assert proxy.choose_path(lora, lora.method("ties"), lora.lab.benchmark("rev"), 10) == "materialize"
    assert (
        proxy.choose_path(lora, lora.method("linear"), lora.lab.benchmark("rev"), 10) == "batched"
    )  # 12 examples: small
    assert proxy.choose_path(lora, lora.method("linear"), lora.lab.benchmark("rev"), 1) == "materialize"


def test_on_a_cpu_a_large_benchmark_is_batched_only_where_the_low_rank_work_is_thin(tiny_lab_dir, monkeypatch):
    """The cost rule past SMALL_BENCHMARK on a CPU: merged when the experts' factors are thick against the
    layers they adapt (the tiny lab: hidden 16 against ranks 2–4), batched when thin (real shapes). The share
    is checked against the adapters' files as PEFT saved them."""
    from safetensors import safe_open

    from mixlab.batched import low_rank_share
    from mixlab.demo.tasks import examples

    rows = [json.dumps({"prompt": p, "answer": a, "completion": a + "\n"}) for p, a in examples("rev", 40, 3)]
    (tiny_lab_dir / "data" / "rev.jsonl").write_text("\n".join(rows) + "\n")  # 40 rows: over lm_loss's 32
    lora = Engine(load_lab(tiny_lab_dir), device="cpu")
    modules = {}  # module → (ranks summed over the experts, in, out)
    for name in ("add", "rev", "sort"):
        with safe_open(str(tiny_lab_dir / "experts" / name / "adapter_model.safetensors"), "pt") as f:
            for key in f.keys():
                if key.endswith("lora_A.weight"):
                    r, fan_in = f.get_slice(key).get_shape()
                    out = f.get_slice(key.replace("lora_A", "lora_B")).get_shape()[0]
                    module = key.removesuffix(".lora_A.weight")
                    modules[module] = (modules.get(module, (0,))[0] + r, fan_in, out)
    share = sum(r * (i + o) for r, i, o in modules.values()) / sum(i * o for _, i, o in modules.values())
    assert low_rank_share(lora.experts) == pytest.approx(share) and share > proxy.THIN_LOW_RANK
    loss = lora.lab.benchmark("rev-loss")
    assert proxy.choose_path(lora, lora.method("linear"), loss, 10) == "materialize"
    monkeypatch.setattr(proxy, "THIN_LOW_RANK", share)  # factors as thin against the layers as a real model's
    assert proxy.choose_path(lora, lora.method("linear"), loss, 10) == "batched"


@pytest.mark.parametrize(
    "shape, share",
    [((896, 4864, 14, 2, 24), 0.0738), ((1536, 8960, 12, 2, 28), 0.0423)],
    ids=["qwen2-0.5b", "qwen2-1.5b"],
)
def test_the_low_rank_share_of_real_shapes_is_what_the_cost_rule_cites(shape, share):
    """Three rank-16 experts on every linear layer of a Qwen2 shape (factors on the meta device: shapes only)."""
    from types import SimpleNamespace

    from mixlab.batched import low_rank_share
    from mixlab.experts import LoraFactors

    hidden, inter, heads, kv_heads, layers = shape
    kv = hidden // heads * kv_heads
    dims = {"q": (hidden, hidden), "k": (hidden, kv), "v": (hidden, kv), "o": (hidden, hidden)}
    dims |= {"gate": (hidden, inter), "up": (hidden, inter), "down": (inter, hidden)}
    factors = {
        f"{layer}.{m}": LoraFactors(torch.empty(16, i, device="meta"), torch.empty(o, 16, device="meta"), 1.0, False)
        for layer in range(layers)
        for m, (i, o) in dims.items()
    }
    experts = [SimpleNamespace(factors=factors)] * 3
    assert low_rank_share(experts) == pytest.approx(share, abs=5e-5) and share < proxy.THIN_LOW_RANK


# --- never serve a stale or broken score ------------------------------------------------------------

M = [0.2, 0.3, 0.5]


def _count_new(engine, benchmark="rev-loss"):
    """(score, whether it was computed now rather than served from the cache)."""
    before = engine.store.count()
    (ev,) = engine.proxy(Mixture.of(engine.names, M), benchmarks=[benchmark])
    return ev, engine.store.count() > before


@pytest.mark.parametrize("file", ["config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json"])
def test_an_edited_base_config_or_tokenizer_is_never_served_the_old_score(tiny_lab_dir, file):
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    _, fresh = _count_new(engine)
    assert fresh
    path = tiny_lab_dir / "base" / file
    path.write_text(json.dumps(json.loads(path.read_text()), indent=3))  # any edit counts: bytes, not meaning
    _, fresh = _count_new(Engine(load_lab(tiny_lab_dir), device="cpu"))
    assert fresh, f"an edited {file} was served the old score"


def test_an_engine_that_outlives_a_data_edit_scores_the_new_data(tiny_lab_dir):
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    old, _ = _count_new(engine)
    data = tiny_lab_dir / "data" / "rev.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:5]))
    new, fresh = _count_new(engine)  # the same engine, the file edited under it
    assert fresh and (old.n, new.n) == (12, 5)
    other = Engine(load_lab(tiny_lab_dir), device="cpu")  # a fresh engine agrees on key and score
    ((ev,),) = [other.proxy(Mixture.of(other.names, M), benchmarks=["rev-loss"])]
    assert ev.key == new.key and ev.score == pytest.approx(new.score, rel=1e-6)


def test_an_expert_rewritten_in_place_with_its_mtime_kept_is_not_served_stale(tiny_lab_dir):
    import struct

    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    old, _ = _count_new(engine)
    path = tiny_lab_dir / "experts" / "sort" / "adapter_model.safetensors"
    st = path.stat()
    with open(path, "r+b") as f:  # the same file, the same size: every float32 weight tripled in place
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                start, end = t["data_offsets"]
                f.seek(8 + n + start)
                values = torch.frombuffer(bytearray(f.read(end - start)), dtype=torch.float32) * 3
                f.seek(8 + n + start)
                f.write(values.numpy().tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    new, fresh = _count_new(engine)
    assert fresh and new.key != old.key and new.score != pytest.approx(old.score)
    other = Engine(load_lab(tiny_lab_dir), device="cpu")
    (ev,) = other.proxy(Mixture.of(other.names, M), benchmarks=["rev-loss"])
    assert ev.key == new.key and ev.score == pytest.approx(new.score, rel=1e-6)


def test_a_file_changed_during_an_evaluation_is_not_stored(tiny_lab_dir, monkeypatch):
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    run = engine_mod.run_benchmark
    data = tiny_lab_dir / "data" / "rev.jsonl"

    def edit_while_running(*a, **kw):
        out = run(*a, **kw)
        data.write_text(data.read_text() + data.read_text().splitlines(keepends=True)[0])
        return out

    monkeypatch.setattr(engine_mod, "run_benchmark", edit_while_running)
    with pytest.raises(EvaluationError, match="a file changed on disk during the evaluation; the score was not stored"):
        engine.proxy(Mixture.of(engine.names, M), benchmarks=["rev-loss"])
    assert engine.store.count() == 0


def test_an_overflowing_adapter_fails_its_evaluation_and_stores_nothing(tiny_lab_dir):
    from safetensors.torch import load_file, save_file

    # 'rev' adapts q_proj and k_proj: ×1e20 is finite in float32, but q·k overflows in the forward pass
    path = tiny_lab_dir / "experts" / "rev" / "adapter_model.safetensors"
    save_file({k: v * 1e20 if "lora_B" in k else v for k, v in load_file(path).items()}, path)
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    for bench in ("rev", "rev-loss", "pick"):  # generation, loss and choice all refuse it
        with pytest.raises(EvaluationError, match="forward pass gave NaN or inf logits"):
            engine.proxy(Mixture.of(engine.names, [0.0, 1.0, 0.0]), benchmarks=[bench])
    assert engine.store.count() == 0


def test_a_non_finite_base_tensor_is_an_error_naming_it(tiny_lab_dir):
    from safetensors.torch import load_file, save_file

    path = tiny_lab_dir / "base" / "model.safetensors"
    state = load_file(path)
    state["model.norm.weight"][0] = float("nan")  # a tensor no expert changes: the merge never reads it
    save_file(state, path)
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    with pytest.raises(ExpertError, match=r"base: tensor model.norm.weight in .*base contains NaN or inf"):
        engine.proxy(Mixture.of(engine.names, M), benchmarks=["rev-loss"])
    assert engine.store.count() == 0


def test_a_base_config_that_disagrees_with_its_weights_is_a_clear_error(tiny_lab_dir):
    path = tiny_lab_dir / "base" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "hidden_size": 24}))
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    with pytest.raises(ExpertError, match="base: transformers cannot load"):
        engine.proxy(Mixture.of(engine.names, M), benchmarks=["rev-loss"])


def test_the_batched_path_stores_each_chunk_as_it_finishes(tiny_lab_dir):
    import threading

    from mixlab.errors import Cancelled
    from mixlab.simplex import grid_from_step

    engine = Engine(load_lab(tiny_lab_dir), device="cpu", batch_size=24)  # 12 examples: 2 mixtures a chunk
    grid = [Mixture.of(engine.names, w) for w in grid_from_step(3, 0.25)]  # 15 mixtures
    cancel = threading.Event()

    def progress(done, total, message):
        if done >= 4:  # after two chunks
            cancel.set()

    with pytest.raises(Cancelled):
        engine.sweep(grid, benchmarks=["rev"], path="batched", progress=progress, cancel=cancel)
    kept = engine.store.count()
    assert 4 <= kept < 15  # the finished chunks survived the interruption
    again = engine.sweep(grid, benchmarks=["rev"], path="batched")
    assert engine.store.count() == 15 and len(again) == 15


def test_lab_merge_defaults_apply_where_a_parameter_is_not_given(tiny_lab_dir):
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(toml.read_text() + '\n[merge]\nmethod = "ties"\nparams = { density = 0.5 }\n')
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    lab = engine.lab
    assert Method.for_lab(lab).pair() == ("ties", {"density": 0.5, "normalize": True, "scale": 1.0})
    assert Method.for_lab(lab, None, {}) == Method.for_lab(lab)
    assert Method.for_lab(lab, "ties", {"scale": 2.0}).params == {"density": 0.5, "normalize": True, "scale": 2.0}
    assert Method.for_lab(lab, "task_arithmetic").params == {"scale": 1.0}  # another method: its own defaults


def test_a_score_that_cannot_be_saved_is_still_returned_with_a_warning(tiny_lab_dir, monkeypatch):
    import sqlite3

    engine = Engine(load_lab(tiny_lab_dir), device="cpu")

    def full():
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(engine.store, "_transaction", full)
    (ev,) = engine.proxy(Mixture.of(engine.names, M), benchmarks=["rev-loss"])
    assert ev.score > 0 and engine.store.get(ev.key) == ev
    assert any("disk full" in w and "not saved" in w for w in engine.warnings())


def test_a_lab_whose_cache_cannot_be_created_opens_with_a_notice(tiny_lab_dir, monkeypatch):
    monkeypatch.setenv("MIXLAB_CACHE", "/dev/null/cache.sqlite")  # like a read-only lab folder
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    assert any("cannot create the cache folder" in w for w in engine.warnings())
    (ev,) = engine.proxy(Mixture.of(engine.names, M), benchmarks=["rev-loss"])
    assert engine.store.get(ev.key) is not None


def test_identical_experts_are_flagged(tiny_lab_dir):
    import shutil

    shutil.copytree(tiny_lab_dir / "experts" / "add", tiny_lab_dir / "experts" / "add2")
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(toml.read_text().replace('path = "experts/sort"', 'path = "experts/add2"'))
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    assert engine.warnings() == []  # warnings() loads nothing: the experts are not read yet
    assert len(engine.experts) == 3 and "experts 'add' and 'sort' have identical content" in engine.warnings()


def test_a_rewritten_true_checkpoint_never_shows_its_old_score(tiny_lab_dir):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_lab_dir / "experts" / "add", tiny_lab_dir / "true" / "t1")
    toml = tiny_lab_dir / "lab.toml"
    toml.write_text(toml.read_text() + '\n[[true_mixtures]]\nweights = { add = 1.0 }\npath = "true/t1"\n')
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    (old,) = checkpoints.true_scores(engine, ["rev-loss"])
    assert [e.score for e in cached_scores.cached(engine, "true")] == [old.score]
    path = tiny_lab_dir / "true" / "t1" / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(path).items()}, path)
    assert cached_scores.cached(engine, "true") == []  # the same engine: the rewritten checkpoint has no score yet
    (new,) = checkpoints.true_scores(engine, ["rev-loss"])
    assert new.key != old.key and [e.score for e in cached_scores.cached(engine, "true")] == [new.score]


def test_a_tokenizer_edited_while_the_engine_lives_retokenises_the_benchmarks(tiny_lab_dir):
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    old, _ = _count_new(engine)
    path = tiny_lab_dir / "base" / "tokenizer.json"
    tok = json.loads(path.read_text())
    tok["post_processor"] = None  # no BOS any more: every prompt tokenises differently
    path.write_text(json.dumps(tok))
    new, fresh = _count_new(engine)  # the same engine, the tokenizer edited under it
    other = Engine(load_lab(tiny_lab_dir), device="cpu")
    (ev,) = other.proxy(Mixture.of(other.names, M), benchmarks=["rev-loss"])
    assert fresh and new.key == ev.key != old.key
    assert new.score == pytest.approx(ev.score, rel=1e-6) and new.score != pytest.approx(old.score, rel=1e-6)


def test_the_key_and_the_examples_come_from_one_read_of_the_data(tiny_lab_dir, monkeypatch):
    engine = Engine(load_lab(tiny_lab_dir), device="cpu")
    data = tiny_lab_dir / "data" / "rev.jsonl"
    key_of = engine._merge_key

    def edit_after_keying(*args):
        key = key_of(*args)
        data.write_text("".join(data.read_text().splitlines(keepends=True)[:4]))  # the data changes now
        return key

    monkeypatch.setattr(engine, "_merge_key", edit_after_keying)
    with pytest.raises(EvaluationError, match="a file changed on disk during the evaluation"):
        engine.proxy(Mixture.of(engine.names, M), benchmarks=["rev-loss"])
    assert engine.store.count() == 0  # never a score of 4 examples under the 12-example key


def test_a_shared_checkpoint_is_shown_as_the_asking_lab_names_it(tiny_lab_dir, tmp_path):
    """Checkpoint scores are keyed by content: a lab that holds another lab's checkpoint (the recycling lab
    holds demo-k3's true mixtures as experts) reuses the score, under its own kind, label and weights."""
    import shutil

    from conftest import write_lab_toml

    store = Store(tmp_path / "shared.sqlite")
    write_lab_toml(
        tiny_lab_dir,
        {"add": "experts/add", "rev": "experts/rev", "sort": "experts/sort"},
        '\n[[true_mixtures]]\nname = "t1"\nweights = { rev = 0.5, sort = 0.5 }\npath = "experts/rev"\n',
    )
    first = Engine(load_lab(tiny_lab_dir), store, device="cpu")
    (true,) = checkpoints.true_scores(first, ["rev-loss"])
    assert (true.kind, true.label) == ("true", "t1")
    other = tmp_path / "pool"
    shutil.copytree(tiny_lab_dir, other, ignore=shutil.ignore_patterns(".mixlab"))
    write_lab_toml(other, {"a": "experts/add", "r2": "experts/rev"})
    second = Engine(load_lab(other), store, device="cpu")
    rows = {e.label: e for e in cached_scores.cached(second, "expert") if e.benchmark == "rev-loss"}
    assert rows["r2"].kind == "expert" and rows["r2"].weights == {"a": 0.0, "r2": 1.0}
    assert rows["r2"].score == true.score  # the same model: the cached score, not a new evaluation
    (again,) = [e for e in checkpoints.expert_scores(second, ["rev-loss"]) if e.label == "r2"]
    assert (again.kind, again.label, again.score) == ("expert", "r2", true.score)


def test_replicates_of_a_true_mixture_are_scored_one_by_one_and_paired_by_their_mean(tiny_lab_dir):
    from mixlab.analysis import paired, proxy_report, replicate_pairs
    from mixlab.keys import CacheKey

    toml = tiny_lab_dir / "lab.toml"  # two "seeds" of one mixture (any two checkpoints do), and one single run
    toml.write_text(
        toml.read_text()
        + '\n[[true_mixtures]]\nweights = { add = 0.5, rev = 0.5 }\npaths = ["experts/add", "experts/rev"]\n'
        + '\n[[true_mixtures]]\nweights = { sort = 1.0 }\npath = "experts/sort"\n'
    )
    engine = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    assert checkpoints.unscored(engine)["true"] == 3  # three checkpoints
    checkpoints.true_scores(engine, ["rev-loss"])
    experts = {e.label: e.score for e in checkpoints.expert_scores(engine, ["rev-loss"])}
    df = engine.results()
    true = df[df.kind == "true"].set_index(["label", "replicate"]).score
    assert true["add50_rev50", 1] == experts["add"] and true["add50_rev50", 2] == experts["rev"]
    assert true["sort100", 1] == experts["sort"]
    # the single path's key is its content and the benchmark, as before replicates existed
    sort = next(tv for tv in engine.experts if tv.name == "sort")
    bench = engine._bench(engine.lab.benchmark("rev-loss"))
    key = CacheKey.checkpoint(engine.sources.base_fp, sort.fingerprint, bench.desc).digest
    assert engine.store.get(key).score == experts["sort"]
    for w in ([0.5, 0.5, 0.0], [0.0, 0.0, 1.0]):
        engine.proxy(Mixture.of(engine.names, w), benchmarks=["rev-loss"])
    pairs = paired(engine.results("linear"), engine.names, "rev-loss").set_index("label")
    assert pairs.loc["add50_rev50", "true"] == pytest.approx((experts["add"] + experts["rev"]) / 2)
    assert pairs.loc["add50_rev50", "replicates"] == 2 and pairs.loc["sort100", "replicates"] == 1
    (half,) = replicate_pairs(df, engine.names, "rev-loss").itertuples()
    assert (half.label, half.first, half.second) == ("add50_rev50", experts["add"], experts["rev"])
    row = next(r for r in proxy_report(engine.results("linear"), engine.names, engine.lab.benchmarks, n_boot=0))
    assert row["n_replicated"] == 1 and row["ceiling"] is None  # one replicated mixture: undefined, not invented


def test_read_views_are_made_once_per_version_of_the_cache_and_match_a_fresh_build(tmp_path):
    """Engine.read_view (what a page reruns on every click) is made once, and again whenever what it reads
    changes: a row stored, a benchmark's data rewritten. Engine.results() served from it equals the table built
    afresh from the store, and each caller gets its own copy."""
    import dataclasses
    import shutil

    import numpy as np
    import pandas as pd

    from mixlab.demo import LABS_DIR
    from mixlab.engine import open_store

    shutil.copytree(LABS_DIR / "demo-k3", tmp_path / "lab", ignore=shutil.ignore_patterns(".mixlab"))
    lab = load_lab(tmp_path / "lab")
    eng = Engine(lab, open_store(lab, tmp_path / "cache.sqlite"))
    made = []

    def make():
        made.append(1)
        return len(made)

    def same_table(a, b):  # per-example values (arrays) compared as arrays
        pd.testing.assert_frame_equal(a.drop(columns="values"), b.drop(columns="values"), check_exact=True)
        for x, y in zip(a["values"], b["values"]):
            assert (x is None) == (y is None) and (x is None or np.array_equal(x.values, y.values)), (x, y)

    assert [eng.read_view("n", make) for _ in range(3)] == [1, 1, 1]
    same_table(eng.results(), cached_scores.results(eng))
    mine = eng.results()
    mine["score"] = -1.0  # a caller's copy: the next caller still reads the cache's scores
    assert (eng.results().score >= 0).all()

    row = eng.store.evaluations(models=eng.models_fp, kind="proxy")[0]
    eng.store.put(dataclasses.replace(row, key="f" * 64, score=row.score / 2))  # a row stored
    assert eng.read_view("n", make) == 2
    same_table(eng.results(), cached_scores.results(eng))
    assert (eng.results().score == row.score / 2).any()

    data = lab.resolve(lab.benchmarks[0].data)
    first = data.read_text().splitlines()[0]
    data.write_text(data.read_text() + first + "\n")  # a benchmark's data rewritten: its scores' keys change
    assert eng.read_view("n", make) == 3
    same_table(eng.results(), cached_scores.results(eng))

    proxies = eng.store.evaluations(models=eng.models_fp, kind="proxy")  # per-example values added (a backfill)
    kept = eng.store.values([e.key for e in proxies])
    src = next(e for e in proxies if e.key in kept)
    eng.store.put(dataclasses.replace(src, key="e" * 64, values=None))
    assert eng.read_view("n", make) == 4
    eng.store.put_values({"e" * 64: kept[src.key]})
    assert eng.read_view("n", make) == 5
    same_table(eng.results(), cached_scores.results(eng))


def test_a_benchmarks_batch_is_sized_for_its_own_rows(tiny_lab_dir, monkeypatch):
    """Rows per pass from the benchmark's longest row, and one position's logits for greedy generation
    (the model takes logits_to_keep), every position's for a loss or a choice; a batch size given is kept."""
    from mixlab.evaluate import prepare
    from mixlab.store import Store

    eng = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu")
    asked = []
    monkeypatch.setattr(eng.resident, "batch_size_for", lambda seq, logits: asked.append((seq, logits)) or 7)
    for b in eng.lab.benchmarks:
        bench = eng._bench(b)
        items = prepare(eng.tokenizer, b, bench.examples)  # independently of the engine's own items
        lengths = [len(it["ids"]) + b.max_new_tokens if "ids" in it else sum(map(len, it["pair"])) for it in items]
        assert eng.batch_size_for(b, bench) == 7
        assert asked.pop() == (max(lengths), 1 if b.evaluator == "exact_match" else max(lengths)), b.name
    fixed = Engine(load_lab(tiny_lab_dir), Store(":memory:"), device="cpu", batch_size=3)
    assert {fixed.batch_size_for(b, fixed._bench(b)) for b in fixed.lab.benchmarks} == {3}
