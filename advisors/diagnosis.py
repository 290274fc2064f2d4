"""Diagnosis: counters + device facts -> ranked findings, as one ``Diagnosis`` value.

``analyze`` is the entry point: it reduces the table to one representative launch per kernel
once, places the main kernel on the roofline, runs the rules and collects the profiler messages
no finding used; the report renders that value without recomputing any of it. ``diagnose``
(the findings only) reduces a ``CounterTable`` to one representative launch per kernel, builds a
``RuleContext`` for it, runs every registered rule (``advisors.rules``), attaches Nsight Compute's
own rule messages to the findings they support, and ranks the findings by estimated gain
weighted by each kernel's share of the profiled time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from hwspecs.spec import Ceilings, DeviceSpec
from profd.model import CounterTable, Finding, Roofline, RuleMessage, Severity

from advisors import roofline as roofline_mod
from advisors.context import KernelRow, RuleContext, kernel_rows, messages_for
from advisors.knobs import Knobs
from advisors.rules import Rule, all_rules
from advisors.rules._base import message_text

#: Kernels under this share of the profiled time are not diagnosed (helpers like fill kernels).
MIN_TIME_SHARE = 0.01

#: Metrics the roofline and the report read besides the rules' own (time, clocks, traffic, the
#: speed-of-light table): collected whatever the rules ask.
REPORTED_METRICS: tuple[str, ...] = (
    "duration_ns", "sm_clock_hz", "dram_clock_hz", "sm_count", "flops",
    "dram_bytes", "dram_bytes_read", "dram_bytes_write", "dram_bandwidth_bytes_per_s",
    "sm_throughput_pct", "memory_throughput_pct", "dram_throughput_pct", "l2_throughput_pct", "l1_throughput_pct",
    "tensor_pipe_pct", "mfma_util_pct", "valu_util_pct",
)


def collection_metrics(rules: Optional[Iterable[Rule]] = None) -> list[str]:
    """The canonical metrics a capture should hold: every rule's declared ones, then the report's.

    A rule's ``requires`` (alternatives included) and ``optional`` metrics; profiler-message
    stand-ins (``ncu:Rule``) are not metrics and are left out. Collectors map this list to their
    own counter names (``Collector.counters_for``).
    """
    out: list[str] = []
    for rule in rules if rules is not None else all_rules():
        for req in tuple(rule.requires) + tuple(rule.optional):
            for name in (req,) if isinstance(req, str) else tuple(req):
                if not name.startswith("ncu:") and name not in out:
                    out.append(name)
    return out + [m for m in REPORTED_METRICS if m not in out]


_SEVERITY_ORDER = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2, Severity.INFO: 3}


@dataclass
class Diagnosis:
    """Everything the diagnosis learned about one capture (or one run without a capture).

    ``rows`` is the per-kernel reduction of ``table`` (empty without one), ``roofline`` the
    main placement (measured when the target gave flops()/bytes_moved(), else from counters),
    ``findings`` ranked as ``diagnose`` ranks them, ``unmatched`` the profiler's rule messages
    no finding quoted. A report renders this value; it never re-derives any of it.
    """

    table: Optional[CounterTable] = None
    spec: Optional[DeviceSpec] = None
    ceilings: Optional[Ceilings] = None
    roofline: Optional[Roofline] = None
    rows: list[KernelRow] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    unmatched: list[RuleMessage] = field(default_factory=list)
    precision: str = "bf16"

    @classmethod
    def of(cls, table: Optional[CounterTable], findings: Sequence[Finding] = (), *,
           roofline: Optional[Roofline] = None, spec: Optional[DeviceSpec] = None,
           ceilings: Optional[Ceilings] = None) -> "Diagnosis":
        """A Diagnosis around findings computed elsewhere (no rules run): rows and unmatched messages."""
        rows = kernel_rows(table) if table is not None else []
        dx = cls(table=table, spec=spec, ceilings=ceilings, roofline=roofline, rows=rows, findings=list(findings))
        dx.unmatched = _unmatched(table, rows, dx.findings) if table is not None else []
        return dx

    def main_row(self) -> Optional[KernelRow]:
        """The kernel with the largest share of the profiled time."""
        return max(self.rows, key=lambda r: r.total_ns or 0.0) if self.rows else None

    def main_metric(self, name: str) -> Optional[float]:
        """A metric of the main kernel's representative launch (None when absent)."""
        row = self.main_row()
        return row.metrics.get(name) if row is not None else None

    def first_metric(self, name: str) -> Optional[float]:
        """The metric from the first kernel that has it (device-wide values such as sm_count)."""
        return next((r.metrics[name] for r in self.rows if name in r.metrics), None)

    def time_shares_pct(self) -> dict[str, float]:
        """Percent of the profiled time per kernel (empty when the capture has no durations)."""
        total = sum(r.total_ns for r in self.rows if r.total_ns)
        return {r.kernel: 100.0 * r.total_ns / total for r in self.rows if r.total_ns and total}


