"""The re-measure loop: advisors propose, the judge decides, only wins are kept.

Every candidate, whatever advisor proposed it, goes through the judge
(``profd/flow/judge.py``): the contract check, then a confined child that runs only
the candidate's ``kernel`` on inputs made from the user's file (smallest shape first,
so a broken candidate fails on the cheapest shape), outputs compared in the trusted
reference process, a short timing first; only a potential winner is re-timed and
re-checked against the best in fresh processes on fresh inputs, and only a confirmed
win is kept. A loser costs one child, a winner three.

The session is recorded as it goes: each candidate's row, and the best so far
(with its patch) as soon as it is kept, so a session stopped by a time limit,
Ctrl-C, SIGTERM or even SIGKILL leaves something ``profd apply`` can use.
Candidates are written to profd's state directory, never to the user's
directory; the user's file changes only through ``profd apply``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from advisors.base import Advisor, Attempt, TuneContext, source_digest, unified_diff
from profd.harness import runner as harness
from profd.flow.judge import (NOISE_FLOOR_PCT, Judge, _target_key, beats, candidate_file, noise_pct,  # noqa: F401
                              promising, source_sha256)
from profd.model import Candidate, CandidateVerdict, Measurement, Timing
from profd.paths import artifacts_dir, write_private
from profd.store import Store

#: Consecutive rounds in which no advisor proposed anything new before tuning stops.
MAX_EMPTY_ROUNDS = 3


@dataclass
class CandidateCost:
    """Where one candidate's time went: for progress lines and the throughput bench."""

    candidate: str
    outcome: str  # "incorrect", "not faster (screen)", "judged: kept", "judged: rejected", ...
    screen_s: float = 0.0
    judge_s: float = 0.0
    children: int = 0
    screen_ms: Optional[float] = None  # the screening median
    phases: dict[str, float] = field(default_factory=dict)  # the judge's children, summed (seconds)
    build_s: float = 0.0  # waiting for its CUDA build (inside judge_s; the build ran in parallel)

    @property
    def total_s(self) -> float:
        return self.screen_s + self.judge_s


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
    costs: list[CandidateCost] = field(default_factory=list)
    best_measurement: Optional[Measurement] = None  # the judge's full measurement of the kept best
    wall_s: float = 0.0
    startup: dict[str, float] = field(default_factory=dict)  # seconds before the first candidate, by step
    judged_baseline: Optional[Measurement] = None  # the original as the judge's child measured it
    precompile: dict[str, int] = field(default_factory=dict)  # candidates compiled ahead (profd.harness.precompile)

    @property
    def speedup(self) -> Optional[float]:
        if self.baseline_ms and self.best_ms:
            return self.baseline_ms / self.best_ms
        return None

    @property
    def candidates_per_min(self) -> Optional[float]:
        return self.evaluated / (self.wall_s / 60.0) if self.wall_s > 0 else None

    def shape_table(self) -> list[dict[str, Any]]:
        """Per declared shape: the original's time, the best's, and the speedup (both from the
        judge's children, the path every candidate takes; profile()'s own run times the bench shape)."""
        base = self.judged_baseline if self.judged_baseline and self.judged_baseline.shape_timings else self.baseline
        return shape_table(base, self.best_measurement)

    def triton_configs(self, limit: int = 4) -> list[dict[str, Any]]:
        """The fastest configurations found, as ``triton.Config`` fields (see ``triton_configs``)."""
        return triton_configs(self, limit)

    def to_dict(self) -> dict[str, Any]:
        costs = {c.candidate: c for c in self.costs}
        configs = self.triton_configs()
        return {
            "target": self.target, "session_id": self.session_id, "baseline": self.baseline.to_dict(),
            "best_candidate": self.best_candidate, "baseline_ms": self.baseline_ms, "best_ms": self.best_ms,
            "speedup": self.speedup, "evaluated": self.evaluated, "patch_path": self.patch_path,
            "stopped": self.stopped, "notes": self.notes, "wall_s": round(self.wall_s, 3),
            "startup": self.startup, "precompile": self.precompile,
            "candidates_per_min": self.candidates_per_min,
            "shapes": self.shape_table(),
            "triton_configs": configs, "triton_configs_text": format_triton_configs(configs),
            "attempts": [{"candidate": {k: v for k, v in a.candidate.to_dict().items() if k != "source"},
                          "verdict": {k: v for k, v in a.verdict.to_dict().items() if k != "measurement"},
                          "status": a.verdict.measurement.verdict.status.value if a.verdict.measurement else None,
                          "median_ms": a.verdict.measurement.timing.median_ms
                          if a.verdict.measurement and a.verdict.measurement.timing else None,
                          "shape_timings": [_shape_row(t) for t in a.verdict.measurement.shape_timings]
                          if a.verdict.measurement else [],
                          "cost": costs[a.candidate.id].__dict__ if a.candidate.id in costs else None}
                         for a in self.attempts],
        }


