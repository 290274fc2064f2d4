"""Uncoalesced global memory access: sectors fetched but only partly used.

Global memory moves in 32-byte sectors. When the 32 threads of a warp read consecutive addresses
the sectors they touch are fully used; strided or scattered access drags in whole sectors for a
few useful bytes each. Two views of the same waste: useful bytes per sector (32 is perfect) and
sectors per warp request (4 for 4-byte loads, 16 for 16-byte vector loads, never more when
coalesced).
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import Rule, Threshold, clamp, code_lever, ev, memory_side

MIN_BYTES = Threshold("bytes_per_sector_min", 16.0, "B",
                      "half of a 32-byte sector; below it more than half of every fetched sector is wasted")
MAX_SECTORS = Threshold("sectors_per_request_max", 16.0, "sectors",
                        "a warp's fully coalesced 16-byte-per-thread access touches 16 sectors; more means "
                        "scattered addresses")
NON_MEMORY_WEIGHT = 0.3  # share of time assumed memory-related when the kernel is not memory-bound
MAX_GAIN = 60.0


class UncoalescedGlobal(Rule):
    """Few useful bytes per sector or too many sectors per request on global loads/stores."""

    id = "uncoalesced-global"
    title = "Uncoalesced global memory access"
    requires = (("global_ld_bytes_per_sector", "global_st_bytes_per_sector",
                 "global_ld_sectors_per_request", "global_st_sectors_per_request"),)
    optional = ("dram_throughput_pct", "memory_throughput_pct")
    thresholds = (MIN_BYTES, MAX_SECTORS)
    profiler_rules = ("UncoalescedGlobalAccess", "L1TEXGlobalLoadAccessPattern", "L1TEXGlobalStoreAccessPattern",
                      "GlobalLoadAccessPattern", "GlobalStoreAccessPattern")

    def evaluate(self, ctx) -> Optional[Finding]:
        evidence, wasted = [], 0.0
        for op, word in (("ld", "loads"), ("st", "stores")):
            bps = ctx.m(f"global_{op}_bytes_per_sector")
            spr = ctx.m(f"global_{op}_sectors_per_request")
            if bps is not None and 0 < bps < MIN_BYTES.value:
                evidence.append(ev(f"global_{op}_bytes_per_sector", bps, MIN_BYTES.value, "<"))
                wasted = max(wasted, 1.0 - bps / 32.0)
            if spr is not None and spr > MAX_SECTORS.value:
                evidence.append(ev(f"global_{op}_sectors_per_request", spr, MAX_SECTORS.value, ">"))
                wasted = max(wasted, 1.0 - MAX_SECTORS.value / spr)
        if not evidence:
            return None
        # The wasted share of each sector is wasted bandwidth; it costs time in proportion to how
        # memory-bound the kernel is.
        why = memory_side(ctx)
        share = (ctx.m("memory_throughput_pct") or ctx.m("dram_throughput_pct") or 80.0) / 100.0 if why \
            else NON_MEMORY_WEIGHT
        gain = clamp(wasted * share * 100.0, 0.0, MAX_GAIN)
        levers = [
            code_lever("access order", "set",
                       "make the fastest-varying index of each load (the tl.arange axis, threadIdx.x) walk the "
                       "contiguous (stride-1) dimension of the tensor; load a tile along the contiguous axis "
                       "and transpose it in registers (tl.trans) rather than reading with a large stride"),
            code_lever("block pointers", "set",
                       "use tl.make_block_ptr with order=(1, 0) matching the memory layout, or make the "
                       "inputs contiguous (.contiguous()) before the launch"),
            code_lever("contiguous width", "increase",
                       "keep at least 32 consecutive elements per row of a tile (BLOCK_N >= 32 for the "
                       "contiguous dimension) so each warp covers whole 128-byte lines"),
        ]
        summary = (f"Global memory accesses are uncoalesced: about {wasted * 100:.0f}% of every 32-byte sector "
                   f"fetched is wasted. That bandwidth is lost" +
                   (" and the kernel is memory-bound." if why else ", though the kernel is not memory-bound.") )
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = UncoalescedGlobal()
