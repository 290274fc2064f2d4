"""The nightly report: an HTML email with pictures, its plain-text twin, and its copy on disk.

The nightly run gathers plain data (``NightlyReport`` of ``TargetSummary``) and this module
only renders it, so rendering is testable without a GPU, a store or a mail server.

Everything that came from a kernel file, a profiler, an advisor or an LLM (names, messages,
findings, rationales, diffs, notes) is untrusted text: the HTML escapes all of it, and the
plain text drops control characters so ``profd report`` cannot drive the user's terminal.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from profd.model import Candidate, CandidateVerdict, Finding, JsonMixin, Roofline
from profd.paths import artifacts_dir, ensure_private_dir, write_private

if TYPE_CHECKING:  # only for a type hint; the store is not needed to render
    from profd.store import RunRecord

#: The email caps each diff (a mail client chokes on a 5,000-line <pre>); the saved copy does not.
MAIL_MAX_DIFF_LINES = 400

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
    """Where a target sits on the device's roofline."""

    intensity: Optional[float] = None  # FLOP/byte
    achieved_tflops: Optional[float] = None
    achieved_gbps: Optional[float] = None
    bound: str = "unknown"  # "memory-bound", "compute-bound", "latency-bound", ...
    pct_of_ceiling: Optional[float] = None

    @classmethod
    def from_roofline(cls, r: Roofline) -> "RooflinePoint":
        return cls(intensity=r.intensity, achieved_tflops=r.achieved_tflops, achieved_gbps=r.achieved_gbps,
                   bound=r.bound, pct_of_ceiling=r.pct_of_ceiling)

    def chart_xy(self) -> Optional[tuple[float, float]]:
        """(FLOP/byte, TFLOP/s) for the chart, derived from whichever two numbers are known."""
        x, y, g = self.intensity, self.achieved_tflops, self.achieved_gbps
        if x is None and y is not None and g:
            x = y * 1000.0 / g
        if y is None and x is not None and g is not None:
            y = g * x / 1000.0
        if x is None or y is None or not (_finite(x) and _finite(y)) or x <= 0 or y <= 0:
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
    yesterday: Optional[TimeAt] = None
    best: Optional[TimeAt] = None  # best ever, on this device
    roofline: Optional[RooflinePoint] = None
    findings: list[FindingLine] = field(default_factory=list)
    candidates: list[ReadyCandidate] = field(default_factory=list)
    regression: bool = False
    drift_note: str = ""  # e.g. "+12% vs yesterday, beyond the 3% noise"
    history: list[tuple[float, float]] = field(default_factory=list)  # (unix time, median ms)

    def change_pct(self) -> Optional[float]:
        """Now vs yesterday in percent (positive = slower), when both were timed."""
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
    return _one_line(f"profd nightly {report.date} on {report.device}: " + ", ".join(parts))


# --------------------------------------------------------------------------- formatting helpers


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def _clean(s: Any) -> str:
    """Untrusted text for a terminal or a text/plain mail: no escape sequences."""
    return _CONTROL.sub("?", str(s))


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def fmt_ms(ms: Optional[float]) -> str:
    """A duration for humans: µs below 0.1 ms, three decimals below 10 ms."""
    if ms is None or not _finite(ms):
        return "—"
    if ms < 0.1:
        return f"{ms * 1000:.1f} µs"
    if ms < 10:
        return f"{ms:.3f} ms"
    return f"{ms:,.1f} ms"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _fmt_num(x: Optional[float], digits: int = 3) -> str:
    if x is None or not _finite(x):
        return "—"
    return f"{x:,.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def _fmt_change(pct: Optional[float]) -> str:
    if pct is None:
        return "—"
    if abs(pct) < 0.05:
        return "±0.0%"
    return f"{pct:+.1f}% {'slower' if pct > 0 else 'faster'}"


def _change_suffix(t: "TargetSummary") -> str:
    pct = t.change_pct()
    return f" ({_fmt_change(pct)})" if pct is not None else ""


def _fmt_date(ts: Optional[float]) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d") if ts and _finite(ts) else ""


