"""Low tensor-core (matrix unit) use in a matmul-like kernel.

A bf16/fp16 matmul lives on the tensor cores (MFMA on AMD). Well-tuned kernels keep that pipe
busy 70-90% of the time. When it is low, either the data does not arrive fast enough (the
memory findings say why; the fix is there) or the tile shape leaves the matrix units idle between
``tl.dot`` calls (small tiles, shallow pipeline, too few warps to overlap loads with math).
"""

from __future__ import annotations

from typing import Optional

from profd.model import Finding, Severity

from advisors.rules._base import (
    Rule, Threshold, at_least, clamp, code_lever, ev, knob_lever, matmul_like, memory_side, plus, tensor_use,
    times_pow2,
)

LOW = Threshold("tensor_pipe_low_pct", 50.0, "%", "tuned matmuls keep the matrix units busy 70-90% of the time")
TARGET = Threshold("tensor_pipe_reachable_pct", 75.0, "%", "a conservative utilization for a tuned matmul")
STARVED_MEMORY = Threshold("memory_busy_pct", 60.0, "%",
                           "memory units this busy mean the tensor cores are waiting for data")
MAX_GAIN = 60.0


class TensorPipe(Rule):
    """Matmul-like kernel with tensor/MFMA pipe below 50%."""

    id = "tensor-pipe"
    title = "Tensor cores under-used in a matmul-like kernel"
    requires = (("tensor_pipe_pct", "mfma_util_pct", "ncu:HighPipeUtilization"),)
    optional = ("memory_throughput_pct", "sm_throughput_pct")
    thresholds = (LOW, TARGET, STARVED_MEMORY)
    profiler_rules = ("HighPipeUtilization",)

    def evaluate(self, ctx) -> Optional[Finding]:
        tu = tensor_use(ctx)
        tiled = matmul_like(ctx)
        if tu is None or not tiled:
            return None
        pct, metric, meaning = tu
        if pct >= LOW.value:
            return None
        mem = ctx.m("memory_throughput_pct")
        starved = (mem is not None and mem >= STARVED_MEMORY.value) or (mem is None and memory_side(ctx))
        evidence = [ev(metric, pct, LOW.value, "<", meaning=meaning)]
        if mem is not None:
            evidence.append(ev("memory_throughput_pct", mem, STARVED_MEMORY.value, ">=" if starved else ""))
        if starved:
            # The idle tensor cores are the symptom of the memory limits reported above; counting
            # the same lost time twice would misrank the findings.
            summary = (f"The tensor cores are busy only {pct:.0f}% of the time (< {LOW.value:.0f}%) because "
                       f"they wait for data: the memory units are "
                       f"{'%.0f%% busy' % mem if mem is not None else 'the bottleneck'}. The memory findings "
                       f"(L2 reuse, occupancy, stalls) are the way to feed them; larger tiles help both.")
            levers = [knob_lever(ctx, pattern=r"BLOCK_?(SIZE_)?[MN]$", direction="increase", action="raise",
                                 suggest=times_pow2(2, 256), fallback="BLOCK_M / BLOCK_N",
                                 why="more FLOPs per byte loaded")]
            return self.finding(ctx, summary, evidence, levers, 0.0, severity=Severity.INFO)
        # Not data-starved: the time the tensor pipe could absorb if it ran at TARGET.
        gain = clamp((1.0 - pct / TARGET.value) * 100.0, 0.0, MAX_GAIN)
        levers = [
            knob_lever(ctx, pattern=r"BLOCK_?(SIZE_)?[MN]$", direction="increase", action="raise",
                       suggest=times_pow2(2, 256), fallback="BLOCK_M / BLOCK_N",
                       why="128x128 or larger tiles give each warp enough MMA work between loads"),
            knob_lever(ctx, names=("BLOCK_K", "BLOCK_SIZE_K"), pattern=r"BLOCK_?(SIZE_)?K$", direction="increase",
                       action="raise", suggest=at_least(64), fallback="BLOCK_K",
                       why="longer MMA chains per loaded slice"),
            knob_lever(ctx, names=("num_stages", "NUM_STAGES"), kind="num_stages", direction="increase",
                       action="raise", suggest=plus(1, 4), fallback="num_stages",
                       why="load the next K slices while the tensor cores work on this one"),
            knob_lever(ctx, names=("num_warps", "NUM_WARPS"), kind="num_warps", direction="increase",
                       action="raise", suggest=at_least(8), fallback="num_warps",
                       why="8 warps for 128x128+ tiles"),
            code_lever("input precision", "set", "feed tl.dot bf16/fp16 (or fp8) operands; fp32 operands run "
                                                  "as tf32 or on the FMA pipe"),
        ]
        summary = (f"In this matmul-like kernel ({tiled}) the tensor cores are busy only {pct:.0f}% of the time "
                   f"(< {LOW.value:.0f}%) while memory is not the limit: the tile shape and pipeline leave them "
                   f"idle. At {TARGET.value:.0f}% the kernel would take about {gain:.0f}% less time.")
        return self.finding(ctx, summary, evidence, levers, gain)


RULE = TensorPipe()
