"""The vendor-neutral metric vocabulary of a ``CounterTable``.

Collectors translate their profiler's names into these; diagnosis rules read only
these. Each metric is in a base unit (ns, bytes, bytes/s, Hz, percent, counts) so
that a rule written once serves Nsight Compute and rocprof data alike. A metric a
profiler cannot provide is simply absent from the table; rules that need it stay
silent rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDef:
    name: str
    unit: str
    meaning: str  # plain language, shown next to the number in reports


_DEFS = [
    # time and clocks
    MetricDef("duration_ns", "ns", "kernel execution time on the GPU"),
    MetricDef("sm_clock_hz", "Hz", "SM/shader clock while profiled (ncu locks it to base by default)"),
    MetricDef("dram_clock_hz", "Hz", "memory clock while profiled"),
    # speed of light (percent of peak of each unit)
    MetricDef("sm_throughput_pct", "%", "busiest compute pipeline, as a percent of its peak"),
    MetricDef("memory_throughput_pct", "%", "busiest memory unit (L1, L2 or DRAM), as a percent of its peak"),
    MetricDef("dram_throughput_pct", "%", "device-memory (DRAM/HBM) bandwidth used, percent of peak"),
    MetricDef("l2_throughput_pct", "%", "L2 cache bandwidth used, percent of peak"),
    MetricDef("l1_throughput_pct", "%", "L1/texture cache bandwidth used, percent of peak"),
    # memory traffic
    MetricDef("dram_bytes_read", "B", "bytes read from device memory"),
    MetricDef("dram_bytes_write", "B", "bytes written to device memory"),
    MetricDef("dram_bytes", "B", "bytes moved to and from device memory"),
    MetricDef("dram_bandwidth_bytes_per_s", "B/s", "achieved device-memory bandwidth"),
    MetricDef("l2_hit_rate_pct", "%", "share of L2 requests served from L2 instead of device memory"),
    MetricDef("l1_hit_rate_pct", "%", "share of L1 requests served from L1"),
    MetricDef("global_ld_sectors_per_request", "sectors", "32-byte sectors fetched per global load instruction of a warp"),
    MetricDef("global_st_sectors_per_request", "sectors", "32-byte sectors written per global store instruction of a warp"),
    MetricDef("global_ld_bytes_per_sector", "B", "useful bytes per 32-byte sector loaded (32 = fully used)"),
    MetricDef("global_st_bytes_per_sector", "B", "useful bytes per 32-byte sector stored (32 = fully used)"),
    MetricDef("local_spill_requests", "requests", "register spills to local memory"),
    # shared memory / LDS
    MetricDef("smem_bank_conflicts_ld", "conflicts", "extra shared-memory cycles from bank conflicts on loads"),
    MetricDef("smem_bank_conflicts_st", "conflicts", "extra shared-memory cycles from bank conflicts on stores"),
    MetricDef("smem_wavefronts_ld", "wavefronts", "shared-memory load wavefronts (ideal: one per instruction)"),
    MetricDef("smem_wavefronts_st", "wavefronts", "shared-memory store wavefronts"),
    MetricDef("smem_bank_conflict_pct", "%", "share of shared-memory/LDS cycles lost to bank conflicts"),
    # occupancy and launch shape
    MetricDef("achieved_occupancy_pct", "%", "average active warps per SM as a percent of the maximum"),
    MetricDef("theoretical_occupancy_pct", "%", "the most warps per SM this launch configuration allows, percent"),
    MetricDef("occupancy_limit_registers", "blocks", "blocks per SM allowed by register use"),
    MetricDef("occupancy_limit_shared_mem", "blocks", "blocks per SM allowed by shared memory use"),
    MetricDef("occupancy_limit_warps", "blocks", "blocks per SM allowed by the block size (warps)"),
    MetricDef("occupancy_limit_blocks", "blocks", "blocks per SM allowed by the hardware block-slot limit"),
    MetricDef("registers_per_thread", "registers", "registers each thread uses"),
    MetricDef("shared_mem_per_block_bytes", "B", "shared memory (static + dynamic) per block"),
    MetricDef("block_size", "threads", "threads per block (workgroup)"),
    MetricDef("grid_size", "blocks", "blocks (workgroups) in the launch"),
    MetricDef("waves_per_sm", "waves", "how many full rounds of blocks each SM runs"),
    MetricDef("sm_count", "SMs", "multiprocessors (SMs/CUs) on the device"),
    # issue and stalls
    MetricDef("warp_cycles_per_issue", "cycles", "average cycles between two instructions of one warp"),
    MetricDef("ipc", "inst/cycle", "instructions issued per cycle per SM"),
    MetricDef("issue_active_pct", "%", "cycles in which the scheduler issued an instruction"),
    # pipes
    MetricDef("tensor_pipe_pct", "%", "tensor-core (matrix unit) pipe utilization"),
    MetricDef("fma_pipe_pct", "%", "FMA pipe utilization"),
    MetricDef("valu_util_pct", "%", "vector ALU utilization (AMD VALU)"),
    MetricDef("mfma_util_pct", "%", "matrix-core utilization (AMD MFMA)"),
    MetricDef("flops", "FLOP", "floating-point operations counted by the profiler"),
]

#: Stall reasons as suffixes: ``stall_<reason>`` in warp-cycles per issued instruction.
STALL_REASONS = (
    "barrier", "branch_resolving", "dispatch_stall", "drain", "gmma", "imc_miss", "lg_throttle",
    "long_scoreboard", "math_pipe_throttle", "membar", "mio_throttle", "misc", "no_instruction",
    "not_selected", "selected", "short_scoreboard", "sleeping", "tex_throttle", "wait",
)

#: What each stall reason means, in words a kernel author can act on.
STALL_MEANING = {
    "long_scoreboard": "waiting for data from global/local memory (L1TEX)",
    "short_scoreboard": "waiting for shared memory or a special-function result (MIO)",
    "barrier": "waiting at a block-wide barrier (__syncthreads / tl.debug_barrier)",
    "mio_throttle": "the shared-memory/special-function instruction queue is full",
    "lg_throttle": "the global/local memory instruction queue is full",
    "math_pipe_throttle": "a math pipe is busy (good if that pipe is the one you want saturated)",
    "wait": "fixed-latency dependency between instructions",
    "not_selected": "eligible but another warp was picked (enough parallelism)",
    "selected": "issuing (not a stall)",
    "no_instruction": "instruction cache miss or branch target not fetched",
    "branch_resolving": "waiting for a branch target to be computed",
    "dispatch_stall": "dispatcher could not issue (pipeline conflict)",
    "drain": "waiting for memory stores to drain at exit",
    "gmma": "waiting for warpgroup matrix (wgmma) instructions",
    "imc_miss": "constant-cache miss",
    "membar": "waiting on a memory barrier",
    "misc": "miscellaneous",
    "sleeping": "warp sleeping",
    "tex_throttle": "the texture pipe is full",
}

for _r in STALL_REASONS:
    _DEFS.append(MetricDef(f"stall_{_r}", "cycles/issue", f"warp stall: {STALL_MEANING[_r]}"))

METRICS: dict[str, MetricDef] = {d.name: d for d in _DEFS}


def unit(name: str) -> str:
    """Unit of a canonical metric ('' when unknown)."""
    d = METRICS.get(name)
    return d.unit if d else ""


def meaning(name: str) -> str:
    """Plain-language meaning of a canonical metric ('' when unknown)."""
    d = METRICS.get(name)
    return d.meaning if d else ""
