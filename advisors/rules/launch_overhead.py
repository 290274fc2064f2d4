"""Launch-bound: the kernel is so short that fixed launch and ramp costs dominate."""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import Rule, Threshold, clamp, code_lever, ev

SHORT = Threshold("short_kernel_ns", 8_000.0, "ns",
                  "below ~5-10 us the launch latency and the ramp-up/drain of the SMs are a large share")
FIXED_COST_NS = 3_000.0  # typical launch + ramp + drain cost that is not overlapped with work
MAX_GAIN = 60.0


class LaunchOverhead(Rule):
    """duration < 8 us: fuse, batch or capture into a CUDA/HIP graph."""

    id = "launch-overhead"
    title = "Kernel too short: launch overhead dominates"
    requires = ("duration_ns",)
    optional = ("grid_size",)
    thresholds = (SHORT,)
    profiler_rules = ()

    def evaluate(self, ctx) -> Optional[Finding]:
        d = ctx.m("duration_ns")
        if d is None or d <= 0 or d >= SHORT.value:
            return None
        # About FIXED_COST_NS of every launch is not work; fusing or graph-capturing removes most of
        # it (and the host-side launch latency, which is not even in this duration).
        gain = clamp(FIXED_COST_NS / d * 100.0, 0.0, MAX_GAIN)
        evidence = [ev("duration_ns", d, SHORT.value, "<")]
        levers = [
            code_lever("fusion", "add", "fuse this kernel with its producer or consumer so the data stays on chip "
                                         "and one launch replaces two"),
            code_lever("CUDA/HIP graph", "add", "capture the sequence of launches in a graph "
                                                 "(torch.cuda.CUDAGraph / torch.compile mode='reduce-overhead')"),
            code_lever("batching", "add", "give each launch more work (batch several problems in one grid)"),
        ]
        summary = (f"Each launch runs only {d / 1000:.1f} µs (< {SHORT.value / 1000:.0f} µs): launch latency and "
                   f"the ramp-up and drain of the SMs (~{FIXED_COST_NS / 1000:.0f} µs) are a large share of it.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = LaunchOverhead()
