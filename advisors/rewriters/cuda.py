"""Rewrites of CUDA C++ targets (load_inline, CuPy): threads per block, tile defines, shared padding.

Knobs come from :mod:`advisors.cuda_knobs`, which reads the CUDA source strings of the user's .py
file; every rewrite changes a value where it is defined (a ``#define``, a ``const int threads``, a
CuPy launch constant) so the grid stays computed from it. Candidates are proposed in a fixed
order -- padding a shared tile (bank conflicts) first, a fixed block count below the SM count
next, then threads per block, then the tile size, then other block counts -- and each is judged
like any other advisor's.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from advisors.base import TuneContext, source_digest, unified_diff
from advisors.cuda_knobs import (CudaKnobs, CudaRewriteError, discover_cuda, fixed_block_counts, launch_threads,
                                 needs_cuda, pad_shared_tile, set_cuda_knob, set_threads_per_block, tile_knobs)
from profd.model import Candidate

#: Threads per block to try, most promising first for memory-bound kernels.
THREADS = (256, 512, 128, 1024, 64)
#: Square tile sizes for a tile ``#define`` that sizes both the block and the shared tile.
TILES = (32, 16, 8)
#: Blocks per SM to try for a fixed block count (a grid-stride loop's ``GRID = 32``), best first.
BLOCKS_PER_SM = (4, 8, 2, 16, 1)
#: SMs assumed when the device is unknown (an H100/H200 has 132).
DEFAULT_SMS = 132


class CudaAdvisor:
    """Proposes CUDA launch and tile rewrites for targets whose kernel is CUDA C++."""

    name = "cuda"

    def __init__(self) -> None:
        self.notes: list[str] = []

    def propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        """Up to ``n`` untried rewrites of the current best source."""
        src = ctx.best_source
        if not needs_cuda(src):
            return []
        tried = ctx.tried_sources()
        out: list[Candidate] = []
        spec = ctx.device_spec
        sms = int(getattr(spec, "sm_count", 0) or 0) or DEFAULT_SMS
        for new, why, params in self._moves(src, discover_cuda(src, ctx.path), sms):
            digest = source_digest(new)
            if digest in tried or any(source_digest(c.source) == digest for c in out):
                continue
            out.append(Candidate(id=f"cuda-{digest[:8]}", source=new, advisor=self.name, rationale=why,
                                 params=params, diff=unified_diff(ctx.original_source, new, _name(ctx.path))))
            if len(out) >= n:
                break
        return out

    def _moves(self, src: str, k: CudaKnobs, sms: int = DEFAULT_SMS) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for arr in k.shared:
            if len(arr.dims) == 2 and not arr.padded:
                try:
                    yield (pad_shared_tile(src, arr.name), f"pad __shared__ {arr.name}[{arr.dims[0]}][{arr.dims[1]}] to "
                           f"[{arr.dims[1]} + 1] at line {arr.line} (bank conflicts on the column walk)",
                           {"pad": arr.name})
                except CudaRewriteError:
                    pass
        grid_moves = list(self._grid_moves(src, k, sms))
        late: list[tuple[str, str, dict[str, Any]]] = []
        for move, cur in grid_moves:
            if cur < sms:
                yield move  # fewer blocks than SMs: most of the chip idles, a worse defect than the block
            else:
                late.append(move)
        tiles = tile_knobs(k)
        for launch in k.launches:
            if any(t.kernel in ("", launch.kernel) for t in tiles):
                continue  # the tile define sets this launch's block: moved below, with the tile
            cur = launch_threads(k, launch)
            for threads in THREADS:
                if cur is not None and threads == cur:
                    continue
                try:
                    new = set_threads_per_block(src, threads, kernel=launch.kernel)
                except CudaRewriteError:
                    continue
                yield (new, f"{launch.kernel}: threads per block {cur if cur is not None else '?'} -> {threads} "
                       f"(changed where the block size is defined; the grid is computed from it)",
                       {"threads": threads, "kernel": launch.kernel})
        for t in tiles:
            for size in TILES:
                if size == t.value:
                    continue
                try:
                    new = set_cuda_knob(src, t.name, size, line=t.line)
                except CudaRewriteError:
                    continue
                spelled = f"#define {t.name} {t.value}" if t.kind == "define" else f"constexpr {t.name} = {t.value}"
                yield new, f"{spelled} -> {size} at line {t.line} (block and shared tile)", {t.name: size}
        yield from late

    @staticmethod
    def _grid_moves(src: str, k: CudaKnobs, sms: int) -> Iterator[tuple[tuple[str, str, dict[str, Any]], int]]:
        """A fixed block count (a constant that feeds the grid and not the block, such as a
        grid-stride loop's ``GRID = 32``) set to multiples of the SM count, where it is defined."""
        for knob in fixed_block_counts(k):
            cur = knob.value
            for per in BLOCKS_PER_SM:
                blocks = per * sms
                if blocks == cur:
                    continue
                try:
                    new = set_cuda_knob(src, knob.name, blocks, line=knob.line)
                except CudaRewriteError:
                    continue
                yield ((new, f"{knob.name} = {cur} blocks at line {knob.line} -> {blocks} ({per} per SM on {sms} SMs; "
                        f"the launch's grid is computed from it)", {knob.name: blocks}), cur)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1] if path else "kernel.py"


def _build(table: Any) -> Optional[CudaAdvisor]:
    return CudaAdvisor()


from advisors.rewriters import AdvisorSpec  # noqa: E402  (the registry's type)

ADVISOR = AdvisorSpec(name="cuda", summary="CUDA C++ rewrites (threads per block, tile defines, shared-tile "
                      "padding) for load_inline / CuPy targets; needs no LLM", build=_build, order=15)
