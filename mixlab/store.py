"""The evaluation cache: one SQLite file (WAL) of scores keyed by *content*.

A key is the sha256 of canonical JSON of what was evaluated (base and expert fingerprints, merge
method and params, weights rounded to 1e-6 — or a checkpoint's fingerprint) and how (benchmark name,
data file hash, evaluator and its options), plus a schema version. Each write is one transaction, so
a killed process leaves the database whole; two processes writing the same key leave one row.
Rows export to and import from JSONL, which is how a lab ships its evaluations in git.

A store keeps its promises when the file misbehaves: a corrupt file is detected on open (``quick_check``)
and never written to; a locked one is waited on for a few seconds, then reported busy; a write that fails
(read-only, busy, disk full) keeps the new rows in memory for this process, readable like the others,
and says so in :attr:`Store.notices`; a bad line in an imported export is skipped with a notice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote

from mixlab.errors import CacheError, JobError, ManifestError
from mixlab.keys import canonical
from mixlab.lab import confined
from mixlab.owner import Owner
from mixlab.run.records import ACTIVE, JOB_FIELDS, OPTIONAL_JOB_FIELDS, JobRecord, JobState
from mixlab.values import ExampleValues

KINDS = ("proxy", "true", "expert", "base")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")  # the files SQLite opens by name beside a database

_COLUMNS = (
    "key",
    "lab",
    "kind",
    "label",
    "models",
    "method",
    "params",
    "weights",
    "benchmark",
    "metric",
    "score",
    "higher_is_better",
    "n",
    "device",
    "seconds",
    "created",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY,      -- sha256 of the canonical description
    lab TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN {KINDS}),
    label TEXT NOT NULL,       -- expert / true-mixture name, or the weights for a proxy
    models TEXT NOT NULL,      -- fingerprint of base + experts: rows of other expert sets are ignored
    method TEXT,               -- merge method (proxy rows)
    params TEXT,               -- JSON of its resolved params
    weights TEXT,              -- JSON {{expert: weight}}
    benchmark TEXT NOT NULL,
    metric TEXT NOT NULL,
    score REAL NOT NULL,
    higher_is_better INTEGER NOT NULL,
    n INTEGER NOT NULL,
    device TEXT NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS by_models ON evaluations (models, kind, benchmark);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# jobs the dashboard and the CLI ran on this cache: what a restarted app shows and can resume
_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    lab TEXT NOT NULL,
    kind TEXT NOT NULL,        -- proxy | checkpoints | search | recycle
    description TEXT NOT NULL,
    spec TEXT NOT NULL,        -- JSON: what to run again on resume
    state TEXT NOT NULL,       -- queued | running | done | failed | cancelled | interrupted
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    message TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER NOT NULL,      -- the process that runs it (or ran it last) ...
    host TEXT,                 -- ... on this host, started at pid_started: a pid reused by another process
    pid_started REAL           --     is told apart (mixlab.owner; NULL in records of older versions)
);
CREATE TABLE IF NOT EXISTS job_cancels (id TEXT PRIMARY KEY, asked REAL NOT NULL);  -- asked of the job's process
"""
# per-example values of a score (mixlab.values), keyed like its evaluations row: a table of its own, so the
# evaluations rows (and every key) stay as they were; a score without them (a plugin, lm-eval, an older row)
# simply has no row here
_VALUES = """
CREATE TABLE IF NOT EXISTS example_values (
    key TEXT PRIMARY KEY,      -- the evaluation's key
    n INTEGER NOT NULL,
    vals BLOB NOT NULL,        -- (n,) little-endian float32
    wts BLOB                   -- (n,) float32 weights (a loss's token counts); NULL: every example weighs 1
);
"""


