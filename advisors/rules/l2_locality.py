"""Poor L2 locality in a tiled kernel: program order (swizzle) and tile size.

In a tiled matmul, program ``pid`` computes one tile of C from a row panel of A and a column
panel of B. With plain row-major order (``pid_m = pid // num_pid_n``) the programs resident at
one time sweep a whole row of C tiles: they share one A panel but each needs a different B
panel, so the L2 cache holds little of what the next programs need and the same panels are
fetched from DRAM again and again. Grouped ("swizzled") order walks GROUP_M rows of tiles
column by column, so concurrent programs share both A and B panels.

Evidence: an L2 hit rate well below what a tiled kernel reaches (~85-95%), or L2 traffic far
above DRAM traffic while L2 is the busiest memory unit (the tile is re-read from L2 many times:
larger tiles cut L2 traffic in proportion).
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import (
    Rule, Threshold, clamp, code_lever, dram_pct, ev, find_knob, knob_lever, matmul_like, times_pow2,
)

HIT_MIN = Threshold("l2_hit_rate_min_pct", 60.0, "%",
                    "tiled kernels with good program order hit L2 85-95% of the time; below 60% the tiles "
                    "are fetched from DRAM repeatedly")
HIT_TARGET = Threshold("l2_hit_rate_reachable_pct", 85.0, "%",
                       "a conservative hit rate for a grouped-order matmul at large sizes")
L2_BUSY = Threshold("l2_busy_pct", 70.0, "%", "L2 is a bottleneck when it runs above ~70% of its peak")
L2_OVER_DRAM = Threshold("l2_over_dram_ratio", 1.25, "x",
                         "L2 busier than DRAM by this factor: the same bytes are re-read from L2 many times")
MAX_GAIN = 50.0

GROUPED_ORDER_CODE = (
    "num_pid_m = tl.cdiv(M, BLOCK_M); num_pid_n = tl.cdiv(N, BLOCK_N); "
    "group_id = pid // (GROUP_M * num_pid_n); first_pid_m = group_id * GROUP_M; "
    "group_size_m = min(num_pid_m - first_pid_m, GROUP_M); "
    "pid_m = first_pid_m + ((pid % (GROUP_M * num_pid_n)) % group_size_m); "
    "pid_n = (pid % (GROUP_M * num_pid_n)) // group_size_m"
)


class L2Locality(Rule):
    """Tiled (matmul-like) kernel with a poor L2 hit rate or L2 traffic far above DRAM traffic."""

    id = "l2-locality"
    title = "Poor L2 reuse between tiles (program order / tile size)"
    requires = (("l2_hit_rate_pct", "l2_throughput_pct"),)
    optional = ("dram_throughput_pct", "tensor_pipe_pct", "mfma_util_pct", "memory_throughput_pct")
    thresholds = (HIT_MIN, HIT_TARGET, L2_BUSY, L2_OVER_DRAM)
    profiler_rules = ("SOLBottleneck",)

    def evaluate(self, ctx) -> Optional[Finding]:
        tiled = matmul_like(ctx)
        if not tiled:
            return None
        hit, l2 = ctx.m("l2_hit_rate_pct"), ctx.m("l2_throughput_pct")
        dram = dram_pct(ctx)
        dram_v = dram[0] if dram else None
        low_hit = hit is not None and hit < HIT_MIN.value
        l2_heavy = (l2 is not None and dram_v is not None and l2 >= L2_BUSY.value
                    and l2 >= L2_OVER_DRAM.value * dram_v)
        if not (low_hit or l2_heavy):
            return None

        grouped = ctx.knobs.is_grouped(ctx.knobs.canonical(ctx.kernel or "")) if ctx.knobs is not None else None
        # Time attributable to device memory: DRAM is busy dram% of the time. Grouped order cuts
        # DRAM traffic in proportion to the miss rate, (1 - target) / (1 - hit); bigger tiles cut
        # L2 traffic instead (doubling one tile side removes ~25% of it), which is what is left
        # when the hit rate is already fine.
        dram_frac = (dram_v if dram_v is not None else (ctx.m("memory_throughput_pct") or 50.0)) / 100.0
        if hit is not None and hit < HIT_TARGET.value:
            miss_ratio = (1.0 - HIT_TARGET.value / 100.0) / max(1e-6, 1.0 - hit / 100.0)
            gain = dram_frac * (1.0 - miss_ratio) * 100.0
            basis = (f"the share of time DRAM is busy ({dram_frac * 100:.0f}%) times the DRAM traffic a "
                     f"{HIT_TARGET.value:.0f}% hit rate would remove")
        else:
            gain = (l2 or 0.0) / 100.0 * 25.0
            basis = "a quarter of the L2-busy time, what doubling one tile side removes from L2 traffic"
        gain = clamp(gain, 0.0, MAX_GAIN)

        evidence = []
        if hit is not None:
            evidence.append(ev("l2_hit_rate_pct", hit, HIT_MIN.value, "<"))
        if l2 is not None:
            evidence.append(ev("l2_throughput_pct", l2, L2_BUSY.value, ">=" if l2_heavy else ""))
        if dram_v is not None:
            evidence.append(ev("dram_throughput_pct", dram_v,
                               meaning="device-memory bandwidth used, percent of peak (L2 misses land here)"))

        levers = []
        group = find_knob(ctx, names=("GROUP_M", "GROUP_SIZE_M", "GROUP_SIZE"), pattern=r"GROUP")
        group_v = group.current if group is not None else None
        ones = isinstance(group_v, list) and group_v and max(group_v) <= 1
        if grouped and (group_v == 1 or ones):
            # Grouping code with groups of one row of tiles is row-major order.
            levers.append(knob_lever(ctx, names=("GROUP_M", "GROUP_SIZE_M", "GROUP_SIZE"), pattern=r"GROUP",
                                     direction="increase", action="raise", suggest="8", fallback="GROUP_M",
                                     why="with a group of 1 the grouping code walks the tiles row-major; 8 rows "
                                         "of tiles per group keep the A and B panels of concurrent programs in L2"))
            grouped = "ones"
        elif grouped is False or grouped is None:
            unused = ""
            if group is not None and grouped is False:
                unused = f" The kernel accepts {group.name} but never uses it to reorder programs."
            levers.append(code_lever(
                "program order", "add",
                "map program ids to tiles in grouped order (Triton matmul tutorial) instead of row-major "
                f"`pid // num_pid_n`: {GROUPED_ORDER_CODE}, or `pid_m, pid_n = tl.swizzle2d(...)`.{unused}",
                line=None))
            levers.append(knob_lever(ctx, names=("GROUP_M", "GROUP_SIZE_M", "GROUP_SIZE"), pattern=r"GROUP",
                                     direction="set", action="set", suggest="8", fallback="GROUP_M",
                                     why="8 rows of tiles per group keeps A and B panels of concurrent "
                                         "programs in L2"))
        else:
            levers.append(knob_lever(ctx, names=("GROUP_M", "GROUP_SIZE_M", "GROUP_SIZE"), pattern=r"GROUP",
                                     direction="increase", action="raise", suggest=times_pow2(2, 16),
                                     fallback="GROUP_M",
                                     why="larger groups share more panels between concurrent programs"))
        for side in ("M", "N"):
            levers.append(knob_lever(ctx, names=(f"BLOCK_{side}", f"BLOCK_SIZE_{side}", f"B{side}"),
                                     pattern=rf"BLOCK_?(SIZE_)?{side}$", direction="increase", action="raise",
                                     suggest=times_pow2(2, 256), fallback=f"BLOCK_{side}",
                                     why="each byte brought into shared memory then feeds twice the FLOPs, "
                                         "halving L2 traffic per FLOP"))

        parts = []
        if low_hit:
            parts.append(f"only {hit:.0f}% of L2 requests hit (< {HIT_MIN.value:.0f}%)")
        if l2_heavy:
            parts.append(f"L2 runs at {l2:.0f}% of its peak, {l2 / max(dram_v, 1e-6):.1f}x the DRAM "
                         f"utilization ({dram_v:.0f}%)")
        order = {True: "The kernel already uses grouped program order.",
                 "ones": f"The kernel has grouping code but {group.name if group else 'GROUP_M'} = 1, "
                         "so it walks its tiles row-major.",
                 False: "The kernel walks its tiles in plain row-major program order.",
                 None: "Its program order is unknown (no source given)."}[grouped]
        summary = (f"This is a tiled matmul-like kernel ({tiled}) that reuses little between tiles: "
                   f"{' and '.join(parts)}. {order} Grouped order and larger tiles cut DRAM and L2 traffic; "
                   f"estimated gain about {gain:.0f}% of the kernel time ({basis}).")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = L2Locality()
