"""The nightly run: re-check every target, look for drift, tune deeper, report, mail.

Per target: re-verify and re-time the current source; re-measure the best
candidate kept by the last tuning session (a driver, CUDA, Triton or code change
can make yesterday's winner wrong or slow: that drift is reported); then tune
with the nightly budget. With a daemon running, ``profd nightly`` queues one
low-priority NIGHTLY job per target (saves pre-empt them) and the daemon writes
the report when the last one finishes; without a daemon it all runs inline.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from profd.harness import runner as harness
from profd.config import Config
from profd.model import Candidate
from profd.report.nightly import (FindingLine, NightlyReport, ReadyCandidate, RooflinePoint, TargetSummary, TimeAt,
                                  save)
from profd.paths import write_private
from profd.store import RunRecord, Store
from profd.service.watcher import is_editor_temp

DAY = 24 * 3600.0


def targets_of(cfg: Config, store: Store) -> list[Path]:
    """Every kernel file under the watched directories, else every target with history."""
    from profd.harness.recognise import not_a_target_reason

    found: list[Path] = []
    for d in cfg.watch.dirs:
        for root, dirs, files in os.walk(d):
            dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
            for f in sorted(files):
                if not is_editor_temp(f) and any(fnmatch.fnmatch(f, p) for p in cfg.watch.patterns) \
                        and not_a_target_reason(Path(root, f)) is None:  # helper modules are not targets
                    found.append(Path(root, f).resolve())
    if not found:
        found = [Path(t) for t in store.targets() if Path(t).exists()]
    return sorted(dict.fromkeys(found))


@dataclass
class TargetNight:
    """What one target's nightly pass produced (input to the report)."""

    path: Path
    summary: TargetSummary
    notes: list[str] = field(default_factory=list)


def _yesterday(store: Store, path: Path, device: Optional[str], before: float) -> Optional[RunRecord]:
    # A run a day old; without one, the last one before tonight's.
    return store.last_correct_run(path, device, before - 12 * 3600) or store.last_correct_run(path, device, before)


def _drift(store: Store, path: Path, runner: Optional[harness.Runner], timeout_s: float,
           force_cpu: bool) -> Optional[str]:
    """Re-measure the last kept candidate; say so when it no longer holds."""
    from profd.flow.tune import _measure_source

    row = store.kept_candidate(path)
    if row is None or not Path(row["source_path"]).exists():
        return None
    cand = Candidate(id=row["candidate_id"], source=Path(row["source_path"]).read_text(), advisor="recheck",
                     rationale="nightly drift check")
    m = _measure_source(path, cand, runner=runner, timeout_s=timeout_s, force_cpu=force_cpu)
    if not m.correct:
        return (f"drift: the kept candidate {row['candidate_id']} is no longer correct "
                f"({m.verdict.status.value}: {m.verdict.message[:160]}); do not apply it")
    if m.timing and row["median_ms"] and m.timing.representative:
        change = 100.0 * (m.timing.median_ms - row["median_ms"]) / row["median_ms"]
        if change > max(m.timing.spread_pct, 3.0):
            return (f"drift: the kept candidate {row['candidate_id']} now takes {m.timing.median_ms:.4g} ms, "
                    f"{change:+.0f}% vs {row['median_ms']:.4g} ms when it was kept")
    return None