@dataclass(frozen=True)
class Evaluation:
    """One cached score."""

    key: str
    lab: str
    kind: str
    label: str
    models: str
    benchmark: str
    metric: str
    score: float
    higher_is_better: bool
    n: int
    device: str
    seconds: float
    method: str | None = None
    params: dict | None = None
    weights: dict | None = None
    created: float = field(default_factory=time.time)
    # which replicate (seed) of a true mixture, from 1; set by the lab that reads the row, never stored: the
    # key is the checkpoint's content, so which replicate it is belongs to the lab.toml, not to the cache
    replicate: int | None = None
    # the values the score is the mean of (mixlab.values), where the evaluator gives them; stored in a table of
    # their own (Store.values), never in the row
    values: ExampleValues | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CacheError(f"evaluation kind must be one of {KINDS}, got {self.kind!r}")
        if not math.isfinite(self.score):
            raise CacheError(f"refusing to cache a non-finite score {self.score} for {self.label} on {self.benchmark}")
        if self.values is not None and (self.values.n != self.n or not self.values.agrees(self.score)):
            raise CacheError(
                f"per-example values of {self.label} on {self.benchmark} do not give its score: {self.values.n} "
                f"values averaging {self.values.score()!r}, for n={self.n} and score {self.score!r}"
            )

    def row(self) -> tuple:
        d = {c: getattr(self, c) for c in _COLUMNS}
        for k in ("params", "weights"):
            d[k] = None if d[k] is None else canonical(d[k])
        d["higher_is_better"] = int(d["higher_is_better"])
        return tuple(d[c] for c in _COLUMNS)

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict) -> Evaluation:
        d = dict(row)
        for k in ("params", "weights"):
            d[k] = None if d.get(k) is None else json.loads(d[k])
        d["higher_is_better"] = bool(d["higher_is_better"])
        return cls(**{c: d[c] for c in _COLUMNS})


BUSY_SECONDS = 5  # how long a locked cache is waited on before it is reported busy


def sqlite_trouble(e: Exception, what: str) -> str:
    """What is wrong with a SQLite file mixlab keeps (the evaluation ``cache``, a search ``study``), and the
    fix: ``"file is not a database (the file is corrupt; move it aside …)"``. ``e``: sqlite3's error, or
    SQLAlchemy's wrapping of it (optuna's storage)."""
    text = str(getattr(e, "orig", None) or e).splitlines()[0]
    if "readonly" in text or "read-only" in text:
        hint = "the file or its folder is read-only; point MIXLAB_CACHE at a writable path"
    elif "not a database" in text or "malformed" in text:
        hint = f"the file is corrupt; move it aside (nothing is deleted) and mixlab starts a new {what}"
    elif "locked" in text or "busy" in text:
        text, hint = f"busy (locked by another process for over {BUSY_SECONDS} s)", "try again when it is done"
    elif "full" in text:
        text, hint = "disk full", "free some space or point MIXLAB_CACHE at another disk"
    elif "unable to open" in text:
        hint = "check that it is a file in a folder you may write"
    else:
        hint = "check the path and permissions"
    return f"{text} ({hint})"


def job_owner(record: dict) -> Owner:
    """The process a job record names (pid, host, start time; the last two absent in older records)."""
    return Owner(record["pid"], record.get("host"), record.get("pid_started"))