def _shape_row(t: Timing) -> dict[str, Any]:
    return {"shape": t.shape, "median_ms": t.median_ms, "spread_pct": round(t.spread_pct, 2),
            "tflops": t.tflops, "gbps": t.gbps}


def shape_table(base: Measurement, best: Optional[Measurement]) -> list[dict[str, Any]]:
    """Rows {shape, baseline_ms, best_ms, speedup} over the shapes either side timed."""
    def key(shape: dict[str, Any]) -> str:
        return json.dumps(shape, sort_keys=True, default=str)

    rows: dict[str, dict[str, Any]] = {}
    for t in base.shape_timings:
        rows[key(t.shape)] = {"shape": t.shape, "baseline_ms": t.median_ms, "best_ms": None, "speedup": None}
    for t in (best.shape_timings if best else []):
        r = rows.setdefault(key(t.shape), {"shape": t.shape, "baseline_ms": None, "best_ms": None, "speedup": None})
        r["best_ms"] = t.median_ms
        if r["baseline_ms"] and t.median_ms:
            r["speedup"] = r["baseline_ms"] / t.median_ms
    return list(rows.values())


# --------------------------------------------------------------------------- triton.Config output


def config_of(source: str) -> dict[str, dict[str, Any]]:
    """Per @triton.jit kernel of ``source``: its launch configuration as ``triton.Config`` fields.

    {kernel: {"kwargs": {meta-parameter: value}, "num_warps": n, "num_stages": n}}, from the
    knobs the launch really receives (``advisors.knobs.discover``); unresolved values are left out.
    """
    from advisors.knobs import discover

    try:
        k = discover(source)
    except Exception:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for knob in k.knobs:
        if knob.value is None or not knob.kernel or knob.kind == "autotune":
            continue
        c = out.setdefault(knob.kernel, {"kwargs": {}, "num_warps": None, "num_stages": None})
        if knob.kind == "num_warps":
            c["num_warps"] = knob.value
        elif knob.kind == "num_stages":
            c["num_stages"] = knob.value
        elif knob.param and knob.param in k.constexpr_params.get(knob.kernel, [knob.param]):
            c["kwargs"].setdefault(knob.param, knob.value)
    return out


def triton_configs(r: TuneResult, limit: int = 4) -> list[dict[str, Any]]:
    """The fastest distinct configurations correct on every declared shape, best first.

    The kept best leads; then the other correct candidates (and the original) by their
    measured median. Each entry: {kernel, kwargs, num_warps, num_stages, median_ms, candidate}.
    """
    timed: list[tuple[int, float, str, str]] = []  # (rank group, median, id, source)
    if r.baseline.timing is not None:
        timed.append((1, r.baseline.timing.median_ms, "original", ""))
    for a in r.attempts:
        m = a.verdict.measurement
        if m is None or not m.correct or m.timing is None:
            continue
        timed.append((0 if a.candidate.id == r.best_candidate else 1, m.timing.median_ms, a.candidate.id,
                      a.candidate.source))
    timed.sort(key=lambda t: (t[0], t[1]))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    original = None
    for _, median, cid, src in timed:
        if cid == "original":
            if original is None:
                original = Path(r.target).read_text() if Path(r.target).exists() else ""
            src = original
        for kernel, c in config_of(src).items():
            sig = json.dumps([kernel, c], sort_keys=True, default=str)
            if sig in seen:
                continue
            seen.add(sig)
            out.append({"kernel": kernel, **c, "median_ms": median, "candidate": cid})
        if len({o["candidate"] for o in out}) >= limit:
            break
    return out


def format_triton_configs(configs: list[dict[str, Any]]) -> str:
    """Python text to paste into ``@triton.autotune(configs=..., key=[...])``, one list per kernel."""
    if not configs:
        return ""
    kernels: dict[str, list[dict[str, Any]]] = {}
    for c in configs:
        kernels.setdefault(c["kernel"], []).append(c)
    blocks = []
    for kernel, cs in kernels.items():
        lines = [f"# {kernel}: fastest first; use with @triton.autotune(configs=configs, key=[...size args...])",
                 "# and drop these meta-parameters from the launch call.", "configs = ["]
        for c in cs:
            kw = ", ".join(f"{json.dumps(k)}: {v!r}" for k, v in c["kwargs"].items())
            extra = "".join(f", {name}={c[name]!r}" for name in ("num_warps", "num_stages") if c.get(name) is not None)
            lines.append(f"    triton.Config({{{kw}}}{extra}),  # {c['median_ms']:.4g} ms ({c['candidate']})")
        lines.append("]")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- helpers


