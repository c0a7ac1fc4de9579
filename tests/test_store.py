import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixlab.errors import CacheError
from mixlab.store import Evaluation, Store, cache_key

ROOT = Path(__file__).resolve().parents[1]


def ev(key="k", score=0.5, **kw) -> Evaluation:
    base = dict(
        key=key,
        lab="lab",
        kind="proxy",
        label="a=1",
        models="m",
        benchmark="b",
        metric="accuracy",
        score=score,
        higher_is_better=True,
        n=10,
        device="cpu",
        seconds=0.1,
        method="linear",
        params={},
        weights={"a": 1.0, "b": 0.0},
    )
    return Evaluation(**{**base, **kw})


def test_put_get_and_replace(tmp_path):
    s = Store(tmp_path / "c.sqlite")
    s.put(ev())
    s.put(ev(score=0.7))
    assert s.count() == 1 and s.get("k").score == 0.7 and s.get("k").weights == {"a": 1.0, "b": 0.0}
    assert s.get("missing") is None


def test_key_is_canonical():
    a = cache_key({"w": [0.5, 0.5], "m": "linear"}, {"name": "x"})
    assert a == cache_key({"m": "linear", "w": [0.5, 0.5]}, {"name": "x"})
    assert a != cache_key({"m": "linear", "w": [0.5, 0.5]}, {"name": "y"})


def test_non_finite_scores_are_refused():
    with pytest.raises(CacheError, match="non-finite score"):
        ev(score=float("nan"))


def test_export_import_round_trip(tmp_path):
    s = Store(tmp_path / "a.sqlite")
    s.put([ev(key=f"k{i}", score=i / 10) for i in range(5)])
    assert s.export_jsonl(tmp_path / "e.jsonl") == 5
    t = Store(tmp_path / "b.sqlite", seed_from=tmp_path / "e.jsonl")
    assert sorted(e.score for e in t.evaluations()) == [0.0, 0.1, 0.2, 0.3, 0.4]


WRITER = """
import sys
sys.path.insert(0, {root!r})
from mixlab.store import Evaluation, Store
s = Store({path!r})
i = 0
while True:
    rows = [Evaluation(key={key} if {same} else f"{{sys.argv[1]}}-{{i}}-{{j}}", lab="l", kind="proxy", label="x", models="m",
                       benchmark="b", metric="acc", score=float(j), higher_is_better=True, n=1, device="cpu", seconds=0.0)
            for j in range(200)]
    s.put(rows)
    i += 1
    if i == {limit}:
        break
"""


def _writer(path, same: bool, limit: int, tag: str):
    code = WRITER.format(root=str(ROOT), path=str(path), key='"same"', same=same, limit=limit)
    return subprocess.Popen([sys.executable, "-c", code, tag])


def test_two_processes_writing_the_same_key_leave_one_row(tmp_path):
    path = tmp_path / "c.sqlite"
    Store(path).close()
    procs = [_writer(path, True, 20, t) for t in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert Store(path).count() == 1


def test_a_process_killed_mid_write_leaves_the_cache_whole(tmp_path):
    path = tmp_path / "c.sqlite"
    s = Store(path)
    s.put(ev(key="precious"))
    proc = _writer(path, False, -1, "w")
    deadline = time.time() + 60
    while Store(path).count() < 1 + 600 and time.time() < deadline:  # let it commit a few transactions
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after = Store(path)
    assert after.get("precious") is not None
    assert (after.count() - 1) % 200 == 0  # whole transactions only


def test_corrupt_file_is_a_clear_error_and_is_not_touched(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(
        CacheError, match=r"c.sqlite: cannot open: file is not a database \(the file is corrupt; move it aside"
    ):
        Store(path)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_read_only_cache_reads_and_refuses_writes_clearly(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    s = Store(path)
    s.put(ev())
    s._db.execute("PRAGMA journal_mode=DELETE")  # as a cache copied somewhere read-only would be
    s.close()
    os.chmod(path, 0o444)
    if os.geteuid() == 0:  # root ignores file modes; make the permission check see what a user would
        real = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: False if Path(p) == path and mode == os.W_OK else real(p, mode)
        )
    ro = Store(path)
    assert ro.readonly and ro.count() == 1 and ro.get("k").score == 0.5
    with pytest.raises(
        CacheError, match=r"cannot write: attempt to write a readonly database \(the file or its folder is read-only"
    ):
        ro.put(ev(key="new"))
    assert ro.count() == 1


def test_an_existing_cache_picks_up_a_labs_export_once(tmp_path):
    src = Store(tmp_path / "src.sqlite")
    src.put([ev(key=f"k{i}") for i in range(3)])
    src.export_jsonl(tmp_path / "e.jsonl")
    shared = Store(tmp_path / "shared.sqlite")
    shared.put(ev(key="mine", score=0.9))
    shared.close()
    again = Store(tmp_path / "shared.sqlite", seed_from=tmp_path / "e.jsonl")
    assert again.count() == 4 and again.get("mine").score == 0.9
    assert again.sync_export(tmp_path / "e.jsonl") == 0  # already imported
