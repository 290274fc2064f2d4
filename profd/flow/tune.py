"""The re-measure loop: advisors propose, the harness judges, only wins are kept.

Every candidate runs through exactly the harness the original ran through:
fresh-input verification, then timing. A candidate is kept only when it is
correct and faster than the current best by more than the measured noise (the
larger inter-quartile spread of the two, with a floor), and the win survives a
second, independent A/B measurement. Candidates are written to profd's state
directory, never to the user's directory; the user's file changes only through
``profd apply``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from advisors.base import Advisor, Attempt, TuneContext, source_digest, unified_diff
from profd.harness import runner as harness
from profd.model import Candidate, CandidateVerdict, Measurement, Timing
from profd.paths import artifacts_dir, write_private
from profd.store import Store

#: The smallest gain that counts, in percent, whatever the measured spread says.
NOISE_FLOOR_PCT = {True: 1.0, False: 5.0}  # representative GPU timing vs CPU interpreter
#: Consecutive rounds in which no advisor proposed anything new before tuning stops.
MAX_EMPTY_ROUNDS = 3


@dataclass
class TuneResult:
    """What a tuning session tried and kept."""

    target: str
    session_id: int
    baseline: Measurement
    best_source: str
    best_candidate: Optional[str]
    baseline_ms: Optional[float]
    best_ms: Optional[float]
    evaluated: int
    attempts: list[Attempt] = field(default_factory=list)
    patch_path: Optional[str] = None
    stopped: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> Optional[float]:
        if self.baseline_ms and self.best_ms:
            return self.baseline_ms / self.best_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "session_id": self.session_id, "baseline": self.baseline.to_dict(),
            "best_candidate": self.best_candidate, "baseline_ms": self.baseline_ms, "best_ms": self.best_ms,
            "speedup": self.speedup, "evaluated": self.evaluated, "patch_path": self.patch_path,
            "stopped": self.stopped, "notes": self.notes,
            "attempts": [{"candidate": {k: v for k, v in a.candidate.to_dict().items() if k != "source"},
                          "verdict": {k: v for k, v in a.verdict.to_dict().items() if k != "measurement"},
                          "status": a.verdict.measurement.verdict.status.value if a.verdict.measurement else None,
                          "median_ms": a.verdict.measurement.timing.median_ms
                          if a.verdict.measurement and a.verdict.measurement.timing else None}
                         for a in self.attempts],
        }


def noise_pct(a: Timing, b: Timing) -> float:
    """The gain a candidate must beat: the larger spread of the two, with a floor."""
    return max(a.spread_pct, b.spread_pct, NOISE_FLOOR_PCT[a.representative and b.representative])


def beats(best: Timing, cand: Timing) -> tuple[bool, float]:
    """Is ``cand`` faster than ``best`` by more than the noise? Returns (win, noise %)."""
    noise = noise_pct(best, cand)
    return cand.median_ms < best.median_ms * (1.0 - noise / 100.0), noise


def source_sha256(source: str) -> str:
    """The digest ``profd apply`` checks a kept candidate's file against."""
    import hashlib

    return hashlib.sha256(source.encode("utf-8", "replace")).hexdigest()


def _target_key(path: Path) -> str:
    return f"{path.stem}-{source_digest(str(path))[:8]}"


def candidate_file(path: Path, cand_id: str, source: str) -> Path:
    """Write a candidate where the user's watcher never sees it (user-only files)."""
    return write_private(artifacts_dir("candidates", _target_key(path), cand_id) / path.name, source)


