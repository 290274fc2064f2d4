"""CUDA kernels from Python (issue 16): knob discovery and rewriting in CUDA source strings,
torch's generated-file layout and nvcc's errors mapped back to the user's .py line, the build
cache hook, the toolchain verdict and the pre-builder. CPU only, except the ``gpu`` tests.

The compile-error tests run a real nvcc on the file torch's own ``load_inline`` writes (found
through ``CUDA_HOME``, ``PATH``, ``/usr/local/cuda`` or the ``nvidia-cuda-nvcc`` wheel of the
``test`` extra); where there is none they use nvcc output captured from the same source.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from advisors.cuda_knobs import (CudaRewriteError, discover_cuda, launch_threads, needs_cuda, pad_shared_tile,
                                 py_line_for, set_cuda_knob, set_threads_per_block)
from advisors.rewrite import RewriteError
from profd.harness import cuda_build as CB

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "kernels"


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of ``text`` that starts with ``needle`` (else contains it)."""
    for i, ln in enumerate(text.splitlines(), 1):
        if ln.strip().startswith(needle):
            return i
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            return i
    raise AssertionError(f"{needle!r} not in the text")


def changed(a: str, b: str) -> list[tuple[int, str, str]]:
    """(line, old, new) of each changed line (the rewrites never add or remove lines)."""
    al, bl = a.splitlines(), b.splitlines()
    assert len(al) == len(bl), "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True)))
    return [(i + 1, x, y) for i, (x, y) in enumerate(zip(al, bl)) if x != y]


# --------------------------------------------------------------------------- KernelBench-style sources

# As KernelBench level-1 solutions write them (a row softmax-ish and a 2-D tiled kernel).
KB_LITERAL_LAUNCH = '''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

relu_source = """
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void relu_kernel(const float* __restrict__ x, float* __restrict__ out, int size) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < size) {
        out[idx] = fmaxf(x[idx], 0.0f);
    }
}

torch::Tensor relu_cuda(torch::Tensor x) {
    auto size = x.numel();
    auto out = torch::empty_like(x);
    relu_kernel<<<(size + 255) / 256, 256>>>(x.data_ptr<float>(), out.data_ptr<float>(), size);
    return out;
}
"""

relu_cpp_source = "torch::Tensor relu_cuda(torch::Tensor x);"

relu = load_inline(name="relu", cpp_sources=relu_cpp_source, cuda_sources=relu_source,
                   functions=["relu_cuda"], verbose=False, extra_cflags=[""], extra_ldflags=[""])


class ModelNew(nn.Module):
    def forward(self, x):
        return relu.relu_cuda(x)
'''

KB_TEMPLATE = '''
from torch.utils.cpp_extension import load_inline

source = r"""
template <int BLOCK_SIZE>
__global__ void __launch_bounds__(256) scale_kernel(const float* x, float* y, float s, int n) {
    int i = blockIdx.x * BLOCK_SIZE + threadIdx.x;
    if (i < n) y[i] = s * x[i];
}

torch::Tensor scale_cuda(torch::Tensor x, double s) {
    auto y = torch::empty_like(x);
    int n = x.numel();
    int threads = 256;
    int blocks = (n + threads - 1) / threads;
    scale_kernel<256><<<blocks, threads>>>(x.data_ptr<float>(), y.data_ptr<float>(), (float)s, n);
    return y;
}
"""

mod = load_inline("scale", ["torch::Tensor scale_cuda(torch::Tensor x, double s);"], [source],
                  functions=["scale_cuda"])
'''

KB_LITERAL_DIM3 = '''
from torch.utils.cpp_extension import load_inline

transpose_source = """
#define TILE_DIM 32
__global__ void transpose_kernel(const float* in, float* out, int rows, int cols) {
    __shared__ float tile[TILE_DIM][TILE_DIM];
    int x = blockIdx.x * TILE_DIM + threadIdx.x;
    int y = blockIdx.y * TILE_DIM + threadIdx.y;
    if (x < cols && y < rows) tile[threadIdx.y][threadIdx.x] = in[y * cols + x];
    __syncthreads();
    x = blockIdx.y * TILE_DIM + threadIdx.x;
    y = blockIdx.x * TILE_DIM + threadIdx.y;
    if (x < rows && y < cols) out[y * rows + x] = tile[threadIdx.x][threadIdx.y];
}

torch::Tensor transpose_cuda(torch::Tensor in) {
    int rows = in.size(0), cols = in.size(1);
    auto out = torch::empty({cols, rows}, in.options());
    dim3 threads(32, 32);
    dim3 blocks((cols + TILE_DIM - 1) / TILE_DIM, (rows + TILE_DIM - 1) / TILE_DIM);
    transpose_kernel<<<blocks, threads>>>(in.data_ptr<float>(), out.data_ptr<float>(), rows, cols);
    return out;
}
"""

ext = load_inline(name="transpose", cpp_sources="torch::Tensor transpose_cuda(torch::Tensor in);",
                  cuda_sources=transpose_source, functions=["transpose_cuda"])
'''

