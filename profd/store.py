"""The SQLite store: every run, candidate and job profd has seen.

One database per state directory, WAL mode so the CLI can read while the daemon
writes, file mode 0600. Rows keep the headline numbers as columns (for history
and trends) and the full value as JSON (so nothing measured is lost).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from profd.model import Job, JobKind, JobState, Measurement
from profd.paths import state_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL,
    device TEXT,
    status TEXT NOT NULL,
    correct INTEGER NOT NULL,
    median_ms REAL,
    spread_pct REAL,
    tflops REAL,
    gbps REAL,
    representative INTEGER,
    message TEXT,
    measurement TEXT NOT NULL,
    report TEXT,
    findings TEXT
);
CREATE INDEX IF NOT EXISTS runs_target ON runs(target, started_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS tune_sessions (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    base_hash TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    device TEXT,
    budget INTEGER,
    evaluated INTEGER NOT NULL DEFAULT 0,
    baseline_ms REAL,
    best_ms REAL,
    best_candidate TEXT,
    stopped TEXT,
    kind TEXT NOT NULL DEFAULT 'tune'
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    advisor TEXT NOT NULL,
    rationale TEXT,
    params TEXT,
    source_path TEXT,
    diff TEXT,
    accepted INTEGER NOT NULL,
    reason TEXT,
    status TEXT,
    median_ms REAL,
    spread_pct REAL,
    speedup REAL,
    created_at REAL NOT NULL,
    llm TEXT
);
CREATE INDEX IF NOT EXISTS candidates_session ON candidates(session_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    content_hash TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    worker TEXT NOT NULL DEFAULT '',
    saves INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, priority, id);
"""


@dataclass
class RunRecord:
    """One stored run, as history shows it."""

    id: int
    target: str
    content_hash: str
    kind: str
    started_at: float
    device: Optional[str]
    status: str
    correct: bool
    median_ms: Optional[float]
    spread_pct: Optional[float]
    tflops: Optional[float]
    gbps: Optional[float]
    representative: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_RUN_COLS = ("id, target, content_hash, kind, started_at, device, status, correct, median_ms, spread_pct, "
             "tflops, gbps, representative, message")


