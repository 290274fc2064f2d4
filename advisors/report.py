"""The per-save report: markdown for the store and mail, plain text for the terminal, JSON.

The report answers, in this order (DESIGN.md, Reports):

1. Is it still correct?
2. How fast, against the last run and the best so far?
3. Where does it sit on this device's roofline?
4. What limits it, ranked by estimated gain, with the evidence and the lever in the user's source?
5. What did the profiler's own analysis (Nsight Compute rules) say?
6. What did the advisor try, and what was kept?

Every number carries its unit, and every metric its meaning.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from hwspecs.spec import Ceilings, DeviceSpec
from profd.model import (CounterTable, Finding, Measurement, OutputCheck, Roofline, RuleMessage, Severity, Status,
                         worst_of)

from advisors.diagnosis import Diagnosis
from advisors.rules._base import message_text

SECTION_TITLES = (
    "1. Is it still correct?",
    "2. How fast?",
    "3. Where on the roofline?",
    "4. What limits it?",
    "5. The profiler's own analysis",
    "6. What the advisor tried",
)

BOUND_MEANING = {
    "memory-bound": "time is set by the bytes moved to and from device memory; compute has headroom",
    "compute-bound": "time is set by arithmetic throughput; memory has headroom",
    "latency-bound": "far below both ceilings (< 30%): neither device memory nor compute is busy, the kernel "
                     "waits (too little in flight, too few warps, long dependency chains) or a cache level the "
                     "roofline does not show (L2, shared memory) is the limit",
    "launch-bound": "so short (< 10 µs) that launch and ramp-up costs dominate",
    "unknown": "not enough data to place it (no FLOP or byte counts, or no device ceilings)",
}

_SEVERITY_MARK = {Severity.HIGH: "high", Severity.MEDIUM: "medium", Severity.LOW: "low", Severity.INFO: "info"}

HistoryItem = Union[Measurement, Mapping[str, Any]]


# ---------------------------------------------------------------------- number formatting


def fmt_time_ns(ns: Optional[float]) -> str:
    """A duration with a sensible unit: ns, µs, ms or s."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "n/a"
    a = abs(ns)
    if a < 1e3:
        return f"{ns:.0f} ns"
    if a < 1e6:
        return f"{ns / 1e3:.2f} µs" if a < 1e4 else f"{ns / 1e3:.1f} µs"
    if a < 1e9:
        return f"{ns / 1e6:.3f} ms" if a < 1e7 else f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.3f} s"


def fmt_ms(ms: Optional[float]) -> str:
    return "n/a" if ms is None else fmt_time_ns(ms * 1e6)


def _scaled(value: float, unit: str, prefixes: Sequence[tuple[float, str]]) -> str:
    """``value`` (in base units) with the largest prefix it reaches: 2.4 MB/s, never 0.0 GB/s."""
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.1f} {prefix}{unit}" if value / scale < 1000 else f"{value / scale:,.0f} {prefix}{unit}"
    return f"{value:.3g} {unit}"


_DECIMAL = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def fmt_bandwidth(bytes_per_s: Optional[float]) -> str:
    """Bytes per second as TB/s, GB/s, MB/s or kB/s (decimal, as datasheets quote them)."""
    if bytes_per_s is None:
        return "n/a"
    if 1e12 <= abs(bytes_per_s) < 1e15:
        return f"{bytes_per_s / 1e12:.2f} TB/s"
    return _scaled(bytes_per_s, "B/s", _DECIMAL[1:])


def fmt_gbps(gbps: Optional[float]) -> str:
    return "n/a" if gbps is None else fmt_bandwidth(gbps * 1e9)


