"""The CUDA rewriter (advisors/rewriters/cuda.py) on the CUDA examples: consistent rewrites, no repeats."""

from __future__ import annotations

from pathlib import Path

from advisors.base import TuneContext
from advisors.cuda_knobs import discover_cuda, launch_threads
from advisors.rewriters import get
from advisors.rewriters.cuda import CudaAdvisor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kernels"


def _ctx(name: str) -> TuneContext:
    p = EXAMPLES / name
    s = p.read_text()
    return TuneContext(path=str(p), original_source=s, best_source=s, best_median_ms=1.0)


def test_it_is_registered_and_ignores_triton_targets() -> None:
    assert get("cuda") is not None
    assert CudaAdvisor().propose(_ctx("vector_add.py"), 5) == []


def test_the_tiny_block_of_the_reduction_is_raised_where_it_is_defined() -> None:
    cands = CudaAdvisor().propose(_ctx("cuda_reduce.py"), 3)
    assert cands and len({c.source for c in cands}) == len(cands)
    first = discover_cuda(cands[0].source)
    assert [launch_threads(first, launch) for launch in first.launches] == [256]
    # only the definition line changed: one line out, one line in
    changed = [ln for ln in cands[0].diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert len(changed) == 2, changed


def test_the_matmul_gets_its_shared_tile_padded_first() -> None:
    cands = CudaAdvisor().propose(_ctx("cuda_matmul.py"), 4)
    assert "pad __shared__" in cands[0].rationale
    k = discover_cuda(cands[0].source)
    assert any(a.padded for a in k.shared)
    assert any("#define TILE 16 -> 32" in c.rationale for c in cands)


def test_a_fixed_block_count_below_the_sm_count_is_raised_first_where_it_is_defined() -> None:
    """CuPy's saxpy walks its arrays with a grid-stride loop over ``GRID = 32`` blocks: on an
    H200 (132 SMs) 100 SMs idle. The first candidates set GRID to multiples of the device's SM count
    at its line; BLOCK, which sizes the block, is moved by the threads-per-block candidates."""
    from hwspecs import resolve

    ctx = _ctx("cupy_saxpy.py")
    ctx.device_spec = resolve("NVIDIA H200")[0]
    cands = CudaAdvisor().propose(ctx, 12)
    assert [c.params for c in cands[:2]] == [{"GRID": 4 * 132}, {"GRID": 8 * 132}], [c.rationale for c in cands]
    changed = [ln for ln in cands[0].diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert changed == ["-GRID = 32  # 0: one block per BLOCK elements", "+GRID = 528  # 0: one block per BLOCK elements"]
    assert "line 22" in cands[0].rationale and "132 SMs" in cands[0].rationale
    assert any(c.params.get("threads") for c in cands)
    assert not any("BLOCK" in c.params for c in cands)  # the block's size is the threads move's
    # Another device, another count; no device known: an H100/H200's 132.
    ctx.device_spec = resolve("MI300X")[0]
    assert CudaAdvisor().propose(ctx, 1)[0].params == {"GRID": 4 * ctx.device_spec.sm_count}
    ctx.device_spec = None
    assert CudaAdvisor().propose(ctx, 1)[0].params == {"GRID": 528}


def test_kernels_without_a_fixed_block_count_get_no_grid_move() -> None:
    for name in ("cuda_reduce.py", "cuda_matmul.py", "kernelbench_cuda_add.py"):
        assert not any("blocks at line" in c.rationale for c in CudaAdvisor().propose(_ctx(name), 20)), name


def test_the_bench_grid_of_the_cupy_example_moves_its_block_count_too() -> None:
    """bench/cuda_gpu.py's exhaustive grid covers every knob the CUDA advisor moves: for CuPy's
    saxpy, the fixed block count (as written and 1-16 per SM) times the threads per block."""
    import sys

    sys.path.insert(0, str(EXAMPLES.parents[1]))
    from bench.cuda_gpu import grid_sources

    pts = grid_sources((EXAMPLES / "cupy_saxpy.py").read_text())
    assert sorted({p["GRID"] for p, _ in pts}) == [32, 132, 264, 528, 1056, 2112]
    assert len(pts) == 36 and len({src for _, src in pts}) == 36
    for p, src in pts:
        k = discover_cuda(src)
        assert {x.name: x.value for x in k.knobs}["GRID"] == p["GRID"]
        assert [launch_threads(k, launch) for launch in k.launches] == [p["threads"]]


def test_the_triton_advisor_leaves_cuda_targets_to_the_cuda_advisor() -> None:
    """On an H200 the Triton advisor's 'BLOCK = 1024 -> 4096' for CuPy's saxpy (threads per block,
    above CUDA's 1024) failed with CUDA_ERROR_INVALID_VALUE, half of an 8-candidate budget."""
    from advisors.rewriters.deterministic import DeterministicAdvisor

    for name in ("cupy_saxpy.py", "cuda_reduce.py", "cuda_matmul.py", "kernelbench_cuda_add.py"):
        assert DeterministicAdvisor().propose(_ctx(name), 8) == [], name
    assert DeterministicAdvisor().propose(_ctx("vector_add.py"), 2)
