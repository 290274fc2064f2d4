"""Tail effect: the last, partial wave of blocks leaves most SMs idle.

A grid runs in waves of ``sm_count x blocks_per_sm`` blocks. With 1.2 waves the second wave
fills a fifth of the machine while the rest waits: about 40% of the second wave's time is idle
hardware. The idle share of the whole run is ``(ceil(w) - w) / ceil(w)`` for ``w`` waves,
assuming blocks of equal duration; it fades as the number of waves grows.
"""

from __future__ import annotations

import math
from typing import Optional

from profd.model import Finding

from advisors.rules._base import Rule, Threshold, clamp, code_lever, ev, knob_lever, matmul_like, halve
from advisors.rules._occupancy import occupancy, waves

MIN_IDLE = Threshold("tail_idle_min_pct", 10.0, "%",
                     "idle share of the run caused by the partial last wave worth acting on")
MAX_GAIN = 50.0


class TailEffect(Rule):
    """Few waves with a small partial last wave: resize tiles or make the grid a wave multiple."""

    id = "tail-effect"
    title = "Partial last wave of blocks (tail effect)"
    requires = (("waves_per_sm", "grid_size"),)
    optional = ("sm_count", "occupancy_limit_registers", "block_size")
    thresholds = (MIN_IDLE,)
    profiler_rules = ("LaunchConfiguration", "WaveQuantization", "TailEffect")

    def evaluate(self, ctx) -> Optional[Finding]:
        got = waves(ctx)
        if got is None:
            return None
        w, estimated = got
        if w < 1.0:
            return None  # fewer blocks than one wave: the tiny-grid rule speaks to it
        full = math.ceil(w - 1e-9)
        idle = (full - w) / full * 100.0
        if idle < MIN_IDLE.value:
            return None
        gain = clamp(idle, 0.0, MAX_GAIN)  # the idle hardware share is what a wave-multiple grid reclaims
        occ = occupancy(ctx)
        per_wave = (ctx.sm_count() or 0) * (occ.blocks_per_sm or 0)
        how = " (estimated from grid size, SM count and occupancy)" if estimated else ""
        evidence = [ev("waves_per_sm", w, meaning=f"rounds of blocks each SM runs{how}; the last one is "
                                                  f"{(w - (full - 1)) * 100:.0f}% full")]
        if ctx.m("grid_size") is not None:
            evidence.append(ev("grid_size", ctx.m("grid_size")))
        if ctx.sm_count():
            evidence.append(ev("sm_count", ctx.sm_count()))
        tiled = matmul_like(ctx)
        levers = [
            knob_lever(ctx, pattern=r"BLOCK_?(SIZE_)?[MN]$" if tiled else r"BLOCK", direction="set",
                       action="resize so the block count is a multiple of one wave", suggest=halve(16),
                       fallback="BLOCK_SIZE",
                       why=(f"one wave is {per_wave:.0f} blocks here" if per_wave else "one wave = SMs x blocks per SM")),
            code_lever("persistent grid", "set",
                       "launch one wave of programs (SMs x blocks per SM) and loop each program over several "
                       "tiles, so no wave is partial"),
        ]
        if tiled:
            levers.append(code_lever("split-K", "add", "split the K loop over 2-4 programs per tile to multiply "
                                                        "the block count when the grid is only a few waves"))
        summary = (f"The grid runs {w:.2f} waves of blocks per SM: the last wave is only partly filled, so "
                   f"about {idle:.0f}% of the run leaves SMs idle (threshold {MIN_IDLE.value:.0f}%).")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = TailEffect()