FSTRING = '''
from torch.utils.cpp_extension import load_inline

BLOCK = 128

def build():
    src = f"""
__global__ void fill_kernel(float* y, int n) {{
    int i = blockIdx.x * {BLOCK} + threadIdx.x;
    if (i < n) y[i] = 1.0f;
}}
torch::Tensor fill_cuda(torch::Tensor y) {{
    const int threads = {BLOCK};
    fill_kernel<<<(y.numel() + threads - 1) / threads, threads>>>(y.data_ptr<float>(), y.numel());
    return y;
}}
"""
    return load_inline(name="fill", cpp_sources="torch::Tensor fill_cuda(torch::Tensor y);", cuda_sources=src,
                       functions=["fill_cuda"])
'''

ONELINE = '''
from torch.utils.cpp_extension import load_inline
cuda_src = "__global__ void k(float* x) {\\n    x[threadIdx.x] = 0.0f;\\n}\\n"
cpp_src = "void launch(torch::Tensor x);"
m = load_inline("k", cpp_src, cuda_src)
'''

CUPY_MODULE = '''
import cupy as cp

code = r"""
#define THREADS 128
extern "C" __global__ void sq(const float* x, float* y, int n) {
    __shared__ float buf[THREADS];
    int i = blockIdx.x * THREADS + threadIdx.x;
    buf[threadIdx.x] = i < n ? x[i] : 0.0f;
    if (i < n) y[i] = buf[threadIdx.x] * buf[threadIdx.x];
}
"""
module = cp.RawModule(code=code)
sq = module.get_function("sq")

def run(x, y):
    n = x.size
    sq(((n + 127) // 128,), (128,), (x, y, cp.int32(n)))
'''


# --------------------------------------------------------------------------- discovery on the examples


def test_examples_sources_and_knobs_at_their_py_lines() -> None:
    text = (EX / "cuda_matmul.py").read_text()
    k = discover_cuda(EX / "cuda_matmul.py")
    names = {s.name: s for s in k.sources}
    assert names["matmul_cuda_source"].role == "cuda" and names["matmul_cpp_source"].role == "cpp"
    assert names["matmul_cuda_source"].line == line_of(text, 'matmul_cuda_source = r"""')
    assert k.kernels == ["matmul_tiled_kernel"]
    tile = k.get("TILE")
    assert tile is not None and tile.kind == "define" and tile.value == 16
    assert tile.line == line_of(text, "#define TILE 16") and tile.text == "#define TILE 16"
    assert set(tile.feeds) == {"block", "grid", "shared"}  # one define sizes all three
    bs = next(s for s in k.shared if s.name == "Bs")
    assert bs.dims == ["TILE", "TILE"] and not bs.padded and bs.bytes == 16 * 16 * 4
    assert bs.line == line_of(text, "__shared__ float Bs")
    (la,) = k.launches
    assert la.kernel == "matmul_tiled_kernel" and (la.grid, la.block) == ("grid", "block")
    assert la.line == line_of(text, "matmul_tiled_kernel<<<")
    assert launch_threads(k, la) == 256
    assert needs_cuda(text) and k.features["load_inline"]


def test_reduce_threads_constant_feeds_block_and_dynamic_smem() -> None:
    text = (EX / "cuda_reduce.py").read_text()
    k = discover_cuda(text)
    t = k.get("threads")
    assert t is not None and t.kind == "constexpr" and t.value == 32 and t.kernel == "row_sum_kernel"
    assert t.line == line_of(text, "const int threads = 32;")
    assert {"block", "smem"} <= set(t.feeds)
    assert k.features["dynamic_smem"] and k.features["restrict"]


def test_kernelbench_example_block_size() -> None:
    text = (EX / "kernelbench_cuda_add.py").read_text()
    k = discover_cuda(text)
    b = k.get("block_size")
    assert b is not None and b.value == 32 and b.line == line_of(text, "const int block_size = 32;")
    assert {"block", "grid"} <= set(b.feeds)  # num_blocks is computed from it
    assert k.get("num_blocks") is None  # computed, not a knob