def fmt_tflops(tflops: Optional[float]) -> str:
    """FLOP/s given in TFLOP/s, scaled so that an interpreter's 50 MFLOP/s does not read "0.0 GFLOP/s"."""
    if tflops is None:
        return "n/a"
    if tflops == 0:
        return "0 FLOP/s"
    return _scaled(tflops * 1e12, "FLOP/s", _DECIMAL)


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _num(v: float) -> str:
    """A plain number: 2,731 or 0.0833 rather than 2.73e+03."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def fmt_count(v: float) -> str:
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def fmt_value(value: Optional[float], unit: str) -> str:
    """A metric value in its unit, scaled for reading."""
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "ns":
        return fmt_time_ns(value)
    if unit == "B/s":
        return fmt_bandwidth(value)
    if unit == "B":
        return fmt_bytes(value)
    if unit == "Hz":
        return f"{value / 1e9:.2f} GHz"
    if unit in ("cycles/issue", "cycles", "x", "inst/cycle", "way", "waves"):
        return f"{value:.2f} {unit}" if unit != "x" else f"{value:.2f}x"
    return f"{fmt_count(value)} {unit}".strip()


# ---------------------------------------------------------------------- history access


def _get(obj: Any, *path: str) -> Any:
    """Read a nested field from a dataclass or a dict (the store may hand us either)."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
    return obj


def _median_ms(m: HistoryItem) -> Optional[float]:
    v = _get(m, "timing", "median_ms")
    if v is None:
        v = _get(m, "median_ms")
    return float(v) if v is not None else None


def _is_correct(m: HistoryItem) -> bool:
    status = _get(m, "verdict", "status")
    if status is None:
        c = _get(m, "correct")
        return bool(c) if c is not None else True
    return (status.value if isinstance(status, Status) else str(status)) == Status.CORRECT.value


def _spread_pct(m: HistoryItem) -> Optional[float]:
    p25, p75, med = _get(m, "timing", "p25_ms"), _get(m, "timing", "p75_ms"), _median_ms(m)
    if p25 is None or p75 is None or not med:
        return None
    return 100.0 * (float(p75) - float(p25)) / med


# ---------------------------------------------------------------------- the report


def render_markdown(
    *,
    target: str = "",
    measurement: Optional[HistoryItem] = None,
    history: Sequence[HistoryItem] = (),
    roofline: Optional[Roofline] = None,
    findings: Sequence[Finding] = (),
    table: Optional[CounterTable] = None,
    spec: Optional[DeviceSpec] = None,
    ceilings: Optional[Ceilings] = None,
    tuning: Any = None,
    device_note: str = "",
    max_findings: int = 12,
    diagnosis: Optional[Diagnosis] = None,
) -> str:
    """The per-save report as markdown, sections in the order DESIGN.md gives.

    ``measurement`` is this run (a ``Measurement`` or its dict); ``None`` means the report
    explains a profiler capture (``profd explain``): correctness is skipped and speed starts at
    the profiler's own durations. ``history`` holds earlier measurements of the same target,
    oldest first (the last one is "last run"); it may be empty. ``tuning`` is what the advisor
    tried: a list of ``CandidateVerdict`` (or dicts), or a dict with ``verdicts`` and optional
    ``candidates``; ``None`` leaves a placeholder. ``diagnosis`` (from ``advisors.diagnosis.analyze``)
    supplies the findings, table, roofline, device and per-kernel rows in one value; without it
    the separate arguments are used and the rows are derived once here.
    """
    if diagnosis is not None:
        return render_diagnosis(diagnosis, target=target, measurement=measurement, history=history, tuning=tuning,
                                device_note=device_note, max_findings=max_findings)
    dx = Diagnosis.of(table, findings, roofline=roofline, spec=spec, ceilings=ceilings)
    return render_diagnosis(dx, target=target, measurement=measurement, history=history, tuning=tuning,
                            device_note=device_note, max_findings=max_findings)


def render_diagnosis(
    dx: Diagnosis,
    *,
    target: str = "",
    measurement: Optional[HistoryItem] = None,
    history: Sequence[HistoryItem] = (),
    tuning: Any = None,
    device_note: str = "",
    max_findings: int = 12,
) -> str:
    """The per-save report of one ``Diagnosis`` as markdown (see ``render_markdown``)."""
    table, spec, ceilings, roofline, findings = dx.table, dx.spec, dx.ceilings, dx.roofline, dx.findings
    out: list[str] = []
    title = f"# profd report: {target}" if target else "# profd report"
    out.append(title)
    out.append("")
    out.append(_device_line(spec, ceilings, table, device_note, _get(measurement, "device")))
    out.append("")
    out += _section_correctness(measurement)
    if measurement is not None and _load_failed(measurement):
        # The file did not even load: every later section would only say "nothing".
        return "\n".join(out).rstrip() + "\n"
    out += _section_speed(measurement, history, dx)
    out += _section_roofline(roofline, ceilings, dx, measurement)
    out += _section_findings(findings, max_findings, dx)
    out += _section_profiler(dx)
    out += _section_tuning(tuning)
    return "\n".join(out).rstrip() + "\n"