class Progress:
    """A progress bar on a terminal, one line per candidate elsewhere."""

    def __init__(self, total: int, stream: Any = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.time()

    def say(self, text: str) -> None:
        """A line of its own (waiting for the GPU, the baseline, ...)."""
        if not self.enabled:
            return
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * min(done, self.total) / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        elapsed = time.time() - self.t0
        rate = f" {done / (elapsed / 60.0):.0f}/min" if done and elapsed > 0 else ""
        line = f"[{bar}] {done}/{self.total}{rate} {text}"
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
                    force_cpu: bool, trials: int = 3, request: Optional[harness.ChildRequest] = None) -> Measurement:
    """Write ``cand`` to the state directory and measure it (``request`` overrides the default one)."""
    f = candidate_file(path, cand.id, cand.source)
    extra = {"sys_path": [str(path.parent)]}
    if request is None:
        req = harness.ChildRequest(target=str(f), trials=trials, force_cpu=force_cpu, extra=extra)
    else:
        req = request
        req.target, req.extra = str(f), {**req.extra, **extra}
    run = (runner or harness.ColdRunner()).run(req, timeout_s=timeout_s)
    m = harness.to_measurement(run, f, timeout_s)
    m.wall_s = run.wall_s
    return m


# --------------------------------------------------------------------------- the loop


def measured_spec(m: Measurement) -> Any:
    """The hwspecs DeviceSpec of the GPU a measurement ran on (None on the CPU or an unknown one):
    the advisors' presets and limits are the device's (Hopper tiles on an H200, its SM count)."""
    if m.device is None or m.device.backend == "cpu":
        return None
    try:
        from hwspecs import resolve

        return resolve(m.device.name)[0]
    except Exception:  # device facts improve proposals; their absence must not stop tuning
        return None


def reusable(profiled: Any, source: str, counters: bool, force_cpu: bool, device: Optional[str] = None) -> bool:
    """May ``profiled`` (a ProfileResult) stand for the session's baseline profile of ``source``?

    Only when it measured exactly this content and found it correct, on the backend this session
    measures on (a CPU-interpreter verdict says nothing of a GPU), and holds the counter pass
    the session asked for (a save profiled without counters is profiled again). ``device``: the
    session's device in words (``profd tune``'s "NVIDIA H200 (GPU 0)"), which must name the
    profile's."""
    m = getattr(profiled, "measurement", None)
    if m is None or not m.correct or m.timing is None or m.content_hash != source_sha256(source):
        return False
    if device is not None and (m.device is None or m.device.name.lower() not in device.lower()):
        return False
    on_cpu = m.device is None or m.device.backend == "cpu"
    if force_cpu and not on_cpu:
        return False
    return not (counters and not on_cpu and getattr(profiled, "counters", None) is None)


