"""Knob discovery on launchers written the way real projects write them (tests/realworld_styles.py):
the knob is found where its value is defined, with the right line, value, site and kernel, and
run-time launch records fill in what the source computes from sizes."""

from __future__ import annotations

from advisors.knobs import TRITON_DEFAULTS, discover
from profd.model import LaunchRecord, Measurement, Status, Verdict
from realworld_styles import (DEFAULT_WARPS_ADD, FLAGGEMS_SOFTMAX, LIGER_RMSNORM, TUPLE_MATMUL, TUTORIAL_MATMUL,
                              TUTORIAL_SOFTMAX, line_of, src)


def one(k, name, kind=""):
    found = [x for x in k.knobs if x.name == name and (not kind or x.kind == kind)]
    assert len(found) == 1, [(x.name, x.kind, x.line) for x in k.knobs]
    return found[0]


def test_liger_calculate_settings_helper():
    k = discover(LIGER_RMSNORM)
    block, warps = one(k, "BLOCK_SIZE"), one(k, "num_warps")
    call = line_of(LIGER_RMSNORM, "BLOCK_SIZE, num_warps = calculate_settings")
    assert (block.site, block.helper, block.index, block.call_line, block.kernel) == \
        ("helper", "calculate_settings", 0, call, "_rms_norm_forward_kernel")
    assert block.value is None and block.text == "triton.next_power_of_2(n)"
    assert block.line == line_of(LIGER_RMSNORM, "BLOCK_SIZE = triton.next_power_of_2(n)")
    assert (warps.site, warps.kind, warps.index, warps.line) == \
        ("helper", "num_warps", 1, line_of(LIGER_RMSNORM, "num_warps = 4"))
    assert warps.value is None and warps.choices == [4, 32, 16, 8]  # the branches of the chain
    stages = one(k, "num_stages")
    assert (stages.site, stages.value, stages.line) == \
        ("absent", TRITON_DEFAULTS["num_stages"], line_of(LIGER_RMSNORM, "_rms_norm_forward_kernel[("))
    assert k.get("MAX_FUSED_SIZE") is None  # a limit, not a knob
    assert k.kernel_class() == "rowwise" and not k.has_tiles()


def test_runtime_values_fill_in_the_computed_ones():
    k = discover(LIGER_RMSNORM)
    rec = LaunchRecord(kernel="_rms_norm_forward_kernel", constexprs={"BLOCK_SIZE": 4096}, num_warps=8,
                       num_stages=3, grid=[8])
    m = Measurement(target="t.py", content_hash="", verdict=Verdict(Status.CORRECT), launches=[rec])
    back = Measurement.from_dict(m.to_dict())  # crosses the process boundary as JSON
    assert back.launches == [rec]
    r = k.with_runtime(back.launches)
    assert r.ran == ["_rms_norm_forward_kernel"]
    assert one(r, "BLOCK_SIZE").runtime == 4096 and one(r, "BLOCK_SIZE").current == 4096
    assert one(r, "num_warps").current == 8 and one(k, "num_warps").runtime is None  # a copy
    assert "8 at run time" in one(r, "num_warps").shown()


def test_tutorial_softmax_warmup_and_compiled_handle():
    s = TUTORIAL_SOFTMAX
    k = discover(s)
    block, stages, warps = one(k, "BLOCK_SIZE"), one(k, "num_stages"), one(k, "num_warps")
    assert (block.site, block.value, block.line) == ("expression", None, line_of(s, "BLOCK_SIZE = triton.next"))
    assert (stages.site, stages.value, stages.kind, stages.text) == \
        ("expression", 4, "num_stages", "4 if SIZE_SMEM > 200000 else 2")
    assert (warps.site, warps.value, warps.line) == ("constant", 8, line_of(s, "num_warps = 8"))
    vias = sorted(g.via for g in k.grids if g.kernel == "softmax_kernel")
    assert vias == ["compiled", "launch", "warmup"]
    compiled = next(g for g in k.grids if g.via == "compiled")
    assert compiled.dims == 3 and compiled.line == line_of(s, "kernel[(num_programs, 1, 1)]")
    assert k.get("NUM_SM") is None and k.get("SIZE_SMEM") is None
    assert k.has_loop("softmax_kernel") and k.kernel_class() == "rowwise"