def test_cupy_rawkernel_python_side_knobs() -> None:
    text = (EX / "cupy_saxpy.py").read_text()
    k = discover_cuda(text)
    assert k.features["cupy"] and k.kernels == ["saxpy"]
    assert [s.name for s in k.sources] == ["saxpy_code"]
    blk, grid = k.get("BLOCK"), k.get("GRID")
    assert blk is not None and blk.where == "python" and blk.value == 256 and blk.line == line_of(text, "BLOCK = 256")
    assert set(blk.feeds) == {"block", "grid"}
    assert grid is not None and grid.value == 32 and grid.feeds == ["grid"]
    (la,) = k.launches
    assert la.where == "python" and launch_threads(k, la) == 256


def test_kernelbench_literal_launch_template_launch_bounds_and_dim3() -> None:
    k = discover_cuda(KB_LITERAL_LAUNCH)
    blk = k.get("relu_kernel.block")
    assert blk is not None and blk.value == 256 and blk.line == line_of(KB_LITERAL_LAUNCH, "relu_kernel<<<")
    assert k.features["restrict"]

    k = discover_cuda(KB_TEMPLATE)
    assert [s.role for s in k.sources] == ["cpp", "cuda"] or {s.role for s in k.sources} == {"cpp", "cuda"}
    tmpl = k.get("scale_kernel<0>")
    assert tmpl is not None and tmpl.kind == "template" and tmpl.value == 256
    lb = k.get("__launch_bounds__(scale_kernel)")
    assert lb is not None and lb.value == 256 and lb.line == line_of(KB_TEMPLATE, "__launch_bounds__(256)")
    th = k.get("threads")
    assert th is not None and th.kind == "local" and {"block", "grid"} <= set(th.feeds)

    k = discover_cuda(KB_LITERAL_DIM3)
    assert k.get("threads.x").value == 32 and k.get("threads.y").value == 32  # type: ignore[union-attr]
    assert k.get("TILE_DIM").value == 32  # type: ignore[union-attr]


def test_fstring_oneline_and_rawmodule_sources() -> None:
    k = discover_cuda(FSTRING)
    (src,) = [s for s in k.sources if s.role == "cuda"]
    assert src.kind == "f-string"
    assert "fill_kernel(float* y, int n) {" in src.text  # {{ undoubled
    assert src.py_line(2) == line_of(FSTRING, "__global__ void fill_kernel")  # line 1 is the empty one after f"""
    # a runtime value of the f-string maps back to the literal
    runtime = src.text.replace("{BLOCK}", "128")
    assert py_line_for(k, runtime, 3) == line_of(FSTRING, "int i = blockIdx.x")

    k = discover_cuda(ONELINE)
    src = next(s for s in k.sources if s.role == "cuda")
    assert not src.exact and src.text.startswith("__global__ void k(float* x) {\n    x[threadIdx.x]")
    assert src.py_line(2) == line_of(ONELINE, "cuda_src =")  # escaped newlines: the literal's line

    k = discover_cuda(CUPY_MODULE)
    assert k.features["cupy"] and k.get("THREADS").value == 128  # type: ignore[union-attr]
    assert k.get("sq.block.x").value == 128  # type: ignore[union-attr]
    assert k.shared[0].bytes == 128 * 4


# --------------------------------------------------------------------------- rewrites


def test_rewrite_tile_define_changes_only_the_define() -> None:
    text = (EX / "cuda_matmul.py").read_text()
    new = set_cuda_knob(text, "TILE", 32)
    assert changed(text, new) == [(line_of(text, "#define TILE"), "#define TILE 16", "#define TILE 32")]
    k = discover_cuda(new)
    # block, grid and both shared tiles follow the define: 32x32 threads, 32x32 tiles
    assert launch_threads(k, k.launches[0]) == 1024
    assert all(s.bytes == 32 * 32 * 4 for s in k.shared)
    with pytest.raises(CudaRewriteError, match="more than 1024"):
        set_cuda_knob(text, "TILE", 64)  # 4096 threads per block
    assert issubclass(CudaRewriteError, RewriteError)


def test_rewrite_threads_constant_in_wrapper() -> None:
    text = (EX / "cuda_reduce.py").read_text()
    new = set_threads_per_block(text, 256)
    ((ln, old, nw),) = changed(text, new)
    assert ln == line_of(text, "const int threads = 32;") and "threads = 256;" in nw
    assert "threads * sizeof(float)" in new  # the dynamic shared buffer follows the constant
    with pytest.raises(CudaRewriteError, match="2048 threads"):
        set_threads_per_block(text, 2048)

    kb = (EX / "kernelbench_cuda_add.py").read_text()
    new = set_cuda_knob(kb, "block_size", 256)
    assert [c[0] for c in changed(kb, new)] == [line_of(kb, "const int block_size = 32;")]
    assert "(size + block_size - 1) / block_size" in new


