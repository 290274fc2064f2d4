"""Already near the limit: the busiest unit (or the roofline ceiling) is at >= 80% of its peak.

Then the kernel cannot get much faster doing the same work on that unit; the headroom is what is
left to the practical maximum. Gains must come from doing less on the saturated unit (fewer
bytes, more reuse, less precision, fewer instructions), not from tuning how it is fed.
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding, Severity

from advisors.rules._base import Rule, Threshold, clamp, code_lever, ev, matmul_like

NEAR = Threshold("near_limit_pct", 80.0, "%", "at 80% of a ceiling most of the reachable speed is already used")
PRACTICAL_MAX = 95.0  # what a kernel can actually reach of a unit's peak

_UNITS = {
    "dram_throughput_pct": ("device memory (DRAM/HBM)", "move fewer bytes: fuse with neighbours, lower "
                                                         "precision, avoid re-reading inputs"),
    "l2_throughput_pct": ("the L2 cache", "more reuse per L2 byte: larger tiles, grouped program order"),
    "l1_throughput_pct": ("the L1 cache / shared memory", "fewer L1/shared accesses per FLOP: larger per-thread "
                                                           "tiles, no bank conflicts"),
    "memory_throughput_pct": ("the busiest memory unit", "move fewer bytes or reuse them more"),
    "sm_throughput_pct": ("the busiest compute pipe", "fewer instructions: tensor cores, lower precision, "
                                                       "simpler index math"),
    "tensor_pipe_pct": ("the tensor cores", "lower precision (fp8) or less work; this is the compute roof"),
    "mfma_util_pct": ("the matrix cores (MFMA)", "lower precision or less work; this is the compute roof"),
}


class NearLimit(Rule):
    """>= 80% of a roofline ceiling or of a unit's speed-of-light throughput."""

    id = "near-limit"
    title = "Already near the hardware limit: little to gain"
    requires = (tuple(_UNITS),)
    optional = ()
    thresholds = (NEAR,)
    profiler_rules = ("SOLBottleneck",)

    def applies(self, ctx) -> bool:
        roof = ctx.roofline
        return super().applies(ctx) or (roof is not None and roof.pct_of_ceiling is not None)

    def evaluate(self, ctx) -> Optional[Finding]:
        candidates = []
        roof = ctx.roofline
        if roof is not None and roof.pct_of_ceiling is not None and roof.bound in ("memory-bound", "compute-bound"):
            side = "memory bandwidth" if roof.bound == "memory-bound" else f"{roof.precision} compute"
            candidates.append((roof.pct_of_ceiling, "roofline_pct_of_ceiling",
                               f"the {side} roofline ceiling", "do less work or move fewer bytes"))
        # Prefer a specific unit over the "busiest memory unit" aggregate when both say the same.
        for name, (words, advice) in _UNITS.items():
            v = ctx.m(name)
            if v is not None:
                candidates.append((v, name, words, advice))
        if not candidates:
            return None
        near = [c for c in candidates if c[0] >= NEAR.value]
        if not near:
            return None
        # Device memory and the roofline are the fundamental ceilings: when they are near, the
        # caches' high numbers are just the same traffic passing through. Otherwise take the
        # busiest named unit over the "busiest memory unit" aggregate.
        fundamental = [c for c in near if c[1] in ("dram_throughput_pct", "roofline_pct_of_ceiling")]
        pool = fundamental or near
        pct, metric, words, advice = max(pool, key=lambda c: (round(c[0], 6), c[1] != "memory_throughput_pct"))
        if metric == "l2_throughput_pct" and not matmul_like(ctx):
            advice = "move fewer bytes through L2: fuse passes, avoid re-reading the same data"
        headroom = round(clamp((1.0 - pct / PRACTICAL_MAX) * 100.0), 1)
        evidence = [ev(metric, pct, NEAR.value, ">=", unit="%",
                       meaning=("achieved share of the roofline ceiling at this arithmetic intensity"
                                if metric == "roofline_pct_of_ceiling" else None))]
        summary = (f"{words[0].upper() + words[1:]} runs at {pct:.0f}% of its peak (>= {NEAR.value:.0f}%): doing "
                   f"the same work this kernel can get at most about {headroom:.0f}% faster. Larger gains need "
                   f"less work on that unit: {advice}.")
        levers = [code_lever("less work on the saturated unit", "decrease", advice)]
        return self.finding(ctx, summary, evidence, levers, headroom, severity=Severity.INFO)


RULE = NearLimit()