def test_tutorial_matmul_autotune_from_a_function_and_lambda_grid():
    s = TUTORIAL_MATMUL
    k = discover(s)
    cfgs = k.autotune["matmul_kernel"]
    assert [c.kwargs["BLOCK_SIZE_M"] for c in cfgs] == [32, 16] and [c.num_warps for c in cfgs] == [4, 2]
    bm = one(k, "BLOCK_SIZE_M")
    assert (bm.site, bm.value, bm.line) == ("autotune", [32, 16], line_of(s, "return ["))
    assert not [x for x in k.knobs if x.site == "absent"]  # the configs carry warps and stages
    assert k.is_grouped("matmul_kernel") and "num_pid_in_group" in k.grouped_evidence
    assert k.kernel_class() == "matmul"
    g = k.grid("matmul_kernel")
    assert g.dims == 1 and 'META["BLOCK_SIZE_M"]' in g.text
    picked = LaunchRecord(kernel="matmul_kernel", constexprs={"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32,
                          "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 4}, num_warps=2, num_stages=4, autotuned=True)
    r = k.with_runtime([picked])
    assert one(r, "BLOCK_SIZE_M").runtime == 16 and one(r, "num_warps").runtime == 2


def test_tuple_assignment_launcher():
    s = TUPLE_MATMUL
    k = discover(s)
    line = line_of(s, "BLOCK_M, BLOCK_N, BLOCK_K = ")
    for i, (name, value) in enumerate((("BLOCK_M", 32), ("BLOCK_N", 32), ("BLOCK_K", 16))):
        knob = one(k, name)
        assert (knob.site, knob.value, knob.line, knob.index, knob.kind) == ("tuple", value, line, i, "constexpr")
    assert one(k, "num_warps").site == "keyword" and one(k, "num_stages").value == 2
    assert k.grid("mm_kernel").dims == 2 and k.kernel_class() == "matmul" and not k.is_grouped()


def test_flaggems_autotune_comprehension_and_heuristics():
    s = FLAGGEMS_SOFTMAX
    k = discover(s)
    assert [c.kwargs for c in k.autotune["softmax_kernel_inner"]] == [{"BLOCK_M": 1}, {"BLOCK_M": 2}]
    bm = one(k, "BLOCK_M")
    assert (bm.site, bm.value) == ("autotune", [1, 2])
    bn = one(k, "BLOCK_N")
    assert (bn.site, bn.where, bn.value, bn.line) == \
        ("heuristic", "heuristics", None, line_of(s, 'return triton.next_power_of_2(args["N"])'))
    # A BLOCK_N that covers the row is not a tile side: no tiles, no tile order.
    assert k.kernel_class() == "rowwise" and not k.has_tiles()


def test_product_comprehension_configs():
    s = src('''
        import itertools
        import triton
        import triton.language as tl

        @triton.autotune(configs=[triton.Config({"BLOCK": b}, num_warps=w, num_stages=s)
                                  for b, w in itertools.product([256, 512, 1024], [4, 8]) for s in (2, 3)
                                  if b * w <= 4096], key=["n"])
        @triton.jit
        def k(x, n, BLOCK: tl.constexpr):
            pass
    ''')
    cfgs = discover(s).autotune["k"]
    assert len(cfgs) == 10 and {c.kwargs["BLOCK"] for c in cfgs} == {256, 512, 1024}
    assert all(c.kwargs["BLOCK"] * c.num_warps <= 4096 for c in cfgs)


def test_defaults_caller_arguments_and_absent_keywords():
    s = DEFAULT_WARPS_ADD
    k = discover(s)
    block = one(k, "block_size")
    assert (block.param, block.site, block.value, block.line, block.where) == \
        ("BLOCK_SIZE", "argument", 256, line_of(s, "return add(x, y, 256)"), "caller")
    for opt in ("num_warps", "num_stages"):
        knob = one(k, opt)
        assert (knob.site, knob.value, knob.line) == ("absent", TRITON_DEFAULTS[opt], line_of(s, "add_kernel[grid]"))
    assert k.kernel_class() == "elementwise"


def test_gqa_head_grouping_is_not_swizzled_order():
    s = src('''
        import triton
        import triton.language as tl

        @triton.jit
        def attn_fwd(Q, K, V, O, H: tl.constexpr, GROUP_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr):
            start_m = tl.program_id(0)
            off_hz = tl.program_id(1)
            off_h = off_hz % H
            off_kvh = off_h // GROUP_SIZE
            group_id = off_h // GROUP_SIZE
            acc = tl.dot(tl.load(Q), tl.load(K))
    ''')
    k = discover(s)
    assert not k.is_grouped("attn_fwd") and k.grouped_evidence == ""
