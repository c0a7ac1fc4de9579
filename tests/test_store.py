import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixlab.engine import open_store
from mixlab.errors import CacheError, JobError
from mixlab.store import Evaluation, Store

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


def _deny_writes(monkeypatch, *paths):
    """Make os.access report no write permission on ``paths`` (root ignores file modes)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) in paths and mode == os.W_OK else real(p, mode))


def test_read_only_wal_cache_reads_and_keeps_new_scores_in_memory(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "c.sqlite"
    s = Store(path)
    s.put(ev())
    s.close()
    assert s._db is not None and Store(path)._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    os.chmod(path, 0o444)
    os.chmod(folder, 0o555)
    _deny_writes(monkeypatch, path, folder)
    try:
        ro = Store(path)
        assert ro.readonly and ro.count() == 1 and ro.get("k").score == 0.5
        assert any("read-only" in n for n in ro.notices)
        assert ro.put(ev(key="new", score=0.25)) is False  # not saved ...
        assert ro.get("new").score == 0.25 and {e.key for e in ro.evaluations()} == {"k", "new"}  # ... but served
        assert ro.count() == 1 and any("kept in memory only" in n for n in ro.notices)
    finally:
        os.chmod(folder, 0o755)


def test_a_full_disk_says_so_and_keeps_the_score(tmp_path):
    s = Store(tmp_path / "c.sqlite")
    s.put(ev())
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite answers SQLITE_FULL, as on a full disk
    assert s.put([ev(key=f"big{i}", label="x" * 5000) for i in range(20)]) is False
    assert any("disk full" in n for n in s.notices)
    assert s.get("big3") is not None and s.count() == 1


def test_a_locked_cache_waits_then_says_busy(tmp_path, monkeypatch):
    import mixlab.store

    monkeypatch.setattr(mixlab.store, "BUSY_SECONDS", 0.2)
    path = tmp_path / "c.sqlite"
    s = Store(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        assert s.put(ev()) is False
        assert time.monotonic() - start >= 0.15  # it waited before giving up
        assert any("busy" in n for n in s.notices) and s.get("k") is not None
    finally:
        holder.execute("ROLLBACK")


def test_a_corrupt_page_is_found_on_open_and_the_file_is_never_written(tmp_path):
    path = tmp_path / "c.sqlite"
    s = Store(path)
    s.put([ev(key=f"k{i}", label="x" * 3000) for i in range(40)])  # several pages of rows
    s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 4 * page] = b"\xff" * page  # a b-tree page overwritten: the header still reads fine
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(CacheError, match="corrupt"):
        Store(path)
    assert path.read_bytes() == before


def test_open_store_falls_back_to_memory_for_a_corrupt_cache(tiny_lab_dir):
    from mixlab.lab import load_lab

    cache = tiny_lab_dir / ".mixlab" / "evaluations.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"this is not sqlite" * 100)
    store = open_store(load_lab(tiny_lab_dir))
    assert str(store.path) == ":memory:" and "corrupt" in store.notices[0]
    assert store.put(ev()) is True and store.get("k") is not None
    assert cache.read_bytes() == b"this is not sqlite" * 100


def test_a_bad_line_in_a_labs_export_is_skipped_with_a_notice(tmp_path):
    src = Store(tmp_path / "src.sqlite")
    src.put([ev(key=f"k{i}") for i in range(3)])
    src.export_jsonl(tmp_path / "e.jsonl")
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    lines.insert(1, '{"key": "broken", "score": NaN}')
    lines.insert(3, "\udcff not json")
    (tmp_path / "e.jsonl").write_text("\n".join(lines) + "\n", errors="surrogateescape")
    s = Store(tmp_path / "new.sqlite", seed_from=tmp_path / "e.jsonl")
    assert s.count() == 3
    assert [n.split(": skipped")[0] for n in s.notices] == [f"{tmp_path / 'e.jsonl'}:2", f"{tmp_path / 'e.jsonl'}:4"]


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


@pytest.mark.parametrize("link", [".mixlab", ".mixlab/evaluations.sqlite", ".mixlab/evaluations.sqlite-wal"])
def test_a_labs_cache_never_follows_a_link_out_of_the_lab(tiny_lab_dir, tmp_path, link):
    from mixlab.lab import load_lab

    outside = tmp_path / "outside"
    outside.mkdir()
    (tiny_lab_dir / ".mixlab").mkdir(exist_ok=link != ".mixlab")
    if link == ".mixlab":
        (tiny_lab_dir / ".mixlab").rmdir()
        (tiny_lab_dir / link).symlink_to(outside, target_is_directory=True)
    else:
        (tiny_lab_dir / link).symlink_to(outside / "x")  # dangling: SQLite would create it
    store = open_store(load_lab(tiny_lab_dir))
    assert str(store.path) == ":memory:" and "points outside the lab folder" in store.notices[0]
    assert store.put(ev()) is True and store.get("k") is not None
    assert list(outside.iterdir()) == []


def test_a_labs_export_linked_from_outside_is_not_imported(tiny_lab_dir, tmp_path):
    from mixlab.lab import load_lab

    src = Store(tmp_path / "src.sqlite")
    src.put(ev("shipped"))
    src.export_jsonl(tmp_path / "elsewhere.jsonl")
    (tiny_lab_dir / "evaluations.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    store = open_store(load_lab(tiny_lab_dir))
    assert store.get("shipped") is None
    assert any("the lab's evaluations export" in n and "points outside" in n for n in store.notices)
    assert store.path == tiny_lab_dir.resolve() / ".mixlab" / "evaluations.sqlite"  # the cache itself is fine


def _job(**kw) -> dict:
    return {
        "id": "j1", "lab": "l", "kind": "proxy", "description": "d", "spec": "{}", "state": "running", "done": 0,
        "total": 1, "message": "", "error": None, "created": 1.0, "started": 1.0, "finished": None, "pid": 1,
    } | kw  # fmt: skip


def test_a_job_whose_pid_now_belongs_to_another_process_reads_interrupted(tmp_path):
    from mixlab.owner import Owner

    me = Owner.here()
    s = Store(tmp_path / "c.sqlite")
    s.put_job(_job(id="reused", pid=me.pid, host=me.host, pid_started=me.started - 1000))  # pid reused since
    s.put_job(_job(id="mine", pid=me.pid, host=me.host, pid_started=me.started))
    states = {r["id"]: r["state"] for r in s.jobs()}
    assert states == {"reused": "interrupted", "mine": "running"}
    assert {r["id"]: r["state"] for r in Store(tmp_path / "c.sqlite").jobs()}["reused"] == "interrupted"  # stored


def test_job_records_of_an_older_version_stay_readable_and_gain_the_owner_fields(tmp_path):
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    old = (
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, lab TEXT NOT NULL, kind TEXT NOT NULL, description TEXT NOT NULL, "
        "spec TEXT NOT NULL, state TEXT NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL, message TEXT NOT "
        "NULL, error TEXT, created REAL NOT NULL, started REAL, finished REAL, pid INTEGER NOT NULL)"
    )
    db.execute(old)
    db.execute("INSERT INTO jobs VALUES ('old', 'l', 'proxy', 'd', '{}', 'failed', 0, 1, '', 'x', 1.0, 1.0, 2.0, 1)")
    db.commit()
    db.close()
    s = Store(path)
    (record,) = s.jobs()
    assert record["id"] == "old" and record["state"] == "failed" and record["host"] is None
    claimed = s.claim_job("old")
    assert claimed["state"] == "queued" and claimed["pid"] == os.getpid() and claimed["pid_started"] is not None


CLAIM = """
import os, sys, time
sys.path.insert(0, {root!r})
from mixlab.errors import JobError
from mixlab.store import Store
s = Store({path!r})
while not os.path.exists({go!r}):  # both start together
    time.sleep(0.005)
try:
    s.claim_job("j1")
    print("claimed", flush=True)
except JobError as e:
    print(e, flush=True)
time.sleep(3)  # stays alive while the other one tries
"""


def test_two_processes_resuming_one_job_run_it_once(tmp_path):
    path = tmp_path / "c.sqlite"
    Store(path).put_job(_job(state="interrupted", pid=999_999_999))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM.format(root=str(ROOT), path=str(path), go=str(go))],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(2.5)  # both imported and waiting
    go.touch()
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs[0] == "claimed", outs
    winner = Store(path).jobs()[0]["pid"]
    assert outs[1].startswith(f"job j1 is already queued in process {winner} (resumed there"), outs
    with pytest.raises(JobError, match="no job 'nope'"):
        Store(path).claim_job("nope")
