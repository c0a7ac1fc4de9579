"""Cache keys change with everything that changes a score, and with nothing else."""

import json
import re

import pytest

from mixlab.demo import LABS_DIR
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
    from mixlab.engine import EXPORT_FILE, Engine
    from mixlab.lab import load_lab
    from mixlab.store import Store

    lab = load_lab(LABS_DIR / "demo-k3")
    engine = Engine(lab, Store(":memory:", seed_from=lab.root / EXPORT_FILE), device="cpu")
    for t in lab.manifest.true_mixtures[:5]:
        assert proxy.lookup(engine, engine.request([lab.true_mixture_weights(t)])) is not None, t.name


SHIPPED = sorted(p.name for p in LABS_DIR.iterdir() if (p / "lab.toml").is_file())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_score_is_served_from_the_shipped_cache_with_no_new_evaluation(name, monkeypatch):
    """Every row a shipped lab's evaluations.jsonl holds is found again under today's keys: the checkpoints
    as `sweep --checkpoints` scores them, each proxy row as a request for its mixture, method and benchmark
    (a search's dev rows, ``rev@dev:50``, as a dev-split request with that limit). Scoring anything (a miss)
    fails the test, so the store's row count after equals the count before: 0 new evaluations."""
    from collections import defaultdict

    from mixlab.engine import EXPORT_FILE, Engine
    from mixlab.lab import load_lab
    from mixlab.scoring import checkpoints
    from mixlab.simplex import Mixture
    from mixlab.store import Store

    lab = load_lab(LABS_DIR / name)
    store = Store(":memory:", seed_from=lab.root / EXPORT_FILE)
    engine = Engine(lab, store, device="cpu")
    rows = store.evaluations()
    shipped = {e.key for e in rows}
    assert len(shipped) == len(rows) == store.count() > 0

    def miss(target, b, bench, key, row, *args):
        raise AssertionError(f"{name}: {row['label']} on {b.name} is not served by the shipped cache")

    monkeypatch.setattr(engine, "_compute", miss)
    served = {e.key for e in checkpoints.checkpoint_scores(engine) if e.device != "manifest"}
    groups = defaultdict(list)
    for e in rows:
        if e.kind == "proxy":
            groups[e.method, json.dumps(e.params, sort_keys=True), e.benchmark].append(e)
    for (method, params, benchmark), group in groups.items():
        m = re.fullmatch(r"([^@:]+)(?:@(dev|test))?(?::(\d+))?", benchmark)
        request = engine.request(
            [Mixture.of(engine.names, [e.weights[n] for n in engine.names]) for e in group],
            method,
            json.loads(params),
            [m[1]],
            split="dev" if m[2] else "test",
            limit=None if m[3] is None else int(m[3]),
            path="materialize",
        )
        got = proxy.score(engine, request)
        assert [e.benchmark for e in got] == [benchmark] * len(group)
        served |= {e.key for e in got}
    assert shipped - served == set(), f"{name}: shipped scores not served under today's keys"
    assert store.count() == len(rows)  # 0 new evaluations
