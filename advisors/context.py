"""What a rule sees, and the per-kernel reduction of a counter table it is built from.

``kernel_rows`` reduces a ``CounterTable`` to one representative launch per kernel; a
``RuleContext`` is one such launch with the device and the user's knobs. Both live here, below
the rules and the roofline, so that ``advisors.rules``, ``advisors.roofline``,
``advisors.diagnosis`` and ``advisors.report`` all import them without a cycle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from advisors.knobs import Knobs
from hwspecs.spec import Ceilings, DeviceSpec
from profd.model import CounterTable, Roofline, RuleMessage


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
