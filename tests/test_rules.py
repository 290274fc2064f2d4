"""Diagnosis rules, the roofline and ``diagnose`` on hand-built counter tables.

Every rule gets a table that should trigger it (with the evidence values checked) and one that
should not. The device specs are built here, so the expected numbers follow from this file.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from advisors import roofline
from advisors.diagnosis import RuleContext, contexts, diagnose, kernel_rows, run_rules, unmatched_messages
from advisors.knobs import discover
from advisors.rules import all_rules, describe_rules, get_rule
from advisors.rules._occupancy import occupancy
from hwspecs.spec import Ceilings, DeviceSpec
from profd.model import CounterTable, RuleMessage, Severity

# --------------------------------------------------------------------------- fixtures


def nv_spec() -> DeviceSpec:
    """An H200-like device (figures as in the H200 captures)."""
    return DeviceSpec(
        key="test-h200", name="Test H200", vendor="NVIDIA", architecture="Hopper", compute_capability="9.0",
        sm_count=132, warp_size=32, max_warps_per_sm=64, registers_per_sm=65536, max_registers_per_thread=255,
        shared_mem_per_sm_bytes=233472, max_shared_mem_per_block_bytes=232448, max_threads_per_block=1024,
        max_blocks_per_sm=32, l2_bytes=60 << 20, boost_clock_mhz=1980.0, memory_bytes=141 << 30,
        memory_bandwidth_gbps=4800.0, peak_tflops={"bf16": 989.4, "fp32": 66.9},
    )


def amd_spec() -> DeviceSpec:
    """An MI300X-like device: 304 CUs, 32 waves/CU, 512 VGPRs per SIMD lane, 64 KiB LDS."""
    return DeviceSpec(
        key="test-mi300x", name="Test MI300X", vendor="AMD", architecture="CDNA3", compute_capability="gfx942",
        sm_count=304, warp_size=64, max_warps_per_sm=32, registers_per_sm=131072, max_registers_per_thread=512,
        shared_mem_per_sm_bytes=65536, max_shared_mem_per_block_bytes=65536, max_threads_per_block=1024,
        max_blocks_per_sm=16, l2_bytes=32 << 20, boost_clock_mhz=2100.0, memory_bytes=192 << 30,
        memory_bandwidth_gbps=5300.0, peak_tflops={"bf16": 1307.4, "fp32": 163.4},
    )


def ceil_of(spec: DeviceSpec) -> Ceilings:
    return Ceilings(device=spec.key, memory_gbps=spec.memory_bandwidth_gbps, tflops=dict(spec.peak_tflops),
                    source="datasheet")


def table(*rows: dict, rules: tuple[RuleMessage, ...] = (), source: str = "ncu") -> CounterTable:
    data = [{"kernel": "k", **r} for r in rows]
    frame = pd.DataFrame(data, index=pd.Index(range(len(data)), name="launch"))
    return CounterTable(source=source, frame=frame, rules=list(rules))


def ctx_for(row: dict, *, spec=None, knobs=None, rules=(), source="ncu") -> RuleContext:
    spec = spec if spec is not None else None
    ceil = ceil_of(spec) if spec is not None else None
    return contexts(table(row, rules=rules, source=source), spec, ceil, knobs=knobs)[0]


def fire(rule_id: str, row: dict, **kw):
    rule = get_rule(rule_id)
    assert rule is not None, rule_id
    ctx = ctx_for(row, **kw)
    return rule.evaluate(ctx) if rule.applies(ctx) else None


def evidence(finding, metric):
    found = [e for e in finding.evidence if e.metric == metric]
    assert found, f"no evidence {metric} in {[e.metric for e in finding.evidence]}"
    return found[0]


def msg(rule: str, text: str, speedup=None, type_="OPT", kernel="k", launch=0) -> RuleMessage:
    return RuleMessage(kernel=kernel, launch=launch, rule=rule, section="S", type=type_, message=text,
                       estimated_speedup_pct=speedup)


MATMUL_SRC = '''
import triton
import triton.language as tl

BLOCK_M = 64
BLOCK_N = 64
BLOCK_K = 32
GROUP_M = 1
NUM_WARPS = 4
NUM_STAGES = 2


@triton.jit
def k(a, b, c, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
      GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // num_pid_n
    acc = tl.dot(tl.load(a), tl.load(b))


def kernel(a, b, c):
    grid = (triton.cdiv(a.shape[0], BLOCK_M) * triton.cdiv(b.shape[1], BLOCK_N),)
    k[grid](a, b, c, 1, 1, 1, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES)
'''

VECTOR_SRC = '''
import triton
import triton.language as tl

BLOCK_SIZE = 64
NUM_WARPS = 4


@triton.jit
def k(x, y, n, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)


def kernel(x, y):
    k[(triton.cdiv(x.numel(), BLOCK_SIZE),)](x, y, x.numel(), BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS)
'''


def line_of(src: str, text: str) -> int:
    return next(i for i, line in enumerate(src.splitlines(), 1) if line.startswith(text))


# --------------------------------------------------------------------------- registry


def test_registry_discovers_one_rule_per_module_with_self_description():
    ids = [r.id for r in all_rules()]
    assert len(ids) == len(set(ids))
    for required in ("memory-parallelism", "l2-locality", "occupancy", "tail-effect", "uncoalesced-global",
                     "smem-bank-conflicts", "tensor-pipe", "warp-stall", "tiny-grid", "launch-overhead",
                     "near-limit"):
        assert required in ids
    for d in describe_rules():
        assert d["title"] and d["requires"] and d["doc"]
        assert d["thresholds"], f"{d['id']} declares no thresholds"
        assert all({"name", "value", "unit", "why"} <= set(t) for t in d["thresholds"])


def test_rules_without_their_metrics_do_not_apply():
    ctx = ctx_for({"duration_ns": 1e6})
    applicable = [r.id for r in all_rules() if r.applies(ctx)]
    assert "l2-locality" not in applicable and "smem-bank-conflicts" not in applicable
    assert "warp-stall" not in applicable and "occupancy" not in applicable
    assert run_rules(ctx) == []  # 1 ms with nothing else known: nothing to say


# --------------------------------------------------------------------------- memory parallelism


def test_memory_parallelism_fires_for_memory_bound_kernel_far_below_dram_peak():
    knobs = discover(VECTOR_SRC)
    f = fire("memory-parallelism", {"duration_ns": 2e6, "memory_throughput_pct": 35.0, "sm_throughput_pct": 5.0,
                                    "dram_throughput_pct": 30.0, "l2_throughput_pct": 33.0}, knobs=knobs)
    assert f is not None
    e = evidence(f, "dram_throughput_pct")
    assert (e.value, e.threshold, e.comparison, e.unit) == (30.0, 60.0, "<", "%")
    ratio = 30.0 / 85.0
    ratio += 3000.0 / 2e6 * (1 - ratio)
    assert f.estimated_gain_pct == pytest.approx((1 - ratio) * 100, abs=0.1)
    block = next(lv for lv in f.levers if lv.name == "BLOCK_SIZE")
    assert block.current == "64" and block.suggested == "1024" and block.line == line_of(VECTOR_SRC, "BLOCK_SIZE =")
    assert block.description.startswith(f"BLOCK_SIZE = 64 at line {block.line}: raise to 1024")


def test_memory_parallelism_silent_near_peak_or_when_a_cache_is_the_hot_unit_or_compute_bound():
    base = {"duration_ns": 2e6, "memory_throughput_pct": 90.0, "sm_throughput_pct": 5.0}
    assert fire("memory-parallelism", {**base, "dram_throughput_pct": 88.0}) is None
    assert fire("memory-parallelism", {**base, "dram_throughput_pct": 30.0, "l2_throughput_pct": 85.0}) is None
    assert fire("memory-parallelism", {**base, "sm_throughput_pct": 95.0, "dram_throughput_pct": 30.0}) is None


def test_memory_parallelism_from_amd_bytes_and_spec_bandwidth():
    # rocprof: bytes and time but no percent-of-peak: the spec's 5300 GB/s is the ceiling.
    row = {"duration_ns": 14160.0, "dram_bytes": 16.792e6, "dram_bandwidth_bytes_per_s": 16.792e6 / 14160e-9,
           "flops": 0.0}
    f = fire("memory-parallelism", row, spec=amd_spec(), source="rocprof-compute")
    assert f is not None
    e = evidence(f, "dram_bandwidth_bytes_per_s")
    assert e.value == pytest.approx(16.792e6 / 14160e-9, rel=1e-6)
    assert e.threshold == pytest.approx(0.6 * 5300e9) and e.unit == "B/s" and e.comparison == "<"
    # Without a device there is no peak to compare with: silent rather than guessing.
    assert fire("memory-parallelism", row, source="rocprof-compute") is None


# --------------------------------------------------------------------------- L2 locality


MATMUL_ROW = {
    "duration_ns": 3941120.0, "sm_throughput_pct": 38.39, "memory_throughput_pct": 82.76,
    "dram_throughput_pct": 63.35, "l2_throughput_pct": 86.34, "l2_hit_rate_pct": 52.87,
    "tensor_pipe_pct": 38.4, "grid_size": 16384.0, "block_size": 128.0, "sm_count": 132.0,
}


def test_l2_locality_fires_for_ungrouped_tiled_kernel_and_names_group_m():
    src_knobs = discover(MATMUL_SRC)
    f = fire("l2-locality", MATMUL_ROW, knobs=src_knobs)
    assert f is not None and f.severity == Severity.HIGH
    hit = evidence(f, "l2_hit_rate_pct")
    assert (hit.value, hit.threshold, hit.comparison) == (52.87, 60.0, "<")
    assert evidence(f, "l2_throughput_pct").value == 86.34
    expected = 0.6335 * (1 - 0.15 / (1 - 0.5287)) * 100
    assert f.estimated_gain_pct == pytest.approx(expected, abs=0.1)
    names = [lv.name for lv in f.levers]
    assert "program order" in names
    group = next(lv for lv in f.levers if lv.name == "GROUP_M")
    assert group.current == "1" and group.suggested == "8" and group.line == line_of(MATMUL_SRC, "GROUP_M =")
    assert "never uses it" in next(lv for lv in f.levers if lv.name == "program order").description
    bm = next(lv for lv in f.levers if lv.name == "BLOCK_M")
    assert (bm.current, bm.suggested) == ("64", "128")


def test_l2_locality_with_grouped_kernel_suggests_larger_groups_not_the_rewrite():
    grouped = MATMUL_SRC.replace("pid_m = pid // num_pid_n",
                                 "group_id = pid // (GROUP_M * num_pid_n)\n    pid_m = group_id")
    f = fire("l2-locality", MATMUL_ROW, knobs=discover(grouped))
    assert f is not None
    assert "program order" not in [lv.name for lv in f.levers]
    group = next(lv for lv in f.levers if lv.name == "GROUP_M")
    # MATMUL_SRC has GROUP_M = 1: grouping code with groups of one row is row-major order, so the
    # lever is the group size that makes the grouping work, and the summary does not call it grouped.
    assert group.direction == "increase" and group.suggested == "8"
    assert "already uses grouped" not in f.summary and "GROUP_M = 1" in f.summary
    bigger = fire("l2-locality", MATMUL_ROW, knobs=discover(grouped.replace("GROUP_M = 1", "GROUP_M = 4")))
    group = next(lv for lv in bigger.levers if lv.name == "GROUP_M")
    assert (group.current, group.suggested) == ("4", "8") and "already uses grouped" in bigger.summary


def test_l2_locality_silent_for_good_hit_rate_or_non_tiled_kernel():
    good = {**MATMUL_ROW, "l2_hit_rate_pct": 92.0, "l2_throughput_pct": 50.0}
    assert fire("l2-locality", good) is None
    streaming = {**MATMUL_ROW, "tensor_pipe_pct": 0.0}  # a copy kernel with a poor hit rate is not the pattern
    assert fire("l2-locality", streaming) is None


# --------------------------------------------------------------------------- occupancy


OCC_ROW = {"theoretical_occupancy_pct": 50.0, "achieved_occupancy_pct": 49.39, "occupancy_limit_registers": 8.0,
           "occupancy_limit_shared_mem": 9.0, "occupancy_limit_warps": 16.0, "occupancy_limit_blocks": 32.0,
           "registers_per_thread": 64.0, "block_size": 128.0, "issue_active_pct": 37.22,
           "sm_throughput_pct": 38.0}


def test_occupancy_names_the_register_limiter_and_the_next_limit():
    f = fire("occupancy", OCC_ROW, knobs=discover(MATMUL_SRC))
    assert f is not None
    lim = evidence(f, "occupancy_limit_registers")
    assert lim.value == 8.0 and lim.comparison == "limiter"
    assert evidence(f, "occupancy_limit_shared_mem").comparison == ""
    # Next limit: 9 blocks x 4 warps of 64 slots = 56.25%; 62.78% of cycles issue nothing.
    expected = (1 - 50.0 / 56.25) * (1 - 0.3722) * 100
    assert f.estimated_gain_pct == pytest.approx(expected, abs=0.1)
    warps = next(lv for lv in f.levers if lv.name == "NUM_WARPS")
    assert (warps.current, warps.suggested, warps.direction) == ("4", "8", "increase")
    assert "56%" in f.summary


def test_occupancy_shared_memory_limiter_points_at_num_stages():
    row = {**OCC_ROW, "occupancy_limit_registers": 16.0, "occupancy_limit_shared_mem": 3.0,
           "theoretical_occupancy_pct": 18.75}
    f = fire("occupancy", row, knobs=discover(MATMUL_SRC))
    assert evidence(f, "occupancy_limit_shared_mem").comparison == "limiter"
    stages = next(lv for lv in f.levers if lv.name == "NUM_STAGES")
    assert stages.direction == "decrease" and stages.suggested == "1"


def test_occupancy_silent_at_full_occupancy_or_when_compute_saturated():
    assert fire("occupancy", {**OCC_ROW, "theoretical_occupancy_pct": 100.0, "occupancy_limit_registers": 16.0}) \
        is None
    assert fire("occupancy", {**OCC_ROW, "sm_throughput_pct": 92.0}) is None


def test_occupancy_estimated_from_amd_registers_and_spec():
    # 88 VGPRs: 512 // 88 = 5 waves per SIMD = 20 per CU; 256-thread blocks are 4 waves -> 5 blocks.
    row = {"registers_per_thread": 88.0, "block_size": 256.0, "shared_mem_per_block_bytes": 0.0,
           "grid_size": 100000.0}
    ctx = ctx_for(row, spec=amd_spec(), source="rocprof-v1")
    occ = occupancy(ctx)
    assert occ.estimated and occ.limits["registers"] == 5 and occ.limiter == "registers"
    assert occ.theoretical_pct == pytest.approx(62.5)
    f = get_rule("occupancy").evaluate(ctx)
    assert f is not None and "estimated" in f.summary
    assert evidence(f, "theoretical_occupancy_pct").value == pytest.approx(62.5)
    # Fewer registers: nothing limits below 100%.
    assert fire("occupancy", {**row, "registers_per_thread": 32.0}, spec=amd_spec(), source="rocprof-v1") is None


def test_occupancy_estimate_matches_ncu_limits_on_nvidia():
    row = {"registers_per_thread": 64.0, "block_size": 128.0, "shared_mem_per_block_bytes": 25600.0}
    occ = occupancy(ctx_for(row, spec=nv_spec()))
    assert occ.limits == {"warps": 16.0, "blocks": 32.0, "registers": 8.0, "shared_mem": 9.0}
    assert occ.theoretical_pct == pytest.approx(50.0)
    # Registers are allocated per warp in units of 256: 36 x 32 = 1152 rounds up to 1280, so
    # 65536 / (1280 x 4 warps) = 12 blocks (the CUDA occupancy calculator's answer).
    occ = occupancy(ctx_for({"registers_per_thread": 36.0, "block_size": 128.0}, spec=nv_spec()))
    assert occ.limits["registers"] == 12.0


# --------------------------------------------------------------------------- tail effect


def test_tail_effect_fires_on_a_small_partial_last_wave():
    f = fire("tail-effect", {"waves_per_sm": 1.25, "grid_size": 330.0, "sm_count": 132.0})
    assert f is not None
    assert evidence(f, "waves_per_sm").value == 1.25
    assert f.estimated_gain_pct == pytest.approx((2 - 1.25) / 2 * 100)


def test_tail_effect_silent_with_many_waves_or_less_than_one_wave():
    assert fire("tail-effect", {"waves_per_sm": 15.52}) is None  # 0.48 of 16 waves idle = 3%
    assert fire("tail-effect", {"waves_per_sm": 0.5}) is None  # the tiny-grid rule's case


def test_tail_effect_waves_estimated_from_grid_and_spec():
    # 8 VGPRs, 256-thread blocks: 8 blocks per CU on 304 CUs = 2432 per wave; 4096 blocks = 1.68 waves.
    row = {"grid_size": 4096.0, "block_size": 256.0, "registers_per_thread": 8.0, "shared_mem_per_block_bytes": 0.0}
    f = fire("tail-effect", row, spec=amd_spec(), source="rocprof-compute")
    w = 4096 / 2432
    assert evidence(f, "waves_per_sm").value == pytest.approx(w)
    assert f.estimated_gain_pct == pytest.approx((2 - w) / 2 * 100, abs=0.1)


# --------------------------------------------------------------------------- coalescing


def test_uncoalesced_global_fires_on_few_useful_bytes_per_sector():
    f = fire("uncoalesced-global", {"global_ld_bytes_per_sector": 8.0, "memory_throughput_pct": 70.0,
                                    "sm_throughput_pct": 10.0, "dram_throughput_pct": 70.0})
    assert f is not None
    e = evidence(f, "global_ld_bytes_per_sector")
    assert (e.value, e.threshold, e.comparison) == (8.0, 16.0, "<")
    assert f.estimated_gain_pct == pytest.approx(0.75 * 0.70 * 100)


def test_uncoalesced_global_silent_for_coalesced_16_byte_loads():
    # The H200 matmul: 16 sectors per request are coalesced 16-byte loads, not waste.
    assert fire("uncoalesced-global", {"global_ld_sectors_per_request": 16.0,
                                       "global_ld_bytes_per_sector": 32.0}) is None
    f = fire("uncoalesced-global", {"global_st_sectors_per_request": 32.0})
    assert evidence(f, "global_st_sectors_per_request").threshold == 16.0


# --------------------------------------------------------------------------- bank conflicts


def test_bank_conflicts_from_counters():
    row = {"smem_bank_conflicts_st": 509052.0, "smem_wavefronts_st": 2704585.0,
           "smem_bank_conflicts_ld": 10.0, "smem_wavefronts_ld": 1e6}
    f = fire("smem-bank-conflicts", row, knobs=discover(MATMUL_SRC), rules=(), spec=None)
    assert f is not None
    share = evidence(f, "smem_conflict_share_st")
    assert share.value == pytest.approx(100 * 509052 / 2704585) and share.threshold == 10.0
    assert "stores" in f.summary and "loads" not in f.summary
    # No stall breakdown, no profiler estimate: half the replayed share.
    assert f.estimated_gain_pct == pytest.approx(share.value * 0.5, abs=0.1)


def test_bank_conflicts_block_k_lever_for_triton_matmul():
    row = {"smem_bank_conflicts_st": 509052.0, "smem_wavefronts_st": 2704585.0, "tensor_pipe_pct": 38.0}
    f = fire("smem-bank-conflicts", row, knobs=discover(MATMUL_SRC))
    bk = next(lv for lv in f.levers if lv.name == "BLOCK_K")
    assert (bk.current, bk.suggested, bk.line) == ("32", "64", line_of(MATMUL_SRC, "BLOCK_K ="))


def test_bank_conflicts_from_the_ncu_message_alone():
    text = ("The memory access pattern for shared stores might not be optimal and causes on average a 10.3 - way "
            "bank conflict across all 262144 shared store requests.This results in 509052 bank conflicts,  which "
            "represent 18.82% of the overall 2704585 wavefronts for shared stores.")
    f = fire("smem-bank-conflicts", {"duration_ns": 1e6}, rules=(msg("SharedMemoryConflicts", text, 11.19),))
    assert f is not None
    assert evidence(f, "smem_conflict_share_st").value == pytest.approx(18.82)
    assert evidence(f, "smem_conflict_ways").value == pytest.approx(10.3)
    assert f.estimated_gain_pct == pytest.approx(11.2)  # ncu's own estimate
    ctx = ctx_for({"duration_ns": 1e6}, rules=(msg("SharedMemoryConflicts", text, 11.19),))
    attached = [f for f in run_rules(ctx) if f.rule == "smem-bank-conflicts"][0]
    assert attached.supporting and attached.supporting[0].startswith("ncu SharedMemoryConflicts (OPT")


def test_bank_conflicts_amd_percent_and_silence():
    f = fire("smem-bank-conflicts", {"smem_bank_conflict_pct": 12.0}, source="rocprof-v1")
    assert evidence(f, "smem_bank_conflict_pct").threshold == 5.0
    assert fire("smem-bank-conflicts", {"smem_bank_conflict_pct": 0.0}, source="rocprof-v1") is None
    assert fire("smem-bank-conflicts", {"smem_bank_conflicts_st": 100.0, "smem_wavefronts_st": 2.7e6}) is None


# --------------------------------------------------------------------------- tensor pipe


def test_tensor_pipe_low_when_memory_is_not_the_limit():
    f = fire("tensor-pipe", {"tensor_pipe_pct": 30.0, "memory_throughput_pct": 40.0, "sm_throughput_pct": 45.0},
             knobs=discover(MATMUL_SRC))
    assert f is not None and f.severity != Severity.INFO
    e = evidence(f, "tensor_pipe_pct")
    assert (e.value, e.threshold, e.comparison) == (30.0, 50.0, "<")
    assert f.estimated_gain_pct == pytest.approx((1 - 30 / 75) * 100)
    stages = next(lv for lv in f.levers if lv.name == "NUM_STAGES")
    assert (stages.current, stages.suggested) == ("2", "3")


def test_tensor_pipe_starved_by_memory_is_informational():
    f = fire("tensor-pipe", {"tensor_pipe_pct": 38.4, "memory_throughput_pct": 82.8, "sm_throughput_pct": 38.4})
    assert f.severity == Severity.INFO and f.estimated_gain_pct == 0.0
    assert "wait for data" in f.summary


def test_tensor_pipe_from_ncu_message_and_silent_cases():
    text = "Tensor is the highest-utilized pipeline (38.4%) based on elapsed cycles in the workload"
    f = fire("tensor-pipe", {"memory_throughput_pct": 82.8}, rules=(msg("HighPipeUtilization", text, type_="INF"),))
    assert evidence(f, "tensor_pipe_pct").value == pytest.approx(38.4)
    assert fire("tensor-pipe", {"tensor_pipe_pct": 82.0, "memory_throughput_pct": 40.0}) is None
    assert fire("tensor-pipe", {"tensor_pipe_pct": 0.0, "memory_throughput_pct": 40.0}) is None  # not a matmul


# --------------------------------------------------------------------------- warp stalls


def test_warp_stall_names_dominant_reason_with_its_meaning():
    row = {"stall_long_scoreboard": 11.3, "stall_barrier": 2.0, "stall_not_selected": 1.5, "stall_wait": 1.0,
           "warp_cycles_per_issue": 21.2, "issue_active_pct": 37.2}
    f = fire("warp-stall", row, knobs=discover(MATMUL_SRC))
    e = evidence(f, "stall_long_scoreboard")
    assert e.value == 11.3 and e.threshold == pytest.approx(0.3 * 21.2) and e.unit == "cycles/issue"
    assert "global/local memory" in e.meaning
    assert f.estimated_gain_pct == pytest.approx(11.3 / 21.2 * (1 - 0.372) * 0.5 * 100, abs=0.1)
    assert [lv.name for lv in f.levers][:2] == ["NUM_STAGES", "NUM_WARPS"]


def test_warp_stall_from_cpistall_message():
    text = ("On average, each warp of this workload spends 11.3 cycles being stalled waiting for a scoreboard "
            "dependency on a L1TEX (local, global, surface, texture) operation. This stall type represents about "
            "53.2% of the total average of 21.2 cycles between issuing two instructions.")
    f = fire("warp-stall", {"issue_active_pct": 37.2}, rules=(msg("CPIStall", text, 17.2),))
    assert evidence(f, "stall_long_scoreboard").value == 11.3
    assert evidence(f, "warp_cycles_per_issue").value == 21.2


def test_warp_stall_silent_when_spread_or_healthy():
    spread = {"stall_long_scoreboard": 3.0, "stall_barrier": 3.0, "stall_wait": 3.0, "stall_mio_throttle": 3.0,
              "warp_cycles_per_issue": 12.0}
    assert fire("warp-stall", spread) is None  # top reason is 25% < 30%
    healthy = {"stall_not_selected": 8.0, "stall_wait": 1.0, "warp_cycles_per_issue": 10.0}
    assert fire("warp-stall", healthy) is None


# --------------------------------------------------------------------------- launch shape


def test_tiny_grid_and_its_silence():
    f = fire("tiny-grid", {"grid_size": 66.0, "sm_count": 132.0})
    g = evidence(f, "grid_size")
    assert (g.value, g.threshold, g.comparison) == (66.0, 132.0, "<")
    assert f.estimated_gain_pct == pytest.approx(50.0)
    assert fire("tiny-grid", {"grid_size": 264.0, "sm_count": 132.0}) is None
    assert fire("tiny-grid", {"grid_size": 66.0}) is None  # SM count unknown
    assert fire("tiny-grid", {"grid_size": 66.0}, spec=nv_spec()) is not None  # from the spec


def test_launch_overhead_short_kernel():
    f = fire("launch-overhead", {"duration_ns": 6000.0})
    e = evidence(f, "duration_ns")
    assert (e.value, e.threshold, e.unit) == (6000.0, 8000.0, "ns")
    assert f.estimated_gain_pct == pytest.approx(50.0)
    assert fire("launch-overhead", {"duration_ns": 50_000.0}) is None


# --------------------------------------------------------------------------- near the limit, spills


def test_near_limit_reports_headroom_as_info():
    f = fire("near-limit", {"dram_throughput_pct": 89.12, "l2_throughput_pct": 92.6, "memory_throughput_pct": 89.1,
                            "sm_throughput_pct": 7.8})
    assert f.severity == Severity.INFO
    # Device memory is the fundamental ceiling: L2's higher number is the same traffic passing through.
    e = evidence(f, "dram_throughput_pct")
    assert (e.value, e.threshold) == (89.12, 80.0)
    assert f.estimated_gain_pct == pytest.approx((1 - 89.12 / 95) * 100, abs=0.1)
    assert fire("near-limit", {"dram_throughput_pct": 60.0, "sm_throughput_pct": 40.0}) is None


def test_register_spill():
    f = fire("register-spill", {"local_spill_requests": 1200.0, "registers_per_thread": 255.0})
    assert evidence(f, "local_spill_requests").value == 1200.0
    assert fire("register-spill", {"local_spill_requests": 0.0}) is None


# --------------------------------------------------------------------------- roofline


def test_place_memory_compute_latency_and_launch_bound():
    c = ceil_of(nv_spec())
    ridge = 989.4e12 / 4800e9
    # A copy at 4 TB/s: intensity 1/12, 83% of the memory ceiling.
    t = 1e-3
    r = roofline.place(flops=4e9 / 12, bytes=4e9, time_s=t, ceilings=c)
    assert r.bound == "memory-bound" and r.ridge == pytest.approx(ridge)
    assert r.intensity == pytest.approx(1 / 12) and r.pct_of_ceiling == pytest.approx(4000 / 4800 * 100)
    # A matmul at 700 TFLOP/s: compute side.
    r = roofline.place(flops=2 * 8192 ** 3, bytes=3 * 2 * 8192 ** 2, time_s=2 * 8192 ** 3 / 700e12, ceilings=c)
    assert r.bound == "compute-bound" and r.pct_of_ceiling == pytest.approx(700 / 989.4 * 100)
    # Far below both: latency-bound.
    r = roofline.place(flops=1e9, bytes=1e9, time_s=1e-3, ceilings=c)
    assert r.bound == "latency-bound" and r.pct_of_ceiling == pytest.approx(1000 / 4800 * 100)
    # Short: launch-bound whatever the numbers.
    assert roofline.place(flops=1e6, bytes=1e6, time_s=5e-6, ceilings=c).bound == "launch-bound"
    # No ceilings: intensity only.
    r = roofline.place(flops=100.0, bytes=50.0, time_s=1.0, ceilings=None)
    assert r.intensity == 2.0 and r.bound == "unknown" and r.ridge is None


def test_from_counters_uses_counter_bytes_and_falls_back_to_speed_of_light():
    c = ceil_of(nv_spec())
    row = {"duration_ns": 1e6, "dram_bytes_read": 3e9, "dram_bytes_write": 1e9}
    r = roofline.from_counters(row, c)
    assert r.bytes == 4e9 and r.achieved_gbps == pytest.approx(4000.0) and r.bound == "memory-bound"
    # No FLOPs and no bytes: speed-of-light decides the side.
    r = roofline.from_counters({"duration_ns": 4e6, "memory_throughput_pct": 83.0, "sm_throughput_pct": 38.0}, c)
    assert r.bound == "memory-bound" and r.intensity is None
    r = roofline.from_counters({"duration_ns": 4e6, "memory_throughput_pct": 12.0, "sm_throughput_pct": 9.0}, c)
    assert r.bound == "latency-bound"
    # The target's own flops()/bytes_moved() win over counters.
    r = roofline.from_counters(row, c, flops=2e12, bytes=1e9)
    assert r.intensity == 2000.0 and r.bound == "compute-bound"


# --------------------------------------------------------------------------- diagnose


def test_diagnose_ranks_by_gain_attaches_profiler_messages_and_lists_the_rest():
    rules = (
        msg("TheoreticalOccupancy", "limited by the number of required registers.", 17.2),
        msg("MemoryL2Compression", "Out of the bytes sent to the L2 Compression unit only 0.00% were compressed.",
            62.4),
        msg("CPIStall", "spends 11.3 cycles being stalled waiting for a scoreboard dependency on a L1TEX "
                        "operation. ... of the total average of 21.2 cycles", 17.2),
    )
    row = {**MATMUL_ROW, **OCC_ROW, "smem_bank_conflicts_st": 509052.0, "smem_wavefronts_st": 2704585.0}
    t = table(row, rules=rules)
    spec = nv_spec()
    findings = diagnose(t, spec, ceil_of(spec), knobs=discover(MATMUL_SRC))
    ids = [f.rule for f in findings]
    assert ids[0] == "l2-locality"
    assert {"smem-bank-conflicts", "occupancy", "warp-stall"} <= set(ids)
    actionable = [f for f in findings if f.severity != Severity.INFO]
    gains = [f.estimated_gain_pct for f in actionable]
    assert gains == sorted(gains, reverse=True)
    assert all(f.severity == Severity.INFO for f in findings[len(actionable):])
    occ = next(f for f in findings if f.rule == "occupancy")
    assert any(s.startswith("ncu TheoreticalOccupancy (OPT, est. speedup 17.2%)") for s in occ.supporting)
    left = unmatched_messages(t, findings)
    assert [m.rule for m in left] == ["MemoryL2Compression"]


def test_diagnose_aggregates_launches_per_kernel_and_weights_by_time_share():
    rows = [
        {"kernel": "big", "duration_ns": 5e6, "grid_size": 66.0, "sm_count": 132.0},
        {"kernel": "big", "duration_ns": 9e6, "grid_size": 66.0, "sm_count": 132.0},
        {"kernel": "big", "duration_ns": 6e6, "grid_size": 66.0, "sm_count": 132.0},
        {"kernel": "small", "duration_ns": 1e6, "grid_size": 13.0, "sm_count": 132.0},
        {"kernel": "fill", "duration_ns": 1e5, "grid_size": 1.0, "sm_count": 132.0},
    ]
    frame = pd.DataFrame(rows, index=pd.Index(range(5), name="launch"))
    t = CounterTable(source="ncu", frame=frame)
    kr = {r.kernel: r for r in kernel_rows(t)}
    assert kr["big"].launches == 3 and kr["big"].metrics["duration_ns"] == 6e6  # the median launch
    assert kr["big"].total_ns == 20e6
    findings = diagnose(t, None, None)
    tiny = [f for f in findings if f.rule == "tiny-grid"]
    # "small" idles more SMs (90% vs 50%) but takes 5% of the time: "big" ranks first. "fill"
    # (0.5% of the time) is not diagnosed at all.
    assert [f.kernel for f in tiny] == ["big", "small"]
    assert "fill" in [f.kernel for f in diagnose(t, None, None, min_share=0.0)]
    assert tiny[1].estimated_gain_pct > tiny[0].estimated_gain_pct


def test_measured_roofline_goes_to_the_main_kernel():
    spec = nv_spec()
    roof = roofline.place(2 * 4096 ** 3, 3 * 2 * 4096 ** 2, 1e-3, ceil_of(spec))
    t = table({"duration_ns": 1e6})
    ctx = contexts(t, spec, ceil_of(spec), roofline=roof)[0]
    assert ctx.roofline is roof


def test_achieved_occupancy_gap_and_silence():
    row = {"achieved_occupancy_pct": 30.0, "theoretical_occupancy_pct": 100.0, "issue_active_pct": 40.0,
           "waves_per_sm": 1.3, "duration_ns": 1e6}
    f = fire("achieved-occupancy", row)
    e = evidence(f, "achieved_occupancy_pct")
    assert (e.value, e.threshold, e.comparison) == (30.0, 80.0, "<")
    assert f.estimated_gain_pct == pytest.approx((1 - 30 / 100) * 0.6 * 0.5 * 100)
    assert "1.3 waves" in f.summary
    # The H200 vector add: 84% of 100% is within the gap; an estimated theoretical value is not enough.
    assert fire("achieved-occupancy", {**row, "achieved_occupancy_pct": 84.0}) is None
    assert fire("achieved-occupancy", {"achieved_occupancy_pct": 4.0, "registers_per_thread": 8.0,
                                       "block_size": 256.0}, spec=amd_spec(), source="rocprof-compute") is None
