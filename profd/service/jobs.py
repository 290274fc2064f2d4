"""What the daemon does with one job: one handler per job kind, each given a typed JobContext.

``run_job(ctx, job)`` is what a slot runs; it looks the job's kind up in ``HANDLERS`` and
turns every outcome (done, not a target, cancelled, slot lost, profd's own bug, a full
state directory) into ``finish()`` or ``requeue()``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from profd.flow.profile import Cancelled, ProfileResult, profile
from profd.model import Job, JobKind, JobState
from profd.service.context import JobContext
from profd.service.executors.base import SlotLost
from profd.store import has_room, storage_full

log = logging.getLogger("profd.service.jobs")


#: A job handler: ``handler(ctx, job)`` runs one job of its kind on the slot ``ctx`` describes and
#: ends it with ``ctx.queue.finish`` or ``ctx.queue.requeue``; it may raise (run_job sorts that out).
Handler = Callable[[JobContext, Job], None]


def profile_job(ctx: JobContext, job: Job) -> None:
    """A PROFILE job (a save): verify, time, (counters), diagnose; queue a TUNE job when so configured."""
    path = Path(job.path)
    cfg = ctx.config.run

    def on_step(step: str, res: ProfileResult) -> None:
        if step == "verdict":
            gone = "" if path.exists() or not res.measurement.content_hash else (
                f" ({path.name} was deleted or renamed while it was measured: this is the result for the "
                "content it had when the run started)")
            m = res.measurement
            t = m.timing
            ctx.event("verdict", quick_line(res) + gone, path=str(path), job=job.id, run_id=res.run_id,
                      status=m.verdict.status.value, correct=m.correct, line=m.verdict.line,
                      message=m.verdict.message, median_ms=t.median_ms if t else None,
                      spread_pct=t.spread_pct if t else None,
                      device=m.device.name if m.device else None)
        elif step == "report" and res.counters is not None:
            ctx.event("report", res.report, path=str(path), job=job.id, run_id=res.run_id)

    res = profile(path, ctx.store, counters=cfg.counters and ctx.has_gpu, full_set=cfg.full_set,
                  timeout_s=cfg.timeout_s, force_cpu=cfg.force_cpu, runner=ctx.runner,
                  cancelled=ctx.stop_requested, gpu_index=ctx.gpu_index, on_step=on_step)
    ctx.recent_profiles[str(path.resolve())] = res
    ctx.queue.finish(job, JobState.DONE, "" if res.measurement.correct else res.measurement.verdict.status.value)
    if cfg.auto_tune_budget > 0 and res.measurement.correct:
        ctx.queue.enqueue(path, JobKind.TUNE, res.measurement.content_hash)


def _tune(ctx: JobContext, job: Job) -> None:
    from profd.flow.tune import tune_job  # the tune loop (and its advisors) load on the first TUNE job

    tune_job(ctx, job)


def _nightly(ctx: JobContext, job: Job) -> None:
    from profd.flow.nightly import nightly_job

    nightly_job(ctx, job)


#: One handler per job kind (rq style).
HANDLERS: dict[JobKind, Handler] = {JobKind.PROFILE: profile_job, JobKind.TUNE: _tune, JobKind.NIGHTLY: _nightly}


def run_job(ctx: JobContext, job: Job) -> None:
    """Run ``job`` through its kind's handler; every outcome ends in finish() or requeue(), never in an exception."""
    path = Path(job.path)
    if not path.exists():
        ctx.queue.finish(job, JobState.DONE, "the file no longer exists (deleted or renamed before its turn)")
        ctx.say(f"skipped job {job.id}: {path.name} was deleted or renamed")
        return
    from profd.harness.recognise import NotATarget

    try:
        HANDLERS[job.kind](ctx, job)
    except NotATarget as e:  # a helper module beside the kernels: nothing to measure, nothing stored
        ctx.queue.finish(job, JobState.DONE, "not a kernel target")
        ctx.event("skipped", f"skipped {path.name}: {str(e).split('. ')[0]}", path=str(path), job=job.id,
                  reason=str(e))
    except Cancelled:
        if ctx.daemon_stopping():
            ctx.queue.requeue(job, "abandoned at shutdown; will re-run")
            ctx.say(f"job {job.id} ({path.name}) abandoned at shutdown; it will re-run on restart")
        else:  # this one job was cancelled (Executor.cancel), the daemon goes on
            ctx.queue.requeue(job, "cancelled; will re-run")
            ctx.say(f"job {job.id} ({path.name}) cancelled; it goes back to the queue")
    except SlotLost as e:  # the GPU's host went away (a Ray node): not the target's fault
        ctx.queue.requeue(job, f"{e}; will re-run")
        ctx.say(f"job {job.id} ({path.name}) lost its slot ({e}); it goes back to the queue")
    except Exception as e:  # profd's own bug: keep the daemon alive, keep the job's record
        why = storage_full(e)
        if why is not None:  # the state dir is full: not a bug, and not the job's fault
            _wait_for_room(ctx, job, path, why)
            return
        log.exception("job %s failed inside profd", job.id)
        ctx.queue.finish(job, JobState.FAILED, f"{type(e).__name__}: {e}")
        ctx.say(f"job {job.id} ({path.name}) failed inside profd: {type(e).__name__}: {e}")


def _wait_for_room(ctx: JobContext, job: Job, path: Path, why: str) -> None:
    """Keep a job whose result could not be stored: it re-runs once the state dir has room."""
    where = ctx.store.path.parent
    ctx.say(f"job {job.id} ({path.name}): cannot store its result: {why}. The state directory {where} "
            "is full: free space there (or point PROFD_STATE_DIR elsewhere); the job is kept and "
            "re-runs as soon as there is room.")
    delay = 1.0
    while not ctx.stop_requested():
        if has_room(where):
            try:
                ctx.queue.requeue(job, f"the state directory was full ({why}); re-run")
                ctx.say(f"job {job.id} ({path.name}): the state directory has room again; re-running it")
                return
            except Exception as e:
                if storage_full(e) is None:
                    raise
        end = time.monotonic() + delay
        while time.monotonic() < end and not ctx.stop_requested():
            time.sleep(0.1)
        delay = min(delay * 2, 30.0)
    try:
        ctx.queue.requeue(job, "abandoned at shutdown while the state directory was full; will re-run")
    except Exception:
        pass  # still 'running' in the store: the next start re-queues it (JobQueue.recover)


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