class Store:
    """A connection to profd's database; safe to open from several processes."""

    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = Path(path) if path else state_dir() / "profd.db"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = not self.path.exists()
        if new:
            # Create it user-only before SQLite opens it: it holds source and reports.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Connections may be handed to the watcher thread; sqlite3 is built serialized.
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        for extra in _EXTENSIONS:
            self.db.executescript(extra)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def record_run(self, m: Measurement, kind: str = "profile", report: Optional[str] = None,
                   findings: Optional[Any] = None) -> int:
        """Store one measurement (and its report/findings); returns the row id."""
        t = m.timing
        cur = self.db.execute(
            "INSERT INTO runs (target, content_hash, kind, started_at, device, status, correct, median_ms, "
            "spread_pct, tflops, gbps, representative, message, measurement, report, findings) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (str(Path(m.target).resolve()), m.content_hash, kind, m.started_at or time.time(),
             m.device.name if m.device else None, m.verdict.status.value, int(m.correct),
             t.median_ms if t else None, t.spread_pct if t else None, t.tflops if t else None,
             t.gbps if t else None, int(bool(t and t.representative)), m.verdict.message, m.to_json(),
             report, json.dumps(findings) if findings is not None else None),
        )
        return int(cur.lastrowid)

    def attach_report(self, run_id: int, report: str, findings: Any = None) -> None:
        """Add the report (and structured findings) to a stored run once diagnosis is done."""
        self.db.execute("UPDATE runs SET report=?, findings=? WHERE id=?",
                        (report, json.dumps(findings) if findings is not None else None, run_id))

    def history(self, target: Path | str, limit: int = 50) -> list[RunRecord]:
        """The target's runs, newest first."""
        rows = self.db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE target=? ORDER BY started_at DESC, id DESC LIMIT ?",
                               (str(Path(target).resolve()), limit)).fetchall()
        return [_record(r) for r in rows]

    def previous(self, target: Path | str, before_id: int, device: Optional[str]) -> Optional[RunRecord]:
        """The last correct, timed run of this target on this device before ``before_id``."""
        row = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE target=? AND id<? AND correct=1 AND median_ms IS NOT NULL "
            "AND device IS ? ORDER BY id DESC LIMIT 1", (str(Path(target).resolve()), before_id, device)).fetchone()
        return _record(row) if row else None

    def best(self, target: Path | str, device: Optional[str], before_id: Optional[int] = None) -> Optional[RunRecord]:
        """The fastest correct run of this target on this device."""
        row = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE target=? AND correct=1 AND median_ms IS NOT NULL AND device IS ? "
            "AND id < ? ORDER BY median_ms ASC LIMIT 1",
            (str(Path(target).resolve()), device, before_id if before_id is not None else 2**62)).fetchone()
        return _record(row) if row else None

    def run(self, run_id: int) -> Optional[dict[str, Any]]:
        """A full stored run: columns plus the measurement, report and findings."""
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["measurement"] = json.loads(d["measurement"])
        d["findings"] = json.loads(d["findings"]) if d["findings"] else None
        return d

    def latest_profile(self, target: Path | str, content_hash: str, since: float) -> Optional[dict[str, Any]]:
        """The newest diagnosed profile run (``run``'s full form) of exactly this content since ``since``."""
        row = self.db.execute(
            "SELECT id FROM runs WHERE target=? AND content_hash=? AND kind='profile' AND started_at>=? "
            "AND report IS NOT NULL ORDER BY id DESC LIMIT 1",
            (str(Path(target).resolve()), content_hash, since)).fetchone()
        return self.run(int(row[0])) if row else None

    def targets(self) -> list[str]:
        """Every target with at least one stored run."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT target FROM runs ORDER BY target")]

    def tune_cache_get(self, source_digest: str, device: str, shape_key: str) -> Optional[tuple[Optional[float], str]]:
        """(median ms, verdict) measured earlier for this exact source on this device and shape."""
        row = self.db.execute("SELECT median_ms, verdict FROM tune_cache WHERE source_digest=? AND device=? "
                              "AND shape_key=?", (source_digest, device, shape_key)).fetchone()
        return None if row is None else (row["median_ms"], row["verdict"])

    def tune_cache_put(self, source_digest: str, device: str, shape_key: str, median_ms: Optional[float],
                       verdict: str) -> None:
        """Remember a candidate's outcome ("accepted", "slower", or a failure status like "wrong")."""
        self.db.execute("INSERT OR REPLACE INTO tune_cache (source_digest, device, shape_key, median_ms, verdict, "
                        "at) VALUES (?, ?, ?, ?, ?, ?)", (source_digest, device, shape_key, median_ms, verdict,
                                                         time.time()))

    def tune_cache(self, device: str, shape_key: str) -> "TuneCacheView":
        """The cache bound to one device and shape: what ``TuneContext.cache`` takes."""
        return TuneCacheView(self, device, shape_key)

    def iter_runs(self) -> Iterator[RunRecord]:
        for r in self.db.execute(f"SELECT {_RUN_COLS} FROM runs ORDER BY id"):
            yield _record(r)

    # ------------------------------------------------------------------ queries of the service and nightly

    def count_runs(self) -> int:
        """How many runs are stored (``profd doctor``'s read check)."""
        return int(self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def last_correct_run(self, target: Path | str, device: Optional[str], before: float) -> Optional[RunRecord]:
        """The latest correct, timed run of ``target`` on ``device`` that started before ``before``."""
        r = self.db.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE target=? AND device IS ? AND correct=1 AND median_ms IS NOT NULL "
            "AND started_at < ? ORDER BY started_at DESC LIMIT 1", (str(target), device, before)).fetchone()
        return _record(r) if r else None

    def kept_candidate(self, target: Path | str) -> Optional[dict[str, Any]]:
        """The best accepted candidate of the latest tuning session of ``target``: id, source path, median."""
        r = self.db.execute(
            "SELECT c.candidate_id, c.source_path, c.median_ms FROM tune_sessions s JOIN candidates c "
            "ON c.session_id = s.id AND c.candidate_id = s.best_candidate WHERE s.target=? AND c.accepted=1 "
            "ORDER BY s.id DESC LIMIT 1", (str(target),)).fetchone()
        return dict(r) if r else None

    def last_digest(self, path: Path | str) -> Optional[str]:
        """The content hash profd last saw for ``path`` (its latest job, else its latest run)."""
        r = self.db.execute("SELECT content_hash FROM jobs WHERE path=? AND content_hash != '' "
                            "ORDER BY id DESC LIMIT 1", (str(path),)).fetchone()
        if r is None:
            r = self.db.execute("SELECT content_hash FROM runs WHERE target=? ORDER BY id DESC LIMIT 1",
                                (str(path),)).fetchone()
        return r[0] if r else None

    # ------------------------------------------------------------------ jobs (profd.service.jobqueue)

    def _rollback(self) -> None:
        # After SQLITE_FULL, SQLite may already have rolled back: don't mask the real error.
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass

    def enqueue_job(self, path: str, kind: JobKind, priority: int, content_hash: str) -> tuple[int, bool]:
        """One transaction: a queued job of ``kind`` for ``path`` absorbs the request (its hash is updated, its
        priority raised), else a new job is queued. Returns (job id, created)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT * FROM jobs WHERE path=? AND kind=? AND state='queued' ORDER BY id LIMIT 1",
                                  (path, kind.value)).fetchone()
            if row is not None:
                self.db.execute("UPDATE jobs SET content_hash=?, saves=saves+1, priority=MIN(priority, ?) WHERE id=?",
                                (content_hash or row["content_hash"], priority, row["id"]))
                job_id, created = row["id"], False
            else:
                cur = self.db.execute(
                    "INSERT INTO jobs (path, kind, priority, state, content_hash, created_at) VALUES (?,?,?,?,?,?)",
                    (path, kind.value, priority, JobState.QUEUED.value, content_hash, time.time()))
                job_id, created = cur.lastrowid, True
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return int(job_id), created

    def job(self, job_id: int) -> Optional[Job]:
        """The job with this id, or None."""
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def claim_job(self, slot: str) -> Optional[Job]:
        """One transaction: the most urgent queued job, marked running on ``slot`` (None when none is queued).
        Errors (a full disk) roll back and propagate."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY priority, id LIMIT 1").fetchone()
            if row is None:
                self.db.execute("COMMIT")
                return None
            # The column is called worker for older databases; it holds the slot id.
            self.db.execute("UPDATE jobs SET state='running', started_at=?, attempts=attempts+1, worker=? WHERE id=?",
                            (time.time(), slot, row["id"]))
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return self.job(row["id"])

    def finish_job(self, job_id: int, state: JobState, error: str = "") -> None:
        """A job ended (done or failed), with why when it is worth saying."""
        self.db.execute("UPDATE jobs SET state=?, finished_at=?, error=? WHERE id=?",
                        (state.value, time.time(), error, job_id))

    def requeue_job(self, job_id: int, reason: str = "") -> None:
        """A running job goes back to the queue; the interrupted try does not count as an attempt."""
        self.db.execute("UPDATE jobs SET state='queued', started_at=NULL, attempts=MAX(attempts-1, 0), error=? "
                        "WHERE id=?", (reason, job_id))

    def recover_jobs(self, max_attempts: int) -> list[Job]:
        """Jobs a dead daemon left running: back to the queue (returned), or failed after ``max_attempts``."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
        out = []
        for r in rows:
            if r["attempts"] >= max_attempts:
                self.db.execute("UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=?",
                                (time.time(), f"interrupted {r['attempts']} times; giving up", r["id"]))
            else:
                self.db.execute("UPDATE jobs SET state='queued', started_at=NULL, error='interrupted; re-run' "
                                "WHERE id=?", (r["id"],))
                out.append(_job(r))
        return out

    def open_jobs(self) -> list[Job]:
        """Queued and running jobs, running first, then most urgent."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state IN ('queued','running') "
                               "ORDER BY state='running' DESC, priority, id").fetchall()
        return [_job(r) for r in rows]

    def job_queued_before(self, priority: int) -> bool:
        """Is a job more urgent than ``priority`` (a lower number) queued?"""
        return self.db.execute("SELECT 1 FROM jobs WHERE state='queued' AND priority < ? LIMIT 1",
                               (priority,)).fetchone() is not None

    def recent_jobs(self, limit: int = 20) -> list[Job]:
        """The ``limit`` latest jobs, newest first."""
        rows = self.db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def job_counts(self) -> dict[str, int]:
        """Jobs per state."""
        return {r[0]: r[1] for r in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def job_slots(self, recent: int = 10) -> dict[int, str]:
        """Job id -> the executor slot that claimed it, for open jobs and the ``recent`` latest."""
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT id, worker FROM jobs WHERE state IN ('queued','running') OR id IN "
            "(SELECT id FROM jobs ORDER BY id DESC LIMIT ?)", (recent,))}

    # ------------------------------------------------------------------ tuning sessions

    def open_tune_session(self, target: str, base_hash: str, started_at: float, device: Optional[str],
                          budget: int, baseline_ms: Optional[float], kind: str = "tune") -> int:
        """Start a tuning session's row; returns its id."""
        cur = self.db.execute(
            "INSERT INTO tune_sessions (target, base_hash, started_at, device, budget, baseline_ms, kind) "
            "VALUES (?,?,?,?,?,?,?)", (target, base_hash, started_at, device, budget, baseline_ms, kind))
        return int(cur.lastrowid)

    def record_candidate(self, session_id: int, target: str, candidate_id: str, *, advisor: str, rationale: str,
                         params: str, source_path: str, diff: str, accepted: bool, reason: str,
                         status: Optional[str], median_ms: Optional[float], spread_pct: Optional[float],
                         speedup: Optional[float], llm: Optional[str] = None) -> int:
        """One evaluated candidate of a session (``params``/``llm`` are JSON text)."""
        cur = self.db.execute(
            "INSERT INTO candidates (session_id, target, candidate_id, advisor, rationale, params, source_path, "
            "diff, accepted, reason, status, median_ms, spread_pct, speedup, created_at, llm) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (session_id, target, candidate_id, advisor, rationale, params, source_path, diff, int(accepted), reason,
             status, median_ms, spread_pct, speedup, time.time(), llm))
        return int(cur.lastrowid)

    def update_tune_session(self, session_id: int, *, evaluated: int, best_ms: Optional[float],
                            best_candidate: Optional[str]) -> None:
        """The best so far of a running session (``profd apply`` can use it before the session ends)."""
        self.db.execute("UPDATE tune_sessions SET evaluated=?, best_ms=?, best_candidate=? WHERE id=?",
                        (evaluated, best_ms, best_candidate, session_id))

    def close_tune_session(self, session_id: int, *, evaluated: int, best_ms: Optional[float],
                           best_candidate: Optional[str], stopped: str) -> None:
        """End a session: what it evaluated, its best, and why it stopped."""
        self.db.execute("UPDATE tune_sessions SET finished_at=?, evaluated=?, best_ms=?, best_candidate=?, stopped=? "
                        "WHERE id=?", (time.time(), evaluated, best_ms, best_candidate, stopped, session_id))

    def tune_session(self, session_id: int) -> Optional[dict[str, Any]]:
        """A session's row as a dict (None if unknown)."""
        row = self.db.execute("SELECT * FROM tune_sessions WHERE id=?", (session_id,)).fetchone()
        return dict(row) if row else None

    def kept_session(self, target: Path | str, session_id: Optional[int] = None) -> Optional[dict[str, Any]]:
        """The latest (or the given) tuning session of ``target`` that kept a candidate, as a dict."""
        q = ("SELECT * FROM tune_sessions WHERE target=? AND best_candidate IS NOT NULL "
             + ("AND id=? " if session_id else "") + "ORDER BY id DESC LIMIT 1")
        row = self.db.execute(q, (str(target), session_id) if session_id else (str(target),)).fetchone()
        return dict(row) if row else None

    def accepted_candidate(self, session_id: int, candidate_id: str) -> Optional[dict[str, Any]]:
        """The row of an accepted candidate of a session, as a dict (None if it was not accepted)."""
        row = self.db.execute("SELECT * FROM candidates WHERE session_id=? AND candidate_id=? AND accepted=1",
                              (session_id, candidate_id)).fetchone()
        return dict(row) if row else None

    def first_run_since(self, target: Path | str, device: Optional[str], since: float) -> Optional[RunRecord]:
        """The first run of ``target`` on ``device`` that started at or after ``since``."""
        row = self.db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE target=? AND device IS ? AND started_at >= ? "
                              "ORDER BY started_at LIMIT 1", (str(target), device, since)).fetchone()
        return _record(row) if row else None