def analyze(
    table: Optional[CounterTable],
    spec: Optional[DeviceSpec],
    ceilings: Optional[Ceilings],
    *,
    roofline: Optional[Roofline] = None,
    knobs: Optional[Knobs] = None,
    rules: Optional[Sequence[Rule]] = None,
    precision: str = "bf16",
    min_share: float = MIN_TIME_SHARE,
) -> Diagnosis:
    """The whole diagnosis of ``table`` as one value.

    ``roofline`` is a measured placement of the whole ``kernel(...)`` call; without one the main
    kernel is placed from its counters (percent-of-peak only without ceilings). ``table`` may be None (no
    counters were taken): the Diagnosis then holds only the roofline.
    """
    rows = kernel_rows(table) if table is not None else []
    main = max(rows, key=lambda r: r.total_ns or 0.0) if rows else None
    if roofline is None and main is not None:
        roofline = roofline_mod.from_counters(main.metrics, ceilings, precision)
    elif roofline is not None and main is not None:
        # A timed placement keeps its numbers; the class comes from the units' own busy counters.
        roofline_mod.refine_with_counters(roofline, main.metrics)
    dx = Diagnosis(table=table, spec=spec, ceilings=ceilings, roofline=roofline, rows=rows, precision=precision)
    if table is not None:
        dx.findings = _ranked(contexts(table, spec, ceilings, roofline=roofline, knobs=knobs, precision=precision,
                                       rows=rows), rules, min_share)
        dx.unmatched = _unmatched(table, rows, dx.findings)
    return dx


def contexts(
    table: CounterTable,
    spec: Optional[DeviceSpec],
    ceilings: Optional[Ceilings],
    *,
    roofline: Optional[Roofline] = None,
    knobs: Optional[Knobs] = None,
    precision: str = "bf16",
    rows: Optional[Sequence[KernelRow]] = None,
) -> list[RuleContext]:
    """A ``RuleContext`` per kernel in ``table``.

    A measured ``roofline`` (from the target's own flops()/bytes_moved() and timing) describes the
    whole ``kernel(...)`` call: it is given to the kernel with the largest share of the time;
    every other kernel is placed from its counters. ``rows`` is ``kernel_rows(table)`` when the
    caller already has it.
    """
    rows = list(rows) if rows is not None else kernel_rows(table)
    totals = [r.total_ns for r in rows]
    known = sum(t for t in totals if t)
    main = max(rows, key=lambda r: r.total_ns or 0.0).kernel if rows else ""
    out = []
    for r in rows:
        share = (r.total_ns / known) if known and r.total_ns else (1.0 if not known else 0.0)
        roof = roofline if (roofline is not None and r.kernel == main) else None
        if roof is None:
            roof = roofline_mod.from_counters(r.metrics, ceilings, precision)
        out.append(RuleContext(
            kernel=r.kernel, metrics=r.metrics, spec=spec, ceilings=ceilings, roofline=roof,
            knobs=knobs, messages=messages_for(table, r), source=table.source,
            launches=r.launches, time_share=share,
        ))
    return out


def run_rules(ctx: RuleContext, rules: Optional[Iterable[Rule]] = None) -> list[Finding]:
    """Evaluate the rules on one context and attach the profiler messages each finding rests on."""
    findings: list[Finding] = []
    for rule in rules if rules is not None else all_rules():
        if not rule.applies(ctx):
            continue
        f = rule.evaluate(ctx)
        if f is None:
            continue
        for m in ctx.messages_named(*rule.profiler_rules):
            text = message_text(m)
            if text not in f.supporting:
                f.supporting.append(text)
        findings.append(f)
    return findings


def diagnose(
    table: CounterTable,
    spec: Optional[DeviceSpec],
    ceilings: Optional[Ceilings],
    *,
    roofline: Optional[Roofline] = None,
    knobs: Optional[Knobs] = None,
    rules: Optional[Sequence[Rule]] = None,
    precision: str = "bf16",
    min_share: float = MIN_TIME_SHARE,
) -> list[Finding]:
    """Findings for every kernel in ``table``, ranked by estimated gain.

    Actionable findings come first, ordered by estimated gain weighted by the kernel's share of
    the profiled time (a 40% gain on a kernel that takes 1% of the time matters less than 10% on
    the main one); informational findings ("already near the limit") follow. One finding per
    rule and kernel. Kernels below ``min_share`` of the profiled time (when durations are known)
    are skipped: no fix to them can matter.
    """
    return _ranked(contexts(table, spec, ceilings, roofline=roofline, knobs=knobs, precision=precision),
                   rules, min_share)


def _ranked(ctxs: Sequence[RuleContext], rules: Optional[Sequence[Rule]], min_share: float) -> list[Finding]:
    ranked: list[tuple[tuple, Finding]] = []
    seen: set[tuple[str, str]] = set()
    for ctx in ctxs:
        if ctx.time_share < min_share:
            continue
        for f in run_rules(ctx, rules):
            if (f.kernel, f.rule) in seen:
                continue
            seen.add((f.kernel, f.rule))
            info = f.severity == Severity.INFO
            key = (info, -f.estimated_gain_pct * ctx.time_share, _SEVERITY_ORDER[f.severity], f.kernel, f.rule)
            ranked.append((key, f))
    ranked.sort(key=lambda kv: kv[0])
    return [f for _, f in ranked]



def unmatched_messages(table: CounterTable, findings: Sequence[Finding]) -> list[RuleMessage]:
    """Profiler rule messages (one launch per kernel) that no finding quoted as support."""
    return _unmatched(table, kernel_rows(table), findings)


def _unmatched(table: CounterTable, rows: Sequence[KernelRow], findings: Sequence[Finding]) -> list[RuleMessage]:
    used = {s for f in findings for s in f.supporting}
    out: list[RuleMessage] = []
    for r in rows:
        out += [m for m in messages_for(table, r) if message_text(m) not in used]
    return out


__all__ = ["Diagnosis", "KernelRow", "REPORTED_METRICS", "RuleContext", "analyze", "collection_metrics", "contexts", "diagnose", "kernel_rows",
           "messages_for", "run_rules", "unmatched_messages"]