def tune(path: Path, store: Store, *, budget: int = 24, time_budget_s: Optional[float] = None,
         advisors: Optional[list[Advisor]] = None, runner: Optional[harness.Runner] = None,
         counters: bool = False, force_cpu: bool = False, timeout_s: float = 120.0, kind: str = "tune",
         progress: Optional[Progress] = None, should_stop: Callable[[], bool] = lambda: False,
         stop_reason: Optional[Callable[[], str]] = None, device_spec: Any = None, batch: int = 2,
         allow_fallback: bool = False, warm: Any = None, gpu_index: Optional[int] = None,
         profiled: Any = None, device_name: Optional[str] = None) -> TuneResult:
    """Tune ``path`` with ``budget`` candidates (and optionally a time budget in seconds).

    ``should_stop`` is polled between candidates (and a measurement in flight when it
    turned true is discarded, not counted); ``stop_reason`` words why it stopped
    (default: pre-empted). Whatever stops it, the session is closed with the best
    found so far recorded and its patch written. ``warm`` (a WarmWorker) lets the judge
    fork its candidate children instead of starting each cold; ``allow_fallback`` lets a
    candidate that launches no kernel of its own (plain PyTorch) be kept. ``profiled``: a
    ProfileResult of this file already in hand (the daemon's save verdict); used as the
    baseline's profile when it measured the file's current content, correct, on this backend
    (on ``device_name``, where given: see :func:`reusable`).
    """
    from advisors.rewriters.deterministic import DeterministicAdvisor
    from profd.flow.profile import profile

    path = Path(path).resolve()
    original = path.read_text()
    advisors = advisors if advisors is not None else [DeterministicAdvisor()]
    for adv in advisors:
        adopt_secrets(adv)
    t0 = time.time()
    prog = progress or Progress(budget, enabled=False)
    # The judge's reference process (a cold interpreter: torch, CUDA, the user's file) starts now and
    # loads while profile() measures the baseline: seconds off every session's start.
    judge = Judge(path, force_cpu=force_cpu, timeout_s=timeout_s, allow_fallback=allow_fallback, warm=warm)
    try:
        # Stopped during the baseline: profile() raises Cancelled and stores nothing.
        # One verification call per shape (profd profile makes three): the judge checks the original
        # again, and every kept candidate is checked on every shape in a process of its own. At GPU
        # sizes each call costs its transfer and a float64 comparison (fla's matmul: 21 s of start-up).
        base = profiled if reusable(profiled, original, counters, force_cpu, device_name) else None
        if base is None:
            base = profile(path, store, counters=counters, timeout_s=timeout_s, force_cpu=force_cpu, runner=runner,
                           cancelled=should_stop, gpu_index=gpu_index, trials=1)
    except BaseException:
        judge.close()
        raise
    t_profiled = time.time()
    m0 = base.measurement
    device = m0.device.name if m0.device else None
    baseline_ms = m0.timing.median_ms if m0.timing else None
    session = store.open_tune_session(str(path), m0.content_hash, t0, device, budget, baseline_ms, kind)
    result = TuneResult(target=str(path), session_id=session, baseline=m0, best_source=original,
                        best_candidate=None, baseline_ms=baseline_ms, best_ms=baseline_ms, evaluated=0)
    result.startup["profile_s"] = round(t_profiled - t0, 3)
    if base is profiled:
        result.startup["profile_reused"] = 1.0
    # Of which the measuring child (the rest: the warm worker's start, NVML, the report).
    result.startup["profile_child_s"] = round(float(m0.wall_s or 0.0), 3)
    ready_at = getattr(runner, "ready_at", None)
    if isinstance(ready_at, float):  # the warm worker's start, when this session waited for it
        result.startup["warm_ready_s"] = round(max(ready_at - t0, 0.0), 3)
    if device_spec is None:
        device_spec = measured_spec(m0)

    def stopped_why() -> str:
        return stop_reason() if stop_reason else "pre-empted (a save is waiting, or profd is stopping)"

    try:
        if should_stop():
            result.stopped = stopped_why()
        elif not m0.correct or m0.timing is None:
            result.stopped = f"the original is not correct ({m0.verdict.status.value}): fix it before tuning"
        else:
            _loop(path, store, result, base, advisors, prog, judge, original=original, budget=budget,
                  deadline=(t0 + time_budget_s) if time_budget_s is not None else None,
                  time_budget_s=time_budget_s, should_stop=should_stop, stopped_why=stopped_why,
                  device_spec=device_spec, batch=batch)
    except BaseException as e:  # Ctrl-C as KeyboardInterrupt, profd's own bug: keep what was found
        result.stopped = result.stopped or f"interrupted ({type(e).__name__})"
        raise
    finally:
        judge.close()
        _finish(store, result, advisors, prog, t0)
    return result


