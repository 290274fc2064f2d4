"""Knob discovery from Triton sources (``advisors.knobs.discover``), read with ``ast`` only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from advisors.knobs import discover

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kernels"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(source: str, needle: str) -> int:
    """First line that starts with ``needle`` (after indentation)."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if line.lstrip().startswith(needle))


MODULE_CONSTANTS = src('''
    import triton
    import triton.language as tl

    BLOCK_SIZE = 64
    NUM_WARPS = 4
    STAGES = 2 + 1
    UNUSED_TILE = 32
    EPS = 1e-5


    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(0)


    def kernel(x, y):
        out = x.new_empty(x.shape)
        grid = (triton.cdiv(x.numel(), BLOCK_SIZE),)
        add_kernel[grid](x, y, out, x.numel(), BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS, num_stages=STAGES)
        return out
''')


def test_module_constants_passed_to_the_launch_are_knobs_at_their_definition():
    k = discover(MODULE_CONSTANTS)
    assert k.kernels == ["add_kernel"] and k.constexpr_params == {"add_kernel": ["BLOCK_SIZE"]}
    block = k.get("BLOCK_SIZE")
    assert (block.value, block.kind, block.line, block.param, block.kernel) == \
        (64, "constexpr", line_of(MODULE_CONSTANTS, "BLOCK_SIZE = 64"), "BLOCK_SIZE", "add_kernel")
    warps = k.get("num_warps")  # found through the launch keyword it feeds
    assert (warps.name, warps.value, warps.kind, warps.line) == \
        ("NUM_WARPS", 4, "num_warps", line_of(MODULE_CONSTANTS, "NUM_WARPS = 4"))
    stages = k.get("STAGES")
    assert (stages.value, stages.kind, stages.text) == (3, "num_stages", "2 + 1")
    assert block.shown() == "BLOCK_SIZE = 64"
    # An unused module-level tile constant is still offered; a non-tile constant is not.
    assert k.get("UNUSED_TILE").kind == "block"
    assert k.get("EPS") is None


def test_grid_text_and_dimensions():
    k = discover(MODULE_CONSTANTS)
    g = k.grid("add_kernel")
    assert g.dims == 1 and g.text == "(triton.cdiv(x.numel(), BLOCK_SIZE),)"
    assert g.line == line_of(MODULE_CONSTANTS, "grid = (")


LAUNCHER_LOCALS = src('''
    import triton
    import triton.language as tl


    @triton.jit
    def softmax_kernel(x, y, n_cols, BLOCK: tl.constexpr, ROWS_PER_PROG: tl.constexpr):
        pass


    def kernel(x, block_rows=2):
        n_rows, n_cols = x.shape
        BLOCK = triton.next_power_of_2(n_cols)
        TILE_SIZE = 128
        softmax_kernel[(n_rows, triton.cdiv(n_cols, TILE_SIZE))](x, x, n_cols, BLOCK, block_rows, num_warps=8)
''')


def test_launcher_locals_positional_constexprs_literals_and_defaults():
    k = discover(LAUNCHER_LOCALS)
    block = k.get("BLOCK")
    assert block.value is None and block.text == "triton.next_power_of_2(n_cols)" and block.where == "launcher"
    rows = k.get("block_rows")  # a keyword default of the launcher, passed positionally
    assert (rows.value, rows.kind, rows.param) == (2, "constexpr", "ROWS_PER_PROG")
    warps = k.get("num_warps")  # a literal in the launch call: the call line is where to edit
    assert (warps.value, warps.where, warps.line) == (8, "launch call", line_of(LAUNCHER_LOCALS, "softmax_kernel[("))
    tile = k.get("TILE_SIZE")
    assert (tile.kind, tile.value) == ("block", 128)
    g = k.grid("softmax_kernel")
    assert g.dims == 2 and g.text == "(n_rows, triton.cdiv(n_cols, TILE_SIZE))"


