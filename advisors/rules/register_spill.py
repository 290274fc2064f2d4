"""Register spills: the compiler ran out of registers and keeps values in local (global) memory."""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import Rule, Threshold, ev, halve, knob_lever, matmul_like

ANY_SPILL = Threshold("spill_requests_min", 1.0, "requests", "any spill traffic goes through L1/L2 and costs latency")
# Without a count of all memory requests the cost of spills is not measurable from these
# counters; spills in a hot loop typically cost 5-15%, so we rank them modestly.
GAIN_MEMORY_SIDE = 10.0
GAIN_OTHER = 5.0


class RegisterSpill(Rule):
    """local_spill_requests > 0: shrink the per-thread tile or spread it over more warps."""

    id = "register-spill"
    title = "Registers spill to local memory"
    requires = ("local_spill_requests",)
    optional = ("registers_per_thread",)
    thresholds = (ANY_SPILL,)
    profiler_rules = ("RegisterSpilling",)

    def evaluate(self, ctx) -> Optional[Finding]:
        spills = ctx.m("local_spill_requests")
        if spills is None or spills < ANY_SPILL.value:
            return None
        evidence = [ev("local_spill_requests", spills, ANY_SPILL.value, ">=")]
        if ctx.m("registers_per_thread") is not None:
            evidence.append(ev("registers_per_thread", ctx.m("registers_per_thread")))
        gain = GAIN_MEMORY_SIDE if (ctx.m("memory_throughput_pct") or 0) > (ctx.m("sm_throughput_pct") or 0) \
            else GAIN_OTHER
        tiled = matmul_like(ctx)
        levers = [
            knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps", direction="increase", action="raise",
                       suggest=lambda v: min(16, int(v) * 2) if isinstance(v, int) else None, fallback="num_warps",
                       why="the same tile over more threads needs fewer registers per thread"),
            knob_lever(ctx, pattern=r"BLOCK_?(SIZE_)?[MN]$" if tiled else r"BLOCK", direction="decrease",
                       action="lower", suggest=halve(16), fallback="BLOCK_SIZE",
                       why="a smaller tile per program"),
        ]
        summary = (f"{spills:,.0f} local-memory requests come from register spills: values the compiler could not "
                   f"keep in registers round-trip through the cache hierarchy.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = RegisterSpill()