def _loop(path: Path, store: Store, result: TuneResult, base: Any, advisors: list[Advisor], prog: Progress,
          judge: Any, *, original: str, budget: int, deadline: Optional[float], time_budget_s: Optional[float],
          should_stop: Callable[[], bool], stopped_why: Callable[[], str], device_spec: Any, batch: int) -> None:
    m0 = result.baseline
    # The figures candidates must beat come from the path they take: the judge's child.
    t_base = time.time()
    try:
        judged = judge.baseline()
    except RuntimeError as e:  # the trusted reference process could not load the original
        result.stopped = f"the original did not pass profd's judge: {e}; fix it before tuning"
        return
    result.startup["judge_baseline_s"] = round(time.time() - t_base, 3)
    result.startup["reference_wait_s"] = round(float(getattr(getattr(judge, "ref", None), "wait_s", 0.0)), 3)
    result.startup.update({f"baseline_{k}": v for k, v in judged.phases.items()})
    if not judged.measurement.correct or judged.measurement.timing is None:
        result.stopped = (f"the original did not pass profd's judge ({judged.measurement.verdict.status.value}: "
                          f"{judged.measurement.verdict.message}); fix it before tuning")
        return
    result.judged_baseline = judged.measurement
    best_timing: Timing = judged.measurement.timing
    result.baseline_ms = result.best_ms = best_timing.median_ms
    ctx = TuneContext(path=str(path), original_source=original, best_source=original,
                      best_median_ms=best_timing.median_ms, findings=list(base.findings), report=base.report,
                      device_spec=device_spec, budget_left=budget)
    # Knobs as written, with the values each launch really received in the baseline run.
    ctx.knobs = _knobs(original, path, m0.launches)
    # Outcomes of earlier sessions on this device and shape: re-tuning is incremental.
    device = m0.device.name if m0.device else "unknown"
    ctx.cache = store.tune_cache(device, json.dumps(best_timing.shape or {}, sort_keys=True, default=str))
    result.attempts = ctx.history  # the same list: current whenever the loop stops
    prog.update(0, f"baseline {best_timing.median_ms:.4g} ms (±{best_timing.spread_pct:.1f}%)")
    builds = _Prebuilds(path, original)
    judge.prebuilt = builds.wait
    try:
        _rounds(path, store, result, advisors, prog, judge, ctx, builds, m0, best_timing, original=original,
                budget=budget, deadline=deadline, time_budget_s=time_budget_s, should_stop=should_stop,
                stopped_why=stopped_why, batch=batch)
    finally:
        builds.close()
        pre = getattr(judge, "pre", None)
        if pre is not None:
            result.precompile = pre.summary()


class _Prebuilds:
    """CUDA candidates compile on the CPU cores, a bounded number at a time, while the GPU measures
    the ones before them (a load_inline extension takes 20-75 s to build on an H200 host; measuring
    it takes a second). The candidate's own child cannot build: its sandbox denies what ninja and
    the linker do. So every CUDA candidate is built here, in a confined builder process that never
    runs the candidate's Python, and the judge waits for that build (:meth:`wait`) before it
    starts the child, which then finds the build in the cache."""

    def __init__(self, path: Path, original: str) -> None:
        self.path = path
        self.pool: Any = None
        self.futures: dict[Path, Any] = {}
        try:
            from advisors.cuda_knobs import needs_cuda

            self.wanted = needs_cuda(original)
        except Exception:
            self.wanted = False

    @property
    def width(self) -> int:
        """How many candidates a round should propose so that their builds overlap: the build
        jobs for a CUDA target (on an H200 host, proposals two at a time built in rounds of ~55 s
        each: a 4-candidate tune of KernelBench's tiled matmul spent 160 of its 243 s waiting),
        0 for a Triton target (no build; the round's own batch applies)."""
        return max(1, min(8, (os.cpu_count() or 2) - 2)) if self.wanted else 0

    def _submit(self, f: Path) -> Any:
        from profd.harness.cuda_build import PreBuilder, child_cache_dir

        if self.pool is None:
            self.pool = PreBuilder(child_cache_dir(), max_jobs=self.width, original=self.path)
        if f not in self.futures:
            self.futures[f] = self.pool.submit(f)
        return self.futures[f]

    def submit(self, proposals: list[Candidate]) -> None:
        if self.wanted:
            for cand in proposals:
                self._submit(candidate_file(self.path, cand.id, cand.source))

    def wait(self, f: Path) -> Any:
        """The :class:`BuildResult` of candidate file ``f`` (built now if it was not submitted);
        None for a target without CUDA code."""
        if not self.wanted:
            return None
        return self._submit(Path(f)).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)


