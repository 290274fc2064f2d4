"""Shared-memory (LDS) bank conflicts.

Shared memory has 32 banks (NVIDIA; 32 or 64 on AMD LDS) of 4 bytes. When threads of a warp hit
different addresses in the same bank, the access is replayed as extra wavefronts. Nsight Compute
counts conflicts and wavefronts per load/store (``smem_bank_conflicts_* / smem_wavefronts_*``);
rocprof's ``LDSBankConflict`` gives the share of cycles lost; where only Nsight Compute's
``SharedMemoryConflicts`` message is present, its numbers are the evidence.
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import (
    Rule, Threshold, at_least, clamp, code_lever, ev, knob_lever, matmul_like, number_after,
)

CONFLICT_SHARE = Threshold("conflict_wavefront_share_pct", 10.0, "%",
                           "share of shared-memory wavefronts that are bank-conflict replays")
CONFLICT_CYCLES = Threshold("lds_conflict_cycles_pct", 5.0, "%",
                            "share of shared-memory/LDS cycles lost to bank conflicts (rocprof LDSBankConflict)")
DEFAULT_WEIGHT = 0.5  # how shared-memory-bound the kernel is, when no stall breakdown says
MAX_GAIN = 30.0


class BankConflicts(Rule):
    """Bank conflicts on shared-memory loads or stores above 10% of wavefronts (or 5% of LDS cycles)."""

    id = "smem-bank-conflicts"
    title = "Shared-memory bank conflicts"
    requires = (("smem_bank_conflicts_ld", "smem_bank_conflicts_st", "smem_bank_conflict_pct",
                 "ncu:SharedMemoryConflicts"),)
    optional = ("smem_wavefronts_ld", "smem_wavefronts_st", "stall_short_scoreboard", "stall_mio_throttle",
                "warp_cycles_per_issue")
    thresholds = (CONFLICT_SHARE, CONFLICT_CYCLES)
    profiler_rules = ("SharedMemoryConflicts", "UncoalescedSharedAccess")

    def evaluate(self, ctx) -> Optional[Finding]:
        evidence, share, where, th = [], 0.0, [], CONFLICT_SHARE
        for op, word in (("ld", "loads"), ("st", "stores")):
            c, w = ctx.m(f"smem_bank_conflicts_{op}"), ctx.m(f"smem_wavefronts_{op}")
            if c is None or not w:
                continue
            pct = 100.0 * c / w
            if pct >= CONFLICT_SHARE.value:
                evidence.append(ev(f"smem_bank_conflicts_{op}", c, unit="conflicts",
                                   meaning=f"bank-conflict replays on shared {word}: {pct:.1f}% of "
                                           f"{w:,.0f} wavefronts"))
                evidence.append(ev(f"smem_conflict_share_{op}", pct, CONFLICT_SHARE.value, ">=", unit="%",
                                   meaning=f"share of shared-memory {word[:-1]} wavefronts that are conflict "
                                           f"replays"))
                share, where = max(share, pct), where + [word]
        lds = ctx.m("smem_bank_conflict_pct")
        if lds is not None and lds >= CONFLICT_CYCLES.value:
            evidence.append(ev("smem_bank_conflict_pct", lds, CONFLICT_CYCLES.value, ">="))
            share, where = max(share, lds), where or ["LDS accesses"]
            th = CONFLICT_CYCLES if share == lds else th
        prof_gain = next((m.estimated_speedup_pct for m in ctx.messages_named("SharedMemoryConflicts")
                          if m.estimated_speedup_pct is not None), None)
        if not evidence:
            # Nsight Compute's details page prints the verdict without the counters.
            for msg in ctx.messages_named("SharedMemoryConflicts"):
                pct = number_after(r"represent ([\d.]+)% of the overall", msg.message)
                ways = number_after(r"([\d.]+)\s*-\s*way bank conflict", msg.message)
                kind = "stores" if "shared store" in msg.message else "loads"
                if pct is None or pct < CONFLICT_SHARE.value:
                    continue
                evidence.append(ev(f"smem_conflict_share_{kind[:2]}", pct, CONFLICT_SHARE.value, ">=", unit="%",
                                   meaning=f"share of shared-memory {kind[:-1]} wavefronts that are conflict "
                                           f"replays (from ncu's SharedMemoryConflicts message)"))
                if ways is not None:
                    evidence.append(ev("smem_conflict_ways", ways, unit="way",
                                       meaning="average number of threads of a warp that collide in one bank "
                                               "(1 = no conflict)"))
                share, where = max(share, pct), where + [kind]
                break
        if not evidence:
            return None
        # Gain: the replayed share of shared-memory work, times how much the kernel waits on shared
        # memory (short-scoreboard + MIO-throttle stalls over all stall cycles). Without a stall
        # breakdown we adopt Nsight Compute's own estimate (it has per-instruction data we lack),
        # else assume half.
        total = ctx.m("warp_cycles_per_issue")
        smem_stall = sum(ctx.m(n) or 0.0 for n in ("stall_short_scoreboard", "stall_mio_throttle"))
        if total and smem_stall:
            gain = share * min(1.0, smem_stall / total)
        elif prof_gain is not None:
            gain = prof_gain
        else:
            gain = share * DEFAULT_WEIGHT
        gain = clamp(gain, 0.0, MAX_GAIN)

        levers = []
        if matmul_like(ctx) and not ctx.is_amd():
            levers.append(knob_lever(ctx, names=("BLOCK_K", "BLOCK_SIZE_K"), pattern=r"BLOCK_?(SIZE_)?K$",
                                     direction="increase", action="raise", suggest=at_least(64),
                                     fallback="BLOCK_K",
                                     why="with 128-byte rows (64 bf16/fp16 elements) Triton picks a fully "
                                         "swizzled shared layout whose stores do not conflict"))
        levers.append(code_lever("padding / swizzle", "add",
                                 "in hand-written CUDA/HIP, pad each shared-memory row by one 4-byte word "
                                 "(`__shared__ float tile[N][M + 1]`) or XOR-swizzle the column index so a "
                                 "warp's threads fall in different banks"))
        summary = (f"Shared-memory {' and '.join(dict.fromkeys(where))} hit bank conflicts: {share:.1f}% of the "
                   f"shared-memory work is replayed (threshold {th.value:.0f}%). Estimated cost about "
                   f"{gain:.0f}% of the kernel time.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = BankConflicts()
