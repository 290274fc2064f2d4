"""Tiny grid: fewer blocks than SMs, so part of the GPU has nothing to do."""

from __future__ import annotations

from typing import Optional

from profd.model import Finding

from advisors.rules._base import Rule, Threshold, clamp, code_lever, ev, halve, knob_lever, matmul_like

MIN_BLOCKS_PER_SM = Threshold("blocks_per_sm_min", 1.0, "blocks/SM",
                              "with fewer blocks than SMs, some SMs get no work at all")
MAX_GAIN = 90.0


class TinyGrid(Rule):
    """grid_size < sm_count: split the work into more, smaller programs."""

    id = "tiny-grid"
    title = "Grid smaller than the number of SMs"
    requires = ("grid_size",)  # plus sm_count, from the counters or the DeviceSpec
    optional = ("block_size", "duration_ns")
    thresholds = (MIN_BLOCKS_PER_SM,)
    profiler_rules = ("LaunchConfiguration",)

    def applies(self, ctx) -> bool:
        return ctx.m("grid_size") is not None and ctx.sm_count() is not None

    def evaluate(self, ctx) -> Optional[Finding]:
        grid, sms = ctx.m("grid_size"), ctx.sm_count()
        if not grid or not sms or grid >= sms * MIN_BLOCKS_PER_SM.value:
            return None
        idle = 1.0 - grid / sms
        # Spread over every SM the same work would take grid/sms of the time (if the blocks are
        # independent): the idle-SM share is the gain.
        gain = clamp(idle * 100.0, 0.0, MAX_GAIN)
        tiled = matmul_like(ctx)
        evidence = [ev("grid_size", grid, sms, "<"), ev("sm_count", sms)]
        levers = []
        launch = ctx.knobs.of_kind("launch") if ctx.knobs is not None else []
        if launch:
            # A launcher constant that sets the program count (a grid-stride loop's NUM_PROGRAMS)
            # is the direct lever.
            need = int(sms * MIN_BLOCKS_PER_SM.value)
            levers.append(knob_lever(ctx, names=[launch[0].name], direction="increase", action="raise",
                                     suggest=lambda v: max(need, int(v) * 4) if isinstance(v, int) else None,
                                     fallback=launch[0].name,
                                     why=f"it sets how many programs run; at least {need} fill the {sms:.0f} SMs"))
        levers += [
            knob_lever(ctx, pattern=r"BLOCK_?(SIZE_)?[MN]$" if tiled else r"BLOCK", direction="decrease",
                       action="lower", suggest=halve(16), fallback="BLOCK_SIZE",
                       why=f"smaller blocks give more programs; {sms:.0f} or more are needed to reach every SM"),
        ]
        if tiled:
            levers.append(code_lever("split-K", "add", "split the reduction (K) over several programs and add "
                                                        "the partial tiles (atomics or a second pass)"))
        else:
            levers.append(code_lever("parallelize another axis", "add",
                                     "give the grid a second dimension (rows x column chunks) or split the "
                                     "reduction across programs"))
        summary = (f"The launch has {grid:.0f} blocks for {sms:.0f} SMs: {idle * 100:.0f}% of the SMs have no "
                   f"work at all.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = TinyGrid()