def _fmt_time_at(t: Optional[TimeAt], report_device: str) -> str:
    """"1.234 ms", plus the device when it is not the report's (times across devices differ)."""
    if t is None:
        return "—"
    extra = [x for x in (t.device if t.device and t.device != report_device else "", _fmt_date(t.at)) if x]
    return fmt_ms(t.ms) + (f" ({', '.join(extra)})" if extra else "")


def _fmt_roofline(r: Optional[RooflinePoint]) -> str:
    if r is None:
        return "—"
    parts = []
    if r.intensity is not None:
        parts.append(f"{_fmt_num(r.intensity)} FLOP/B")
    if r.achieved_tflops is not None:
        parts.append(f"{_fmt_num(r.achieved_tflops)} TFLOP/s")
    if r.achieved_gbps is not None:
        parts.append(f"{_fmt_num(r.achieved_gbps)} GB/s")
    if r.bound:
        parts.append(r.bound)
    if r.pct_of_ceiling is not None and _finite(r.pct_of_ceiling):
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


def _status_word(t: TargetSummary) -> str:
    if t.regression:
        return "REGRESSION" if t.correct else "REGRESSION (incorrect)"
    return "ok" if t.correct else f"INCORRECT ({t.status})"


# --------------------------------------------------------------------------- charts


def _cid(kind: str, report: NightlyReport) -> str:
    safe = re.sub(r"[^A-Za-z0-9]+", "-", report.date).strip("-") or "report"
    return f"{kind}-{safe}@profd"