class Progress:
    """A progress bar on a terminal, one line per candidate elsewhere."""

    def __init__(self, total: int, stream: Any = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * min(done, self.total) / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = f"[{bar}] {done}/{self.total} {text}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:200])
            if done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _measure_source(path: Path, cand: Candidate, *, runner: Optional[harness.Runner], timeout_s: float,
                    force_cpu: bool, trials: int = 3) -> Measurement:
    f = candidate_file(path, cand.id, cand.source)
    req = harness.ChildRequest(target=str(f), trials=trials, force_cpu=force_cpu,
                               extra={"sys_path": [str(path.parent)]})
    run = (runner or harness.ColdRunner()).run(req, timeout_s=timeout_s)
    return harness.to_measurement(run, f, timeout_s)


def tune(path: Path, store: Store, *, budget: int = 24, time_budget_s: Optional[float] = None,
         advisors: Optional[list[Advisor]] = None, runner: Optional[harness.Runner] = None,
         counters: bool = False, force_cpu: bool = False, timeout_s: float = 120.0, kind: str = "tune",
         progress: Optional[Progress] = None, should_stop: Callable[[], bool] = lambda: False,
         device_spec: Any = None, batch: int = 2, allow_fallback: bool = False) -> TuneResult:
    """Tune ``path`` with ``budget`` candidates (and optionally a time budget)."""
    from advisors.rewriters.deterministic import DeterministicAdvisor
    from profd.flow.profile import profile

    path = Path(path).resolve()
    original = path.read_text()
    advisors = advisors if advisors is not None else [DeterministicAdvisor()]
    t0 = time.time()
    base = profile(path, store, counters=counters, timeout_s=timeout_s, force_cpu=force_cpu, runner=runner)
    m0 = base.measurement
    device = m0.device.name if m0.device else None
    cur = store.db.execute(
        "INSERT INTO tune_sessions (target, base_hash, started_at, device, budget, baseline_ms, kind) "
        "VALUES (?,?,?,?,?,?,?)",
        (str(path), m0.content_hash, t0, device, budget, m0.timing.median_ms if m0.timing else None, kind))
    session = int(cur.lastrowid)
    result = TuneResult(target=str(path), session_id=session, baseline=m0, best_source=original,
                        best_candidate=None, baseline_ms=m0.timing.median_ms if m0.timing else None,
                        best_ms=m0.timing.median_ms if m0.timing else None, evaluated=0)
    if not m0.correct or m0.timing is None:
        result.stopped = f"the original is not correct ({m0.verdict.status.value}): fix it before tuning"
        _close(store, result)
        return result
    from profd.flow.judge import Judge

    judge = Judge(path, force_cpu=force_cpu, timeout_s=timeout_s, allow_fallback=allow_fallback)
    try:
        _loop(path, store, result, judge, session, m0, base, original, t0, budget=budget, time_budget_s=time_budget_s,
              advisors=advisors, progress=progress, should_stop=should_stop, device_spec=device_spec, batch=batch)
    except BaseException as e:
        result.stopped = result.stopped or f"stopped by {type(e).__name__}"
        raise
    finally:
        # The session is closed whatever happened (a crash, Ctrl-C): never left open in the store.
        judge.close()
        _close(store, result)
    return result


def _loop(path: Path, store: Store, result: TuneResult, judge: Any, session: int, m0: Measurement, base: Any,
          original: str, t0: float, *, budget: int, time_budget_s: Optional[float], advisors: list[Advisor],
          progress: Optional[Progress], should_stop: Callable[[], bool], device_spec: Any, batch: int) -> None:
    """The propose-judge loop of :func:`tune`; fills ``result``."""
    judged = judge.baseline()
    if not judged.measurement.correct or judged.measurement.timing is None:
        result.stopped = (f"the original did not pass profd's judge ({judged.measurement.verdict.status.value}: "
                          f"{judged.measurement.verdict.message}); fix it before tuning")
        return
    result.baseline_ms = result.best_ms = judged.measurement.timing.median_ms
    best_timing: Timing = judged.measurement.timing
    ctx = TuneContext(path=str(path), original_source=original, best_source=original,
                      best_median_ms=best_timing.median_ms, findings=list(base.findings), report=base.report,
                      device_spec=device_spec, budget_left=budget)
    try:
        from advisors.knobs import discover

        ctx.knobs = discover(original, str(path))
    except Exception:
        ctx.knobs = None
    prog = progress or Progress(budget, enabled=False)
    prog.update(0, f"baseline {best_timing.median_ms:.4g} ms (±{best_timing.spread_pct:.1f}%)")
    empty_rounds = 0
    while result.evaluated < budget:
        if should_stop():
            result.stopped = "pre-empted (a save is waiting, or profd is stopping)"
            break
        if time_budget_s is not None and time.time() - t0 > time_budget_s:
            result.stopped = f"time budget of {time_budget_s:g} s used up"
            break
        ctx.budget_left = budget - result.evaluated
        proposals: list[Candidate] = []
        for adv in advisors:
            want = min(batch, budget - result.evaluated - len(proposals))
            if want <= 0:
                break
            try:
                proposals += adv.propose(ctx, want)
            except Exception as e:  # an advisor's bug must not end the session
                result.notes.append(f"advisor {getattr(adv, 'name', adv)} failed: {type(e).__name__}: {e}")
            for err in getattr(adv, "last_errors", []) or []:
                if err not in result.notes:
                    result.notes.append(err)
        tried = ctx.tried_sources()
        proposals = [c for c in proposals if source_digest(c.source) not in tried]
        if not proposals:
            # An LLM reply without usable code is worth another ask; silence twice is the end.
            empty_rounds += 1
            if empty_rounds >= MAX_EMPTY_ROUNDS:
                result.stopped = "no advisor has anything left to try"
                break
            continue
        empty_rounds = 0
        for cand in proposals:
            if result.evaluated >= budget or should_stop():
                break
            if not cand.diff:
                cand.diff = unified_diff(original, cand.source, path.name)
            verdict, _cause = judge.evaluate(cand, best_timing, ctx)
            result.evaluated += 1
            ctx.history.append(Attempt(cand, verdict))
            _record(store, session, path, cand, verdict, m0)
            mark = "kept" if verdict.accepted else "rejected"
            prog.update(result.evaluated, f"{cand.id} {mark}: {verdict.reason[:90]}")
            if verdict.accepted and verdict.measurement and verdict.measurement.timing:
                best_timing = verdict.measurement.timing
                ctx.best_source = cand.source
                ctx.best_median_ms = best_timing.median_ms
                result.best_source = cand.source
                result.best_candidate = cand.id
                result.best_ms = best_timing.median_ms
                try:
                    from advisors.knobs import discover

                    ctx.knobs = discover(cand.source, str(path))
                except Exception:
                    pass
                # The rest of this batch was derived from the old best: measured now, a
                # candidate without the change just kept could win and silently undo it.
                break
    else:
        result.stopped = f"budget of {budget} candidates used"
    prog.close()
    result.attempts = ctx.history
    if result.best_candidate:
        patch = artifacts_dir("candidates", _target_key(path)) / f"best-session{session}.patch"
        result.patch_path = str(write_private(patch, unified_diff(original, result.best_source, path.name)))
    for adv in advisors:
        result.notes += [n for n in getattr(adv, "notes", []) if n not in result.notes]


def _record(store: Store, session: int, path: Path, cand: Candidate, v: CandidateVerdict, base: Measurement) -> None:
    m = v.measurement
    t = m.timing if m else None
    src_path = artifacts_dir("candidates", _target_key(path), cand.id) / path.name
    llm = None
    from advisors.rewriters import records_llm_exchange

    if records_llm_exchange(cand.advisor):
        llm = json.dumps({"prompt": cand.prompt, "response": cand.response, "tokens_in": cand.tokens_in,
                          "tokens_out": cand.tokens_out, "latency_s": cand.latency_s, "cost_usd": cand.cost_usd})
    from profd.secrets import redact, redact_tree

    llm = redact(llm)
    write_private(src_path.parent / "verdict.json",
                  json.dumps(redact_tree({"candidate": {k: v2 for k, v2 in cand.to_dict().items() if k != "source"},
                                          "verdict": v.to_dict(), "confirmed": v.confirmed,
                                          "source_sha256": source_sha256(cand.source)}), default=str))
    store.db.execute(
        "INSERT INTO candidates (session_id, target, candidate_id, advisor, rationale, params, source_path, diff, "
        "accepted, reason, status, median_ms, spread_pct, speedup, created_at, llm) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (session, str(path), cand.id, cand.advisor, redact(cand.rationale), json.dumps(cand.params, default=str),
         str(src_path), redact(cand.diff), int(v.accepted), redact(v.reason), m.verdict.status.value if m else None,
         t.median_ms if t else None, t.spread_pct if t else None,
         (base.timing.median_ms / t.median_ms) if (t and base.timing and t.median_ms) else None, time.time(), llm))


