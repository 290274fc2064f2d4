"""What the nightly report says, as plain data, and the words and numbers every rendering shares.

The nightly run gathers ``NightlyReport`` of ``TargetSummary``; ``html``, ``text`` and
``charts`` only render it, so rendering is testable without a GPU, a store or a mail server.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from profd.model import Candidate, CandidateVerdict, Finding, JsonMixin, Roofline

if TYPE_CHECKING:  # only for a type hint; the store is not needed to render
    from profd.store import RunRecord


# --------------------------------------------------------------------------- input data


@dataclass
class TimeAt(JsonMixin):
    """A median time of one run and the device it ran on."""

    ms: float
    device: str = ""
    at: Optional[float] = None  # unix time of the run
    run_id: Optional[int] = None

    @classmethod
    def from_record(cls, r: Optional["RunRecord"]) -> Optional["TimeAt"]:
        """A stored run's median (None when the run is missing or was not timed)."""
        if r is None or r.median_ms is None:
            return None
        return cls(ms=r.median_ms, device=r.device or "", at=r.started_at, run_id=r.id)


@dataclass
class RooflinePoint(JsonMixin):
    """Where a target sits on the device's roofline, against the ceiling of its own precision."""

    intensity: Optional[float] = None  # FLOP/byte
    achieved_tflops: Optional[float] = None
    achieved_gbps: Optional[float] = None
    bound: str = "unknown"  # "memory-bound", "compute-bound", "latency-bound", ...
    pct_of_ceiling: Optional[float] = None
    precision: str = ""  # of the kernel ("fp32", "bf16"): its compute ceiling is that precision's
    peak_tflops: Optional[float] = None  # the compute ceiling at that precision
    peak_gbps: Optional[float] = None

    @classmethod
    def from_roofline(cls, r: Roofline) -> "RooflinePoint":
        return cls(intensity=r.intensity, achieved_tflops=r.achieved_tflops, achieved_gbps=r.achieved_gbps,
                   bound=r.bound, pct_of_ceiling=r.pct_of_ceiling, precision=r.precision,
                   peak_tflops=r.peak_tflops, peak_gbps=r.peak_gbps)

    def memory_only(self) -> bool:
        """No floating-point work (a copy, a transpose): it has a bandwidth but no place on a log FLOP axis."""
        no_flops = self.intensity == 0 or self.achieved_tflops == 0
        return bool(no_flops and self.achieved_gbps is not None and finite(self.achieved_gbps))

    def chart_xy(self) -> Optional[tuple[float, float]]:
        """(FLOP/byte, TFLOP/s) for the chart, derived from whichever two numbers are known."""
        x, y, g = self.intensity, self.achieved_tflops, self.achieved_gbps
        if x is None and y is not None and g:
            x = y * 1000.0 / g
        if y is None and x is not None and g is not None:
            y = g * x / 1000.0
        if x is None or y is None or not (finite(x) and finite(y)) or x <= 0 or y <= 0:
            return None
        return x, y


@dataclass
class FindingLine(JsonMixin):
    """One thing that holds a target back, as the report lists it."""

    title: str
    summary: str = ""
    estimated_gain_pct: float = 0.0
    severity: str = ""

    @classmethod
    def from_finding(cls, f: Finding) -> "FindingLine":
        return cls(title=f.title, summary=f.summary, estimated_gain_pct=f.estimated_gain_pct,
                   severity=getattr(f.severity, "value", str(f.severity)))


@dataclass
class ReadyCandidate(JsonMixin):
    """A rewrite that was verified correct and measured faster, waiting to be applied."""

    id: str
    advisor: str
    rationale: str = ""
    speedup: Optional[float] = None  # baseline median / candidate median
    diff: str = ""  # unified diff against the user's file

    @classmethod
    def from_candidate(cls, c: Candidate, v: Optional[CandidateVerdict] = None) -> "ReadyCandidate":
        return cls(id=c.id, advisor=c.advisor, rationale=c.rationale, diff=c.diff,
                   speedup=v.speedup if v is not None else None)


@dataclass
class TargetSummary(JsonMixin):
    """Everything the nightly report says about one target."""

    path: str
    correct: bool
    status: str = "correct"  # model.Status value
    message: str = ""  # why it is not correct, or what else to know
    now: Optional[TimeAt] = None
    yesterday: Optional[TimeAt] = None  # the run compared with: a day old when there is one (see its ``at``)
    best: Optional[TimeAt] = None  # best ever, on this device
    roofline: Optional[RooflinePoint] = None
    findings: list[FindingLine] = field(default_factory=list)
    candidates: list[ReadyCandidate] = field(default_factory=list)
    regression: bool = False
    drift_note: str = ""  # e.g. "+12% vs yesterday, beyond the 3% noise"
    history: list[tuple[float, float]] = field(default_factory=list)  # (unix time, median ms)
    roofline_note: str = ""  # why there is no roofline placement (advisors.roofline.why_not_placed)

    def change_pct(self) -> Optional[float]:
        """Now vs the earlier run in percent (positive = slower), when both were timed."""
        if self.now is None or self.yesterday is None or not self.yesterday.ms:
            return None
        return 100.0 * (self.now.ms - self.yesterday.ms) / self.yesterday.ms