AUTOTUNED = src('''
    import triton
    import triton.language as tl

    CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=4),
    ]


    @triton.autotune(configs=CONFIGS, key=["M", "N", "K"])
    @triton.jit
    def mm(a, b, c, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
           GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        group_id = pid // (GROUP_M * num_pid_n)
        first_pid_m = group_id * GROUP_M
        acc = tl.dot(tl.load(a), tl.load(b))


    def kernel(a, b, c):
        M, K = a.shape
        N = b.shape[1]
        grid = lambda META: (triton.cdiv(M, META["BLOCK_M"]) * triton.cdiv(N, META["BLOCK_N"]),)
        mm[grid](a, b, c, M, N, K)
''')


def test_autotune_configs_grouped_order_and_dot():
    k = discover(AUTOTUNED)
    assert len(k.autotune["mm"]) == 2
    assert k.autotune["mm"][0].kwargs == {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}
    assert (k.autotune["mm"][1].num_warps, k.autotune["mm"][1].num_stages) == (4, 4)
    bm = k.get("BLOCK_M")
    assert (bm.kind, bm.value, bm.line) == ("autotune", [128, 64], line_of(AUTOTUNED, "CONFIGS = ["))
    assert k.get("num_warps").value == [8, 4]
    assert k.grouped_order and k.is_grouped("mm")
    assert "GROUP_M * num_pid_n" in k.grouped_evidence
    assert k.uses_dot("mm")
    g = k.grid("mm")
    assert g.dims == 1 and g.line == line_of(AUTOTUNED, "grid = lambda")


def test_row_major_kernel_is_not_grouped_even_with_a_group_m_parameter():
    k = discover(AUTOTUNED.replace("group_id = pid // (GROUP_M * num_pid_n)", "pid_m = pid // num_pid_n")
                 .replace("first_pid_m = group_id * GROUP_M", "pid_n = pid % num_pid_n"))
    assert not k.grouped_order and k.grouped_evidence == ""
    assert "GROUP_M" in k.constexpr_params["mm"]


def test_swizzle2d_counts_as_grouped_order():
    source = src('''
        import triton
        import triton.language as tl

        @triton.jit
        def mm(a, M, N, GROUP_M: tl.constexpr):
            pid_m, pid_n = tl.swizzle2d(tl.program_id(0), tl.program_id(1), M, N, GROUP_M)
    ''')
    k = discover(source)
    assert k.is_grouped("mm") and k.grouped_evidence.startswith("tl.swizzle2d")
    assert not k.uses_dot("mm")


def test_profiled_names_map_to_source_kernels():
    k = discover(AUTOTUNED)
    assert k.uses_dot("mm")  # exact
    assert not k.uses_dot("mm_kernel_other")
    assert k.is_grouped("void mm(float*, float*)")  # a demangled signature


def test_syntax_error_gives_empty_knobs_with_the_error():
    k = discover("def broken(:\n    pass\n")
    assert k.knobs == [] and k.kernels == [] and "syntax error at line 1" in k.errors[0]


def test_discover_reads_a_path(tmp_path):
    p = tmp_path / "kern.py"
    p.write_text(MODULE_CONSTANTS)
    k = discover(p)
    assert k.path == str(p) and k.get("BLOCK_SIZE").value == 64


@pytest.mark.skipif(not (EXAMPLES / "matmul.py").exists(), reason="examples/kernels/matmul.py not written yet")
def test_example_matmul():
    path = EXAMPLES / "matmul.py"
    text = path.read_text()
    k = discover(path)
    assert k.kernels == ["matmul_kernel"]
    for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"):
        knob = k.get(name)
        assert knob is not None and knob.kind == "constexpr" and knob.where == "module"
        assert knob.line == line_of(text, f"{name} = ")
        assert isinstance(knob.value, int)
    assert k.get("num_warps").name == "NUM_WARPS" and k.get("num_stages").name == "NUM_STAGES"
    # The example accepts GROUP_M but maps programs row-major: no grouping logic.
    assert not k.is_grouped("matmul_kernel")
    assert k.uses_dot("matmul_kernel")
    assert k.grid("matmul_kernel").dims == 1


@pytest.mark.skipif(not (EXAMPLES / "vector_add.py").exists(), reason="examples/kernels/vector_add.py absent")
def test_example_vector_add():
    k = discover(EXAMPLES / "vector_add.py")
    assert k.get("BLOCK_SIZE").kind == "constexpr" and not k.uses_dot()
    assert k.get("num_warps").name == "NUM_WARPS"