def _rounds(path: Path, store: Store, result: TuneResult, advisors: list[Advisor], prog: Progress, judge: Any,
            ctx: TuneContext, builds: _Prebuilds, m0: Measurement, best_timing: Timing, *, original: str,
            budget: int, deadline: Optional[float], time_budget_s: Optional[float],
            should_stop: Callable[[], bool], stopped_why: Callable[[], str], batch: int) -> None:
    """Propose, judge, keep: until the budget, the clock or the advisors run out."""
    empty_rounds = 0

    def out_of_time() -> bool:
        return deadline is not None and time.time() > deadline

    while result.evaluated < budget:
        if should_stop():
            result.stopped = stopped_why()
            return
        if out_of_time():
            result.stopped = f"time budget of {time_budget_s:g} s used up"
            return
        ctx.budget_left = budget - result.evaluated
        proposals: list[Candidate] = []
        for adv in advisors:
            # Wide enough for the builds (CUDA) or the compiles ahead (Triton on a GPU) to overlap
            # the measurements.
            want = min(max(batch, builds.width, getattr(judge, "ahead", 0)), budget - result.evaluated - len(proposals))
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
                return
            continue
        empty_rounds = 0
        builds.submit(proposals)
        if not builds.wanted and hasattr(judge, "precompile"):
            # Compiled ahead without the GPU while the judge measures the ones before them.
            try:
                judge.precompile(proposals)
            except Exception as e:  # an optimisation: its failure must not end the session
                note = f"compiling ahead failed: {type(e).__name__}: {e}"
                if note not in result.notes:
                    result.notes.append(note)
        for cand in proposals:
            if result.evaluated >= budget:
                break
            if should_stop():
                result.stopped = stopped_why()
                return
            if out_of_time():
                result.stopped = f"time budget of {time_budget_s:g} s used up"
                return
            if not cand.diff:
                cand.diff = unified_diff(original, cand.source, path.name)
            verdict, cost = _evaluate(judge, cand, best_timing, ctx)
            if should_stop():
                # Stopped while this candidate ran: its measurement was abandoned (killed), so
                # it says nothing about the candidate. Not counted, not recorded.
                result.stopped = stopped_why()
                return
            result.evaluated += 1
            result.costs.append(cost)
            seen = getattr(judge, "best_seen", None)
            if seen is not None and ctx.best_source == original and result.baseline_ms \
                    and seen.median_ms < result.baseline_ms:
                # The original re-timed faster in the A/B than in the session's first child: the
                # speed-up claimed is against the faster. On an H200 unsloth's SwiGLU claimed 5.11x
                # (0.842 ms first, 0.556 ms re-timed) where the grid measured 3.36x.
                result.baseline_ms = seen.median_ms
                if result.best_candidate is None:
                    result.best_ms = seen.median_ms
            if not verdict.accepted and seen is not None and seen.median_ms < best_timing.median_ms:
                # The best, re-timed in a fresh process, beat the figure candidates are screened
                # against (the session's first child often runs before the GPU's clocks rise: on an
                # H200 Liger's layer norm measured 0.121 ms there, 0.095 ms in its re-runs, and
                # every candidate looked 1.3x faster and cost a three-child confirmation).
                best_timing = seen
            mt = verdict.measurement.timing if verdict.measurement else None
            ctx.cache.put(source_digest(cand.source), mt.median_ms if mt else None,
                          "accepted" if verdict.accepted else ("slower" if cost.outcome == "not faster" else
                                                               cost.outcome or "rejected"))
            ctx.history.append(Attempt(cand, verdict))
            _record(store, result.session_id, path, cand, verdict, m0)
            mark = "kept" if verdict.accepted else "rejected"
            prog.update(result.evaluated, f"{cand.id} {mark} ({cost.total_s:.1f} s): {verdict.reason[:90]}")
            if verdict.accepted and verdict.measurement and verdict.measurement.timing:
                best_timing = verdict.measurement.timing
                ctx.best_source = cand.source
                ctx.best_median_ms = best_timing.median_ms
                result.best_source = cand.source
                result.best_candidate = cand.id
                result.best_ms = best_timing.median_ms
                result.best_measurement = verdict.measurement
                _keep_best(store, result, original, path)
                ctx.knobs = _knobs(cand.source, path, (verdict.measurement.launches if verdict.measurement
                                                       else None) or m0.launches) or ctx.knobs
                # The rest of this batch was derived from the old best: measured now, a
                # candidate without the change just kept could win and silently undo it.
                break
    result.stopped = f"budget of {budget} candidates used"


def adopt_secrets(adv: Any) -> None:
    """Take an advisor's declared secrets (an LLM key) into profd's redactor, and the variables it
    read them from out of this process's environment: this process forks candidates."""
    from profd import secrets

    keys = [k for k in getattr(adv, "secrets", []) or [] if isinstance(k, str)]
    if keys:
        secrets.register(*keys)
    names = [n for n in getattr(adv, "secret_env", []) or [] if n]
    if names:
        secrets.forget_env(names)
    if hasattr(adv, "redactor"):
        adv.redactor = secrets.redact


def _knobs(source: str, path: Path, launches: Any = None) -> Any:
    try:
        from advisors.knobs import discover

        k = discover(source, str(path))
        return k.with_runtime(launches) if launches else k
    except Exception:
        return None


