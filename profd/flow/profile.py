"""One save's worth of work: measure, (counters), diagnose, report, store.

The watcher, the CLI's ``profd profile`` and nightly runs all go through
``profile()`` so that a result means the same thing wherever it came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from profd.harness import runner as harness
from profd.model import CounterTable, Finding, Measurement, Roofline
from profd.store import RunRecord, Store

if TYPE_CHECKING:  # the diagnosis (pandas, the rules) loads only when a report is made
    from advisors.diagnosis import Diagnosis


@dataclass
class ProfileResult:
    """Everything ``profd profile`` learned about one target."""

    measurement: Measurement
    run_id: int
    previous: Optional[RunRecord] = None
    best: Optional[RunRecord] = None
    counters: Optional[CounterTable] = None
    findings: list[Finding] = field(default_factory=list)
    roofline: Optional[Roofline] = None
    report: str = ""
    warnings: list[str] = field(default_factory=list)
    diagnosis: Optional[Diagnosis] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "measurement": self.measurement.to_dict(),
            "previous": self.previous.to_dict() if self.previous else None,
            "best": self.best.to_dict() if self.best else None,
            "counters": self.counters.to_dict() if self.counters is not None else None,
            "findings": [f.to_dict() for f in self.findings],
            "roofline": self.roofline.to_dict() if self.roofline else None,
            "report": self.report,
            "warnings": list(self.warnings),
        }


class Cancelled(Exception):
    """The daemon is stopping: the measurement in flight was abandoned, not failed."""


def profile(path: Path, store: Store, *, counters: bool = False, full_set: bool = False, timeout_s: float = 120.0,
            force_cpu: bool = False, runner: Optional[harness.Runner] = None,
            cancelled: Callable[[], bool] = lambda: False, gpu_index: Optional[int] = None,
            on_step: Callable[[str, Any], None] = lambda step, value: None,
            time_shapes: str = "bench", trials: int = 3) -> ProfileResult:
    """Verify and time ``path``; with ``counters`` also profile and diagnose it.

    ``on_step`` is called as each stage finishes ("verdict", then "report") so that
    a watcher can show the quick verdict before the slower counter pass is done.
    Raises Cancelled (storing nothing) when ``cancelled()`` turns true meanwhile, and
    ``NotATarget`` (storing nothing, running nothing) for a file that is no kernel target.
    ``gpu_index`` is the NVML index of the GPU the job runs on (its executor slot's; GPU 0 when
    not given), whose clocks and other processes are recorded around the measurement. ``trials``:
    verification calls per declared shape, each on fresh inputs.
    """
    from profd.harness.recognise import check_target

    path = Path(path).resolve()
    check_target(path)
    before = _nvml_snapshot(gpu_index)
    m = harness.measure(path, timeout_s=timeout_s, force_cpu=force_cpu, runner=runner, time_shapes=time_shapes,
                        trials=trials)
    if cancelled():
        raise Cancelled()
    after = _nvml_snapshot(gpu_index)
    m.device_state_before, m.device_state_after = before, after
    if before is not None or after is not None:
        from collectors.nvml import assess

        m.warnings += [w for w in assess(before, after) if w not in m.warnings]
    run_id = store.record_run(m)
    device = m.device.name if m.device else None
    res = ProfileResult(measurement=m, run_id=run_id, previous=store.previous(path, run_id, device),
                        best=store.best(path, device, before_id=run_id))
    on_step("verdict", res)
    on_gpu = bool(m.device and m.device.backend != "cpu")
    if counters and m.correct and on_gpu:
        from collectors.errors import CaptureError
        from profd.flow.capture import capture_counters

        try:
            res.counters, seconds = capture_counters(path, backend=m.device.backend, full_set=full_set,  # type: ignore[union-attr]
                                            timeout_s=max(timeout_s * 5, 600.0))
            res.counters.warnings.append(f"profiler step took {seconds:.1f} s")
        except CaptureError as e:
            res.warnings.append(f"hardware counters unavailable: {e}")
        if cancelled():
            raise Cancelled()
    elif counters and m.correct and not on_gpu:
        res.warnings.append("no GPU: hardware counters and the roofline need a GPU; verification and timing ran "
                            "in Triton's CPU interpreter")
    diagnose_into(res, path, store)
    store.attach_report(run_id, res.report, [f.to_dict() for f in res.findings])
    on_step("report", res)
    return res


#: How old a stored profile may be for ``profd tune`` to start from it (a save's verdict from the
#: daemon, ``profd profile`` just before): the judge times the original again in any case.
REUSE_WITHIN_S = 900.0


def recent_profile(store: Store, path: Path, within_s: float = REUSE_WITHIN_S) -> Optional[ProfileResult]:
    """The newest stored profile of ``path``'s current content, if it ran in the last
    ``within_s`` seconds, rebuilt as a ProfileResult (its counter table is not stored: None);
    None when there is none or it cannot be read back."""
    from profd.harness.target import content_hash

    try:
        row = store.latest_profile(path, content_hash(path), time.time() - within_s)
        if row is None:
            return None
        m = Measurement.from_dict(row["measurement"])
        findings = [Finding.from_dict(f) for f in row.get("findings") or []]
    except Exception:  # an unreadable row: measure instead
        return None
    return ProfileResult(measurement=m, run_id=int(row["id"]), findings=findings, report=row.get("report") or "")


def _nvml_snapshot(index: Optional[int]) -> Any:
    """NVML state of GPU ``index`` (GPU 0 when unknown); None without NVML."""
    try:
        from collectors.nvml import snapshot

        return snapshot(index if index is not None else 0)
    except Exception:  # device state is a bonus: a broken NVML must not cost the verdict
        return None


_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64",
              "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}


def precision_of(m: Measurement) -> str:
    """The roofline precision: the dtype of the kernel's first output."""
    for c in m.verdict.checks:
        return _PRECISION.get(c.dtype, "fp32")
    return "fp32"


def diagnose_into(res: ProfileResult, path: Path, store: Store) -> None:
    """Roofline, findings and the markdown report for a ProfileResult (one ``Diagnosis``)."""
    from advisors.diagnosis import analyze
    from advisors.knobs import discover
    from advisors.report import render_counters, render_diagnosis
    from advisors.roofline import place

    m = res.measurement
    spec = ceilings = None
    if m.device and m.device.backend != "cpu":
        from hwspecs import resolve

        spec, ceilings, _ = resolve(m.device.name)
    try:
        knobs = discover(path.read_text(), str(path))
    except (OSError, SyntaxError):
        knobs = None
    precision = precision_of(m)
    t = m.timing
    measured = None
    if t is not None and t.representative and (t.flops or t.bytes_moved) and ceilings is not None:
        measured = place(t.flops, t.bytes_moved, t.median_ms / 1e3, ceilings, precision)
    dx = analyze(res.counters, spec, ceilings, roofline=measured, knobs=knobs, precision=precision)
    res.diagnosis, res.roofline, res.findings = dx, dx.roofline, dx.findings
    history = [r.to_dict() for r in reversed(store.history(path, limit=30)) if r.id != res.run_id]
    res.report = render_diagnosis(dx, target=path.name, measurement=m, history=history)
    if res.counters is not None:
        res.report += render_counters(res.counters)
    notes = [w for w in res.warnings + m.warnings]
    if m.builds:
        b = m.builds
        notes.append(f"CUDA build: {b.get('build_seconds', 0):.2f} s ({b.get('cache_hits', 0)} cached, "
                     f"{b.get('cache_misses', 0)} compiled), kept out of the timing above")
    if notes:
        res.report += "\n" + "\n".join(f"> Note: {w}" for w in notes) + "\n"
