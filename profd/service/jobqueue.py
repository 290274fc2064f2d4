"""The persisted job queue (SQLite, in the same database as the results).

Every state change is one transaction, so a crash or SIGKILL at any moment loses
no queued job: on start-up, jobs left RUNNING by a dead daemon go back to the
queue. A burst of saves of one file collapses into the one queued job for it.
Lower priority numbers run first: saves (0) pre-empt tuning (5) and nightly
work (10).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Optional

from profd.model import Job, JobKind, JobState
from profd.store import Store, storage_full

log = logging.getLogger("profd.queue")

PRIORITY = {JobKind.PROFILE: 0, JobKind.TUNE: 5, JobKind.NIGHTLY: 10}


#: A job interrupted this many times (each crash of its child took the daemon down
#: with it, say) is given up rather than retried forever.
MAX_ATTEMPTS = 3


def _job(r) -> Job:  # type: ignore[no-untyped-def]
    return Job(id=r["id"], path=r["path"], kind=JobKind(r["kind"]), priority=r["priority"], state=JobState(r["state"]),
               content_hash=r["content_hash"], created_at=r["created_at"], started_at=r["started_at"],
               finished_at=r["finished_at"], attempts=r["attempts"], error=r["error"])


class JobQueue:
    """Queue operations over a Store's connection."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self._full_logged = 0.0

    def _rollback(self) -> None:
        # After SQLITE_FULL, SQLite may already have rolled back: don't mask the real error.
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass

    def enqueue(self, path: Path | str, kind: JobKind = JobKind.PROFILE, content_hash: str = "",
                priority: Optional[int] = None) -> tuple[Job, bool]:
        """Queue work on ``path``; returns (job, created). An already-queued job of
        the same kind for the same file absorbs the new request (burst → one job)."""
        path = str(Path(path).resolve())
        prio = PRIORITY[kind] if priority is None else priority
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT * FROM jobs WHERE path=? AND kind=? AND state='queued' ORDER BY id LIMIT 1",
                                  (path, kind.value)).fetchone()
            if row is not None:
                self.db.execute("UPDATE jobs SET content_hash=?, saves=saves+1, priority=MIN(priority, ?) WHERE id=?",
                                (content_hash or row["content_hash"], prio, row["id"]))
                job_id, created = row["id"], False
            else:
                cur = self.db.execute(
                    "INSERT INTO jobs (path, kind, priority, state, content_hash, created_at) VALUES (?,?,?,?,?,?)",
                    (path, kind.value, prio, JobState.QUEUED.value, content_hash, time.time()))
                job_id, created = cur.lastrowid, True
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return self.get(int(job_id)), created  # type: ignore[return-value]

    def get(self, job_id: int) -> Optional[Job]:
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def claim(self, worker: str = "local") -> Optional[Job]:
        """Atomically take the most urgent queued job and mark it running."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT * FROM jobs WHERE state='queued' ORDER BY priority, id LIMIT 1").fetchone()
            if row is None:
                self.db.execute("COMMIT")
                return None
            self.db.execute("UPDATE jobs SET state='running', started_at=?, attempts=attempts+1, worker=? WHERE id=?",
                            (time.time(), worker, row["id"]))
            self.db.execute("COMMIT")
        except BaseException as e:
            self._rollback()
            why = storage_full(e)
            if why is None:
                raise
            # The state dir is full: the job stays queued; try again on the next turn.
            if time.monotonic() - self._full_logged > 60:
                self._full_logged = time.monotonic()
                log.warning("cannot take the next job from the queue (%s): it stays queued until there is room "
                            "in %s", why, self.store.path.parent)
            return None
        return self.get(row["id"])

    def finish(self, job: Job, state: JobState = JobState.DONE, error: str = "") -> None:
        self.db.execute("UPDATE jobs SET state=?, finished_at=?, error=? WHERE id=?",
                        (state.value, time.time(), error, job.id))

    def requeue(self, job: Job, reason: str = "") -> None:
        """Put a running job back (pre-empted, or abandoned at shutdown)."""
        self.db.execute("UPDATE jobs SET state='queued', started_at=NULL, attempts=MAX(attempts-1, 0), error=? "
                        "WHERE id=?", (reason, job.id))

    def recover(self) -> list[Job]:
        """Jobs a dead daemon left running go back to the queue (or fail after MAX_ATTEMPTS)."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
        out = []
        for r in rows:
            if r["attempts"] >= MAX_ATTEMPTS:
                self.db.execute("UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=?",
                                (time.time(), f"interrupted {r['attempts']} times; giving up", r["id"]))
            else:
                self.db.execute("UPDATE jobs SET state='queued', started_at=NULL, error='interrupted; re-run' "
                                "WHERE id=?", (r["id"],))
                out.append(_job(r))
        return out

    def pending(self) -> list[Job]:
        """Queued and running jobs, most urgent first."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state IN ('queued','running') "
                               "ORDER BY state='running' DESC, priority, id").fetchall()
        return [_job(r) for r in rows]

    def urgent_waiting(self, than_priority: int) -> bool:
        """Is a more urgent job queued? Long jobs check this to yield to saves."""
        row = self.db.execute("SELECT 1 FROM jobs WHERE state='queued' AND priority < ? LIMIT 1",
                              (than_priority,)).fetchone()
        return row is not None

    def recent(self, limit: int = 20) -> list[Job]:
        rows = self.db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