def _close(store: Store, r: TuneResult) -> None:
    store.db.execute("UPDATE tune_sessions SET finished_at=?, evaluated=?, best_ms=?, best_candidate=?, stopped=? "
                     "WHERE id=?", (time.time(), r.evaluated, r.best_ms, r.best_candidate, r.stopped, r.session_id))


# --------------------------------------------------------------------------- daemon job


def tune_job(worker: Any, job: Any, path: Path) -> None:
    """A TUNE job from the queue: tune with the configured budget, yield to saves."""
    from profd.model import JobState

    d = worker.daemon
    cfg = d.cfg
    budget = cfg.run.auto_tune_budget or cfg.run.tune_budget
    res = tune(path, worker.store, budget=budget, advisors=build_advisors(cfg), runner=d.runner,
               counters=cfg.run.counters and worker.has_gpu, force_cpu=cfg.run.force_cpu,
               timeout_s=cfg.run.timeout_s, kind=job.kind.value,
               should_stop=lambda: d.stop_requested.is_set() or worker.queue.urgent_waiting(job.priority))
    if res.stopped.startswith("pre-empted"):
        worker.queue.requeue(job, "pre-empted by a save; will resume")
        d.say(f"tuning {path.name} paused for a save ({res.evaluated} candidates tried)")
        return
    worker.queue.finish(job, JobState.DONE, res.stopped)
    d.say(summary(res))


