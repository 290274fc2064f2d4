"""The dominant warp stall reason, in plain words, and what to do about it.

Nsight Compute breaks the average cycles between two instructions of a warp into stall reasons
(``stall_<reason>``, cycles per issued instruction). One reason taking a large share says where
warps wait. Where only the CPIStall message is present (ncu's details page) its numbers are used.
"""

from __future__ import annotations

import re
from typing import Optional

from profd.metrics import STALL_MEANING, STALL_REASONS
from profd.model import Finding

from advisors.rules._base import (
    Rule, Threshold, clamp, code_lever, ev, knob_lever, number_after, plus, times_pow2,
)

DOMINANT = Threshold("dominant_stall_share_pct", 30.0, "%",
                     "one reason taking this share of all stall cycles is worth acting on")
HIDEABLE = 0.5  # share of the dominant stall the usual levers can hide (ncu's CPIStall estimates agree)
DEFAULT_IDLE = 0.5
MAX_GAIN = 35.0
# Stalls that describe a healthy kernel: issuing, or losing arbitration to another ready warp.
HEALTHY = {"selected", "not_selected", "math_pipe_throttle"}

# What each stall asks the author to do.
ADVICE = {
    "long_scoreboard": "keep more loads in flight and make them hit in cache: deeper software pipelining "
                       "(num_stages), more resident warps, better L2 locality, wider loads",
    "short_scoreboard": "fewer or conflict-free shared-memory accesses; avoid expensive special functions in "
                        "the inner loop",
    "mio_throttle": "issue fewer, wider shared-memory instructions and remove bank conflicts",
    "lg_throttle": "issue fewer, wider global memory instructions (vector loads of 16 bytes per thread)",
    "barrier": "even out the work between warps of a block and use fewer block-wide barriers",
    "wait": "more independent instructions between dependent ones (ILP): unroll, larger tiles per thread",
    "no_instruction": "smaller code in the hot loop (less unrolling), fewer branches",
    "branch_resolving": "fewer divergent branches; use masks instead of control flow",
    "dispatch_stall": "mixing pipes more evenly",
    "drain": "fewer scattered stores at the end of the kernel",
    "gmma": "more warpgroups in flight or deeper pipelining around wgmma",
    "imc_miss": "fewer distinct constant-memory addresses per warp",
    "membar": "fewer memory fences",
    "tex_throttle": "fewer texture/surface requests",
    "sleeping": "fewer sleep/yield instructions",
    "misc": "see the source-level stall sampling in Nsight Compute",
}

# ncu's CPIStall message wording -> stall reason.
_MESSAGE_REASONS = [
    (r"scoreboard dependency on a L1TEX", "long_scoreboard"),
    (r"scoreboard dependency on a MIO", "short_scoreboard"),
    (r"MIO .*queue|mio throttle", "mio_throttle"),
    (r"LG .*queue|local and global", "lg_throttle"),
    (r"barrier", "barrier"),
    (r"fixed latency execution dependency", "wait"),
    (r"math pipe", "math_pipe_throttle"),
    (r"instruction (fetch|cache)|next instruction", "no_instruction"),
    (r"branch target", "branch_resolving"),
    (r"memory barrier", "membar"),
]


class WarpStall(Rule):
    """One stall reason takes >= 30% of stall cycles: explain it and name the lever."""

    id = "warp-stall"
    title = "Dominant warp stall reason"
    requires = (tuple(f"stall_{r}" for r in STALL_REASONS) + ("ncu:CPIStall",),)
    optional = ("warp_cycles_per_issue", "issue_active_pct")
    thresholds = (DOMINANT,)
    profiler_rules = ("CPIStall", "IssueSlotUtilization")

    def evaluate(self, ctx) -> Optional[Finding]:
        got = self._dominant(ctx)
        if got is None:
            return None
        reason, cycles, total, source = got
        share = cycles / total if total else 0.0
        if reason in HEALTHY or share * 100.0 < DOMINANT.value:
            return None
        issue = ctx.m("issue_active_pct")
        idle = 1.0 - issue / 100.0 if issue is not None else DEFAULT_IDLE
        # Cycles stalled on this reason with nothing else to issue are lost; we assume the usual
        # levers hide about half of them.
        gain = clamp(share * idle * HIDEABLE * 100.0, 0.0, MAX_GAIN)
        meaning = STALL_MEANING.get(reason, reason)
        evidence = [ev(f"stall_{reason}", cycles, DOMINANT.value / 100.0 * total, ">", unit="cycles/issue",
                       meaning=f"warp stall: {meaning}{source}")]
        evidence.append(ev("warp_cycles_per_issue", total,
                           meaning="average cycles between two instructions of one warp (all reasons)"))
        if issue is not None:
            evidence.append(ev("issue_active_pct", issue))
        levers = self._levers(ctx, reason)
        summary = (f"Warps spend {cycles:.1f} of every {total:.1f} cycles between instructions "
                   f"({share * 100:.0f}%) stalled on {reason.replace('_', ' ')}: {meaning}. "
                   f"What helps: {ADVICE.get(reason, 'see the stall sampling')}.")
        return self.finding(ctx, summary, evidence, levers, gain,
                            title=f"Warps mostly stalled: {reason.replace('_', ' ')}")

    def _dominant(self, ctx) -> Optional[tuple[str, float, float, str]]:
        stalls = {r: ctx.m(f"stall_{r}") for r in STALL_REASONS}
        stalls = {r: v for r, v in stalls.items() if v is not None and v > 0}
        if stalls:
            total = ctx.m("warp_cycles_per_issue") or sum(stalls.values())
            ranked = sorted(((v, r) for r, v in stalls.items() if r not in ("selected",)), reverse=True)
            if ranked:
                v, r = ranked[0]
                return r, v, total, ""
        for msg in ctx.messages_named("CPIStall"):
            cycles = number_after(r"spends ([\d.]+) cycles being stalled", msg.message)
            total = number_after(r"total average of ([\d.]+) cycles", msg.message) or ctx.m("warp_cycles_per_issue")
            if cycles is None or not total:
                continue
            for pattern, reason in _MESSAGE_REASONS:
                if re.search(pattern, msg.message, re.I):
                    return reason, cycles, total, " (from ncu's CPIStall message)"
        return None

    def _levers(self, ctx, reason: str):
        if reason == "long_scoreboard":
            return [
                knob_lever(ctx, names=("num_stages", "NUM_STAGES"), kind="num_stages", direction="increase",
                           action="raise", suggest=plus(1, 4), fallback="num_stages",
                           why="prefetch the next tiles while computing on this one"),
                knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps", direction="increase",
                           action="raise", suggest=times_pow2(2, 16), fallback="num_warps",
                           why="more warps to switch to while others wait (if registers allow)"),
            ]
        if reason in ("short_scoreboard", "mio_throttle"):
            return [code_lever("shared memory", "decrease",
                               "remove bank conflicts and use wider shared-memory accesses (see the bank-conflict "
                               "finding if any)")]
        if reason == "lg_throttle":
            return [knob_lever(ctx, pattern=r"BLOCK", direction="increase", action="raise",
                               suggest=times_pow2(4, 4096), fallback="BLOCK_SIZE",
                               why="contiguous per-thread chunks become 16-byte vector loads")]
        if reason == "barrier":
            return [knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps", direction="decrease",
                               action="lower", suggest=lambda v: max(1, int(v) // 2) if isinstance(v, int) else None,
                               fallback="num_warps", why="fewer warps wait at each barrier")]
        return [code_lever(reason, "set", ADVICE.get(reason, "see the source-level stall sampling"))]


RULE = WarpStall()
