"""Diagnosis: counters + device facts -> ranked findings.

``diagnose`` reduces a ``CounterTable`` to one representative launch per kernel, builds a
``RuleContext`` for it, runs every registered rule (``advisors.rules``), attaches Nsight Compute's
own rule messages to the findings they support, and ranks the findings by estimated gain
weighted by each kernel's share of the profiled time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from hwspecs.spec import Ceilings, DeviceSpec
from profd.model import CounterTable, Finding, Roofline, RuleMessage, Severity

from advisors import roofline as roofline_mod
from advisors.knobs import Knobs
from advisors.rules import Rule, all_rules
from advisors.rules._base import message_text

#: Kernels under this share of the profiled time are not diagnosed (helpers like fill kernels).
MIN_TIME_SHARE = 0.01

_SEVERITY_ORDER = {Severity.HIGH: 0, Severity.MEDIUM: 1, Severity.LOW: 2, Severity.INFO: 3}


@dataclass
class RuleContext:
    """What a rule sees: one launch of one kernel, the device, and the user's knobs."""

    kernel: str
    metrics: dict[str, float]
    spec: Optional[DeviceSpec] = None
    ceilings: Optional[Ceilings] = None
    roofline: Optional[Roofline] = None
    knobs: Optional[Knobs] = None
    messages: list[RuleMessage] = field(default_factory=list)
    source: str = ""  # the CounterTable's source: "ncu", "rocprof-v1", ...
    launches: int = 1
    time_share: float = 1.0  # this kernel's share of the profiled time (1.0 when unknown)

    def m(self, name: str) -> Optional[float]:
        """A canonical metric of this launch, or None when the profiler did not provide it."""
        v = self.metrics.get(name)
        if v is None:
            return None
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(f) else f

    def has(self, name: str) -> bool:
        """A metric is present, or (``"ncu:Rule"``) the profiler printed that rule's message."""
        if name.startswith("ncu:"):
            return bool(self.messages_named(name[4:]))
        return self.m(name) is not None

    def messages_named(self, *rules: str) -> list[RuleMessage]:
        return [m for m in self.messages if m.rule in rules]

    def sm_count(self) -> Optional[float]:
        return self.m("sm_count") or (float(self.spec.sm_count) if self.spec else None)

    def peak_gbps(self) -> Optional[float]:
        """Device-memory bandwidth ceiling: measured when available, else the datasheet."""
        if self.ceilings is not None and self.ceilings.memory_gbps:
            return float(self.ceilings.memory_gbps)
        if self.spec is not None and self.spec.memory_bandwidth_gbps:
            return float(self.spec.memory_bandwidth_gbps)
        return None

    def is_amd(self) -> bool:
        if self.spec is not None:
            return self.spec.vendor.upper() == "AMD"
        return self.source.startswith("rocprof")


@dataclass
class KernelRow:
    """One kernel of a table, reduced to a representative launch."""

    kernel: str
    launch: Any  # the frame index label of the representative launch
    metrics: dict[str, float]
    launches: int
    total_ns: Optional[float]


def kernel_rows(table: CounterTable) -> list[KernelRow]:
    """One row per kernel name: the launch with the median duration (the longer of the middle two).

    A real launch (not a column-wise median) keeps the metrics of one execution consistent
    with each other; columns that launch lacks (multi-pass AMD captures leave holes) are filled
    with the median of the kernel's other launches.
    """
    frame = table.frame
    out: list[KernelRow] = []
    if frame is None or not len(frame):
        return out
    numeric = [c for c in frame.columns if c != "kernel"]
    for name in table.kernels():
        sub = frame[frame["kernel"] == name]
        # Positions, not labels: a table whose index repeats must not select several rows.
        pos = 0
        total: Optional[float] = None
        if "duration_ns" in sub.columns:
            d = pd.to_numeric(sub["duration_ns"], errors="coerce").reset_index(drop=True)
            known = d.dropna().sort_values(kind="stable")
            if len(known):
                pos = int(known.index[len(known) // 2])
                total = float(known.sum())
        label = sub.index[pos]
        row = sub.iloc[pos]
        metrics: dict[str, float] = {}
        for c in numeric:
            v = _float(row[c])
            if v is None:
                col = sorted(x for x in (_float(x) for x in sub[c]) if x is not None)
                v = col[(len(col) - 1) // 2] if col else None
            if v is not None:
                metrics[c] = v
        out.append(KernelRow(kernel=name, launch=label, metrics=metrics, launches=len(sub), total_ns=total))
    return out


def _float(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def messages_for(table: CounterTable, row: KernelRow) -> list[RuleMessage]:
    """The profiler's rule messages for one kernel: those of its representative launch, deduped."""
    mine = [m for m in table.rules if m.kernel == row.kernel]
    if not mine:
        return []
    launches = {m.launch for m in mine}
    pick = row.launch if row.launch in launches else min(launches)
    seen: set[tuple[str, str, str]] = set()
    out = []
    for m in mine:
        key = (m.rule, m.type, m.message[:80])
        if m.launch == pick and key not in seen:
            seen.add(key)
            out.append(m)
    return out


def contexts(
    table: CounterTable,
    spec: Optional[DeviceSpec],
    ceilings: Optional[Ceilings],
    *,
    roofline: Optional[Roofline] = None,
    knobs: Optional[Knobs] = None,
    precision: str = "bf16",
) -> list[RuleContext]:
    """A ``RuleContext`` per kernel in ``table``.

    A measured ``roofline`` (from the target's own flops()/bytes_moved() and timing) describes the
    whole ``kernel(...)`` call: it is given to the kernel with the largest share of the time;
    every other kernel is placed from its counters.
    """
    rows = kernel_rows(table)
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
    ranked: list[tuple[tuple, Finding]] = []
    seen: set[tuple[str, str]] = set()
    for ctx in contexts(table, spec, ceilings, roofline=roofline, knobs=knobs, precision=precision):
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
    used = {s for f in findings for s in f.supporting}
    out = []
    for r in kernel_rows(table):
        out += [m for m in messages_for(table, r) if message_text(m) not in used]
    return out
