"""Cache keys change with everything that changes a score, and with nothing else."""

import pytest

from mixlab.keys import CacheKey, benchmark_desc
from mixlab.lab import BenchmarkSpec
from mixlab.merge import MergeSpec
from mixlab.scoring import proxy

BENCH = BenchmarkSpec(name="rev", evaluator="exact_match", data="d.jsonl")


def key(base="b", experts=("e1", "e2"), method="linear", weights=(0.5, 0.5), params=None, exclude=(), bench=None):
    spec = MergeSpec(method, weights, params or {}, exclude)
    return CacheKey.merge(base, experts, spec, bench or benchmark_desc(BENCH, "data-sha")).digest


def test_the_key_is_canonical_and_rounds_weights():
    a = CacheKey.of({"w": [0.5, 0.5], "m": "linear"}, {"name": "x"})
    assert a.digest == CacheKey.of({"m": "linear", "w": [0.5, 0.5]}, {"name": "x"}).digest
    assert key(weights=(0.5, 0.5)) == key(weights=(0.5 + 1e-9, 0.5 - 1e-9))


@pytest.mark.parametrize(
    "change",
    [
        dict(base="b2"),
        dict(experts=("e1", "e3")),
        dict(experts=("e2", "e1")),
        dict(method="task_arithmetic"),
        dict(params={"scale": 2.0}),
        dict(weights=(0.4, 0.6)),
        dict(exclude=("lm_head.*",)),
        dict(bench=benchmark_desc(BENCH, "other-data-sha")),
        dict(bench=benchmark_desc(BENCH.model_copy(update={"max_new_tokens": 5}), "data-sha")),
        dict(bench=benchmark_desc(BENCH.model_copy(update={"stop": ("\n", ".")}), "data-sha")),
        dict(bench=benchmark_desc(BENCH.model_copy(update={"name": "rev2"}), "data-sha")),
    ],
)
def test_every_input_changes_the_key(change):
    assert key(**change) != key()


def test_checkpoint_keys_differ_from_the_base_and_from_merges():
    desc = benchmark_desc(BENCH, "data-sha")
    base = CacheKey.checkpoint("b", None, desc).digest
    ckpt = CacheKey.checkpoint("b", "c", desc).digest
    assert len({base, ckpt, key()}) == 3 and CacheKey.checkpoint("b2", "c", desc).digest != ckpt


def test_the_shipped_labs_scores_are_found_under_todays_keys():
    """A new benchmark option must not change every key: the demo lab's committed proxies are still hits."""
    from mixlab.demo import LABS_DIR
    from mixlab.engine import EXPORT_FILE, Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    lab = load_lab(LABS_DIR / "demo-k3")
    engine = Engine(lab, Store(":memory:", seed_from=lab.root / EXPORT_FILE), device="cpu")
    for t in lab.manifest.true_mixtures[:5]:
        assert proxy.lookup(engine, engine.request([lab.true_mixture_weights(t)])) is not None, t.name