def test_rewrite_literal_launch_keeps_grid_covering_n() -> None:
    new = set_threads_per_block(KB_LITERAL_LAUNCH, 512)
    ((ln, _, nw),) = changed(KB_LITERAL_LAUNCH, new)
    assert ln == line_of(KB_LITERAL_LAUNCH, "relu_kernel<<<")
    assert "relu_kernel<<<(size + 511) / 512, 512>>>" in nw


def test_rewrite_raises_launch_bounds_with_the_block_and_refuses_template_duplicates() -> None:
    new = set_threads_per_block(KB_TEMPLATE, 512)
    lines = {ln for ln, _, _ in changed(KB_TEMPLATE, new)}
    assert lines == {line_of(KB_TEMPLATE, "int threads = 256;"), line_of(KB_TEMPLATE, "__launch_bounds__(256)")}
    assert "__launch_bounds__(512)" in new
    # the template argument 256 is the block size written a second time: tuning it alone is refused
    with pytest.raises(CudaRewriteError):
        set_cuda_knob(KB_TEMPLATE, "__launch_bounds__(scale_kernel)", 128)  # smaller than the 256-thread block
    # a template argument that is not repeated in the launch config can change
    src = KB_TEMPLATE.replace("<<<blocks, threads>>>", "<<<blocks, threads>>>")
    out = set_cuda_knob(src, "scale_kernel<0>", 128)
    assert "scale_kernel<128><<<blocks, threads>>>" in out


def test_rewrite_literal_dim3_equal_to_tile_define_is_refused() -> None:
    # dim3 threads(32, 32) duplicates TILE_DIM, which sizes the shared tile: changing it alone breaks the kernel
    with pytest.raises(CudaRewriteError, match="TILE_DIM"):
        set_cuda_knob(KB_LITERAL_DIM3, "threads.x", 16)
    new = set_cuda_knob(KB_LITERAL_DIM3, "TILE_DIM", 16)
    assert [c[0] for c in changed(KB_LITERAL_DIM3, new)] == [line_of(KB_LITERAL_DIM3, "#define TILE_DIM")]


def test_rewrite_python_side_cupy_constants_and_fstring_placeholders_are_left_alone() -> None:
    text = (EX / "cupy_saxpy.py").read_text()
    new = set_cuda_knob(text, "GRID", 0)
    assert changed(text, new) == [(line_of(text, "GRID = 32"), "GRID = 32  # 0: one block per BLOCK elements",
                                   "GRID = 0  # 0: one block per BLOCK elements")]
    with pytest.raises(CudaRewriteError, match="1024"):
        set_threads_per_block(text, 2048)
    with pytest.raises(CudaRewriteError, match="no CUDA knob"):
        set_cuda_knob(FSTRING, "BLOCK_SIZE", 256)


def test_pad_shared_tile() -> None:
    text = (EX / "cuda_matmul.py").read_text()
    new = pad_shared_tile(text, "Bs")
    assert changed(text, new) == [(line_of(text, "__shared__ float Bs"), "    __shared__ float Bs[TILE][TILE];",
                                   "    __shared__ float Bs[TILE][TILE + 1];")]
    k = discover_cuda(new)
    assert next(s for s in k.shared if s.name == "Bs").padded
    both = pad_shared_tile(text)
    assert len(changed(text, both)) == 2
    with pytest.raises(CudaRewriteError, match="already padded"):
        pad_shared_tile(new, "Bs")
    with pytest.raises(CudaRewriteError, match="1-D"):
        pad_shared_tile((EX / "cuda_reduce.py").read_text(), "buf")
    vec = KB_LITERAL_DIM3.replace("__syncthreads();", "__syncthreads(); float4 v = reinterpret_cast<float4*>(tile)[0];", 1)
    with pytest.raises(CudaRewriteError, match="vector"):
        pad_shared_tile(vec, "tile")
    with pytest.raises(CudaRewriteError, match="no __shared__"):
        pad_shared_tile(text, "Cs")


# --------------------------------------------------------------------------- compile errors