def _evaluate(judge: Any, cand: Candidate, best: Timing, ctx: TuneContext) -> tuple[CandidateVerdict, CandidateCost]:
    """The judge's verdict on ``cand`` and what it cost."""
    t = time.time()
    verdict, cause = judge.evaluate(cand, best, ctx)
    cost = CandidateCost(cand.id, cause, judge_s=time.time() - t, children=judge.children_last,
                         phases=dict(getattr(judge, "phases_last", {}) or {}),
                         build_s=float(getattr(judge, "build_s_last", 0.0) or 0.0))
    return verdict, cost


def _record(store: Store, session: int, path: Path, cand: Candidate, v: CandidateVerdict, base: Measurement) -> None:
    m = v.measurement
    t = m.timing if m else None
    src_path = artifacts_dir("candidates", _target_key(path), cand.id) / path.name
    llm = None
    from advisors.rewriters import records_llm_exchange
    from profd.secrets import redact, redact_tree

    if records_llm_exchange(cand.advisor):
        llm = redact(json.dumps({"prompt": cand.prompt, "response": cand.response, "tokens_in": cand.tokens_in,
                                 "tokens_out": cand.tokens_out, "latency_s": cand.latency_s,
                                 "cost_usd": cand.cost_usd}))
    write_private(src_path.parent / "verdict.json",
                  json.dumps(redact_tree({"candidate": {k: v2 for k, v2 in cand.to_dict().items() if k != "source"},
                                          "verdict": v.to_dict(), "confirmed": v.confirmed,
                                          "source_sha256": source_sha256(cand.source)}), default=str))
    store.record_candidate(
        session, str(path), cand.id, advisor=cand.advisor, rationale=redact(cand.rationale),
        params=json.dumps(cand.params, default=str), source_path=str(src_path), diff=redact(cand.diff),
        accepted=v.accepted, reason=redact(v.reason), status=m.verdict.status.value if m else None,
        median_ms=t.median_ms if t else None, spread_pct=t.spread_pct if t else None,
        speedup=(base.timing.median_ms / t.median_ms) if (t and base.timing and t.median_ms) else None, llm=llm)


def _keep_best(store: Store, r: TuneResult, original: str, path: Path) -> None:
    """Record the best so far now (row and patch): a session killed later still has it."""
    patch = artifacts_dir("candidates", _target_key(path)) / f"best-session{r.session_id}.patch"
    r.patch_path = str(write_private(patch, unified_diff(original, r.best_source, path.name)))
    store.update_tune_session(r.session_id, evaluated=r.evaluated, best_ms=r.best_ms, best_candidate=r.best_candidate)


def _finish(store: Store, r: TuneResult, advisors: list[Advisor], prog: Progress, t0: float) -> None:
    prog.close()
    r.wall_s = time.time() - t0
    r.attempts = r.attempts or []
    for adv in advisors:
        r.notes += [n for n in getattr(adv, "notes", []) if n not in r.notes]
    store.close_tune_session(r.session_id, evaluated=r.evaluated, best_ms=r.best_ms, best_candidate=r.best_candidate,
                             stopped=r.stopped)


# --------------------------------------------------------------------------- from the command line


@dataclass
class TuneDevice:
    """Where a command-line ``profd tune`` measures: one device, pinned and locked."""

    key: str  # the device lock's name (profd.harness.devicelock)
    env: dict[str, str]  # pinned into the warm worker and every child
    name: str


def local_device(force_cpu: bool) -> TuneDevice:
    """The first GPU this process may use, pinned as the daemon pins its slot for it
    (so both take the same device lock); the CPU interpreter without one."""
    from profd.harness.devicelock import device_key
    from profd.service.executors.local import local_gpus

    gpus = [] if force_cpu else local_gpus()
    if gpus:
        g = gpus[0]
        return TuneDevice(device_key(g.env()), g.env(), f"{g.name} (GPU {g.index})")
    return TuneDevice("cpu-0", {"PROFD_FORCE_CPU": "1"} if force_cpu else {}, "CPU (Triton interpreter)")


def open_runner(dev: TuneDevice, *, should_abort: Callable[[], bool],
                on_wait: Callable[[Optional[dict[str, Any]]], None] = lambda h: None) -> Any:
    """A warm worker on ``dev`` (started in the background now), every child under the device lock.

    Close it with ``.close()``. The zygote imports torch and Triton once; each candidate
    is a fork of it, so a session pays the import once instead of once per child."""
    import os

    from profd.harness.devicelock import LockedRunner
    from profd.harness.warm import WarmWorker

    w = WarmWorker(should_abort=should_abort, env_overrides=dev.env)
    w.start_async()
    return LockedRunner(w, dev.key, what=f"profd tune (pid {os.getpid()})", on_wait=on_wait,
                        should_abort=should_abort)