def _job(r: sqlite3.Row) -> Job:
    return Job(id=r["id"], path=r["path"], kind=JobKind(r["kind"]), priority=r["priority"], state=JobState(r["state"]),
               content_hash=r["content_hash"], created_at=r["created_at"], started_at=r["started_at"],
               finished_at=r["finished_at"], attempts=r["attempts"], error=r["error"])


def _record(r: sqlite3.Row) -> RunRecord:
    return RunRecord(id=r["id"], target=r["target"], content_hash=r["content_hash"], kind=r["kind"],
                     started_at=r["started_at"], device=r["device"], status=r["status"], correct=bool(r["correct"]),
                     median_ms=r["median_ms"], spread_pct=r["spread_pct"], tflops=r["tflops"], gbps=r["gbps"],
                     representative=bool(r["representative"]), message=r["message"] or "")


def storage_full(exc: BaseException) -> Optional[str]:
    """The reason, when ``exc`` means the state directory is full (SQLite or the file system)."""
    if isinstance(exc, sqlite3.OperationalError) and any(
            s in str(exc).lower() for s in ("database or disk is full", "disk i/o error")):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{os.strerror(exc.errno)}" + (f": {exc.filename}" if exc.filename else "")
    return None


def has_room(directory: Path, nbytes: int = 256 << 10) -> bool:
    """Can ``nbytes`` be written (and synced) in ``directory`` right now? A real write, not statvfs:
    quotas and reserved blocks count too."""
    probe = Path(directory) / f".profd-room-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            left = memoryview(bytes(nbytes))
            while left:
                left = left[os.write(fd, left):]
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


#: Schema pieces other modules register (jobs, candidates) so the store stays one file.
_EXTENSIONS: list[str] = []


def register_schema(sql: str) -> None:
    """Add tables owned by another module (the job queue, tuning) to every Store."""
    if sql not in _EXTENSIONS:
        _EXTENSIONS.append(sql)


register_schema("""
CREATE TABLE IF NOT EXISTS tune_cache (
    source_digest TEXT NOT NULL,
    device TEXT NOT NULL,
    shape_key TEXT NOT NULL,
    median_ms REAL,
    verdict TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (source_digest, device, shape_key)
);
""")


@dataclass
class TuneCacheView:
    """``Store.tune_cache(device, shape)``: get/put by source digest (advisors.base.source_digest)."""

    store: Store
    device: str
    shape_key: str

    def get(self, source_digest: str) -> Optional[tuple[Optional[float], str]]:
        return self.store.tune_cache_get(source_digest, self.device, self.shape_key)

    def put(self, source_digest: str, median_ms: Optional[float], verdict: str) -> None:
        self.store.tune_cache_put(source_digest, self.device, self.shape_key, median_ms, verdict)
