"""Blocks per SM: from the profiler's occupancy limits, or estimated from the launch and the spec.

Nsight Compute reports ``launch__occupancy_limit_*`` (blocks per SM allowed by registers, shared
memory, block size and the block-slot limit). rocprof reports only the registers and LDS of a
dispatch; with a ``DeviceSpec`` the same limits can be estimated. The estimate follows each
vendor's allocation rules closely enough to name the limiter; it is labelled as an estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from advisors.context import RuleContext

LIMITS = ("registers", "shared_mem", "warps", "blocks")
LIMIT_WORDS = {
    "registers": "registers per thread",
    "shared_mem": "shared memory (LDS) per block",
    "warps": "threads per block (warps)",
    "blocks": "the hardware limit on resident blocks",
}

# NVIDIA allocates registers per warp in units of 256. (The driver's 1 KiB of shared memory per
# block is already in shared_mem_per_block_bytes as the ncu collector fills it.) AMD CDNA allocates VGPRs in granules of 8 per lane and has
# 512 per SIMD lane, four SIMDs per CU.
_NV_REG_UNIT = 256
_AMD_VGPR_GRANULE = 8
_AMD_SIMDS = 4


@dataclass
class Occupancy:
    limits: dict[str, float] = field(default_factory=dict)  # blocks per SM by each limit
    warps_per_block: Optional[int] = None
    max_warps: Optional[int] = None
    theoretical_pct: Optional[float] = None
    estimated: bool = False

    @property
    def blocks_per_sm(self) -> Optional[float]:
        return min(self.limits.values()) if self.limits else None

    @property
    def limiter(self) -> Optional[str]:
        if not self.limits:
            return None
        low = min(self.limits.values())
        return next(k for k in LIMITS if self.limits.get(k) == low)

    def pct_without(self, limiter: str) -> Optional[float]:
        """Theoretical occupancy if ``limiter`` were relieved (the next limit takes over)."""
        others = [v for k, v in self.limits.items() if k != limiter]
        if not others or not self.warps_per_block or not self.max_warps:
            return None
        return min(100.0, 100.0 * min(others) * self.warps_per_block / self.max_warps)


def occupancy(ctx: "RuleContext") -> Occupancy:
    """Occupancy limits for the launch in ``ctx``; empty when neither counters nor spec tell."""
    occ = Occupancy()
    spec = ctx.spec
    block = ctx.m("block_size")
    warp = spec.warp_size if spec else (64 if ctx.is_amd() else 32)
    if block:
        occ.warps_per_block = max(1, math.ceil(block / warp))
    occ.max_warps = spec.max_warps_per_sm if spec else None
    for name in LIMITS:
        v = ctx.m(f"occupancy_limit_{name}")
        if v is not None and v > 0:
            occ.limits[name] = v
    if not occ.limits and spec is not None and occ.warps_per_block:
        occ.limits = _estimate(ctx, occ.warps_per_block)
        occ.estimated = bool(occ.limits)
    theo = ctx.m("theoretical_occupancy_pct")
    if theo is not None:
        occ.theoretical_pct = theo
    elif occ.limits and occ.warps_per_block and occ.max_warps:
        occ.theoretical_pct = min(100.0, 100.0 * occ.blocks_per_sm * occ.warps_per_block / occ.max_warps)
    if occ.max_warps is None and occ.theoretical_pct and occ.limits and occ.warps_per_block:
        # ncu gives theoretical occupancy and limits but no spec: back out the SM's warp slots.
        occ.max_warps = round(occ.blocks_per_sm * occ.warps_per_block * 100.0 / occ.theoretical_pct)
    return occ


def _estimate(ctx: "RuleContext", warps_per_block: int) -> dict[str, float]:
    spec = ctx.spec
    assert spec is not None
    out: dict[str, float] = {}
    regs = ctx.m("registers_per_thread")
    smem = ctx.m("shared_mem_per_block_bytes")
    out["warps"] = float(spec.max_warps_per_sm // warps_per_block)
    out["blocks"] = float(spec.max_blocks_per_sm)
    if spec.vendor.upper() == "AMD":
        if regs:
            per_lane = spec.registers_per_sm // (_AMD_SIMDS * spec.warp_size)
            granule = math.ceil(regs / _AMD_VGPR_GRANULE) * _AMD_VGPR_GRANULE
            waves_per_simd = min(spec.max_warps_per_sm // _AMD_SIMDS, per_lane // granule)
            out["registers"] = float((waves_per_simd * _AMD_SIMDS) // warps_per_block)
        if smem:
            out["shared_mem"] = float(spec.shared_mem_per_sm_bytes // smem)
    else:
        if regs:
            per_warp = math.ceil(regs * spec.warp_size / _NV_REG_UNIT) * _NV_REG_UNIT
            out["registers"] = float(spec.registers_per_sm // (per_warp * warps_per_block))
        if smem:
            out["shared_mem"] = float(spec.shared_mem_per_sm_bytes // smem)
    return out


def waves(ctx: "RuleContext") -> Optional[tuple[float, bool]]:
    """Waves of blocks per SM: (value, estimated?)."""
    w = ctx.m("waves_per_sm")
    if w is not None:
        return w, False
    grid, sms = ctx.m("grid_size"), ctx.sm_count()
    per_sm = occupancy(ctx).blocks_per_sm
    if grid and sms and per_sm:
        return grid / (sms * per_sm), True
    return None