class SayLines:
    """A text stream that hands each complete line to ``say``, prefixed (for ``tune``'s Progress).

    The nightly's progress goes through ``say`` (stderr for ``profd nightly``, the daemon's log
    under systemd) from several executor slots at once, so it is one whole line per candidate,
    never a redrawn bar: a bar (rich, tqdm, or Progress on a terminal) garbles as soon as two
    targets tune in parallel, and a journal keeps every redraw.
    """

    def __init__(self, say: Callable[[str], None], prefix: str) -> None:
        self.say, self.prefix, self._buf = say, prefix, ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.strip():
                self.say(self.prefix + line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def night_for(path: Path, store: Store, cfg: Config, *, has_gpu: bool, runner: Optional[harness.Runner] = None,
              should_stop: Callable[[], bool] = lambda: False, started: Optional[float] = None,
              say: Callable[[str], None] = lambda s: None, gpu_index: Optional[int] = None) -> TargetNight:
    """One target's nightly pass: re-check, drift, tune; returns its summary.

    ``say`` gets a line per step and per candidate tried, so a long tuning pass is never silent.
    """
    from profd.flow.profile import profile
    from profd.flow.tune import Progress, build_advisors, tune

    started = started or time.time()
    notes: list[str] = []
    t0 = time.time()
    say(f"nightly: {path.name}: verifying and timing")
    res = profile(path, store, counters=cfg.run.counters and has_gpu, timeout_s=cfg.run.timeout_s,
                  force_cpu=cfg.run.force_cpu, runner=runner, gpu_index=gpu_index)
    m = res.measurement
    device = m.device.name if m.device else None
    say(f"nightly: {path.name}: " + (f"correct, {m.timing.median_ms:.4g} ms" if m.correct and m.timing else
                                      f"{m.verdict.status.value}") + f" ({time.time() - t0:.1f} s)")
    drift = None
    if m.correct:
        say(f"nightly: {path.name}: re-checking the last kept candidate, if any")
        drift = _drift(store, path, runner, cfg.run.timeout_s, cfg.run.force_cpu)
    tuned = None
    if m.correct and cfg.nightly.budget > 0:
        say(f"nightly: {path.name}: tuning, up to {cfg.nightly.budget} candidate(s)")
        progress = Progress(cfg.nightly.budget, stream=SayLines(say, f"nightly: {path.name}: "))
        tuned = tune(path, store, budget=cfg.nightly.budget, advisors=build_advisors(cfg), runner=runner, warm=runner,
                     counters=False, force_cpu=cfg.run.force_cpu, timeout_s=cfg.run.timeout_s, kind="nightly",
                     should_stop=should_stop, progress=progress, gpu_index=gpu_index)
        notes += tuned.notes[:3]
        say(f"nightly: {path.name}: tuning done, {tuned.evaluated} tried; {tuned.stopped}")
    y = _yesterday(store, path, device, started)
    best = store.best(path, device)
    t = m.timing
    now = TimeAt(ms=t.median_ms, device=device or "", at=m.started_at, run_id=res.run_id) if t else None
    regression = False
    drift_note = drift or ""
    if not m.correct and y is not None:
        regression = True
        drift_note = drift_note or f"was correct on {time.strftime('%Y-%m-%d', time.localtime(y.started_at))}"
    elif t and y and y.median_ms:
        change = 100.0 * (t.median_ms - y.median_ms) / y.median_ms
        noise = max(t.spread_pct, y.spread_pct or 0.0, 3.0)
        if change > noise:
            regression = True
            drift_note = (drift_note + "; " if drift_note else "") + \
                f"{change:+.1f}% vs the last earlier run, beyond the {noise:.1f}% noise"
    summary = TargetSummary(
        path=str(path), correct=m.correct, status=m.verdict.status.value,
        message="" if m.correct else m.verdict.message,
        now=now, yesterday=TimeAt.from_record(y) if y else None, best=TimeAt.from_record(best) if best else None,
        roofline=RooflinePoint.from_roofline(res.roofline) if res.roofline else None,
        roofline_note="" if res.roofline else _why_not_placed(res, has_gpu),
        findings=[FindingLine.from_finding(f) for f in res.findings[:3]],
        regression=regression, drift_note=drift_note,
        history=[(r.started_at, r.median_ms) for r in reversed(store.history(path, 60))
                 if r.correct and r.median_ms is not None and r.device == device],
    )
    if tuned is not None and tuned.best_candidate:
        best_attempt = next(a for a in tuned.attempts if a.candidate.id == tuned.best_candidate)
        from advisors.base import unified_diff

        ready = ReadyCandidate.from_candidate(best_attempt.candidate, best_attempt.verdict)
        ready.speedup = tuned.speedup
        ready.diff = unified_diff(path.read_text(), tuned.best_source, path.name)
        summary.candidates.append(ready)
    return TargetNight(path, summary, notes)


def _why_not_placed(res: Any, has_gpu: bool) -> str:
    from advisors.roofline import why_not_placed

    m = res.measurement
    t = m.timing
    on_gpu = bool(has_gpu and m.device and m.device.backend != "cpu")
    has_ceilings = False
    if on_gpu:
        import hwspecs

        has_ceilings = hwspecs.match(m.device.name) is not None
    return why_not_placed(representative=on_gpu and bool(t is None or t.representative), has_ceilings=has_ceilings,
                          has_work_counts=t is not None and (t.flops is not None or t.bytes_moved is not None),
                          has_counters=res.counters is not None, device=m.device.name if m.device else "")


def assemble(nights: list[TargetNight], store: Store, *, has_gpu: bool) -> NightlyReport:
    """The report over every target of tonight's run."""
    device = next((t.summary.now.device for t in nights if t.summary.now and t.summary.now.device), "")
    rep = NightlyReport(date=time.strftime("%Y-%m-%d"), device=device or "no GPU (Triton CPU interpreter)",
                        targets=[n.summary for n in nights])
    if has_gpu and device:
        from hwspecs import resolve

        _, c, _ = resolve(device)
        if c is not None:
            rep.peak_gbps = c.memory_gbps
            prec = "bf16" if "bf16" in c.tflops else next(iter(c.tflops), "")
            rep.peak_tflops = c.tflops.get(prec)
            rep.precision = prec
            rep.compute_ceilings = dict(c.tflops)
            rep.ceilings_source = c.source
    else:
        rep.interpreter = True  # the report says what that means (values.INTERPRETER_NOTE)
    for n in nights:
        rep.notes += [f"{n.path.name}: {x}" for x in n.notes]
    return rep


def deliver(rep: NightlyReport, cfg: Config) -> tuple[Path, str]:
    """Save the report to disk, then mail it when [mail] is configured. Never raises for mail."""
    from profd.report.nightly import render_html, render_text

    where = save(rep)
    if not cfg.mail:
        return where, "not mailed: no [mail] section in the config"
    from profd.report import mail

    try:
        mcfg = mail.MailConfig.from_mapping(cfg.mail)
    except (ValueError, mail.MailConfigError) as e:
        return where, f"not mailed: [mail] config is wrong: {e}"
    html, images = render_html(rep)
    msg = mail.build_message(rep, html, images, render_text(rep), mcfg)
    result = mail.send(msg, mcfg)
    return where, ("mailed to " + ", ".join(mcfg.to)) if result.ok else f"mail failed: {result.message}"


def retry_mail(cfg: Config, *, due_only: bool = False) -> str:
    """Send what waits in the outbox (reports an earlier night failed to mail); a line saying what happened.

    Called at the start of every nightly run (all kept messages) and by the daemon's timer
    (``due_only``: those whose backoff has passed). Never raises; "" when there was nothing to do.
    """
    if not cfg.mail:
        return ""
    from profd.report import mail

    if not mail.outbox_status().pending:
        return ""
    try:
        mcfg = mail.MailConfig.from_mapping(cfg.mail)
    except (ValueError, mail.MailConfigError) as e:
        return f"outbox not retried: [mail] config is wrong: {e}"
    results = mail.retry_outbox(mcfg, due_only=due_only)
    sent = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    parts = []
    if sent:
        parts.append(f"outbox: sent {len(sent)} kept report(s) " + ", ".join(f"(after {r.attempts} attempts)"
                                                                          for r in sent))
    if failed:
        parts.append(f"outbox: {len(failed)} report(s) still unsent: {failed[-1].message}")
    return "; ".join(parts)


def run_inline(cfg: Config, store: Store, *, has_gpu: bool, runner: Optional[harness.Runner] = None,
               targets: Optional[list[Path]] = None, say: Callable[[str], None] = print,
               on_done: Callable[[dict[str, Any]], None] = lambda placed: None) -> tuple[NightlyReport, Path, str]:
    """The whole nightly run in this process (no daemon).

    With a ``runner``, the targets run one after another through it; without one,
    on the executor ``cfg.executor`` names (every GPU: one target per slot at a
    time). ``on_done`` gets, per target, where it ran and how long it took."""
    started = time.time()
    kept = retry_mail(cfg)  # last night's unsent report goes out before tonight's work
    if kept:
        say(f"nightly: {kept}")
    paths = targets or targets_of(cfg, store)
    if runner is not None:
        nights = []
        for path in paths:
            say(f"nightly: {path.name}")
            nights.append(night_for(path, store, cfg, has_gpu=has_gpu, runner=runner, started=started, say=say))
    else:
        nights = _on_executor(cfg, store, paths, has_gpu=has_gpu, started=started, say=say, on_done=on_done)
    rep = assemble(nights, store, has_gpu=has_gpu)
    where, mail_note = deliver(rep, cfg)
    return rep, where, mail_note


def _on_executor(cfg: Config, store: Store, paths: list[Path], *, has_gpu: bool, started: float,
                 say: Callable[[str], None], on_done: Callable[[dict[str, Any]], None]) -> list[TargetNight]:
    """One nightly pass per target, spread over the executor's slots; results in target order."""
    from profd.service.executors import create, run_all, slot_config
    from profd.model import Job, JobKind, JobState

    nights: dict[int, TargetNight] = {}

    def job_fn(job: Job, slot: Any) -> None:
        with Store(store.path) as own:  # each slot thread writes through its own connection
            nights[job.id] = night_for(Path(job.path), own, slot_config(cfg, slot), has_gpu=has_gpu and slot.has_gpu,
                                       runner=slot.runner, started=started, say=say)

    def done(h: Any) -> None:
        name = Path(h.job.path).name
        say(f"nightly: {name} {'failed inside profd: ' + h.error if h.error else 'done'} on {h.slot.id} "
            f"({h.wall_s or 0:.1f} s)")
        on_done({"target": h.job.path, "slot": h.slot.id, "device": h.slot.device, "started_at": h.started_at,
                 "wall_s": h.wall_s, "error": h.error})

    ex = create(cfg, job_fn)
    jobs = [Job(id=i, path=str(p), kind=JobKind.NIGHTLY, priority=10, state=JobState.QUEUED)
            for i, p in enumerate(paths)]
    ex.start()
    try:
        say(f"nightly: {len(jobs)} target(s) on {len(ex.slots())} slot(s): "
            + ", ".join(f"{s.id} ({s.device})" for s in ex.slots()))
        run_all(ex, jobs, on_start=lambda h: say(f"nightly: {Path(h.job.path).name} on {h.slot.id}"), on_done=done)
    finally:
        ex.stop()
    for s in ex.slots():
        if s.note:
            say(f"nightly: {s.id}: {s.note}")
    return [nights[j.id] for j in jobs if j.id in nights]


# --------------------------------------------------------------------------- through the daemon

#: With several slots, two NIGHTLY jobs can finish at once and each see itself as the last.
_REPORT_LOCK = threading.Lock()


def pending_dir() -> Path:
    """Where tonight's per-target summaries wait until the last NIGHTLY job is done."""
    from profd.paths import artifacts_dir

    return artifacts_dir("nightly-pending")


from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # the daemon builds a job's context; the flow itself never imports the daemon
    from profd.model import Job
    from profd.service.context import JobContext


def nightly_job(ctx: JobContext, job: Job) -> None:
    """A NIGHTLY job: one target's pass; the last one assembles and delivers the report."""
    import json

    from profd.model import JobKind, JobState

    path = Path(job.path)
    night = night_for(path, ctx.store, ctx.config, has_gpu=ctx.has_gpu, runner=ctx.runner,
                      should_stop=lambda: ctx.should_yield(job), say=ctx.say, gpu_index=ctx.gpu_index)
    key = f"{job.id:08d}-{path.stem}.json"
    write_private(pending_dir() / key,
                  json.dumps({"path": str(path), "summary": night.summary.to_dict(), "notes": night.notes}))
    ctx.queue.finish(job, JobState.DONE)
    ctx.say(f"nightly: {path.name} done")
    with _REPORT_LOCK:
        others = [j for j in ctx.queue.pending() if j.kind == JobKind.NIGHTLY and j.id != job.id]
        files = sorted(pending_dir().glob("*.json"))
        if others or not files:  # not the last, or another slot's job already reported
            return
        _report_pending(ctx, files)


def _report_pending(ctx: JobContext, files: list[Path]) -> None:
    import json

    nights = []
    for f in files:
        data = json.loads(f.read_text())
        nights.append(TargetNight(Path(data["path"]), TargetSummary.from_dict(data["summary"]), data["notes"]))
    rep = assemble(nights, ctx.store, has_gpu=ctx.has_gpu)
    where, note = deliver(rep, ctx.config)
    for f in files:
        f.unlink()
    ctx.say(f"nightly report: {where} ({note})")
