"""Memory-bound but far below the device-memory bandwidth: too few bytes in flight.

A streaming kernel reaches 80-90% of HBM bandwidth only when every SM keeps enough loads
outstanding to cover the memory latency (Little's law: bytes in flight = bandwidth x latency,
tens of KB per SM on HBM3). Small programs, scalar 4-byte accesses and shallow loops leave the
memory system idle between requests.
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules.launch_overhead import FIXED_COST_NS
from advisors.rules._base import (
    Rule, Threshold, at_least, clamp, within, code_lever, dram_pct, ev, find_knob, knob_lever, memory_side,
    plus, times_pow2,
)

LOW_DRAM = Threshold("low_dram_pct", 60.0, "%",
                     "well-fed streaming kernels reach 80-90% of peak HBM bandwidth; below 60% the memory "
                     "system is waiting for requests rather than serving them")
BUSY_UNIT = Threshold("busy_memory_unit_pct", 60.0, "%",
                      "if some memory unit (L1 or L2) is this busy the limit is traffic on that unit, not "
                      "too little in flight")
TARGET = Threshold("reachable_dram_pct", 85.0, "%",
                   "what a streaming kernel with enough bytes in flight reaches in practice (an H200 vector "
                   "add measured 89-90%)")
MAX_GAIN = 75.0


class MemoryParallelism(Rule):
    """Memory-bound kernel using a small fraction of DRAM bandwidth: raise the work per program."""

    id = "memory-parallelism"
    title = "Too little memory traffic in flight for a memory-bound kernel"
    requires = (("dram_throughput_pct", "dram_bandwidth_bytes_per_s", "dram_bytes", "dram_bytes_read"),)
    optional = ("memory_throughput_pct", "l2_throughput_pct", "l1_throughput_pct", "achieved_occupancy_pct",
                "global_ld_bytes_per_sector", "block_size", "grid_size")
    thresholds = (LOW_DRAM, BUSY_UNIT, TARGET)
    profiler_rules = ("SOLBottleneck",)

    def evaluate(self, ctx) -> Optional[Finding]:
        why = memory_side(ctx)
        got = dram_pct(ctx)
        if why is None or got is None:
            return None
        pct, metric = got
        if pct >= LOW_DRAM.value:
            return None
        busy = [(n, ctx.m(n)) for n in ("l2_throughput_pct", "l1_throughput_pct") if ctx.m(n) is not None]
        busy = [(n, v) for n, v in busy if v >= BUSY_UNIT.value]
        if busy:
            return None  # another memory unit is the hot spot; l2-locality / near-limit speak to it
        # If the kernel moved the same bytes at the reachable bandwidth its time would scale by
        # pct / TARGET: that is the share of time "too little in flight" costs. A short kernel
        # also pays a fixed launch/ramp cost that no amount of parallelism removes.
        ratio = pct / TARGET.value
        d = ctx.m("duration_ns")
        if d:
            ratio = min(1.0, ratio + FIXED_COST_NS / d * (1.0 - ratio))
        gain = clamp((1.0 - ratio) * 100.0, 0.0, MAX_GAIN)
        evidence = []
        if metric == "dram_throughput_pct":
            evidence.append(ev(metric, pct, LOW_DRAM.value, "<"))
        else:
            peak = ctx.peak_gbps() or 0.0
            bw = pct / 100.0 * peak * 1e9
            evidence.append(ev("dram_bandwidth_bytes_per_s", bw, LOW_DRAM.value / 100.0 * peak * 1e9, "<",
                               meaning=f"achieved device-memory bandwidth ({pct:.0f}% of {peak:,.0f} GB/s peak)"))
        for n in ("memory_throughput_pct", "achieved_occupancy_pct", "l2_hit_rate_pct"):
            if ctx.m(n) is not None:
                evidence.append(ev(n, ctx.m(n)))
        levers = [
            knob_lever(ctx, names=("BLOCK_SIZE", "XBLOCK", "BLOCK"), pattern=r"BLOCK", kind="constexpr",
                       direction="increase", action="raise", suggest=times_pow2(16, 4096),
                       fallback="BLOCK_SIZE",
                       why="each program then moves several KB with wide vector loads, so more bytes are in "
                           "flight per SM"),
            knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps", direction="set",
                       action="", suggest=within(4, 8), fallback="num_warps",
                       why="4-8 warps issue the loads of a large block without starving each other"),
        ]
        # Pipelining stages only matter for a loop (the source says whether there is one).
        has_loop = ctx.knobs is None or ctx.knobs.has_loop(ctx.kernel)
        if has_loop and find_knob(ctx, names=("num_stages", "NUM_STAGES"), kind="num_stages") is not None:
            levers.append(knob_lever(ctx, names=("num_stages", "NUM_STAGES"), kind="num_stages",
                                     direction="increase", action="raise", suggest=plus(1, 4),
                                     fallback="num_stages",
                                     why="loops prefetch the next iteration's data while computing this one"))
        levers.append(code_lever("loop over tiles", "add",
                                 "if the grid is tiny relative to the data, let each program loop over several "
                                 "blocks (a persistent grid of a few programs per SM) instead of one block each"))
        summary = (f"The kernel is memory-bound ({why}) but uses only {pct:.0f}% of the device-memory "
                   f"bandwidth (< {LOW_DRAM.value:.0f}%): too few loads are in flight to cover the memory "
                   f"latency. At the {TARGET.value:.0f}% a well-fed kernel reaches it would take about "
                   f"{gain:.0f}% less time.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = MemoryParallelism()