def _device_line(spec: Optional[DeviceSpec], ceilings: Optional[Ceilings], table: Optional[CounterTable],
                 note: str, device: Any = None) -> str:
    parts = []
    name = _get(device, "name") or (table.device_name if table is not None else "")
    if spec is not None:
        parts.append(f"**Device:** {spec.name} ({spec.sm_count} {'CUs' if spec.vendor.upper() == 'AMD' else 'SMs'}, "
                     f"{fmt_gbps(spec.memory_bandwidth_gbps)} peak memory bandwidth)")
    elif _get(device, "backend") == "cpu":
        parts.append("**Device:** CPU, through Triton's interpreter (no GPU): correctness is checked for real; "
                     "times and rates say nothing about GPU speed, and there is no roofline")
    elif name:
        parts.append(f"**Device:** {name} (not in profd's device database: no ceilings, so no roofline)")
    else:
        parts.append("**Device:** not recorded")
    if table is not None:
        parts.append(f"**Profiler:** {table.source}" + (f" (`{table.artifact}`)" if table.artifact else ""))
    line = " · ".join(parts)
    if note:
        line += f"\n\n> {note}"
    return line


def _load_failed(measurement: HistoryItem) -> bool:
    status = _get(_get(measurement, "verdict"), "status")
    return (status.value if isinstance(status, Status) else str(status or "")) == Status.LOAD_ERROR.value


