"""What every diagnosis rule shares: its self-description, thresholds, and lever helpers.

A rule is a small object with an id, a title, the canonical metrics it needs (each entry either
one metric or a tuple of alternatives, any of which will do), the metrics it reads when present,
named thresholds, the profiler rule messages that support it, and ``evaluate(ctx)`` which returns
a ``Finding`` or ``None``. Requirements may name a profiler message as ``"ncu:RuleName"``: where
Nsight Compute printed a rule's verdict but not the underlying counter (its details page often
does this), the message is the evidence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from profd.metrics import meaning as metric_meaning
from profd.metrics import unit as metric_unit
from profd.model import Evidence, Finding, Lever, RuleMessage, Severity

if TYPE_CHECKING:  # the context lives in advisors.diagnosis, which imports this package
    from advisors.context import RuleContext
    from advisors.knobs import Knob

Requirement = Union[str, tuple[str, ...]]


@dataclass(frozen=True)
class Threshold:
    """A named boundary a rule compares a metric with, and why it sits there."""

    name: str
    value: float
    unit: str
    why: str


class Rule:
    """Base class of the diagnosis rules (one subclass per module under ``advisors.rules``)."""

    id: str = ""
    title: str = ""
    requires: tuple[Requirement, ...] = ()
    optional: tuple[str, ...] = ()
    thresholds: tuple[Threshold, ...] = ()
    #: Profiler rule names (ncu) whose messages support this finding.
    profiler_rules: tuple[str, ...] = ()
    #: True when the rule cannot say anything without a DeviceSpec.
    needs_spec: bool = False

    def applies(self, ctx: "RuleContext") -> bool:
        """Are the required metrics (or a stand-in profiler message) present?"""
        if self.needs_spec and ctx.spec is None:
            return False
        for req in self.requires:
            alternatives = (req,) if isinstance(req, str) else req
            if not any(ctx.has(a) for a in alternatives):
                return False
        return True

    def evaluate(self, ctx: "RuleContext") -> Optional[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """A JSON-able self-description (what ``profd explain --rules`` could print)."""
        return {
            "id": self.id,
            "title": self.title,
            "requires": [list(r) if isinstance(r, tuple) else r for r in self.requires],
            "optional": list(self.optional),
            "thresholds": [t.__dict__ for t in self.thresholds],
            "profiler_rules": list(self.profiler_rules),
            "needs_spec": self.needs_spec,
            "doc": (self.__doc__ or "").strip(),
        }

    # ------------------------------------------------------------------ helpers

    def finding(
        self,
        ctx: "RuleContext",
        summary: str,
        evidence: Sequence[Evidence],
        levers: Sequence[Lever],
        gain: float,
        severity: Optional[Severity] = None,
        title: str = "",
    ) -> Finding:
        gain = max(0.0, round(float(gain), 1))
        return Finding(
            rule=self.id,
            title=title or self.title,
            severity=severity or severity_for(gain),
            summary=summary,
            evidence=list(evidence),
            levers=[lv for lv in levers if lv is not None],
            estimated_gain_pct=gain,
            kernel=ctx.kernel,
        )


def severity_for(gain_pct: float) -> Severity:
    """Severity follows the estimated gain: what matters is how much time is at stake."""
    if gain_pct >= 20:
        return Severity.HIGH
    if gain_pct >= 8:
        return Severity.MEDIUM
    if gain_pct > 0:
        return Severity.LOW
    return Severity.INFO


def ev(
    metric: str,
    value: float,
    threshold: Optional[float] = None,
    comparison: str = "",
    unit: Optional[str] = None,
    meaning: Optional[str] = None,
) -> Evidence:
    """Evidence for a canonical metric, with its unit and meaning filled from the vocabulary."""
    return Evidence(
        metric=metric,
        value=float(value),
        threshold=None if threshold is None else float(threshold),
        unit=metric_unit(metric) if unit is None else unit,
        comparison=comparison,
        meaning=metric_meaning(metric) if meaning is None else meaning,
    )


def clamp(x: float, lo: float = 0.0, hi: float = 100.0) -> float:
    return max(lo, min(hi, x))


# ---------------------------------------------------------------------- levers

Suggest = Union[str, Callable[[Any], Any], None]


def knob_lever(
    ctx: "RuleContext",
    *,
    names: Sequence[str] = (),
    pattern: str = "",
    kind: str = "",
    direction: str,
    action: str,
    suggest: Suggest = None,
    fallback: str,
    why: str = "",
) -> Optional[Lever]:
    """A lever tied to the knob in the user's source when one is found.

    With a knob: ``"BLOCK_SIZE = 64 at line 25: raise to 1024 (why)"`` -- the knob that exists,
    where it is defined, its current value and a concrete new one. When the source is known but
    has no such knob (no BLOCK_K in a softmax), or the suggestion is the value it already has,
    the lever would say nothing true: None (``Rule.finding`` drops it). Without a source: the
    generic ``fallback`` name (``"BLOCK_SIZE"``, ``"num_warps"``) and the action.
    """
    knob = find_knob(ctx, names=names, pattern=pattern, kind=kind)
    suggested: Optional[str] = None
    if knob is not None:
        value = _effective(knob)
        if callable(suggest):
            try:
                s = suggest(value)
            except (TypeError, ValueError, ArithmeticError):
                s = None
            suggested = None if s is None else str(s)
        elif suggest is not None:
            suggested = str(suggest)
        if suggest is not None and (suggested is None or suggested == _shown_value(knob)
                                    or (value is not None and suggested == str(value))):
            return None  # nothing concrete to change
        if not action and suggested is not None and isinstance(value, (int, float)):
            # No fixed verb: say which way the value moves.
            try:
                action = "raise" if float(suggested) > value else "lower"
            except ValueError:
                action = "set"
        target = f" to {suggested}" if suggested is not None else ""
        desc = f"{knob.shown()} at {_where(knob)}: {action}{target}" + _why(why)
        return Lever(name=knob.name, direction=direction, description=desc,
                     current=_shown_value(knob), line=knob.line, suggested=suggested)
    if ctx.knobs is not None and ctx.knobs.kernels:
        return None  # the source is known and has no such knob: do not name one that does not exist
    if isinstance(suggest, str):
        suggested = suggest
    action = action or "set"
    desc = f"{fallback}: {action}" + (f" to {suggested}" if suggested else "") + _why(why)
    return Lever(name=fallback, direction=direction, description=desc, suggested=suggested)


def _effective(knob: "Knob") -> Any:
    """The value a suggestion starts from: static, the run-time one, or an autotune list."""
    if isinstance(knob.value, list):
        return knob.runtime if knob.runtime is not None else knob.value
    return knob.current


def _where(knob: "Knob") -> str:
    """Where the user makes the change, in the words of the source."""
    if knob.site == "autotune":
        return f"the autotune configs of {knob.kernel} (line {knob.line})"
    if knob.site == "helper":
        return f"line {knob.line} in {knob.helper}(), or override it after line {knob.call_line}"
    if knob.site == "absent":
        return f"the launch at line {knob.line} (add {knob.name}=)"
    if knob.site == "heuristic":
        return f"line {knob.line} (the @triton.heuristics value)"
    return f"line {knob.line}"


def within(lo: int, hi: int) -> Callable[[Any], Any]:
    """Suggestion: bring a value into [lo, hi]; None (no lever) when it is already there."""
    def f(v: Any) -> Any:
        if isinstance(v, list):
            v = max(v)
        if not isinstance(v, (int, float)):
            return None
        return lo if v < lo else hi if v > hi else None
    return f


def _why(why: str) -> str:
    return f". {why[0].upper()}{why[1:]}." if why else ""


def code_lever(name: str, direction: str, description: str, line: Optional[int] = None) -> Lever:
    """A lever that is a code pattern rather than a single value."""
    return Lever(name=name, direction=direction, description=description, line=line)


def find_knob(ctx: "RuleContext", *, names: Sequence[str] = (), pattern: str = "", kind: str = "") -> Optional["Knob"]:
    if ctx.knobs is None:
        return None
    kernel = ctx.kernel
    found_k = _find(ctx, names=names, pattern=pattern, kind=kind)
    return found_k if found_k is not None and _editable(ctx, found_k) else None


def _editable(ctx: "RuleContext", knob: "Knob") -> bool:
    """Can the user change this knob in the file without breaking the kernel?"""
    if knob.site == "param":
        return False  # its value arrives from outside the file
    if knob.kind in ("num_warps", "num_stages") or ctx.knobs is None:
        return True
    # A block that covers a whole row (next_power_of_2(n_cols), one masked tl.arange per row) is
    # not a free knob: lowering it breaks the kernel and raising it only adds masked lanes.
    # Knobs.spans_row is the one rule every advisor consults.
    return not ctx.knobs.spans_row(knob, ctx.kernel)


def _find(ctx: "RuleContext", *, names: Sequence[str], pattern: str, kind: str) -> Optional["Knob"]:
    kernel = ctx.kernel
    if names:
        k = ctx.knobs.get(*names, kernel=kernel)
        if k is not None and (not kind or k.kind in (kind, "autotune")):
            return k
    if pattern:
        found = ctx.knobs.matching(pattern, kind=kind or None, kernel=kernel)
        if not found and kind:
            found = ctx.knobs.matching(pattern, kernel=kernel)
        if found:
            return found[0]
    if kind and not names and not pattern:
        found = ctx.knobs.of_kind(kind, kernel=kernel)
        if found:
            return found[0]
    return None


def _shown_value(knob: "Knob") -> str:
    if knob.value is None:
        return str(knob.runtime) if knob.runtime is not None else knob.text
    if isinstance(knob.value, list):
        return ", ".join(map(str, knob.value))
    return str(knob.value)


def times_pow2(factor: int, cap: int) -> Callable[[Any], Any]:
    """Suggestion: multiply a power-of-two size by ``factor``, capped."""
    def f(v: Any) -> Any:
        if isinstance(v, list):
            v = max(v)
        if not isinstance(v, (int, float)) or v <= 0:
            return None
        target = min(cap, int(v) * factor)
        return 1 << int(math.log2(target)) if target > 0 else None
    return f


def at_least(value: int) -> Callable[[Any], Any]:
    def f(v: Any) -> Any:
        if isinstance(v, list):
            v = max(v)
        if not isinstance(v, (int, float)):
            return value
        return max(int(v), value)
    return f


def plus(n: int, cap: int) -> Callable[[Any], Any]:
    def f(v: Any) -> Any:
        if isinstance(v, list):
            v = max(v)
        if not isinstance(v, (int, float)):
            return None
        return min(cap, int(v) + n)
    return f


def halve(floor: int) -> Callable[[Any], Any]:
    def f(v: Any) -> Any:
        if isinstance(v, list):
            v = min(v)
        if not isinstance(v, (int, float)):
            return None
        return max(floor, int(v) // 2)
    return f


# ---------------------------------------------------------------------- profiler messages


def message_text(m: RuleMessage) -> str:
    """One line for a profiler message: which rule said what, with its own estimate."""
    est = f", est. speedup {m.estimated_speedup_pct:.1f}%" if m.estimated_speedup_pct else ""
    return f"ncu {m.rule} ({m.type}{est}): {m.message.strip()}"


def number_after(pattern: str, text: str) -> Optional[float]:
    """The first number captured by ``pattern`` in ``text`` (thousands separators allowed)."""
    m = re.search(pattern, text, re.I | re.S)
    if not m:
        return None
    try:
        return float(m.group(1).replace(",", ""))
    except (ValueError, IndexError):
        return None


# ---------------------------------------------------------------------- shared judgements


def tensor_use(ctx: "RuleContext") -> Optional[tuple[float, str, str]]:
    """Matrix-unit utilization: (percent, metric name, meaning), from counters or ncu's words."""
    for name in ("tensor_pipe_pct", "mfma_util_pct"):
        v = ctx.m(name)
        if v is not None:
            return v, name, metric_meaning(name)
    for msg in ctx.messages_named("HighPipeUtilization"):
        v = number_after(r"Tensor[^.]*?is the highest-utilized pipeline \(([\d.]+)%\)", msg.message)
        if v is not None:
            return v, "tensor_pipe_pct", "tensor-core pipe utilization (from ncu's HighPipeUtilization message)"
    return None


