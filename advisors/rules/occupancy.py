"""Occupancy limited by registers, shared memory or block size.

More resident warps per SM let the scheduler hide memory and pipeline latency by switching to a
warp that is ready. The SM admits as many blocks as the scarcest resource allows; the smallest of
the per-resource limits (``occupancy_limit_*``) is the limiter. Relieving it raises occupancy
only up to the next limit, which is what the gain estimate uses.
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import (
    Rule, Threshold, clamp, code_lever, ev, halve, knob_lever, matmul_like, times_pow2,
)
from advisors.rules._occupancy import LIMIT_WORDS, occupancy

LOW_THEORETICAL = Threshold("theoretical_occupancy_low_pct", 70.0, "%",
                            "below ~70% theoretical occupancy a latency-bound kernel has too few warps to "
                            "switch between while waiting")
COMPUTE_SATURATED = Threshold("sm_throughput_saturated_pct", 80.0, "%",
                              "a kernel whose busiest pipe is this busy gains nothing from more warps")
DEFAULT_IDLE = 0.5  # share of cycles without an issued instruction when issue_active_pct is missing
MAX_GAIN = 40.0


class Occupancy(Rule):
    """Theoretical occupancy below 70%: name the limiting resource and the knob that relieves it."""

    id = "occupancy"
    title = "Occupancy limited by a per-SM resource"
    requires = (("theoretical_occupancy_pct", "occupancy_limit_registers", "occupancy_limit_shared_mem",
                 "occupancy_limit_warps", "occupancy_limit_blocks", "registers_per_thread",
                 "shared_mem_per_block_bytes"),)
    optional = ("achieved_occupancy_pct", "issue_active_pct", "sm_throughput_pct", "block_size",
                "registers_per_thread", "shared_mem_per_block_bytes")
    thresholds = (LOW_THEORETICAL, COMPUTE_SATURATED)
    profiler_rules = ("TheoreticalOccupancy", "AchievedOccupancy")

    def evaluate(self, ctx) -> Optional[Finding]:
        occ = occupancy(ctx)
        theo, limiter = occ.theoretical_pct, occ.limiter
        if theo is None or limiter is None or theo >= LOW_THEORETICAL.value:
            return None
        sm = ctx.m("sm_throughput_pct")
        if sm is not None and sm >= COMPUTE_SATURATED.value:
            return None
        # Relieving every limit tied at the minimum lets the next one take over.
        low = occ.blocks_per_sm
        tied = [k for k, v in occ.limits.items() if v == low]
        others = [v for k, v in occ.limits.items() if k not in tied]
        potential = (min(100.0, 100.0 * min(others) * occ.warps_per_block / occ.max_warps)
                     if others and occ.warps_per_block and occ.max_warps else 100.0)
        # Gain: the share of cycles in which no warp could issue, scaled by how much of the
        # occupancy headroom relieving the limiter buys (1 - now/potential). More warps fill idle
        # issue slots at best in proportion.
        issue = ctx.m("issue_active_pct")
        idle = 1.0 - issue / 100.0 if issue is not None else DEFAULT_IDLE
        relief = max(0.0, 1.0 - theo / potential) if potential > 0 else 0.0
        gain = clamp(relief * idle * 100.0, 0.0, MAX_GAIN)

        est = " (estimated from the launch and the device spec)" if occ.estimated else ""
        evidence = [ev("theoretical_occupancy_pct", theo, LOW_THEORETICAL.value, "<")]
        achieved = ctx.m("achieved_occupancy_pct")
        if achieved is not None:
            evidence.append(ev("achieved_occupancy_pct", achieved))
        for k in ("registers", "shared_mem", "warps", "blocks"):
            if k in occ.limits:
                evidence.append(ev(f"occupancy_limit_{k}", occ.limits[k], comparison="limiter" if k in tied else "",
                                   meaning=f"blocks per SM allowed by {LIMIT_WORDS[k]}{est}"))
        for n in ("registers_per_thread", "shared_mem_per_block_bytes", "block_size"):
            if ctx.m(n) is not None:
                evidence.append(ev(n, ctx.m(n)))
        if issue is not None:
            evidence.append(ev("issue_active_pct", issue))

        levers = self._levers(ctx, tied, matmul_like(ctx))
        names = " and ".join(LIMIT_WORDS[k] for k in tied)
        blocks = f"{low:.0f} block{'s' if low != 1 else ''}"
        summary = (f"Theoretical occupancy is {theo:.0f}% (< {LOW_THEORETICAL.value:.0f}%"
                   f"{', ' + est.strip(' ()') if est else ''}), limited by {names}: room for only {blocks} "
                   f"per SM. Relieving that lets occupancy rise to "
                   f"{potential:.0f}% before the next limit; "
                   + (f"with {idle * 100:.0f}% of cycles issuing nothing" if issue is not None else
                      f"assuming {idle * 100:.0f}% of cycles issue nothing (the capture has no issue counters)")
                   + f", that is worth about {gain:.0f}%.")
        return self.finding(ctx, summary, evidence, levers, gain)

    def _levers(self, ctx, tied, tiled: str):
        if ctx.knobs is None:
            return self._generic_levers(tied)
        levers = []
        if "registers" in tied:
            levers.append(knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps",
                                     direction="increase", action="raise", suggest=times_pow2(2, 16),
                                     fallback="num_warps",
                                     why="Triton spreads each tile over more threads, so each thread holds "
                                         "fewer accumulator registers"))
            if tiled:
                # Shrinking a matmul tile trades reuse for registers: the wrong way. Spread the tile
                # over more warps instead, and keep that ratio when tiles grow.
                levers.append(code_lever("tile per warp", "set",
                                         "when raising BLOCK_M/BLOCK_N for reuse, raise num_warps in proportion "
                                         "so the accumulator per thread (BLOCK_M*BLOCK_N / threads) stays at "
                                         "or below ~64 values"))
            else:
                levers.append(knob_lever(ctx, pattern=r"BLOCK", direction="decrease", action="lower",
                                         suggest=halve(16), fallback="BLOCK_SIZE",
                                         why="a smaller block holds fewer values per thread"))
        if "shared_mem" in tied:
            levers.append(knob_lever(ctx, names=("num_stages", "NUM_STAGES"), kind="num_stages",
                                     direction="decrease", action="lower", suggest=halve(1),
                                     fallback="num_stages",
                                     why="each pipeline stage holds one set of A/B tiles in shared memory"))
            if tiled:  # a K slice exists only in a kernel that walks K (tl.dot)
                levers.append(knob_lever(ctx, names=("BLOCK_K", "BLOCK_SIZE_K"), pattern=r"BLOCK_?(SIZE_)?K$",
                                         direction="decrease", action="lower", suggest=halve(16),
                                         fallback="BLOCK_K", why="smaller K slices shrink every stage's buffers"))
        if "warps" in tied or "blocks" in tied:
            direction = "increase" if "blocks" in tied else "decrease"
            levers.append(knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps",
                                     direction=direction,
                                     action="raise" if direction == "increase" else "lower",
                                     suggest=times_pow2(2, 16) if direction == "increase" else halve(1),
                                     fallback="num_warps",
                                     why="blocks too small hit the resident-block limit; blocks too large "
                                         "leave warp slots that no whole block fits in"))
        return levers

    @staticmethod
    def _generic_levers(tied):
        """Without the source we do not know the language: say what to change in each."""
        levers = []
        if "registers" in tied:
            levers.append(code_lever("registers per thread", "decrease",
                                     "keep fewer values live per thread: smaller per-thread tiles, less unrolling; "
                                     "in Triton raise num_warps (the tile spreads over more threads); in HIP/CUDA "
                                     "bound registers with __launch_bounds__ / amdgpu_waves_per_eu"))
        if "shared_mem" in tied:
            levers.append(code_lever("shared memory per block", "decrease",
                                     "use a smaller shared-memory/LDS tile per block or fewer pipeline stages "
                                     "(Triton: lower num_stages or BLOCK_K)"))
        if "warps" in tied or "blocks" in tied:
            levers.append(code_lever("block size", "set",
                                     "choose a block size whose warps divide the SM's warp slots evenly "
                                     "(128-256 threads is a safe default; Triton: num_warps 4-8)"))
        return levers


RULE = Occupancy()