BROKEN = '''
import torch
from torch.utils.cpp_extension import load_inline

add_source = """
__global__ void add_kernel(const float* a, const float* b, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i] + foo;
}

torch::Tensor add_cuda(torch::Tensor a, torch::Tensor b) {
    auto out = torch::empty_like(a);
    int n = a.numel();
    const int threads = 256;
    const int blocks = (n + threads - 1) / threads;
    add_kernel<<<blocks, threads>>>(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), n);
    return out;
}
"""

add_cpp = "torch::Tensor add_cuda(torch::Tensor a, torch::Tensor b);"

mod = load_inline(name="broken_add", cpp_sources=add_cpp, cuda_sources=add_source, functions=["add_cuda"])
'''

#: nvcc 13.0's output for BROKEN's cuda.cu, captured on this machine (used when no nvcc is found).
CAPTURED_NVCC = """\
[1/3] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -c /tmp/torch_extensions/broken_add/cuda.cu -o cuda.cuda.o
FAILED: cuda.cuda.o
/usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -c /tmp/torch_extensions/broken_add/cuda.cu -o cuda.cuda.o
/tmp/torch_extensions/broken_add/cuda.cu(7): error: identifier "foo" is undefined
      if (i < n) out[i] = a[i] + b[i] + foo;
                                        ^

1 error detected in the compilation of "/tmp/torch_extensions/broken_add/cuda.cu".
ninja: build stopped: subcommand failed.
"""


def _torch_layout(tmp: Path, name: str, cpp: Any, cuda: Any, **kw: Any) -> Path:
    """Let torch's own load_inline write main.cpp / cuda.cu into ``tmp`` and stop before compiling."""
    import torch.utils.cpp_extension as ce

    class Stop(Exception):
        pass

    def stop(*a: Any, **k: Any) -> None:
        raise Stop

    orig = ce._jit_compile
    ce._jit_compile = stop  # type: ignore[assignment]
    try:
        with pytest.raises(Stop):
            ce.load_inline(name=name, cpp_sources=cpp, cuda_sources=cuda, build_directory=str(tmp), **kw)
    finally:
        ce._jit_compile = orig  # type: ignore[assignment]
    return tmp


