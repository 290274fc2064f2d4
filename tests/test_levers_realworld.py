"""Levers on kernels written the way real projects write them: each names a knob that exists,
at the line where it is defined, with its current value and a concrete new one, and only
advice that fits the kernel (no tile order without tiles, no BLOCK_K for a softmax)."""

from __future__ import annotations

from advisors.diagnosis import contexts
from advisors.knobs import discover
from advisors.rules import all_rules, get_rule
from profd.model import LaunchRecord
from realworld_styles import DEFAULT_WARPS_ADD, LIGER_RMSNORM, TUPLE_MATMUL, TUTORIAL_SOFTMAX, line_of, src
from test_rules import OCC_ROW, table

MEM_ROW = {"duration_ns": 2e6, "memory_throughput_pct": 35.0, "sm_throughput_pct": 5.0,
           "dram_throughput_pct": 30.0, "l2_throughput_pct": 33.0}
L2_ROW = {"duration_ns": 3941120.0, "sm_throughput_pct": 38.39, "memory_throughput_pct": 82.76,
          "dram_throughput_pct": 63.35, "l2_throughput_pct": 86.34, "l2_hit_rate_pct": 52.87,
          "grid_size": 16384.0, "block_size": 128.0, "sm_count": 132.0}


def fire(rule_id: str, row: dict, knobs, kernel: str):
    ctx = contexts(table({**row, "kernel": kernel}), None, None, knobs=knobs)[0]
    rule = get_rule(rule_id)
    return rule.evaluate(ctx) if rule.applies(ctx) else None


def all_levers(row: dict, knobs, kernel: str) -> list:
    ctx = contexts(table({**row, "kernel": kernel}), None, None, knobs=knobs)[0]
    out = []
    for rule in all_rules():
        if rule.applies(ctx):
            f = rule.evaluate(ctx)
            if f is not None:
                out += f.levers
    return out


def test_elementwise_block_lever_points_at_the_callers_argument():
    f = fire("memory-parallelism", MEM_ROW, discover(DEFAULT_WARPS_ADD), "add_kernel")
    block = next(lv for lv in f.levers if lv.name == "block_size")
    line = line_of(DEFAULT_WARPS_ADD, "return add(x, y, 256)")
    assert (block.current, block.suggested, block.line) == ("256", "4096", line)
    assert block.description.startswith(f"block_size = 256 at line {line}: raise to 4096")
    # Triton's default of 4 warps is within 4-8: no lever that says nothing; no loop: no stages.
    assert [lv.name for lv in f.levers if lv.name in ("num_warps", "num_stages")] == []
    assert not any("keep at" in lv.description for lv in f.levers)


def test_a_warps_lever_says_which_way_and_to_what():
    s = DEFAULT_WARPS_ADD.replace("BLOCK_SIZE=block_size)", "BLOCK_SIZE=block_size, num_warps=2)")
    f = fire("memory-parallelism", MEM_ROW, discover(s), "add_kernel")
    warps = next(lv for lv in f.levers if lv.name == "num_warps")
    assert warps.description.startswith(f"num_warps = 2 at line {line_of(s, 'add_kernel[grid]')}: raise to 4")
    absent = fire("memory-parallelism", MEM_ROW, discover(DEFAULT_WARPS_ADD.replace(
        "BLOCK_SIZE=block_size)", "BLOCK_SIZE=block_size, num_warps=16)")), "add_kernel")
    assert next(lv for lv in absent.levers if lv.name == "num_warps").suggested == "8"


def test_rowwise_helper_levers_keep_the_row_block_and_name_the_helper():
    rec = LaunchRecord(kernel="_rms_norm_forward_kernel", constexprs={"BLOCK_SIZE": 4096}, num_warps=16)
    knobs = discover(LIGER_RMSNORM).with_runtime([rec])
    f = fire("memory-parallelism", MEM_ROW, knobs, "_rms_norm_forward_kernel")
    assert "BLOCK_SIZE" not in [lv.name for lv in f.levers]  # it must cover the row
    warps = next(lv for lv in f.levers if lv.name == "num_warps")
    call = line_of(LIGER_RMSNORM, "BLOCK_SIZE, num_warps = calculate_settings")
    assert warps.current == "16" and warps.suggested == "8" and warps.line == line_of(LIGER_RMSNORM, "num_warps = 4")
    assert f"in calculate_settings(), or override it after line {call}: lower to 8" in warps.description


def test_no_block_k_and_no_tile_order_for_a_softmax():
    knobs = discover(TUTORIAL_SOFTMAX)
    bank = {"smem_bank_conflicts_st": 509052.0, "smem_wavefronts_st": 2704585.0, "duration_ns": 1e6}
    occ = {**OCC_ROW, "occupancy_limit_shared_mem": 4.0}
    names = [lv.name for row in (bank, occ, L2_ROW, MEM_ROW) for lv in all_levers(row, knobs, "softmax_kernel")]
    assert not [n for n in names if "BLOCK_K" in n or n in ("program order", "GROUP_M")], names
    assert fire("l2-locality", L2_ROW, knobs, "softmax_kernel") is None


def test_no_tile_order_for_an_elementwise_kernel_named_like_a_matmul():
    s = DEFAULT_WARPS_ADD.replace("add_kernel", "addmm_bias_kernel")
    assert fire("l2-locality", L2_ROW, discover(s), "addmm_bias_kernel") is None
    # Without the source, the name is all there is: the rule may still speak.
    assert fire("l2-locality", L2_ROW, None, "addmm_bias_kernel") is not None


def test_gqa_head_grouping_is_not_called_grouped_order():
    s = src('''
        import triton
        import triton.language as tl

        @triton.jit
        def attn_fwd(Q, K, V, O, H: tl.constexpr, GROUP_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr):
            start_m = tl.program_id(0)
            off_hz = tl.program_id(1)
            off_kvh = (off_hz % H) // GROUP_SIZE
            acc = tl.dot(tl.load(Q), tl.load(K))
    ''')
    f = fire("l2-locality", L2_ROW, discover(s), "attn_fwd")
    assert f is not None and "already uses grouped" not in f.summary and "row-major" in f.summary


def test_tuple_matmul_tile_levers_point_at_the_tuple():
    f = fire("l2-locality", L2_ROW, discover(TUPLE_MATMUL), "mm_kernel")
    bm = next(lv for lv in f.levers if lv.name == "BLOCK_M")
    assert (bm.current, bm.suggested, bm.line) == ("32", "64", line_of(TUPLE_MATMUL, "BLOCK_M, BLOCK_N, BLOCK_K ="))


def test_no_lever_reads_name_equals_itself():
    s = DEFAULT_WARPS_ADD.replace("def add(x, y, block_size):", "def add(x, y, BLOCK_SIZE):").replace(
        "BLOCK_SIZE=block_size", "BLOCK_SIZE=BLOCK_SIZE")
    for row in (MEM_ROW, L2_ROW, OCC_ROW):
        for lv in all_levers(row, discover(s), "add_kernel"):
            assert "BLOCK_SIZE = BLOCK_SIZE" not in lv.description, lv.description