@dataclass
class NightlyReport(JsonMixin):
    """The whole night: one device, its ceilings, every target, free-form notes."""

    date: str  # "2024-05-01"
    device: str
    peak_gbps: Optional[float] = None
    peak_tflops: Optional[float] = None
    targets: list[TargetSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    precision: str = ""  # of the compute ceiling, e.g. "fp16 tensor"
    ceilings_source: str = ""  # "measured" or "datasheet"
    generated_at: float = field(default_factory=time.time)
    interpreter: bool = False  # no GPU: Triton's CPU interpreter ran the kernels (times are not GPU times)
    compute_ceilings: dict[str, float] = field(default_factory=dict)  # TFLOP/s per precision

    def ordered_targets(self) -> list[TargetSummary]:
        """Regressions first (worst first), then incorrect targets, then the rest by name."""
        def key(t: TargetSummary) -> tuple[int, float, str]:
            group = 0 if t.regression else 1 if not t.correct else 2
            worst_first = -(t.change_pct() or 0.0) if group == 0 else 0.0
            return group, worst_first, t.path
        return sorted(self.targets, key=key)

    def counts(self) -> dict[str, int]:
        return {
            "targets": len(self.targets),
            "regressions": sum(t.regression for t in self.targets),
            "incorrect": sum(not t.correct for t in self.targets),
            "candidates": sum(len(t.candidates) for t in self.targets),
        }


def subject(report: NightlyReport) -> str:
    """The mail subject: the counts a reader triages by, on one line."""
    c = report.counts()
    parts = [f"{c['regressions']} regression{'s' * (c['regressions'] != 1)}",
             f"{c['incorrect']} incorrect",
             f"{c['candidates']} candidate{'s' * (c['candidates'] != 1)} ready"]
    # Headers may not carry newlines (header injection); device names come from the driver.
    return one_line(f"profd nightly {report.date} on {report.device}: " + ", ".join(parts))


# --------------------------------------------------------------------------- words and numbers


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def one_line(s: str) -> str:
    return " ".join(str(s).split())


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def clean(s: Any) -> str:
    """Untrusted text for a terminal or a text/plain mail: no escape sequences."""
    return _CONTROL.sub("?", str(s))


def fmt_ms(ms: Optional[float]) -> str:
    """A duration for humans: µs below 0.1 ms, three decimals below 10 ms."""
    if ms is None or not finite(ms):
        return "—"
    if ms < 0.1:
        return f"{ms * 1000:.1f} µs"
    if ms < 10:
        return f"{ms:.3f} ms"
    return f"{ms:,.1f} ms"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def fmt_num(x: Optional[float], digits: int = 3) -> str:
    if x is None or not finite(x):
        return "—"
    return f"{x:,.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def fmt_change(pct: Optional[float]) -> str:
    if pct is None:
        return "—"
    if abs(pct) < 0.05:
        return "±0.0%"
    return f"{pct:+.1f}% {'slower' if pct > 0 else 'faster'}"


def fmt_age(seconds: Optional[float]) -> str:
    """How long before tonight's run the compared run was: "yesterday", "12 min earlier", "3 days earlier"."""
    if seconds is None or not finite(seconds):
        return "an earlier run"
    s = max(seconds, 0.0)
    if s < 3600:
        return f"{max(1, round(s / 60))} min earlier"
    if s < 18 * 3600:
        return f"{round(s / 3600)} h earlier"
    if s < 36 * 3600:
        return "yesterday"
    return f"{round(s / 86400)} days earlier"


def compared_age(t: TargetSummary, report: NightlyReport) -> str:
    """The age of the run ``t`` is compared with, relative to its own run tonight."""
    if t.yesterday is None or t.yesterday.at is None:
        return "an earlier run"
    ref = t.now.at if t.now is not None and t.now.at is not None else report.generated_at
    return fmt_age(ref - t.yesterday.at)


def change_vs(t: TargetSummary, report: NightlyReport) -> str:
    """"+1.2% slower vs 12 min earlier": the change and what it is against (never a bare "vs yesterday")."""
    pct = t.change_pct()
    return "—" if pct is None else f"{fmt_change(pct)} vs {compared_age(t, report)}"


def fmt_date(ts: Optional[float]) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d") if ts and finite(ts) else ""


def fmt_time_at(t: Optional[TimeAt], report_device: str) -> str:
    """"1.234 ms", plus the device when it is not the report's (times across devices differ)."""
    if t is None:
        return "—"
    extra = [x for x in (t.device if t.device and t.device != report_device else "", fmt_date(t.at)) if x]
    return fmt_ms(t.ms) + (f" ({', '.join(extra)})" if extra else "")


def fmt_roofline(r: Optional[RooflinePoint], note: str = "") -> str:
    """One line: where the target sits, or why it has no place."""
    if r is None:
        return note or "—"
    if r.memory_only():
        of = f" of {fmt_num(r.peak_gbps)} GB/s" if r.peak_gbps else ""
        pct = f" ({100.0 * r.achieved_gbps / r.peak_gbps:.0f}%)" if r.peak_gbps and r.achieved_gbps else ""
        return f"memory-only: {fmt_num(r.achieved_gbps)} GB/s{of}{pct}, {r.bound}"
    parts = []
    if r.intensity is not None:
        parts.append(f"{fmt_num(r.intensity)} FLOP/B")
    if r.achieved_tflops is not None:
        parts.append(f"{fmt_num(r.achieved_tflops)} TFLOP/s" + (f" {r.precision}" if r.precision else ""))
    if r.achieved_gbps is not None:
        parts.append(f"{fmt_num(r.achieved_gbps)} GB/s")
    if r.bound:
        parts.append(r.bound)
    if r.pct_of_ceiling is not None and finite(r.pct_of_ceiling):
        parts.append(f"{r.pct_of_ceiling:.0f}% of ceiling")
    return ", ".join(parts) or "—"


def display_names(targets: list[TargetSummary]) -> dict[str, str]:
    """Short names: the file name, or the path below the common folder when file names clash."""
    paths = [t.path for t in targets]
    names = {p: os.path.basename(p) or p for p in paths}
    if len(set(names.values())) == len(set(paths)):
        return names
    try:
        common = os.path.commonpath(paths)
    except ValueError:  # mixed absolute/relative
        return {p: p for p in paths}
    return {p: os.path.relpath(p, common) if common else p for p in paths}


def status_word(t: TargetSummary) -> str:
    if t.regression:
        return "REGRESSION" if t.correct else "REGRESSION (incorrect)"
    return "ok" if t.correct else f"INCORRECT ({t.status})"


def ceilings_text(report: NightlyReport) -> str:
    """"memory 4,800 GB/s, compute 989 TFLOP/s (bf16), 67 TFLOP/s (fp32)", or "" without ceilings."""
    ceil = []
    if report.peak_gbps:
        ceil.append(f"memory {fmt_num(report.peak_gbps)} GB/s")
    shown = chart_ceilings(report)
    if shown:
        ceil.append("compute " + ", ".join(f"{fmt_num(v)} TFLOP/s" + (f" ({p})" if p else "") for p, v in shown))
    return ", ".join(ceil)


def chart_ceilings(report: NightlyReport) -> list[tuple[str, float]]:
    """The compute ceilings worth drawing: each precision a target ran at, else the report's headline one."""
    out: dict[str, float] = {}
    for t in report.targets:
        r = t.roofline
        if r is not None and r.peak_tflops and finite(r.peak_tflops) and r.peak_tflops > 0:
            out.setdefault(r.precision or report.precision, float(r.peak_tflops))
    if not out and report.peak_tflops and finite(report.peak_tflops) and report.peak_tflops > 0:
        out[report.precision] = float(report.peak_tflops)
    return sorted(out.items(), key=lambda kv: -kv[1])


def why_no_roofline_chart(report: NightlyReport) -> str:
    """Why the roofline chart is missing, from what the targets say (not a guess)."""
    if report.interpreter:
        return ("No roofline chart: the kernels ran in Triton's CPU interpreter, which has no device ceilings and "
                "no GPU times; run the nightly on a GPU for the roofline.")
    notes = list(dict.fromkeys(t.roofline_note for t in report.targets if t.roofline is None and t.roofline_note))
    if notes:
        return "No roofline chart: " + "; ".join(n.removeprefix("not placed: ") for n in notes) + "."
    return "No roofline chart: no target reported both its FLOPs and bytes moved (define flops() and bytes_moved())."


#: What a reader must know before reading any number of a night without a GPU.
INTERPRETER_NOTE = ("No GPU: the kernels ran in Triton's CPU interpreter. Correctness is checked for real; the times, "
                    "their changes and any speedup are interpreter times that say nothing about GPU speed, and "
                    "there is no roofline.")


def compared_line(t: TargetSummary, report: NightlyReport) -> str:
    """"previous 1.200 ms (12 min earlier), +1.0% slower": the run tonight's is compared with, and its age."""
    if t.yesterday is None:
        return "no earlier run to compare with"
    pct = t.change_pct()
    y = t.yesterday
    where = f", {y.device}" if y.device and y.device != report.device else ""
    return (f"previous {fmt_ms(y.ms)} ({compared_age(t, report)}{where})"
            + (f", {fmt_change(pct)}" if pct is not None else ""))