def _open(target: str, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(target, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False, uri=uri)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
    return db


class Store:
    """The SQLite cache of one lab (or any path; ``":memory:"`` for one that lives in this process)."""

    def __init__(
        self,
        path: str | Path,
        *,
        seed_from: Path | None = None,
        values_from: Path | None = None,
        root: Path | None = None,
    ):
        """``root``: the lab folder the cache lives in, if it does: the file, its folder and SQLite's own
        files beside it (``-wal``, ``-shm``, ``-journal``) must then stay inside it (:func:`mixlab.lab.confined`),
        so a linked ``.mixlab`` or cache file cannot make a score land outside the lab. ``seed_from``: a
        lab's evaluations export to import (once per version); ``values_from``: its per-example values."""
        self.root = None if root is None else Path(root).resolve()
        self.notices: list[str] = []  # why something was not saved or not imported, for pages and the CLI
        self._unsaved: dict[str, Evaluation] = {}  # rows a write could not store, still served from memory
        self._unsaved_values: dict[str, ExampleValues] = {}  # and their per-example values
        memory = str(path) == ":memory:"
        self.path = Path(path) if memory else self._confined(Path(path), "the evaluation cache")
        if not memory:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheError(f"cannot create the cache folder {self.path.parent}: {e.strerror or e}") from None
        # a cache we may not write is opened read-only: scores stay readable, writes are kept in memory
        self.readonly = (
            not memory
            and self.path.exists()
            and not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK))
        )
        if self.readonly:
            self.notices.append(f"evaluation cache {self.path} is read-only: new scores are kept in memory only")
        try:
            self._db = self._connect(memory)
            if not self.readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a commit is atomic and a killed process leaves the file whole; only a power
                # cut can drop the last commits. Saves an fsync per cached score.
                self._db.execute("PRAGMA synchronous=NORMAL")
            has_table = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='evaluations'"
            ).fetchone()
            if has_table:
                problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(problems)}")
            elif not self.readonly:
                self._db.executescript(_SCHEMA)
            if not self.readonly:
                self._db.executescript(_JOBS + _VALUES)
                have = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
                for name, kind in OPTIONAL_JOB_FIELDS.items():
                    if name not in have:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as e:
            raise self._error("open", e) from None
        if seed_from is not None and not self.readonly:
            self.sync_export(Path(seed_from))
        if values_from is not None and not self.readonly:
            self.sync_export(Path(values_from), values=True)

    def _confined(self, path: Path, what: str) -> Path:
        """``path`` and the files SQLite keeps beside it, checked to stay inside :attr:`root` (when set)."""
        if self.root is None:
            return path
        try:
            resolved = confined(self.root, path, what)
            for side in SQLITE_SIDE_FILES:  # SQLite opens them beside the file it resolved
                confined(self.root, resolved.with_name(resolved.name + side), what)
            return resolved
        except ManifestError as e:
            raise CacheError(str(e)) from None

    def beside(self, name: str) -> Path:
        """A file or folder kept next to the cache (a search study, lm-eval's datasets cache), held to the
        same folder as the cache itself (inside the lab, for a lab's own cache)."""
        if str(self.path) == ":memory:":
            raise CacheError(f"an in-memory cache has no folder to keep {name} in")
        return self._confined(self.path.parent / name, name)

    def _connect(self, memory: bool) -> sqlite3.Connection:
        if memory:
            return _open(":memory:")
        if not self.readonly:
            return _open(str(self.path))
        target = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            db = _open(target, uri=True)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # a WAL database in a read-only folder cannot make its -shm file: read the main file as it is
            return _open(target + "&immutable=1", uri=True)

    def sync_export(self, path: Path, values: bool = False) -> int:
        """Import a lab's committed export once per version of it (its sha256 is recorded), so a
        cache shared by several labs, or older than the export, still has every shipped score
        (``values``: the export of per-example values, :meth:`import_values`)."""
        if not path.is_file():
            return 0
        digest = sha256(path.read_bytes()).hexdigest()
        try:
            seen = self._db.execute("SELECT 1 FROM meta WHERE name = ?", (f"import:{digest}",)).fetchone()
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None
        if seen:
            return 0
        n = self.import_values(path) if values else self.import_jsonl(path)
        try:
            self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", (f"import:{digest}", str(path)))
        except sqlite3.DatabaseError as e:
            raise self._error("write", e) from None
        return n

    def _error(self, action: str, e: Exception) -> CacheError:
        return CacheError(f"evaluation cache {self.path}: cannot {action}: {sqlite_trouble(e, 'cache')}")

    def close(self) -> None:
        self._db.close()

    # --- jobs ---------------------------------------------------------------------------------------
    def put_job(self, job: JobRecord | dict) -> None:
        """Write a job's record (a :class:`~mixlab.run.records.JobRecord`, or a row with every field of
        :data:`JOB_FIELDS`); a record that cannot be written is skipped with a notice: the job itself goes on."""
        if self.readonly:
            return
        if isinstance(job, JobRecord):
            job = job.row()
        try:
            self._db.execute(
                f"INSERT OR REPLACE INTO jobs ({', '.join(JOB_FIELDS)}) VALUES ({', '.join('?' * len(JOB_FIELDS))})",
                tuple(job.get(f) if f in OPTIONAL_JOB_FIELDS else job[f] for f in JOB_FIELDS),
            )
        except sqlite3.DatabaseError as e:
            notice = f"{self._error('write', e)} (job records)"
            if notice not in self.notices:
                self.notices.append(notice)

    def claim_job(self, job_id: str) -> dict:
        """Take stopped job ``job_id`` for this process (its record is marked queued here), in one
        transaction: of two processes resuming one job, one gets it and the other is told which has it."""
        if self.readonly:
            raise CacheError(f"cache {self.path} is read-only: cannot resume job {job_id} (its record cannot change)")
        me = Owner.here()
        try:
            with self._transaction():
                row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobError(f"no job {job_id!r} in {self.path}; `mixlab jobs LAB` lists them")
                record = dict(row)
                if record["state"] in ACTIVE and job_owner(record).alive():
                    raise JobError(
                        f"job {job_id} is already {record['state']} in {job_owner(record).describe()} (resumed "
                        "there, or never stopped): wait for it, or cancel it with `mixlab jobs LAB --cancel "
                        f"{job_id}`"
                    )
                record |= {
                    "state": JobState.QUEUED,
                    "error": None,
                    "pid": me.pid,
                    "host": me.host,
                    "pid_started": me.started,
                }
                self._db.execute(
                    "UPDATE jobs SET state = ?, error = NULL, pid = ?, host = ?, pid_started = ? WHERE id = ?",
                    (JobState.QUEUED, me.pid, me.host, me.started, job_id),
                )
        except sqlite3.DatabaseError as e:
            raise self._error("write", e) from None
        return record

    def request_cancel(self, job_id: str) -> None:
        """Ask the process running recorded job ``job_id`` (this one or another) to cancel it: its recorder
        reads this at its next progress report (see :func:`mixlab.run.jobs.recorder`)."""
        if self.readonly:
            raise CacheError(f"cache {self.path} is read-only: cannot ask for job {job_id} to be cancelled")
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO job_cancels (id, asked) VALUES (?, ?)", (job_id, time.time()))

    def forget_cancel(self, job_id: str) -> None:
        if self.readonly:
            return
        with self._transaction():
            self._db.execute("DELETE FROM job_cancels WHERE id = ?", (job_id,))

    def cancel_requested(self, job_id: str) -> bool:
        try:
            return self._db.execute("SELECT 1 FROM job_cancels WHERE id = ?", (job_id,)).fetchone() is not None
        except sqlite3.DatabaseError:
            return False

    def jobs(self, lab: str | None = None) -> list[dict]:
        """Every recorded job (newest first); a job left queued or running by a process that is gone is
        marked interrupted here, so a restarted app says so and can resume it."""
        try:
            rows = [dict(r) for r in self._db.execute("SELECT * FROM jobs ORDER BY created DESC").fetchall()]
        except sqlite3.DatabaseError:
            return []
        for r in rows:
            if r["state"] in ACTIVE and not job_owner(r).alive():
                r["state"], r["error"] = JobState.INTERRUPTED, "the process running it stopped"
                self.put_job(r)
        return [r for r in rows if lab is None or r["lab"] == lab]

    def get(self, key: str) -> Evaluation | None:
        if key in self._unsaved:
            return self._unsaved[key]
        try:
            row = self._db.execute("SELECT * FROM evaluations WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None
        return None if row is None else Evaluation.from_row(row)

    def get_many(self, keys: Sequence[str]) -> dict[str, Evaluation]:
        """The cached rows among ``keys``, in one query per 500 keys."""
        out: dict[str, Evaluation] = {}
        keys = list(keys)
        try:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                sql = f"SELECT * FROM evaluations WHERE key IN ({','.join('?' * len(chunk))})"
                out.update({r["key"]: Evaluation.from_row(r) for r in self._db.execute(sql, chunk)})
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None
        out.update({k: self._unsaved[k] for k in keys if k in self._unsaved})
        return out

    def version(self) -> tuple[int, float, int, int]:
        """(rows, newest timestamp, unsaved rows, rows with per-example values): changes whenever a row is added
        or replaced, or values are added to a cached row (a backfill)."""
        try:
            n, newest = self._db.execute("SELECT COUNT(*), MAX(created) FROM evaluations").fetchone()
            try:
                (kept,) = self._db.execute("SELECT COUNT(*) FROM example_values").fetchone()
            except sqlite3.OperationalError as e:
                if "no such table" not in str(e):  # a read-only cache made before per-example values: none
                    raise
                kept = 0
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None
        return n, newest or 0.0, len(self._unsaved), kept + len(self._unsaved_values)

    def put(self, evaluations: Evaluation | Iterable[Evaluation]) -> bool:
        """Insert or replace rows, all in one transaction. Where the write fails (read-only, busy, disk
        full) the rows are kept in memory for this process and a notice says why: returns False then."""
        evals = [evaluations] if isinstance(evaluations, Evaluation) else list(evaluations)
        marks = ",".join("?" * len(_COLUMNS))
        try:
            if self.readonly:
                raise sqlite3.OperationalError("attempt to write a readonly database")
            with self._transaction():
                self._db.executemany(
                    f"INSERT OR REPLACE INTO evaluations ({','.join(_COLUMNS)}) VALUES ({marks})",
                    [e.row() for e in evals],
                )
                self._write_values({e.key: e.values for e in evals if e.values is not None})
        except sqlite3.DatabaseError as e:
            self._unsaved.update({ev.key: ev for ev in evals})
            self._unsaved_values.update({ev.key: ev.values for ev in evals if ev.values is not None})
            notice = f"{self._error('write', e)}; {len(self._unsaved)} new score(s) are kept in memory only, not saved"
            self.notices[:] = [n for n in self.notices if "kept in memory only, not saved" not in n] + [notice]
            return False
        return True

    def _write_values(self, values: dict[str, ExampleValues]) -> None:
        """Insert or replace per-example values (inside the caller's transaction)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO example_values (key, n, vals, wts) VALUES (?, ?, ?, ?)",
            [(k, v.n, *v.blobs()) for k, v in values.items()],
        )

    def put_values(self, values: dict[str, ExampleValues]) -> None:
        """Add per-example values to scores already cached (a backfill), in one transaction; values whose key
        has no cached score, or whose n or mean disagrees with it, are refused with a CacheError naming it."""
        rows = self.get_many(list(values))
        for key, v in values.items():
            e = rows.get(key)
            if e is None:
                raise CacheError(f"no cached score with key {key}: its per-example values have nothing to belong to")
            dataclasses.replace(e, values=v)  # checks n and the mean against the cached score
        if self.readonly:
            raise CacheError(f"cache {self.path} is read-only: cannot add per-example values")
        try:
            with self._transaction():
                self._write_values(values)
        except sqlite3.DatabaseError as e:
            raise self._error("write", e) from None

    def values(self, keys: Sequence[str]) -> dict[str, ExampleValues]:
        """The per-example values kept for ``keys`` (those that have them), one query per 500 keys; none from
        a cache older than the table."""
        keys = list(keys)
        out: dict[str, ExampleValues] = {}
        try:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                sql = f"SELECT key, vals, wts FROM example_values WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(
                    {r["key"]: ExampleValues.from_blobs(r["vals"], r["wts"]) for r in self._db.execute(sql, chunk)}
                )
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):  # a read-only cache made before per-example values: none kept
                raise self._error("read", e) from None
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None
        out.update({k: self._unsaved_values[k] for k in keys if k in self._unsaved_values})
        return out

    def export_values(self, path: Path, lab: str | None = None) -> int:
        """Write the per-example values of every row (of ``lab``) to ``path`` atomically, sorted by key:
        the file a lab commits beside its evaluations export (:data:`mixlab.values.VALUES_FILE`)."""
        keys = sorted(e.key for e in self.evaluations(lab=lab))
        values = self.values(keys)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            for k in keys:
                if k in values:
                    f.write(canonical(values[k].record(k)) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return len(values)

    def _read_records(self, path: Path, what: str, make):
        """``make(record)`` for each JSON object line of an export, in order; a line that is not one (or that
        ``make`` refuses) is skipped with a notice naming file:line and ``what`` it should have been."""
        for i, line in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise TypeError("not a JSON object")
                yield make(record)
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, CacheError) as e:
                self.notices.append(f"{path}:{i}: skipped, not {what} ({type(e).__name__}: {e})")

    def import_values(self, path: Path) -> int:
        """Insert per-example values from an export (:meth:`export_values`); values already kept stay as they
        are. A bad line is skipped with a notice naming file:line."""
        values = dict(self._read_records(path, "a per-example values record", ExampleValues.from_record))
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR IGNORE INTO example_values (key, n, vals, wts) VALUES (?, ?, ?, ?)",
                    [(k, v.n, *v.blobs()) for k, v in values.items()],
                )
        except sqlite3.DatabaseError as e:
            raise self._error("write", e) from None
        return len(values)

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *_):
                if exc_type is None:
                    db.execute("COMMIT")
                elif db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    db.execute("ROLLBACK")

        return _Tx()

    def evaluations(
        self, models: str | None = None, kind: str | None = None, lab: str | None = None
    ) -> list[Evaluation]:
        """All rows, optionally of one expert set / kind / lab, oldest first."""
        where, args = [], []
        for col, val in (("models", models), ("kind", kind), ("lab", lab)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created"
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None
        out = [Evaluation.from_row(r) for r in rows]
        extra = [
            e
            for e in self._unsaved.values()
            if all(v is None or getattr(e, c) == v for c, v in (("models", models), ("kind", kind), ("lab", lab)))
        ]
        if extra:
            keys = {e.key for e in extra}
            out = [e for e in out if e.key not in keys] + extra
        return out

    def count(self) -> int:
        try:
            return self._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise self._error("read", e) from None

    def export_jsonl(self, path: Path, lab: str | None = None) -> int:
        """Write every row (of ``lab``) to ``path`` atomically, sorted by key for stable diffs."""
        evals = sorted(self.evaluations(lab=lab), key=lambda e: e.key)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            for e in evals:
                f.write(canonical({k: getattr(e, k) for k in _COLUMNS}) + "\n")  # the stored row
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return len(evals)

    def import_jsonl(self, path: Path) -> int:
        """Insert rows from an export; rows already cached are kept as they are. A line that is not an
        evaluation record is skipped, with a notice naming file:line."""
        evals = list(self._read_records(path, "an evaluation record", lambda record: Evaluation(**record)))
        marks = ",".join("?" * len(_COLUMNS))
        try:
            with self._transaction():
                self._db.executemany(
                    f"INSERT OR IGNORE INTO evaluations ({','.join(_COLUMNS)}) VALUES ({marks})",
                    [e.row() for e in evals],
                )
        except sqlite3.DatabaseError as e:
            raise self._error("write", e) from None
        return len(evals)