_MATMUL_NAME = re.compile(r"(matmul|gemm|_mm_|^mm_|_mm$|bmm|addmm|linear|attention|attn|conv)", re.I)


def matmul_like(ctx: "RuleContext") -> str:
    """Why this kernel counts as a tiled matmul (empty string when it does not)."""
    tu = tensor_use(ctx)
    if tu is not None and tu[0] >= 5.0:
        return f"matrix units busy {tu[0]:.0f}% of the time"
    if ctx.knobs is not None and ctx.knobs.uses_dot(ctx.knobs.canonical(ctx.kernel or "")):
        return "calls tl.dot"
    if ctx.knobs is not None and ctx.knobs.knows(ctx.kernel or ""):
        # The source is known and this kernel has no tl.dot: a name or a ratio does not make it
        # a tiled matmul (no tile-order or BLOCK_K advice for a softmax or an elementwise op).
        return ""
    if ctx.m("flops") and ctx.m("dram_bytes") and ctx.m("flops") / max(ctx.m("dram_bytes"), 1.0) > 50:
        return "arithmetic intensity of a tiled matmul"
    if _MATMUL_NAME.search(ctx.kernel or ""):
        return f"named like one: {ctx.kernel}"
    return ""


def memory_side(ctx: "RuleContext") -> Optional[str]:
    """Is the kernel on the memory side of its device? A reason string, or None."""
    roof = ctx.roofline
    mem, sm = ctx.m("memory_throughput_pct"), ctx.m("sm_throughput_pct")
    if mem is not None and sm is not None:
        return f"memory units are busier than compute ({mem:.0f}% vs {sm:.0f}% of peak)" if mem > sm else None
    if roof is not None and roof.intensity is not None and roof.ridge is not None:
        if roof.intensity < roof.ridge:
            return (f"arithmetic intensity {roof.intensity:.2g} FLOP/B is below the ridge point "
                    f"{roof.ridge:.0f} FLOP/B")
        return None
    if roof is not None and roof.bound == "memory-bound":
        return "the roofline places it on the memory side"
    if roof is not None and roof.flops is None and roof.bytes:
        # The profiler counted bytes but no floating-point work: a data-movement kernel.
        return "the profiler counted memory traffic but no floating-point work"
    return None


def dram_pct(ctx: "RuleContext") -> Optional[tuple[float, str]]:
    """Device-memory bandwidth as a percent of peak, from the counter or from bytes/s and the spec."""
    v = ctx.m("dram_throughput_pct")
    if v is not None:
        return v, "dram_throughput_pct"
    bw = ctx.m("dram_bandwidth_bytes_per_s")
    if bw is None and ctx.roofline is not None and ctx.roofline.achieved_gbps is not None:
        bw = ctx.roofline.achieved_gbps * 1e9
    peak = ctx.peak_gbps()
    if bw is not None and peak:
        return 100.0 * bw / (peak * 1e9), "dram_bandwidth_bytes_per_s"
    return None