def _nvcc_compile(nvcc: str, cu: Path) -> str:
    import torch.utils.cpp_extension as ce

    inc = [f"-I{p}" for p in ce.include_paths()]
    p = subprocess.run([nvcc, "-std=c++17", "-c", str(cu), "-o", str(cu.with_suffix(".o")), *inc],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0, "the broken source compiled"
    return p.stdout + p.stderr


def _broken_strings() -> tuple[str, str]:
    ns: dict[str, Any] = {}
    body = BROKEN.split("mod = load_inline")[0].replace("import torch\n", "").replace(
        "from torch.utils.cpp_extension import load_inline\n", "")
    exec(body, ns)
    return ns["add_cpp"], ns["add_source"]


def test_torch_generated_layout_is_what_the_mapper_assumes(tmp_path: Path) -> None:
    cpp, cuda = _broken_strings()
    d = _torch_layout(tmp_path, "broken_add", cpp, cuda, functions=["add_cuda"])
    cu, mc = (d / "cuda.cu").read_text(), (d / "main.cpp").read_text()
    assert CB._prelude_lines(d / "cuda.cu", [cuda], -1) == 3  # torch/types.h, cuda.h, cuda_runtime.h
    assert CB._prelude_lines(d / "main.cpp", [cpp], -1) == 1  # torch/extension.h
    assert CB._prelude_lines(None, [cuda], 3) == 3
    assert cu.split("\n")[3:] == cuda.split("\n") and mc.split("\n")[1] == cpp


@pytest.mark.slow
def test_real_nvcc_error_maps_to_the_py_line(tmp_path: Path) -> None:
    cpp, cuda = _broken_strings()
    d = _torch_layout(tmp_path, "broken_add", cpp, cuda, functions=["add_cuda"])
    nvcc = CB.find_nvcc()
    if nvcc:
        out = _nvcc_compile(nvcc, d / "cuda.cu")
        assert re.search(r"cuda\.cu\(7\): error: identifier \"foo\" is undefined", out), out[-2000:]
        output = f"Error building extension 'broken_add': {out}"
    else:
        output = f"Error building extension 'broken_add': {CAPTURED_NVCC}"
    py = tmp_path / "broken.py"
    py.write_text(BROKEN)
    m = CB.map_compile_error(output, py_path=py, cpp_sources=[cpp], cuda_sources=[cuda], cuda_file=d / "cuda.cu",
                             cpp_file=d / "main.cpp")
    want = line_of(BROKEN, "+ foo;")
    assert m.line == want
    assert m.paragraph.startswith(f"broken.py:{want}: nvcc: identifier \"foo\" is undefined")
    assert "`add_source`" in m.paragraph and "line 4 of the string" in m.paragraph and "cuda.cu:7" in m.paragraph
    assert "out[i] = a[i] + b[i] + foo;" in m.paragraph
    assert "\n" not in m.paragraph  # one paragraph


def test_diagnostic_right_after_torchs_prefix_is_found() -> None:
    # torch puts "Error building extension 'x': " before ninja's output; when nvcc's error is its first line
    # (no warnings before it, as on an H200 with torch 2.11) the diagnostic follows the prefix on one line.
    cpp, cuda = _broken_strings()
    out = ("Error building extension 'broken_add': /tmp/b/cuda.cu(7): error: identifier \"foo\" is undefined\n"
           "      if (i < n) out[i] = a[i] + b[i] + foo;\n")
    m = CB.map_compile_error(out, py_source=BROKEN, py_path="broken.py", cpp_sources=[cpp], cuda_sources=[cuda])
    assert m.line == line_of(BROKEN, "+ foo;") and m.paragraph.startswith(f"broken.py:{m.line}: nvcc: identifier")


def test_cpp_wrapper_error_and_ptxas_and_undefined_symbol() -> None:
    cpp = "torch::Tensor add_cuda(torch::Tensor a, torch::Tensor b);\nint oops() { return undefined_thing; }"
    src = BROKEN.replace('add_cpp = "torch::Tensor add_cuda(torch::Tensor a, torch::Tensor b);"',
                         'add_cpp = """torch::Tensor add_cuda(torch::Tensor a, torch::Tensor b);\n'
                         'int oops() { return undefined_thing; }"""')
    # g++'s form, as ninja prints it for main.cpp (line 3 = prelude + line 2 of the string)
    out = ("Error building extension 'broken_add': [2/3] c++ -MMD -MF main.o.d -c /tmp/x/main.cpp -o main.o\n"
           "FAILED: main.o\n/tmp/x/main.cpp: In function 'int oops()':\n"
           "/tmp/x/main.cpp:3:21: error: 'undefined_thing' was not declared in this scope\n")
    m = CB.map_compile_error(out, py_source=src, py_path="k.py", cpp_sources=[cpp], cuda_sources=[])
    assert m.line == line_of(src, "int oops()")
    assert m.paragraph.startswith(f"k.py:{m.line}: g++: 'undefined_thing' was not declared in this scope")
    p = CB.map_compile_error("ptxas error   : Entry function '_Z3fooPf' uses too much shared data (0x10000 bytes, "
                             "0xc000 max)\n", py_path="k.py")
    assert "too much shared data" in p.paragraph and "TILE" in p.paragraph
    u = CB.map_compile_error("ImportError: /c/x.so: undefined symbol: _Z8add_cudaN2at6TensorES0_", py_path="k.py")
    assert "undefined symbol" in u.paragraph and "cpp_sources" in u.paragraph


# --------------------------------------------------------------------------- build hook, toolchain, pre-builder


@pytest.fixture
def fake_jit(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch's real load_inline, with the compile step replaced: 'builds' by touching <name>.so,
    or fails the way torch does (RuntimeError with ninja's output) when the source says foo."""
    import types

    import torch.utils.cpp_extension as ce

    builds: list[str] = []

    def jit(name: str, sources: list[str], *a: Any, **kw: Any) -> Any:
        bdir = Path(a[5] if len(a) > 5 else kw.get("build_directory"))  # type: ignore[arg-type]
        bdir = Path(sources[0]).parent
        cu = [s for s in sources if s.endswith(".cu")]
        if cu and "+ foo;" in Path(cu[0]).read_text():
            raise RuntimeError(f"Error building extension '{name}': {CAPTURED_NVCC.replace('/tmp/torch_extensions/broken_add', str(bdir))}")
        so = bdir / f"{name}.so"
        if not so.exists():
            builds.append(name)
            so.write_text("")
        return types.SimpleNamespace(__name__=name)

    monkeypatch.setattr(ce, "_jit_compile", jit)
    return builds


def test_build_hook_caches_by_source_hash(tmp_path: Path, fake_jit: list[str]) -> None:
    import torch.utils.cpp_extension as ce

    hook = CB.install_build_hook(tmp_path / "cache", cupy=False)
    try:
        cpp, cuda = _broken_strings()
        good = cuda.replace(" + foo;", ";")
        m1 = ce.load_inline(name="add", cpp_sources=cpp, cuda_sources=good, functions=["add_cuda"])
        m2 = ce.load_inline(name="add", cpp_sources=cpp, cuda_sources=good, functions=["add_cuda"])
        m3 = ce.load_inline(name="add", cpp_sources=cpp, cuda_sources=good.replace("256", "512"),
                            functions=["add_cuda"])
        assert m1.__name__ == m2.__name__ != m3.__name__  # one unique extension name per hash
        assert m1.__name__.startswith("add_")
        assert [r.cache_hit for r in hook.records] == [False, True, False]
        assert len(fake_jit) == 2
        assert Path(hook.records[0].build_directory).parent == tmp_path / "cache"
        s = hook.summary()
        assert s["cache_hits"] == 1 and s["cache_misses"] == 2 and s["build_seconds"] >= 0
        # a second hook (a fork of a warm worker that had one) records its own builds, once
        again = CB.install_build_hook(tmp_path / "cache", cupy=False)
        ce.load_inline(name="add", cpp_sources=cpp, cuda_sources=good, functions=["add_cuda"])
        assert [r.cache_hit for r in again.records] == [True] and len(hook.records) == 3
    finally:
        hook.uninstall()


def test_build_hook_maps_errors_to_the_user_line(tmp_path: Path, fake_jit: list[str]) -> None:
    py = tmp_path / "broken.py"
    py.write_text(BROKEN)
    # no py_path: the hook finds the user's file from the caller of load_inline
    hook = CB.install_build_hook(tmp_path / "cache", cupy=False)
    try:
        ns: dict[str, Any] = {"__file__": str(py)}
        with pytest.raises(CB.CudaBuildError) as ei:
            exec(compile(BROKEN, str(py), "exec"), ns)
        want = line_of(BROKEN, "+ foo;")
        assert ei.value.line == want and str(ei.value).startswith(f"broken.py:{want}: nvcc:")
        # torch inserts its prelude into the lists it gets: the hook must map with the user's own strings
        assert "in cuda_sources (`add_source`), line 4 of the string; cuda.cu:7" in str(ei.value)
        assert isinstance(ei.value, RuntimeError)
        (rec,) = hook.records
        assert not rec.ok and rec.line == want and not rec.cache_hit
    finally:
        hook.uninstall()


def test_toolchain_status_verdicts(tmp_path: Path) -> None:
    empty = {"PATH": str(tmp_path)}
    no = lambda: (False, "")  # noqa: E731
    yes = lambda: (True, "NVIDIA H200")  # noqa: E731
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not Path(p, "nvidia").exists()]
    real = CB.find_nvcc
    try:
        CB.find_nvcc = lambda env=None: None  # type: ignore[assignment]
        s = CB.cuda_toolchain_status(empty, gpu_probe=no)
        assert not s.ok and s.verdict == "needs a CUDA toolkit and GPU; found neither"
        s = CB.cuda_toolchain_status(empty, gpu_probe=yes)
        assert not s.ok and "found the GPU (NVIDIA H200) but no nvcc" in s.verdict
        fake = tmp_path / "nvcc"
        fake.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
        fake.chmod(0o755)
        CB.find_nvcc = lambda env=None: str(fake)  # type: ignore[assignment]
        s = CB.cuda_toolchain_status(empty, gpu_probe=no)
        assert not s.ok and s.verdict.endswith("but no CUDA GPU") and s.nvcc_version == "release 13.0, V13.0.88"
        s = CB.cuda_toolchain_status(empty, gpu_probe=yes)
        assert s.ok and s.verdict == ""
    finally:
        CB.find_nvcc = real  # type: ignore[assignment]
        sys.path[:] = saved


def test_static_load_inline_calls_of_the_examples() -> None:
    calls, skipped = CB.static_load_inline_calls((EX / "kernelbench_cuda_add.py").read_text())
    assert not skipped and len(calls) == 1
    c = calls[0]
    assert c["name"] == "elementwise_add" and c["functions"] == ["elementwise_add_cuda"]
    assert "const int block_size = 32;" in c["cuda_sources"]
    calls, skipped = CB.static_load_inline_calls(FSTRING)
    assert calls and "{BLOCK}" not in calls[0]["cuda_sources"] and "* 128 +" in calls[0]["cuda_sources"]


def test_prebuilder_runs_jobs_in_subprocesses(tmp_path: Path) -> None:
    # On this CPU build of torch load_inline cannot compile CUDA; the pool still answers each
    # submission with a BuildResult (here: failed, with torch's reason), never an exception.
    good = tmp_path / "t.py"
    good.write_text((EX / "kernelbench_cuda_add.py").read_text())
    nothing = tmp_path / "n.py"
    nothing.write_text("x = 1\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with CB.PreBuilder(tmp_path / "cache", max_jobs=2, env=env, timeout_s=300) as pb:
        f1, f2 = pb.submit(good), pb.submit(nothing)
        r1, r2 = f1.result(timeout=300), f2.result(timeout=300)
    assert r2.ok and r2.note == "nothing to build" and r2.builds == []
    import torch

    if torch.version.cuda and CB.find_nvcc():
        assert r1.ok and len(r1.builds) == 1
    else:
        assert not r1.ok and r1.builds and r1.builds[0].name == "elementwise_add"
        assert r1.error_paragraph


def test_cupy_hook_times_first_compile() -> None:
    import types

    class RawKernel:
        def __init__(self, code: str, name: str) -> None:
            self.code, self.name = code, name

        @property
        def kernel(self) -> str:
            return "compiled"

    class RawModule:
        def __init__(self, code: str = "") -> None:
            self.code = code

        def get_function(self, name: str) -> str:
            return f"fn:{name}"

    fake = types.SimpleNamespace(RawKernel=RawKernel, RawModule=RawModule)
    hook = CB.BuildHook(Path("/nonexistent"))
    assert hook.install_cupy(fake)
    k = fake.RawKernel("code", "saxpy")
    assert k.kernel == "compiled" and k.kernel == "compiled"
    assert fake.RawModule(code="x").get_function("sq") == "fn:sq"
    assert [(r.kind, r.name) for r in hook.records] == [("cupy", "saxpy"), ("cupy", "sq")]


def test_examples_import_without_a_gpu_where_they_build_lazily() -> None:
    # cuda_matmul / cuda_reduce / cupy_saxpy build on first call: importing works on a CPU-only machine.
    code = textwrap.dedent("""
        import importlib.util, sys
        for name in ("cuda_matmul", "cuda_reduce", "cupy_saxpy"):
            spec = importlib.util.spec_from_file_location(name, sys.argv[1] + "/" + name + ".py")
            m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
            assert callable(m.kernel) and callable(m.reference)
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code, str(EX)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr


@pytest.mark.gpu
def test_examples_build_and_are_correct_on_a_gpu(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available() or not CB.cuda_toolchain_status(check_torch=True).ok:
        pytest.skip("needs a CUDA GPU, nvcc and a CUDA build of torch")
    import importlib.util

    hook = CB.install_build_hook(tmp_path / "cache", cupy=True)
    try:
        for name in ("cuda_matmul", "cuda_reduce"):
            spec = importlib.util.spec_from_file_location(name, EX / f"{name}.py")
            m = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(m)  # type: ignore[union-attr]
            for shape in m.SHAPES[:2]:
                inputs = m.get_inputs(**shape)
                torch.testing.assert_close(m.kernel(*inputs), m.reference(*inputs), rtol=1e-4, atol=1e-3)
        assert all(r.ok for r in hook.records) and hook.records
    finally:
        hook.uninstall()


CUDA_EXAMPLES = sorted(p for p in EX.glob("*.py") if any(w in p.read_text() for w in ("load_inline", "RawKernel")))


def test_the_cuda_examples_exist() -> None:
    names = {p.name for p in CUDA_EXAMPLES}
    assert {"cuda_matmul.py", "cuda_reduce.py", "kernelbench_cuda_add.py", "cupy_saxpy.py"} <= names


@pytest.mark.parametrize("path", CUDA_EXAMPLES, ids=[p.stem for p in CUDA_EXAMPLES])
def test_cuda_example_is_a_self_contained_deliberately_flawed_target(path: Path) -> None:
    import ast

    source = path.read_text()
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or ""
    assert "Deliberate defect:" in doc and "What profd should find" in doc
    for node in tree.body:  # module level: torch only (cupy is imported where it is used)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert all(m.split(".")[0] == "torch" for m in mods), f"{path.name} imports {mods} at module level"
    assert 'if __name__ == "__main__":' in source
    assert 'DEVICE = "cuda" if torch.cuda.is_available() else "cpu"' in source
    k = discover_cuda(source)
    assert k.needs_cuda and k.kernels and k.launches
    tunable = [x for x in k.knobs if x.kind != "shared_array" and ("block" in x.feeds or "grid" in x.feeds)]
    assert tunable, f"{path.name}: no block/grid knob profd can change"
    kb = callable_names(tree)
    assert {"get_inputs"} <= kb and ({"kernel", "reference"} <= kb or {"Model", "ModelNew"} <= kb)


def callable_names(tree: Any) -> set[str]:
    import ast

    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