def build_advisors(cfg: Any) -> list[Advisor]:
    """Every configured advisor, from the registry in advisors/rewriters/ (deterministic always)."""
    from advisors.rewriters import build_advisors as from_registry

    return from_registry(cfg)


#: Said wherever a speedup measured in Triton's CPU interpreter is shown (tune's summary, apply's message).
INTERPRETER_SPEEDUP_NOTE = ("measured in Triton's CPU interpreter (no GPU): this speedup says nothing about GPU "
                            "speed, where the change may be slower; tune again on a GPU before relying on it")


def summary(r: TuneResult) -> str:
    """A few lines for the terminal: before, after, what was kept (and whether the times mean anything for a GPU)."""
    name = Path(r.target).name
    lines = [f"tune {name}: {r.evaluated} candidate(s) evaluated; {r.stopped}"]
    if r.baseline.timing is not None and not r.baseline.timing.representative:
        lines.append(f"  note: times {INTERPRETER_SPEEDUP_NOTE}")
    if r.baseline_ms is not None:
        lines.append(f"  before: {r.baseline_ms:.4g} ms")
    if r.best_candidate and r.best_ms:
        lines.append(f"  after:  {r.best_ms:.4g} ms ({r.speedup:.2f}x) with {r.best_candidate}")
        kept = [a for a in r.attempts if a.verdict.accepted]
        for a in kept:
            lines.append(f"    kept {a.candidate.id} ({a.candidate.advisor}): {a.candidate.rationale[:100]}")
        lines.append(f"  patch: {r.patch_path}  (apply with: profd apply {r.target})")
    else:
        lines.append("  nothing beat the original by more than the measured noise")
    for n in r.notes[:5]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)
