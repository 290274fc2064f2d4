"""What the daemon does with one job: the steps of a save, reported as they finish."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from profd.service.executors.base import SlotLost
from profd.service.jobqueue import JobQueue
from profd.model import Job, JobKind, JobState
from profd.flow.profile import Cancelled, ProfileResult, profile
from profd.store import Store, has_room, storage_full

log = logging.getLogger("profd.service.jobs")


class Worker:
    """Runs jobs for one executor slot, one at a time, on that slot's thread.

    ``daemon`` is the daemon as the slot sees it (``profd.service.daemon.SlotView``: the
    slot's runner and stop flag); ``store``/``queue`` are the slot's own connection."""

    def __init__(self, daemon: Any, store: Store, queue: JobQueue, has_gpu: bool) -> None:
        self.daemon = daemon
        self.store = store
        self.queue = queue
        self.has_gpu = has_gpu

    def _stopping(self) -> bool:
        """Is the whole daemon stopping (rather than this one job cancelled)?"""
        return getattr(self.daemon, "daemon_stop_requested", self.daemon.stop_requested).is_set()

    def process(self, job: Job) -> None:
        """Run ``job``; every outcome ends in finish() or requeue(), never in an exception."""
        path = Path(job.path)
        if not path.exists():
            self.queue.finish(job, JobState.DONE, "the file no longer exists (deleted or renamed before its turn)")
            self.daemon.say(f"skipped job {job.id}: {path.name} was deleted or renamed")
            return
        from profd.harness.recognise import NotATarget

        try:
            if job.kind == JobKind.PROFILE:
                self._profile(job, path)
            elif job.kind == JobKind.TUNE:
                self._tune(job, path)
            elif job.kind == JobKind.NIGHTLY:
                from profd.flow.nightly import nightly_job

                nightly_job(self, job, path)
        except NotATarget as e:  # a helper module beside the kernels: nothing to measure, nothing stored
            self.queue.finish(job, JobState.DONE, "not a kernel target")
            self.daemon.event("skipped", f"skipped {path.name}: {str(e).split('. ')[0]}", path=str(path), job=job.id,
                              reason=str(e))
        except Cancelled:
            if self._stopping():
                self.queue.requeue(job, "abandoned at shutdown; will re-run")
                self.daemon.say(f"job {job.id} ({path.name}) abandoned at shutdown; it will re-run on restart")
            else:  # this one job was cancelled (Executor.cancel), the daemon goes on
                self.queue.requeue(job, "cancelled; will re-run")
                self.daemon.say(f"job {job.id} ({path.name}) cancelled; it goes back to the queue")
        except SlotLost as e:  # the GPU's host went away (a Ray node): not the target's fault
            self.queue.requeue(job, f"{e}; will re-run")
            self.daemon.say(f"job {job.id} ({path.name}) lost its worker ({e}); it goes back to the queue")
        except Exception as e:  # profd's own bug: keep the daemon alive, keep the job's record
            why = storage_full(e)
            if why is not None:  # the state dir is full: not a bug, and not the job's fault
                self._wait_for_room(job, path, why)
                return
            log.exception("job %s failed inside profd", job.id)
            self.queue.finish(job, JobState.FAILED, f"{type(e).__name__}: {e}")
            self.daemon.say(f"job {job.id} ({path.name}) failed inside profd: {type(e).__name__}: {e}")

    def _wait_for_room(self, job: Job, path: Path, why: str) -> None:
        """Keep a job whose result could not be stored: it re-runs once the state dir has room."""
        where = self.store.path.parent
        self.daemon.say(f"job {job.id} ({path.name}): cannot store its result: {why}. The state directory {where} "
                        "is full: free space there (or point PROFD_STATE_DIR elsewhere); the job is kept and "
                        "re-runs as soon as there is room.")
        delay = 1.0
        while not self.daemon.stop_requested.is_set():
            if has_room(where):
                try:
                    self.queue.requeue(job, f"the state directory was full ({why}); re-run")
                    self.daemon.say(f"job {job.id} ({path.name}): the state directory has room again; re-running it")
                    return
                except Exception as e:
                    if storage_full(e) is None:
                        raise
            end = time.monotonic() + delay
            while time.monotonic() < end and not self.daemon.stop_requested.is_set():
                time.sleep(0.1)
            delay = min(delay * 2, 30.0)
        try:
            self.queue.requeue(job, "abandoned at shutdown while the state directory was full; will re-run")
        except Exception:
            pass  # still 'running' in the store: the next start re-queues it (JobQueue.recover)

    def _profile(self, job: Job, path: Path) -> None:
        cfg = self.daemon.cfg.run

        def on_step(step: str, res: ProfileResult) -> None:
            if step == "verdict":
                gone = "" if path.exists() or not res.measurement.content_hash else (
                    f" ({path.name} was deleted or renamed while it was measured: this is the result for the "
                    "content it had when the run started)")
                m = res.measurement
                t = m.timing
                self.daemon.event("verdict", quick_line(res) + gone, path=str(path), job=job.id, run_id=res.run_id,
                                  status=m.verdict.status.value, correct=m.correct, line=m.verdict.line,
                                  message=m.verdict.message, median_ms=t.median_ms if t else None,
                                  spread_pct=t.spread_pct if t else None,
                                  device=m.device.name if m.device else None)
            elif step == "report" and res.counters is not None:
                self.daemon.event("report", res.report, path=str(path), job=job.id, run_id=res.run_id)

        res = profile(path, self.store, counters=cfg.counters and self.has_gpu, full_set=cfg.full_set,
                      timeout_s=cfg.timeout_s, force_cpu=cfg.force_cpu, runner=self.daemon.runner,
                      cancelled=self.daemon.stop_requested.is_set, on_step=on_step)
        self.queue.finish(job, JobState.DONE, "" if res.measurement.correct else res.measurement.verdict.status.value)
        if cfg.auto_tune_budget > 0 and res.measurement.correct:
            self.queue.enqueue(path, JobKind.TUNE, res.measurement.content_hash)

    def _tune(self, job: Job, path: Path) -> None:
        from profd.flow.tune import tune_job

        tune_job(self, job, path)


def quick_line(res: ProfileResult) -> str:
    """One line: correct? how fast vs last and best?"""
    m = res.measurement
    name = Path(m.target).name
    if not m.correct:
        where = f" line {m.verdict.line}:" if m.verdict.line else ""
        return f"✗ {name}: {m.verdict.status.value} —{where} {m.verdict.message}"
    t = m.timing
    if t is None:
        return f"✓ {name}: correct"
    parts = [f"✓ {name}: correct, {t.median_ms:.4g} ms (±{t.spread_pct:.1f}%)"]
    if t.tflops and t.representative:
        parts.append(f"{t.tflops:.1f} TFLOP/s")
    if t.gbps and t.representative:
        parts.append(f"{t.gbps:.1f} GB/s")
    for label, rec in (("last", res.previous), ("best", res.best)):
        if rec and rec.median_ms:
            parts.append(f"{rec.median_ms / t.median_ms:.2f}× vs {label}")
    if not t.representative:
        parts.append("CPU interpreter: time not representative")
    return ", ".join(parts)
