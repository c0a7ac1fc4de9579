"""Per-example values (mixlab.values): kept beside every score the built-in evaluators make, by every path
(materialised merge, batched LoRA, checkpoints), stored in their own table (the evaluations rows and keys
unchanged), shipped in a lab's example_values.jsonl, and never kept when they do not give the cached score."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mixlab.engine import Engine, open_store
from mixlab.errors import CacheError
from mixlab.lab import load_lab
from mixlab.simplex import Mixture
from mixlab.store import Store
from mixlab.values import VALUES_FILE, ExampleValues
from tests.test_store import _deny_writes, ev


def test_values_round_trip_through_the_store_and_leave_the_row_as_it_was(tmp_path):
    loss = ExampleValues([1.5, 2.25, 0.5], [3, 2, 1])  # summed NLL per example, its tokens
    acc = ExampleValues([1, 0, 1, 1])
    s = Store(tmp_path / "c.sqlite")
    s.put([ev("l", score=4.25 / 6, metric="loss", n=3, values=loss), ev("a", score=0.75, n=4, values=acc), ev("x")])
    got = s.values(["l", "a", "x", "missing"])
    assert set(got) == {"l", "a"}
    assert got["l"].values.tolist() == [1.5, 2.25, 0.5] and got["l"].weights.tolist() == [3, 2, 1]
    assert got["a"].weights is None and got["a"].score() == 0.75
    # the evaluations rows are byte-identical to those of a store that never saw the values
    bare = Store(tmp_path / "bare.sqlite")
    bare.put([ev("l", score=4.25 / 6, metric="loss", n=3), ev("a", score=0.75, n=4), ev("x")])
    for st, out in ((s, "with.jsonl"), (bare, "without.jsonl")):
        st.export_jsonl(tmp_path / out)
    key_created = {e.key: e.created for e in bare.evaluations()}
    with_rows = [json.loads(line) for line in (tmp_path / "with.jsonl").read_text().splitlines()]
    without = [json.loads(line) for line in (tmp_path / "without.jsonl").read_text().splitlines()]
    assert [r | {"created": key_created[r["key"]]} for r in with_rows] == without


def test_values_that_do_not_give_the_score_or_are_not_finite_are_refused(tmp_path):
    with pytest.raises(CacheError, match="do not give its score"):
        ev("a", score=0.5, n=4, values=ExampleValues([1, 1, 1, 0]))
    with pytest.raises(CacheError, match="do not give its score"):
        ev("a", score=0.5, n=10, values=ExampleValues([1, 0]))
    with pytest.raises(CacheError, match="non-finite per-example values"):
        ExampleValues([1.0, float("nan")])
    s = Store(tmp_path / "c.sqlite")
    s.put(ev("a", score=0.5, n=2))
    with pytest.raises(CacheError, match="do not give its score"):
        s.put_values({"a": ExampleValues([1, 1])})
    with pytest.raises(CacheError, match="no cached score with key b"):
        s.put_values({"b": ExampleValues([1, 0])})
    assert s.values(["a"]) == {}
    s.put_values({"a": ExampleValues([0, 1])})
    assert s.values(["a"])["a"].values.tolist() == [0, 1]


def test_a_labs_values_export_seeds_a_fresh_cache_and_a_bad_line_is_skipped(tmp_path):
    s = Store(tmp_path / "a.sqlite")
    s.put([ev(f"k{i}", score=i / 4, n=4, values=ExampleValues([1] * i + [0] * (4 - i))) for i in range(4)])
    s.export_jsonl(tmp_path / "e.jsonl")
    assert s.export_values(tmp_path / VALUES_FILE) == 4
    with open(tmp_path / VALUES_FILE, "a") as f:
        f.write('{"key": "bad", "n": 3, "values": "not base64!"}\n')
    t = Store(tmp_path / "b.sqlite", seed_from=tmp_path / "e.jsonl", values_from=tmp_path / VALUES_FILE)
    got = t.values([f"k{i}" for i in range(4)])
    assert [got[f"k{i}"].values.sum() for i in range(4)] == [0, 1, 2, 3]
    assert any(f"{VALUES_FILE}:5: skipped" in n for n in t.notices)


def test_a_read_only_cache_made_before_the_table_reads_no_values(tmp_path, monkeypatch):
    import sqlite3

    s = Store(tmp_path / "c.sqlite")
    s.put(ev("a"))
    s.close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("DROP TABLE example_values")
    db.commit()
    db.close()
    _deny_writes(monkeypatch, tmp_path / "c.sqlite", tmp_path)
    ro = Store(tmp_path / "c.sqlite")
    assert ro.readonly and ro.values(["a"]) == {} and ro.get("a") is not None


@pytest.fixture
def engine(tiny_lab_dir):
    lab = load_lab(tiny_lab_dir / "lab.toml")
    return Engine(lab, open_store(lab, tmp := tiny_lab_dir / ".mixlab" / "c.sqlite"), device="cpu"), tmp


def test_every_scoring_path_keeps_values_that_give_its_score(engine):
    eng, _ = engine
    m = Mixture.of(eng.names, [0.5, 0.25, 0.25])
    batched = eng.sweep([m], "linear", path="batched")
    other = Engine(eng.lab, Store(":memory:"), device="cpu")
    materialised = other.sweep([m], "linear", path="materialize")
    for evals, store in ((batched, eng.store), (materialised, other.store)):
        kept = store.values([e.key for e in evals])
        assert {e.benchmark for e in evals} == {"rev", "rev-loss", "pick"}
        for e in evals:
            v = kept[e.key]
            assert v.n == e.n and math.isclose(v.score(), e.score, rel_tol=1e-6, abs_tol=1e-9)
            if e.metric == "loss":
                assert v.weights is not None and (v.weights >= 1).all()
            else:
                assert set(np.unique(v.values)) <= {0.0, 1.0} and v.weights is None
    # the two paths compute the same per-example losses (summed NLL of each completion) on the same examples
    b = next(e for e in batched if e.benchmark == "rev-loss")
    mt = next(e for e in materialised if e.benchmark == "rev-loss")
    vb, vm = eng.store.values([b.key])[b.key], other.store.values([mt.key])[mt.key]
    np.testing.assert_allclose(vb.values, vm.values, rtol=1e-4)
    np.testing.assert_array_equal(vb.weights, vm.weights)


def test_a_checkpoint_score_keeps_its_values(engine):
    from mixlab.scoring.checkpoints import base_scores

    eng, _ = engine
    evals = base_scores(eng)
    kept = eng.store.values([e.key for e in evals])
    assert len(kept) == len(evals) == 3 and all(kept[e.key].agrees(e.score) for e in evals)


def test_a_backfill_writes_only_values_and_refuses_a_score_it_cannot_reproduce(engine, tmp_path):
    import dataclasses

    from mixlab.scoring.backfill import backfill
    from mixlab.scoring.checkpoints import base_scores

    eng, _ = engine
    m = Mixture.of(eng.names, [0.5, 0.25, 0.25])
    made = base_scores(eng) + eng.sweep([m], "linear")
    eng.store.export_jsonl(tmp_path / "e.jsonl")  # rows only, as a lab shipped before values were kept
    old = Store(tmp_path / "old.sqlite", seed_from=tmp_path / "e.jsonl")
    tampered = next(e for e in made if e.kind == "base" and e.benchmark == "rev-loss")
    old.put(dataclasses.replace(tampered, score=tampered.score * 1.01, values=None))  # not what the model gives
    rows_before = (tmp_path / "before.jsonl", old.export_jsonl(tmp_path / "before.jsonl"))[0].read_text()
    target = Engine(eng.lab, old, device="cpu")
    out = backfill(target, log=lambda _: None)
    assert out.written == len(made) - 1 and out.missing == 9  # the 3 experts × 3 benchmarks: never cached here
    assert len(out.refused) == 1 and out.refused[0].startswith("base · rev-loss: cached")
    kept = old.values([e.key for e in made])
    assert set(kept) == {e.key for e in made} - {tampered.key}
    for e in made:
        if e.key in kept:
            assert kept[e.key].agrees(e.score)
    assert (old.export_jsonl(tmp_path / "after.jsonl"), (tmp_path / "after.jsonl").read_text())[1] == rows_before


def test_a_backfill_reaches_scores_on_a_split_and_a_limit_and_only_the_benchmarks_asked(engine, tmp_path):
    """A search's scores (``rev@test:5``: the dev split of a benchmark without search_data, its first 5
    examples) get their values too; ``benchmarks`` keeps a backfill to the named ones (e.g. the losses)."""
    from mixlab.scoring.backfill import backfill
    from mixlab.scoring.request import declared_split, split_benchmark

    assert declared_split("rev") == ("rev", "test", None) and declared_split("rev@dev:50") == ("rev", "dev", 50)
    assert declared_split("rev@test") == ("rev", "dev", None) and declared_split("rev:7") == ("rev", "test", 7)
    eng, _ = engine
    m = Mixture.of(eng.names, [0.5, 0.25, 0.25])
    variant = split_benchmark(eng.lab, eng.lab.benchmark("rev"), "dev", 5)
    made = eng.sweep([m], "linear", None, [variant, "rev-loss", "pick"])
    assert [e.benchmark for e in made] == [variant.name, "rev-loss", "pick"] and variant.name == "rev@test:5"
    eng.store.export_jsonl(tmp_path / "e.jsonl")
    old = Store(tmp_path / "old.sqlite", seed_from=tmp_path / "e.jsonl")
    target = Engine(eng.lab, old, device="cpu")
    out = backfill(target, kinds=("proxy",), benchmarks=["rev-loss"], log=lambda _: None)
    assert out.written == 1 and set(old.values([e.key for e in made])) == {made[1].key}
    out = backfill(target, kinds=("proxy",), log=lambda _: None)
    assert out.written == 2 and not out.refused
    kept = old.values([e.key for e in made])
    assert set(kept) == {e.key for e in made} and all(kept[e.key].agrees(e.score) for e in made)
    assert kept[made[0].key].n == 5


def _labs_with_values() -> list[str]:
    from mixlab.demo import LABS_DIR

    return sorted(p.parent.name for p in LABS_DIR.glob(f"*/{VALUES_FILE}"))


def test_every_shipped_score_ships_its_per_example_values():
    """Every score a shipped lab caches keeps the values it is the mean of, so every score shown has its interval
    (a loss's a bootstrap over them): backfilled with ``python -m mixlab.scoring.backfill cache/<lab>``."""
    from mixlab.demo import LABS_DIR

    labs = sorted(p.parent.name for p in LABS_DIR.glob("*/evaluations.jsonl"))
    assert _labs_with_values() == labs == ["demo-k3", "demo-k4", "demo-recycle", "demo-vl"]
    for lab in labs:
        keys = {json.loads(line)["key"] for line in (LABS_DIR / lab / "evaluations.jsonl").read_text().splitlines()}
        kept = {json.loads(line)["key"] for line in (LABS_DIR / lab / VALUES_FILE).read_text().splitlines()}
        assert kept == keys, (lab, len(keys - kept))


@pytest.mark.parametrize("lab", _labs_with_values())
def test_a_shipped_labs_values_each_give_their_shipped_score(lab):
    """Every record of a shipped lab's example_values.jsonl belongs to a shipped score and reproduces it."""
    from mixlab.demo import LABS_DIR

    path = LABS_DIR / lab / VALUES_FILE
    scores = {}
    for line in (LABS_DIR / lab / "evaluations.jsonl").read_text().splitlines():
        r = json.loads(line)
        scores[r["key"]] = (r["score"], r["n"], r["metric"])
    records = [ExampleValues.from_record(json.loads(line)) for line in path.read_text().splitlines()]
    assert records
    for key, v in records:
        score, n, metric = scores[key]
        assert v.n == n and v.agrees(score), key
        assert (v.weights is not None) == (metric == "loss"), key