def _mpl_text(s: str, limit: int = 40) -> str:
    # Matplotlib reads $...$ as math (a stray "$" in a file name would raise while drawing),
    # and a legend silently drops labels that start with "_".
    s = _one_line(s)
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    s = s.replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def render_charts(report: NightlyReport) -> dict[str, bytes]:
    """PNG pictures keyed by Content-ID: the roofline and the history (each only when it has data).

    Empty when matplotlib is missing: the report stays useful without pictures.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (Agg: no display needed)
    except ImportError:
        return {}
    images: dict[str, bytes] = {}
    for kind, draw in (("roofline", _roofline_png), ("history", _history_png)):
        png = draw(report)
        if png:
            images[_cid(kind, report)] = png
    return images


def _new_figure(w: float, h: float) -> Any:
    # Figure + Agg canvas, not pyplot: no global state, safe in the daemon's threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _group_color(t: TargetSummary) -> str:
    return "#c62828" if t.regression else "#ef6c00" if not t.correct else "#1565c0"


def _roofline_png(report: NightlyReport) -> Optional[bytes]:
    names = display_names(report.targets)
    points = [(t, xy) for t in report.targets if t.roofline is not None and (xy := t.roofline.chart_xy())]
    if not points:
        return None
    import numpy as np

    gbps = report.peak_gbps if _finite(report.peak_gbps) and report.peak_gbps > 0 else None
    tflops = report.peak_tflops if _finite(report.peak_tflops) and report.peak_tflops > 0 else None
    xs = [xy[0] for _, xy in points]
    ridge = tflops * 1000.0 / gbps if gbps and tflops else None
    lo, hi = min(xs + ([ridge] if ridge else [])) / 8, max(xs + ([ridge] if ridge else [])) * 8

    fig = _new_figure(7.5, 4.6)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    grid = np.logspace(math.log10(lo), math.log10(hi), 256)
    roof = np.full_like(grid, np.inf)
    if gbps:
        mem = gbps * grid / 1000.0  # GB/s x FLOP/B = GFLOP/s
        roof = np.minimum(roof, mem)
        ax.plot(grid, mem, ls=":", lw=1, color="#888888")
    if tflops:
        roof = np.minimum(roof, tflops)
        ax.axhline(tflops, ls=":", lw=1, color="#888888")
    if gbps or tflops:
        ax.plot(grid, roof, color="black", lw=2)
    if gbps:
        ax.text(lo * 1.3, gbps * lo * 1.3 / 1000.0 * 3, f"memory {gbps:,.0f} GB/s", fontsize=8)
    if tflops:
        label = f"compute {tflops:,.0f} TFLOP/s" + (f" ({_mpl_text(report.precision, 20)})" if report.precision else "")
        ax.text(hi / 1.3, tflops * 1.12, label, fontsize=8, ha="right")
    for t, (x, y) in points:
        marker = "x" if not t.correct else "o"
        ax.scatter([x], [y], color=_group_color(t), marker=marker, s=36, zorder=3)
        ax.annotate(_mpl_text(names[t.path]), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(_mpl_text(f"Roofline: {report.device}", 70), fontsize=10)
    ax.grid(True, which="major", ls="-", lw=0.3, color="#cccccc")
    return _png(fig)


def _history_png(report: NightlyReport) -> Optional[bytes]:
    names = display_names(report.targets)
    series = []
    for t in report.ordered_targets():
        pts = sorted((float(ts), float(ms)) for ts, ms in t.history if _finite(ts) and _finite(ms) and ms > 0)
        if pts:
            series.append((t, pts))
    if not series:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig = _new_figure(7.5, 3.8)
    ax = fig.add_subplot()
    for t, pts in series:
        # Normalized to the first run shown so kernels of 5 µs and 50 ms share one axis.
        first = pts[0][1]
        when = [datetime.fromtimestamp(ts) for ts, _ in pts]
        rel = [ms / first for _, ms in pts]
        ax.plot(when, rel, marker="o", ms=3, lw=2.2 if t.regression else 1.2,
                color=_group_color(t) if t.regression else None, label=_mpl_text(names[t.path], 30))
    ax.axhline(1.0, ls="--", lw=0.8, color="#888888")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("time / first run shown\n(lower is faster)")
    ax.set_title("History of median time per target", fontsize=10)
    ax.grid(True, lw=0.3, color="#cccccc")
    ax.legend(fontsize=7, loc="best", ncol=2 if len(series) > 6 else 1)
    return _png(fig)


# --------------------------------------------------------------------------- HTML

_FONT = "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif"
_MONO = "font-family:SFMono-Regular,Menlo,Consolas,monospace"
_PRE = (f"{_MONO};font-size:12px;line-height:1.35;background:#f6f8fa;border:1px solid #d0d7de;"
        "padding:8px;margin:6px 0 12px 0;white-space:pre;overflow-x:auto")
_TH = "text-align:left;padding:4px 8px;border-bottom:2px solid #999;font-size:13px"
_TD = "padding:4px 8px;border-bottom:1px solid #ddd;font-size:13px;vertical-align:top"
_ROW_BG = {"regression": "#fdecea", "incorrect": "#fff4e5", "ok": "#ffffff"}


def _diff_line_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "color:#57606a;font-weight:bold"
    if line.startswith("@@"):
        return "color:#0550ae;background:#ddf4ff"
    if line.startswith("+"):
        return "color:#116329;background:#dafbe1"
    if line.startswith("-"):
        return "color:#82071e;background:#ffebe9"
    return "color:#24292f"


def diff_html(diff: str, max_lines: Optional[int] = None) -> str:
    """A unified diff as a <pre> with +/- lines colored by inline styles (mail clients drop <style>)."""
    lines = diff.splitlines()
    shown = lines if max_lines is None else lines[:max_lines]
    out = [f'<span style="{_diff_line_style(line)}">{_e(line)}</span>' for line in shown]
    if len(shown) < len(lines):
        out.append(f'<span style="color:#57606a;font-style:italic">… {len(lines) - len(shown)} more lines: '
                   "the full diff is in the saved report (profd report)</span>")
    return f'<pre style="{_PRE}">' + "\n".join(out) + "</pre>"


def _row_kind(t: TargetSummary) -> str:
    return "regression" if t.regression else "incorrect" if not t.correct else "ok"


def _render_html(report: NightlyReport, image_src: dict[str, str], max_diff_lines: Optional[int]) -> str:
    names = display_names(report.targets)
    ordered = report.ordered_targets()
    c = report.counts()
    h: list[str] = []
    a = h.append
    a('<!DOCTYPE html><html><head><meta charset="utf-8">')
    a(f"<title>{_e(subject(report))}</title></head>")
    a(f'<body style="{_FONT};color:#24292f;margin:0;padding:16px"><div style="max-width:960px">')
    a(f'<h1 style="font-size:20px;margin:0 0 4px 0">profd nightly report · {_e(report.date)}</h1>')
    ceil = []
    if report.peak_gbps:
        ceil.append(f"memory {_fmt_num(report.peak_gbps)} GB/s")
    if report.peak_tflops:
        ceil.append(f"compute {_fmt_num(report.peak_tflops)} TFLOP/s"
                    + (f" ({_e(report.precision)})" if report.precision else ""))
    src = f" [{_e(report.ceilings_source)}]" if report.ceilings_source and ceil else ""
    a(f'<div style="color:#57606a;font-size:13px">{_e(report.device)}'
      + (f" · ceilings: {', '.join(ceil)}{src}" if ceil else "") + "</div>")
    summary = (f"{c['targets']} target{'s' * (c['targets'] != 1)}: "
               f"<b style=\"color:{'#c62828' if c['regressions'] else '#24292f'}\">{c['regressions']} regression"
               f"{'s' * (c['regressions'] != 1)}</b>, "
               f"<b style=\"color:{'#ef6c00' if c['incorrect'] else '#24292f'}\">{c['incorrect']} incorrect</b>, "
               f"{c['candidates']} candidate{'s' * (c['candidates'] != 1)} ready to apply.")
    a(f'<p style="font-size:14px">{summary}</p>')
    if report.notes:
        a('<ul style="font-size:13px;color:#57606a">' + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")

    if ordered:
        a('<table style="border-collapse:collapse;margin:8px 0 16px 0">')
        a("<tr>" + "".join(f'<th style="{_TH}">{x}</th>' for x in
                           ("Target", "Status", "Now", "vs yesterday", "Best ever", "Roofline", "Ready")) + "</tr>")
        for t in ordered:
            kind = _row_kind(t)
            color = {"regression": "#c62828", "incorrect": "#ef6c00", "ok": "#1b7f3b"}[kind]
            cells = [
                f'<a href="#{_anchor(t)}" style="color:#0969da">{_e(names[t.path])}</a>',
                f'<span style="color:{color};font-weight:bold">{_e(_status_word(t))}</span>',
                _e(_fmt_time_at(t.now, report.device)),
                _e(_fmt_change(t.change_pct())),
                _e(_fmt_time_at(t.best, report.device)),
                _e(_fmt_roofline(t.roofline)),
                str(len(t.candidates)),
            ]
            a(f'<tr style="background:{_ROW_BG[kind]}">' + "".join(f'<td style="{_TD}">{x}</td>' for x in cells)
              + "</tr>")
        a("</table>")

    for kind, alt, missing in (
        ("roofline", "Roofline chart: every target against this device's memory and compute ceilings",
         "No roofline chart: no target reported both its FLOPs and bytes moved (define flops() and bytes_moved())."),
        ("history", "History chart: each target's median time, relative to its first run shown",
         "No history chart: no timed runs yet."),
    ):
        cid = _cid(kind, report)
        if cid in image_src:
            a(f'<div style="margin:8px 0"><img src="{_e(image_src[cid])}" alt="{_e(alt)}" '
              'style="max-width:100%;border:1px solid #ddd"></div>')
        elif ordered:
            a(f'<p style="font-size:12px;color:#57606a">{_e(missing)}</p>')

    for t in ordered:
        a(_target_html(t, names[t.path], report.device, max_diff_lines))
    a('<p style="font-size:11px;color:#8c959f;margin-top:24px">Generated by profd at '
      f"{_e(datetime.fromtimestamp(report.generated_at).strftime('%Y-%m-%d %H:%M:%S'))}.</p>")
    a("</div></body></html>")
    return "\n".join(h)


def _anchor(t: TargetSummary) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9]+", "-", t.path).strip("-")


def _target_html(t: TargetSummary, name: str, device: str, max_diff_lines: Optional[int]) -> str:
    kind = _row_kind(t)
    color = {"regression": "#c62828", "incorrect": "#ef6c00", "ok": "#1b7f3b"}[kind]
    h: list[str] = []
    a = h.append
    a(f'<div id="{_anchor(t)}" style="border-left:4px solid {color};padding:4px 0 4px 12px;margin:20px 0">')
    a(f'<h2 style="font-size:16px;margin:0"><span style="color:{color}">{_e(_status_word(t))}</span> '
      f"{_e(name)}</h2>")
    a(f'<div style="{_MONO};font-size:12px;color:#57606a">{_e(t.path)}</div>')
    if not t.correct or t.message:
        a(f'<p style="font-size:13px;margin:6px 0"><b>Status:</b> {_e(t.status)}'
          + (f" — {_e(t.message)}" if t.message else "") + "</p>")
    a(f'<p style="font-size:13px;margin:6px 0"><b>Time:</b> now {_e(_fmt_time_at(t.now, device))} · '
      f"yesterday {_e(_fmt_time_at(t.yesterday, device))}{_e(_change_suffix(t))} · "
      f"best ever {_e(_fmt_time_at(t.best, device))}</p>")
    if t.drift_note:
        a(f'<p style="font-size:13px;margin:6px 0;color:{color}"><b>Drift:</b> {_e(t.drift_note)}</p>')
    if t.roofline is not None:
        a(f'<p style="font-size:13px;margin:6px 0"><b>Roofline:</b> {_e(_fmt_roofline(t.roofline))}</p>')
    if t.findings:
        a('<div style="font-size:13px;margin:6px 0"><b>What limits it</b> (by estimated gain):</div><ol '
          'style="font-size:13px;margin:2px 0 8px 0">')
        for f in sorted(t.findings, key=lambda f: -(f.estimated_gain_pct or 0.0)):
            gain = f" <span style=\"color:#57606a\">(est. gain ~{f.estimated_gain_pct:.0f}%)</span>" \
                if f.estimated_gain_pct else ""
            a(f"<li><b>{_e(f.title)}</b>{gain}<br>{_e(f.summary)}</li>")
        a("</ol>")
    if t.candidates:
        a('<div style="font-size:13px;margin:6px 0"><b>Candidates ready to apply</b> '
          f'(<span style="{_MONO}">profd apply {_e(t.path)}</span>):</div>')
        for cand in sorted(t.candidates, key=lambda c: -(c.speedup or 0.0)):
            speed = f"measured speedup {cand.speedup:.2f}×" if cand.speedup else "speedup not measured"
            a(f'<div style="font-size:13px;margin:8px 0 0 0"><b style="{_MONO}">{_e(cand.id)}</b> · '
              f"{_e(cand.advisor)} · <b>{_e(speed)}</b></div>")
            if cand.rationale:
                a(f'<div style="font-size:13px;margin:2px 0;white-space:pre-wrap">{_e(cand.rationale)}</div>')
            if cand.diff:
                a(diff_html(cand.diff, max_diff_lines))
    a("</div>")
    return "\n".join(h)


def render_html(report: NightlyReport, max_diff_lines: Optional[int] = MAIL_MAX_DIFF_LINES
                ) -> tuple[str, dict[str, bytes]]:
    """The report as HTML for mail, and its pictures keyed by Content-ID (referenced as ``cid:``)."""
    images = render_charts(report)
    return _render_html(report, {cid: "cid:" + cid for cid in images}, max_diff_lines), images


# --------------------------------------------------------------------------- plain text


def render_text(report: NightlyReport, max_diff_lines: Optional[int] = None) -> str:
    """The report as plain text: the mail's text alternative and what ``profd report`` prints."""
    names = display_names(report.targets)
    c = report.counts()
    out: list[str] = []
    a = out.append
    a(_one_line(f"profd nightly report - {report.date} - {report.device}"))
    ceil = []
    if report.peak_gbps:
        ceil.append(f"memory {_fmt_num(report.peak_gbps)} GB/s")
    if report.peak_tflops:
        ceil.append(f"compute {_fmt_num(report.peak_tflops)} TFLOP/s" + (f" ({report.precision})" if report.precision else ""))
    if ceil:
        a("Ceilings: " + ", ".join(ceil) + (f" [{report.ceilings_source}]" if report.ceilings_source else ""))
    a(f"{_plural(c['targets'], 'target')}: {_plural(c['regressions'], 'regression')}, {c['incorrect']} incorrect, "
      f"{_plural(c['candidates'], 'candidate')} ready to apply.")
    for n in report.notes:
        a(f"  * {n}")
    for t in report.ordered_targets():
        a("")
        a(f"== {_status_word(t)}: {names[t.path]} ==")
        a(f"path:     {t.path}")
        if not t.correct or t.message:
            a(f"status:   {t.status}" + (f" - {t.message}" if t.message else ""))
        a(f"time:     now {_fmt_time_at(t.now, report.device)} | yesterday {_fmt_time_at(t.yesterday, report.device)}"
          f"{_change_suffix(t)} | best ever {_fmt_time_at(t.best, report.device)}")
        if t.drift_note:
            a(f"drift:    {t.drift_note}")
        if t.roofline is not None:
            a(f"roofline: {_fmt_roofline(t.roofline)}")
        if t.findings:
            a("what limits it:")
            for i, f in enumerate(sorted(t.findings, key=lambda f: -(f.estimated_gain_pct or 0.0)), 1):
                gain = f" (est. gain ~{f.estimated_gain_pct:.0f}%)" if f.estimated_gain_pct else ""
                a(f"  {i}. {f.title}{gain}")
                if f.summary:
                    a(f"     {f.summary}")
        if t.candidates:
            a(f"candidates ready to apply (profd apply {t.path}):")
            for cand in sorted(t.candidates, key=lambda c: -(c.speedup or 0.0)):
                speed = f"measured speedup {cand.speedup:.2f}x" if cand.speedup else "speedup not measured"
                a(f"  [{cand.id}] {cand.advisor}, {speed}")
                for line in cand.rationale.splitlines():
                    a(f"    {line}")
                if cand.diff:
                    lines = cand.diff.splitlines()
                    shown = lines if max_diff_lines is None else lines[:max_diff_lines]
                    out.extend(shown)  # unindented, so it can be piped to `patch`
                    if len(shown) < len(lines):
                        a(f"  ... {len(lines) - len(shown)} more lines: the full diff is in the saved report")
    return _clean("\n".join(out) + "\n")


