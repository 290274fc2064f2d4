"""The persisted job queue (SQLite, in the same database as the results).

Every state change is one transaction, so a crash or SIGKILL at any moment loses
no queued job: on start-up, jobs left RUNNING by a dead daemon go back to the
queue. A burst of saves of one file collapses into the one queued job for it.
Lower priority numbers run first: saves (0) pre-empt tuning (5) and nightly
work (10).
"""

from __future__ import annotations

import logging
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


class JobQueue:
    """The queue's rules (priorities, bursts, a full disk) over a Store's connection; the SQL is the Store's."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._full_logged = 0.0

    def enqueue(self, path: Path | str, kind: JobKind = JobKind.PROFILE, content_hash: str = "",
                priority: Optional[int] = None) -> tuple[Job, bool]:
        """Queue work on ``path``; returns (job, created). An already-queued job of
        the same kind for the same file absorbs the new request (burst → one job)."""
        path = str(Path(path).resolve())
        prio = PRIORITY[kind] if priority is None else priority
        job_id, created = self.store.enqueue_job(path, kind, prio, content_hash)
        return self.get(job_id), created  # type: ignore[return-value]

    def get(self, job_id: int) -> Optional[Job]:
        return self.store.job(job_id)

    def claim(self, slot: str = "local") -> Optional[Job]:
        """Atomically take the most urgent queued job and mark it running on ``slot`` (an executor slot's id)."""
        try:
            return self.store.claim_job(slot)
        except BaseException as e:
            why = storage_full(e)
            if why is None:
                raise
            # The state dir is full: the job stays queued; try again on the next turn.
            if time.monotonic() - self._full_logged > 60:
                self._full_logged = time.monotonic()
                log.warning("cannot take the next job from the queue (%s): it stays queued until there is room "
                            "in %s", why, self.store.path.parent)
            return None

    def finish(self, job: Job, state: JobState = JobState.DONE, error: str = "") -> None:
        self.store.finish_job(job.id, state, error)

    def requeue(self, job: Job, reason: str = "") -> None:
        """Put a running job back (pre-empted, or abandoned at shutdown)."""
        self.store.requeue_job(job.id, reason)

    def recover(self) -> list[Job]:
        """Jobs a dead daemon left running go back to the queue (or fail after MAX_ATTEMPTS)."""
        return self.store.recover_jobs(MAX_ATTEMPTS)

    def pending(self) -> list[Job]:
        """Queued and running jobs, most urgent first."""
        return self.store.open_jobs()

    def urgent_waiting(self, than_priority: int) -> bool:
        """Is a more urgent job queued? Long jobs check this to yield to saves."""
        return self.store.job_queued_before(than_priority)

    def recent(self, limit: int = 20) -> list[Job]:
        return self.store.recent_jobs(limit)

    def counts(self) -> dict[str, int]:
        return self.store.job_counts()
