"""Achieved occupancy far below the theoretical one: the SMs are not kept full.

The launch configuration would allow more resident warps than the SMs actually hold on average.
Either blocks finish at very different times (imbalanced work, early exits), the grid ends in a
partial wave, or the kernel is too short for the SMs to fill up before they drain.
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import Rule, Threshold, clamp, code_lever, ev
from advisors.rules._occupancy import waves

GAP = Threshold("occupancy_gap_points", 20.0, "points",
                "achieved occupancy this many percentage points below theoretical means the SMs are not kept full")
DEFAULT_IDLE = 0.5
MAX_GAIN = 30.0


class AchievedOccupancy(Rule):
    """achieved_occupancy_pct < theoretical_occupancy_pct - 20: imbalance, tail or too-short kernel."""

    id = "achieved-occupancy"
    title = "SMs hold far fewer warps than the launch allows"
    # Both metrics from the profiler: an estimated theoretical value against a counter from another
    # replay pass (rocprof-compute) would compare two different runs.
    requires = ("achieved_occupancy_pct", "theoretical_occupancy_pct")
    optional = ("issue_active_pct", "waves_per_sm", "duration_ns")
    thresholds = (GAP,)
    profiler_rules = ("AchievedOccupancy",)

    def evaluate(self, ctx) -> Optional[Finding]:
        achieved, theo = ctx.m("achieved_occupancy_pct"), ctx.m("theoretical_occupancy_pct")
        if achieved is None or not theo or theo - achieved < GAP.value:
            return None
        issue = ctx.m("issue_active_pct")
        idle = 1.0 - issue / 100.0 if issue is not None else DEFAULT_IDLE
        # The missing warps would fill idle issue slots at best in proportion to the gap; we
        # count half of that, since part of the gap is the unavoidable ramp at start and end.
        gain = clamp((1.0 - achieved / theo) * idle * 0.5 * 100.0, 0.0, MAX_GAIN)
        evidence = [ev("achieved_occupancy_pct", achieved, theo - GAP.value, "<"),
                    ev("theoretical_occupancy_pct", theo)]
        w = waves(ctx)
        causes = []
        if w is not None:
            evidence.append(ev("waves_per_sm", w[0]))
            if w[0] < 2:
                causes.append(f"only {w[0]:.1f} waves of blocks, so the SMs spend much of the run filling and "
                              f"draining")
        d = ctx.m("duration_ns")
        if d is not None and d < 20_000:
            causes.append(f"the kernel runs {d / 1000:.1f} µs, short next to the SM ramp-up")
        if not causes:
            causes.append("blocks finish at different times (uneven work per block or early exits)")
        levers = [
            code_lever("work balance", "set", "give every program the same amount of work (split long rows, avoid "
                                               "data-dependent early exits), or loop a persistent grid over tiles"),
            code_lever("more blocks", "increase", "launch enough blocks for several full waves (smaller tiles or "
                                                   "a second grid dimension)"),
        ]
        summary = (f"The SMs hold on average {achieved:.0f}% of their warp slots although the launch allows "
                   f"{theo:.0f}% (gap >= {GAP.value:.0f} points): {'; '.join(causes)}.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = AchievedOccupancy()
