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