# --------------------------------------------------------------------------- daemon job


from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:  # the daemon builds a job's context; the flow itself never imports the daemon
    from profd.model import Job
    from profd.service.context import JobContext


def tune_job(ctx: JobContext, job: Job) -> None:
    """A TUNE job from the queue: tune with the configured budget, yield to saves."""
    from profd.model import JobState

    path = Path(job.path)
    cfg = ctx.config
    budget = cfg.run.auto_tune_budget or cfg.run.tune_budget
    res = tune(path, ctx.store, budget=budget, advisors=build_advisors(cfg), runner=ctx.runner, warm=ctx.runner,
               counters=cfg.run.counters and ctx.has_gpu, force_cpu=cfg.run.force_cpu,
               timeout_s=cfg.run.timeout_s, kind=job.kind.value, should_stop=lambda: ctx.should_yield(job),
               gpu_index=ctx.gpu_index, profiled=ctx.recent_profiles.get(str(path.resolve())))
    if res.stopped.startswith("pre-empted"):
        ctx.queue.requeue(job, "pre-empted by a save; will resume")
        ctx.say(f"tuning {path.name} paused for a save ({res.evaluated} candidates tried)")
        return
    ctx.queue.finish(job, JobState.DONE, res.stopped)
    ctx.say(summary(res))


def build_advisors(cfg: Any) -> list[Advisor]:
    """Every configured advisor, from the registry in advisors/rewriters/ (deterministic always)."""
    from advisors.rewriters import build_advisors as from_registry

    return from_registry(cfg)


INTERPRETER_SPEEDUP_NOTE = ("measured in Triton's CPU interpreter (no GPU): this speedup says nothing about GPU "
                            "speed, where the change may be slower; tune again on a GPU before relying on it")


def summary(r: TuneResult) -> str:
    """A few lines for the terminal: before, after, per shape, what was kept, configs to paste."""
    name = Path(r.target).name
    rate = f" in {r.wall_s:.0f} s ({r.candidates_per_min:.0f}/min)" if r.candidates_per_min else ""
    lines = [f"tune {name}: {r.evaluated} candidate(s) evaluated{rate}; {r.stopped}"]
    if r.baseline_ms is not None:
        lines.append(f"  before: {r.baseline_ms:.4g} ms")
    if r.best_candidate and r.best_ms:
        lines.append(f"  after:  {r.best_ms:.4g} ms ({r.speedup:.2f}x) with {r.best_candidate}")
        kept = [a for a in r.attempts if a.verdict.accepted]
        for a in kept:
            lines.append(f"    kept {a.candidate.id} ({a.candidate.advisor}): {a.candidate.rationale[:100]}")
    else:
        lines.append("  nothing beat the original by more than the measured noise")
    if r.baseline.timing is not None and not r.baseline.timing.representative:
        lines.append(f"  note: times {INTERPRETER_SPEEDUP_NOTE}")
    table = r.shape_table()
    if len(table) > 1 or (table and table[0]["shape"]):
        lines.append("  per shape (every candidate kept is correct on all of them):")
        for row in table:
            b = f"{row['baseline_ms']:.4g} ms" if row["baseline_ms"] is not None else "-"
            a = f"{row['best_ms']:.4g} ms" if row["best_ms"] is not None else "-"
            sp = f"  {row['speedup']:.2f}x" if row["speedup"] else ""
            lines.append(f"    {_shape_text(row['shape']):28} {b:>12} -> {a:>12}{sp}")
    if r.best_candidate:
        lines.append(f"  patch: {r.patch_path}  (apply with: profd apply {r.target})")
    text = format_triton_configs(r.triton_configs())
    if text:
        lines.append("  the fastest configurations, as triton.Config (for @triton.autotune):")
        lines += ["    " + ln for ln in text.splitlines()]
    for n in r.notes[:5]:
        lines.append(f"  note: {n}")
    lines.append("  candidates ran confined: " + _confinement())
    return "\n".join(lines)


def _confinement() -> str:
    """The candidate child's protections on this kernel, in one line (what profd doctor checks)."""
    from profd.harness.sandbox import protections, unenforced

    missing = unenforced(protections())
    return ("every protection enforced (writes, /proc, network, signals, metadata, secrets)" if not missing
            else "NOT enforced here: " + ", ".join(missing) + " (see profd doctor)")


def _shape_text(shape: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in shape.items()) or "default"