# --------------------------------------------------------------------------- on disk


def reports_dir() -> Path:
    """Where nightly reports are kept: one folder per date under the state dir's artifacts."""
    return artifacts_dir("reports")


def default_report_dir(report: NightlyReport) -> Path:
    """``reports_dir()/<date>``, created user-only."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", report.date).strip("-.") or "undated"
    return ensure_private_dir(reports_dir() / safe)


def save(report: NightlyReport, directory: Optional[Path] = None) -> Path:
    """Write ``report.html`` (pictures as PNG files next to it), ``report.txt`` and ``report.json``.

    Returns the path of ``report.html``. The saved copy shows full diffs; the mail caps them.
    """
    if directory is None:
        directory = default_report_dir(report)
    else:
        # A folder the caller chose: create it user-only, but never chmod one that exists (it may be shared).
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    images = render_charts(report)
    files = {cid: cid.split("@")[0] + ".png" for cid in images}
    for cid, png in images.items():
        write_private(directory / files[cid], png)
    write_private(directory / "report.txt", render_text(report).encode("utf-8"))
    write_private(directory / "report.json", report.to_json(indent=1).encode("utf-8"))
    html_path = directory / "report.html"
    # Written last: its presence marks a complete report for load_latest().
    write_private(html_path, _render_html(report, files, max_diff_lines=None).encode("utf-8"))
    return html_path


@dataclass
class SavedReport:
    """A nightly report found on disk."""

    directory: Path
    html_path: Path
    text_path: Path
    report: Optional[NightlyReport]  # None when report.json is missing or unreadable

    def text(self) -> str:
        try:
            return self.text_path.read_text(encoding="utf-8")
        except OSError:
            return render_text(self.report) if self.report else ""

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "html": str(self.html_path), "text": str(self.text_path),
                "report": self.report.to_dict() if self.report else None}


def load_latest(root: Optional[Path] = None) -> Optional[SavedReport]:
    """The most recently saved report under ``root`` (default: the state dir's reports), or None."""
    root = Path(root) if root else reports_dir()
    found = [p for p in root.glob("*/report.html") if p.is_file()]
    if not found:
        return None
    html_path = max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    d = html_path.parent
    report: Optional[NightlyReport] = None
    try:
        report = NightlyReport.from_dict(json.loads((d / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return SavedReport(directory=d, html_path=html_path, text_path=d / "report.txt", report=report)


__all__ = [
    "TimeAt", "RooflinePoint", "FindingLine", "ReadyCandidate", "TargetSummary", "NightlyReport", "SavedReport",
    "render_html", "render_text", "render_charts", "diff_html", "subject", "save", "load_latest", "reports_dir",
    "default_report_dir", "fmt_ms", "display_names", "MAIL_MAX_DIFF_LINES",
]