def _section_correctness(measurement: Optional[HistoryItem]) -> list[str]:
    out = [f"## {SECTION_TITLES[0]}", ""]
    if measurement is None:
        out += ["Not checked: this report explains a profiler capture, with no run of the kernel against a "
                "reference. Run `profd profile FILE` to verify correctness and time it.", ""]
        return out
    verdict = _get(measurement, "verdict")
    status = _get(verdict, "status")
    status_s = status.value if isinstance(status, Status) else str(status or "unknown")
    trials = _get(verdict, "trials") or 0
    if status_s == Status.CORRECT.value:
        out.append(f"**Yes: correct** on {trials} random input set{'s' if trials != 1 else ''}.")
    else:
        msg = _get(verdict, "message") or ""
        line = _get(verdict, "line")
        where = f" (line {line})" if line else ""
        out.append(f"**No: {status_s.replace('_', ' ')}**{where}. {msg}".rstrip())
    checks = [c if isinstance(c, OutputCheck) else OutputCheck.from_dict(dict(c)) for c in _get(verdict, "checks") or []]
    if checks:
        out += ["", "| output | shape | dtype | trials | max abs error | max rel error | norm rel error | "
                    "tolerance (rtol / atol) | passed |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        groups: dict[tuple[int, str], list[OutputCheck]] = {}
        for c in checks:
            groups.setdefault((c.output, "×".join(str(x) for x in c.shape) or "scalar"), []).append(c)
        for (o, shape), group in groups.items():
            w = worst_of(group)
            assert w is not None
            passed = "yes" if w.passed else f"**no**: {w.reason or 'outside tolerance'}"
            out.append(f"| {o} | {shape} | {w.dtype} | {len(group)} | {_sci(w.max_abs_err)} | {_sci(w.max_rel_err)} | "
                       f"{_sci(w.norm_rel_err)} | {_sci(w.rtol)} / {_sci(w.atol)} | {passed} |")
        out.append("")
        top = worst_of(checks)
        assert top is not None
        out.append(f"Each column is its own worst over that row's trials, against the reference computed in higher "
                   f"precision. Worst over all {len(checks)} checks: max abs error {_sci(top.max_abs_err)} "
                   f"(trial {top.trial}), max rel error {_sci(top.max_rel_err)}, norm rel error "
                   f"{_sci(top.norm_rel_err)}.")
    tb = _get(verdict, "traceback")
    if tb and status_s != Status.CORRECT.value:
        out += ["", "```", str(tb).strip()[-1500:], "```"]
    out.append("")
    return out


def _sci(v: Any) -> str:
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "0" if f == 0 else f"{f:.2e}"


def _section_speed(measurement: Optional[HistoryItem], history: Sequence[HistoryItem], dx: Diagnosis) -> list[str]:
    table, spec = dx.table, dx.spec
    out = [f"## {SECTION_TITLES[1]}", ""]
    timing = _get(measurement, "timing") if measurement is not None else None
    if timing is not None:
        med = _get(timing, "median_ms")
        p25, p75 = _get(timing, "p25_ms"), _get(timing, "p75_ms")
        spread = _spread_pct(measurement)
        out.append(f"- **Median:** {fmt_ms(med)} per call over {_get(timing, 'runs')} runs "
                   f"({_get(timing, 'method') or 'timed'}"
                   f"{', L2 flushed' if _get(timing, 'l2_flushed') else ''})")
        if p25 is not None and p75 is not None:
            out.append(f"- **Spread:** {fmt_ms(p25)} to {fmt_ms(p75)} (inter-quartile range, "
                       f"{spread:.1f}% of the median: the noise a change must beat); "
                       f"min {fmt_ms(_get(timing, 'min_ms'))}, max {fmt_ms(_get(timing, 'max_ms'))}")
        tf, gb = _get(timing, "tflops"), _get(timing, "gbps")
        if tf is not None or gb is not None:
            rates = []
            if tf is not None:
                rates.append(fmt_tflops(tf))
            if gb is not None:
                rates.append(f"{fmt_gbps(gb)} of useful traffic")
            if _get(timing, "representative") is False:
                out.append(f"- **Throughput in the interpreter:** {', '.join(rates)} (from the target's flops() / "
                           "bytes_moved(); an interpreter's rate, meaningless for a GPU)")
            else:
                out.append(f"- **Throughput:** {', '.join(rates)} (from the target's flops() / bytes_moved())")
        if _get(timing, "representative") is False and not _get(timing, "note"):
            out.append("- Note: not representative of GPU speed (CPU / interpreter timing); compare only with "
                       "runs of the same kind.")
        if _get(timing, "note"):
            out.append(f"- Note: {_get(timing, 'note')}")
        out += _comparisons(measurement, history)
        for w in list(_get(measurement, "warnings") or []):
            out.append(f"- Warning: {w}")
    elif measurement is not None:
        out.append("No timing: the kernel did not run to completion or was not correct.")
        out += _comparisons(measurement, history)
    else:
        if table is not None and table.source == "ncu":
            why = ("Nsight Compute replays each launch and locks the clocks to base, so unprofiled runs of "
                   "compute-bound kernels are faster")
        else:
            why = "profilers serialize launches and add overhead, so treat them as relative, not absolute"
        out.append(f"No timed run: these are the profiler's own durations ({why}).")
    if table is not None and len(table.frame):
        out += [""] + _kernel_times(dx)
        clock = dx.main_metric("sm_clock_hz")
        if clock and spec is not None and spec.boost_clock_mhz and clock < 0.9 * spec.boost_clock_mhz * 1e6:
            out += ["", f"The profiler ran the SMs at {clock / 1e9:.2f} GHz against a {spec.boost_clock_mhz / 1e3:.2f} GHz "
                        f"boost clock: a compute-bound kernel runs up to "
                        f"{spec.boost_clock_mhz * 1e6 / clock:.2f}x faster unprofiled, a memory-bound one barely "
                        f"changes."]
    out.append("")
    return out


def _comparisons(measurement: HistoryItem, history: Sequence[HistoryItem]) -> list[str]:
    out = []
    med = _median_ms(measurement)
    noise = _spread_pct(measurement) or 0.0
    previous = [h for h in history if _median_ms(h) is not None]
    if not previous:
        out.append("- **History:** first measurement of this target; nothing to compare with yet.")
        return out
    last = previous[-1]
    out.append(f"- **vs last run:** {_compare(med, _median_ms(last), noise)}"
               + ("" if _is_correct(last) else " (that run was not correct)"))
    good = [h for h in previous if _is_correct(h)]
    if good:
        best = min(good, key=lambda h: _median_ms(h))
        out.append(f"- **vs best so far:** {_compare(med, _median_ms(best), noise)} "
                   f"(best {fmt_ms(_median_ms(best))} over {len(good)} correct earlier run"
                   f"{'s' if len(good) != 1 else ''})")
    return out


def _compare(now: Optional[float], then: Optional[float], noise_pct: float) -> str:
    if now is None or not then:
        return "n/a"
    change = 100.0 * (now - then) / then
    speedup = then / now if now else float("inf")
    if abs(change) <= max(noise_pct, 1.0):
        verdict = "within noise"
    elif change < 0:
        verdict = f"**{speedup:.2f}x faster**"
    else:
        verdict = f"**{1 / speedup:.2f}x slower**"
    return f"{fmt_ms(now)} vs {fmt_ms(then)}: {change:+.1f}%, {verdict}"


def _kernel_times(dx: Diagnosis) -> list[str]:
    rows = dx.rows
    known = sum(r.total_ns for r in rows if r.total_ns) or 0.0
    out = ["| kernel | launches | duration per launch | share of profiled time | SM clock while profiled |",
           "| --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: -(r.total_ns or 0.0)):
        d = r.metrics.get("duration_ns")
        share = f"{100.0 * r.total_ns / known:.1f}%" if known and r.total_ns else "n/a"
        clock = r.metrics.get("sm_clock_hz")
        out.append(f"| `{_short(r.kernel)}` | {r.launches} | {fmt_time_ns(d) if d else 'n/a'} | {share} | "
                   f"{fmt_value(clock, 'Hz') if clock else 'n/a'} |")
    if not known:
        out.append("")
        out.append("The capture has no kernel durations (counter passes without timestamps).")
    return out


def _short(name: str, n: int = 60) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _section_roofline(roof: Optional[Roofline], ceilings: Optional[Ceilings], dx: Diagnosis,
                      measurement: Optional[HistoryItem] = None) -> list[str]:
    table = dx.table
    out = [f"## {SECTION_TITLES[2]}", ""]
    if roof is None:
        from advisors.roofline import why_not_placed

        timing = _get(measurement, "timing")
        cpu = _get(measurement, "device", "backend") == "cpu" or _get(timing, "representative") is False
        name = _get(measurement, "device", "name") or (table.device_name if table is not None else "")
        why = why_not_placed(representative=not cpu, has_ceilings=ceilings is not None,
                             has_work_counts=_get(timing, "flops") is not None or _get(timing, "bytes_moved") is not None,
                             has_counters=table is not None, device=name)
        out += [why[0].upper() + why[1:] + ".", ""]
        return out
    bound = roof.bound or "unknown"
    side = ""
    if bound in ("latency-bound", "launch-bound") and roof.intensity is not None and roof.ridge is not None:
        side = f" ({'memory' if roof.intensity < roof.ridge else 'compute'} side of the ridge point)"
    out.append(f"**{bound}**{side}: {BOUND_MEANING.get(bound, '')}.")
    out.append("")
    if roof.flops == 0 and roof.achieved_gbps is not None:
        of = f" of {fmt_gbps(roof.peak_gbps)} peak" if roof.peak_gbps else ""
        out += [f"Memory-only kernel (no floating-point work): {fmt_gbps(roof.achieved_gbps)}{of}; its place is on "
                "the bandwidth ceiling.", ""]
    rows = [("arithmetic intensity", f"{_num(roof.intensity)} FLOP/byte" if roof.intensity is not None else
             "unknown (the capture counted no floating-point operations)" if roof.flops is None else "n/a",
             "FLOPs per byte of device-memory traffic")]
    rows.append(("ridge point", f"{roof.ridge:.0f} FLOP/byte" if roof.ridge is not None else "n/a",
                 "intensity where the memory and compute ceilings meet; below it memory bounds the kernel"))
    if roof.achieved_tflops is not None:
        rows.append(("achieved compute", fmt_tflops(roof.achieved_tflops),
                     f"of {fmt_tflops(roof.peak_tflops)} {roof.precision} peak" if roof.peak_tflops else ""))
    if roof.achieved_gbps is not None:
        rows.append(("achieved memory bandwidth", fmt_gbps(roof.achieved_gbps),
                     f"of {fmt_gbps(roof.peak_gbps)} peak" if roof.peak_gbps else ""))
    if roof.pct_of_ceiling is not None:
        rows.append(("share of the relevant ceiling", f"{roof.pct_of_ceiling:.0f}%",
                     "how close to the roof at this intensity (80%+ leaves little to gain)"))
    rows.append(("time per call", fmt_time_ns(roof.time_s * 1e9) if roof.time_s else "n/a", ""))
    out += ["| quantity | value | meaning |", "| --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out.append("")
    sol = _sol_rows(dx)
    if sol:
        out.append("Speed of light (each unit's throughput as a percent of its own peak, from the profiler):")
        out.append("")
        out += ["| unit | % of peak |", "| --- | --- |"] + sol + [""]
    src = roof.ceilings_source or (ceilings.source if ceilings is not None else "")
    if src == "measured":
        out.append("Ceilings were **measured** on this device (a device-to-device copy and a large matmul).")
    elif src:
        out.append("Ceilings are **datasheet** peaks, not measured on this device: real kernels top out "
                   "somewhat below them.")
    else:
        out.append("No ceilings: the device is unknown, so percentages of peak come only from the profiler.")
    notes = list(getattr(ceilings, "notes", []) or [])
    if src != "measured":
        notes = [n for n in notes if not n.startswith("datasheet peaks of")]
    for n in notes[:3]:
        out.append(f"- {n}")
    out.append("")
    return out


_SOL_UNITS = (("sm_throughput_pct", "compute (busiest SM pipe)"), ("memory_throughput_pct", "memory (busiest unit)"),
              ("dram_throughput_pct", "device memory (DRAM/HBM)"), ("l2_throughput_pct", "L2 cache"),
              ("l1_throughput_pct", "L1 / shared memory"), ("tensor_pipe_pct", "tensor cores"),
              ("mfma_util_pct", "matrix cores (MFMA)"), ("valu_util_pct", "vector ALU (VALU)"))


def _sol_rows(dx: Diagnosis) -> list[str]:
    main = dx.main_row()
    if main is None:
        return []
    return [f"| {words} | {main.metrics[m]:.1f}% |" for m, words in _SOL_UNITS if m in main.metrics]


def _section_findings(findings: Sequence[Finding], limit: int, dx: Diagnosis) -> list[str]:
    table = dx.table
    out = [f"## {SECTION_TITLES[3]}", ""]
    if not findings:
        if table is None:
            out += ["No profiler counters for this run, so no diagnosis: profd's rules read Nsight Compute or "
                    "rocprof counters (`profd profile` collects them when a profiler is available).", ""]
        else:
            out += ["No rule fired: none of the limits profd checks is clearly crossed with the metrics this "
                    "capture has (see the profiler's own analysis below).", ""]
        return out
    kernels = list(dict.fromkeys(f.kernel for f in findings))
    shares = dx.time_shares_pct() if len(kernels) > 1 else {}
    out.append("Ranked by estimated gain (the share of the kernel's time the fix could save; estimates, not "
               "promises, and overlapping: fixes for the top findings often shrink the others).")
    out.append("")
    for i, f in enumerate(findings[:limit], 1):
        who = f" in `{_short(f.kernel)}`" if len(kernels) > 1 and f.kernel else ""
        gain = f"est. gain ~{f.estimated_gain_pct:.0f}%" if f.severity != Severity.INFO else \
            f"headroom ~{f.estimated_gain_pct:.0f}%" if f.estimated_gain_pct else "informational"
        out.append(f"### {i}. {f.title}{who}")
        out.append("")
        share = shares.get(f.kernel)
        of = f" of this kernel's time, which is {share:.0f}% of the profiled time" if share is not None else ""
        out.append(f"*{_SEVERITY_MARK[f.severity]} · {gain}{of}* · rule `{f.rule}`")
        out.append("")
        out.append(f.summary)
        out.append("")
        if f.evidence:
            out += ["| metric | value | threshold | meaning |", "| --- | --- | --- | --- |"]
            for e in f.evidence:
                thr = f"{e.comparison} {fmt_value(e.threshold, e.unit)}" if e.threshold is not None else \
                    (e.comparison if e.comparison and e.comparison not in ("<", ">", ">=", "<=") else "")
                out.append(f"| `{e.metric}` | {fmt_value(e.value, e.unit)} | {thr.strip()} | {e.meaning} |")
            out.append("")
        if f.levers:
            out.append("What to change:")
            out.append("")
            for lv in f.levers:
                out.append(f"- {_lever_text(lv)}")
            out.append("")
        if f.supporting:
            names = ", ".join(dict.fromkeys(_rule_name(s) for s in f.supporting))
            out.append(f"Nsight Compute agrees: {names} (section 5).")
            out.append("")
    if len(findings) > limit:
        rest = findings[limit:]
        out.append(f"{len(rest)} more finding{'s' if len(rest) != 1 else ''} with smaller estimated gains: "
                   + "; ".join(f"{f.title} in `{_short(f.kernel, 40)}` (~{f.estimated_gain_pct:.0f}%)" for f in rest[:15])
                   + ("; …" if len(rest) > 15 else "") + ".")
        out.append("")
    return out


def _lever_text(lv: Any) -> str:
    """``**NAME** = 64 at line 39: raise to 128. Why.`` or ``**program order**: what to do``."""
    desc = lv.description
    if lv.name and desc.startswith(lv.name):
        return f"**{lv.name}**{desc[len(lv.name):]}"
    return f"**{lv.name}**: {desc}"


def _rule_name(supporting: str) -> str:
    m = re.match(r"ncu (\w+)", supporting)
    return m.group(1) if m else supporting[:30]


def _section_profiler(dx: Diagnosis) -> list[str]:
    table, findings = dx.table, dx.findings
    out = [f"## {SECTION_TITLES[4]}", ""]
    if table is None:
        out += ["No profiler capture for this run.", ""]
        return out
    if not table.rules:
        who = "rocprof has no guided-analysis rules" if table.source.startswith("rocprof") else \
            "the capture holds no rule messages"
        out += [f"None: {who}; the findings above come from profd's rules on the counters.", ""]
        return out
    supported = [(f, s) for f in findings for s in f.supporting]
    if supported:
        out.append("Supporting the findings above:")
        out.append("")
        shown: set[str] = set()
        for f, s in supported:
            if s in shown:
                continue
            shown.add(s)
            out.append(f"- *{f.title}*: {s}")
        out.append("")
    rest = dx.unmatched
    actionable = [m for m in rest if m.type.upper() not in ("INF", "INFO")]
    info = [m for m in rest if m.type.upper() in ("INF", "INFO")]
    if actionable:
        out.append("Not matched to a finding (shown as Nsight Compute wrote them):")
        out.append("")
        out += [f"- {message_text(m)}" + _kernel_tag(m, table) for m in actionable]
        out.append("")
    if info:
        out.append("Informational: " + "; ".join(f"{m.rule}: {m.message.strip()}" for m in info))
        out.append("")
    return out


def _kernel_tag(m: RuleMessage, table: CounterTable) -> str:
    return f" (`{_short(m.kernel, 40)}`)" if len(table.kernels()) > 1 else ""


def _section_tuning(tuning: Any) -> list[str]:
    out = [f"## {SECTION_TITLES[5]}", ""]
    verdicts, candidates = _tuning_parts(tuning)
    if tuning is None:
        out += ["Nothing yet: the advisor runs on `profd tune FILE` and in the nightly pass; its candidates, "
                "their measurements and what was kept will appear here.", ""]
        return out
    if not verdicts:
        out += ["The advisor proposed no candidate for this save.", ""]
        return out
    by_id = {str(_get(c, "id")): c for c in candidates}
    out += ["| candidate | advisor | change | speedup | kept? | why |", "| --- | --- | --- | --- | --- | --- |"]
    for v in verdicts:
        cid = str(_get(v, "candidate_id"))
        c = by_id.get(cid)
        speedup = _get(v, "speedup")
        params = _get(c, "params") if c is not None else None
        change = ", ".join(f"{k}={val}" for k, val in (params or {}).items()) or (_get(c, "rationale") or "")[:80]
        out.append(f"| {cid} | {_get(c, 'advisor') or ''} | {change} | "
                   f"{f'{speedup:.2f}x' if speedup else 'n/a'} | {'**yes**' if _get(v, 'accepted') else 'no'} | "
                   f"{_get(v, 'reason') or ''} |")
    kept = [v for v in verdicts if _get(v, "accepted")]
    out.append("")
    if kept:
        best = max(kept, key=lambda v: _get(v, "speedup") or 0.0)
        out.append(f"Kept: **{_get(best, 'candidate_id')}** ({(_get(best, 'speedup') or 0):.2f}x, correct and faster "
                   f"beyond the measured noise).")
    else:
        out.append("Nothing kept: no candidate was both correct and faster beyond the measured noise.")
    out.append("")
    return out


def _tuning_parts(tuning: Any) -> tuple[list[Any], list[Any]]:
    if tuning is None:
        return [], []
    if isinstance(tuning, Mapping):
        return list(tuning.get("verdicts") or []), list(tuning.get("candidates") or [])
    if isinstance(tuning, (list, tuple)):
        return list(tuning), []
    return [], []


# ---------------------------------------------------------------------- terminal and JSON


def render_terminal(md: str) -> str:
    """Plain text for a terminal: headings underlined, tables aligned, markdown marks removed."""
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            out += _table_text(block)
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            text = _inline(m.group(2))
            out.append(text)
            if len(m.group(1)) <= 2:
                out.append(("=" if len(m.group(1)) == 1 else "-") * min(len(text), 80))
        elif line.startswith("> "):
            out.append("  " + _inline(line[2:]))
        elif line.strip() in ("```",):
            pass
        else:
            out.append(_inline(line))
        i += 1
    return "\n".join(out).rstrip() + "\n"


def _inline(text: str) -> str:
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1 (\2)", text)
    return text


def _table_text(block: list[str]) -> list[str]:
    rows = []
    for line in block:
        cells = [_inline(c.strip()) for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
            continue
        rows.append(cells)
    if not rows:
        return []
    n = max(len(r) for r in rows)
    widths = [min(60, max(len(r[j]) if j < len(r) else 0 for r in rows)) for j in range(n)]
    out = []
    for k, r in enumerate(rows):
        out.append("  " + "  ".join((r[j] if j < len(r) else "").ljust(widths[j]) for j in range(n)).rstrip())
        if k == 0:
            out.append("  " + "  ".join("-" * widths[j] for j in range(n)))
    return out


def findings_json(findings: Iterable[Finding], roofline: Optional[Roofline]) -> dict[str, Any]:
    """Findings and roofline as JSON-able data (for ``--json`` and the store)."""
    fs = [f.to_dict() for f in findings]
    return {
        "findings": fs,
        "count": len(fs),
        "roofline": roofline.to_dict() if roofline is not None else None,
        "top": fs[0]["rule"] if fs else None,
    }


def render_counters(table: CounterTable, max_launches: int = 4) -> str:
    """An appendix: every normalized counter of the profiled launches, with units and meanings.

    One column per launch (the first ``max_launches``), one row per canonical metric that at
    least one launch has, in the vocabulary's order, so a user sees exactly what the rules saw.
    """
    from profd.metrics import METRICS

    frame = table.frame
    if frame is None or not len(frame):
        return ""
    launches = list(range(min(len(frame), max_launches)))
    def short(name: str) -> str:  # C++ signatures make unreadable column headers
        name = str(name)
        return name if len(name) <= 32 else name.split("(")[0][:31] + "…"

    head = " | ".join(f"launch {i}: `{short(frame['kernel'].iloc[i])}`" for i in launches)
    out = ["", f"## Appendix: normalized counters ({table.source}, the kernel's own launches only)", "",
           f"| metric | {head} | meaning |", "| --- | " + " | ".join("---" for _ in launches) + " | --- |"]
    for name, d in METRICS.items():
        vals = [table.value(name, i) for i in launches]
        if all(v is None for v in vals):
            continue
        out.append(f"| `{name}` | " + " | ".join(fmt_value(v, d.unit) for v in vals) + f" | {d.meaning} |")
    if len(frame) > max_launches:
        out.append(f"\n{len(frame) - max_launches} more launch(es) in the JSON output (`--json`).")
    if table.artifact:
        how = " (open it with Nsight Compute)" if table.source == "ncu" else ""
        out.append(f"\nRaw capture: `{table.artifact}`{how}.")
    return "\n".join(out) + "\n"
