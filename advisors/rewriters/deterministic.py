"""The deterministic advisor: a kernel engineer's moves, no LLM needed.

Candidates come in this order, each step proposing only what has not been
measured yet:

1. structural rewrites a parameter cannot express -- grouped ("swizzled")
   program order for a tiled matmul-like kernel that walks its tiles row-major;
2. for tiled kernels, a short list of tile configurations known to work well
   (the shapes Triton's matmul tutorial autotunes over), filtered by the shared
   memory the device has;
3. a directed local search around the best so far: the knobs the diagnosis
   names first, in the direction it names, then every other knob one step
   (block sizes x2 / /2, warps x2 / /2, stages +1 / -1, group size), so that an
   accepted step is followed by another in the same direction.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from advisors.base import TuneContext, source_digest, unified_diff
from advisors.knobs import Knob, Knobs, discover
from advisors.rewrite import RewriteError, insert_grouped_order, set_knobs
from profd.model import Candidate

_POW2 = re.compile(r"(BLOCK|TILE|^B[MNK]$|_SIZE$|XBLOCK|RBLOCK)", re.I)
_WARPS = (1, 2, 4, 8, 16)
_MAX_BLOCK_1D = 1 << 16
_MAX_TILE = 256

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): Triton's matmul tutorial configs
# for Hopper/Ampere plus the 128x128x64 one, largest reuse first.
TILE_PRESETS = [
    (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 3), (128, 128, 32, 4, 4),
    (64, 256, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (128, 32, 32, 4, 4),
    (64, 64, 32, 4, 4), (64, 32, 32, 2, 5), (32, 64, 32, 2, 5),
]
# Square-ish tiles for 2-D kernels without tl.dot (transposes, stencils, copies).
TILE_2D_PRESETS = [(32, 32, 4), (64, 64, 8), (32, 64, 4), (64, 32, 4), (16, 64, 4), (128, 32, 8), (16, 16, 2)]


@dataclass
class _Roles:
    """Which knobs play which part in the kernel."""

    bm: Optional[Knob] = None
    bn: Optional[Knob] = None
    bk: Optional[Knob] = None
    group: Optional[Knob] = None
    warps: Optional[Knob] = None
    stages: Optional[Knob] = None


def _roles(k: Knobs) -> _Roles:
    r = _Roles()
    for knob in k.knobs:
        up = (knob.param or knob.name).upper()
        if knob.kind == "num_warps":
            r.warps = r.warps or knob
        elif knob.kind == "num_stages":
            r.stages = r.stages or knob
        elif up in ("BLOCK_M", "BLOCK_SIZE_M", "BM", "TILE_M"):
            r.bm = r.bm or knob
        elif up in ("BLOCK_N", "BLOCK_SIZE_N", "BN", "TILE_N"):
            r.bn = r.bn or knob
        elif up in ("BLOCK_K", "BLOCK_SIZE_K", "BK", "TILE_K"):
            r.bk = r.bk or knob
        elif up.startswith("GROUP"):
            r.group = r.group or knob
    return r


def _int(v: Any) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class DeterministicAdvisor:
    """Proposes knob changes and rewrites from findings and a local search."""

    name = "deterministic"

    def __init__(self, smem_limit_bytes: Optional[int] = None, elem_bytes: int = 2) -> None:
        self.smem_limit = smem_limit_bytes
        self.elem_bytes = elem_bytes
        self.notes: list[str] = []

    # ------------------------------------------------------------------ public

    def propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        """Up to ``n`` untried candidates, most promising first."""
        tried = ctx.tried_sources()
        out: list[Candidate] = []
        seen: set[str] = set()
        for cand in self._moves(ctx):
            d = source_digest(cand.source)
            if d in tried or d in seen:
                continue
            seen.add(d)
            cand.diff = unified_diff(ctx.original_source, cand.source, _name(ctx.path))
            cand.id = f"det-{d[:10]}"
            out.append(cand)
            if len(out) >= n:
                break
        return out

    # ------------------------------------------------------------------ generation

    def _smem_limit(self, ctx: TuneContext) -> int:
        if self.smem_limit:
            return self.smem_limit
        spec = ctx.device_spec
        return int(getattr(spec, "max_shared_mem_per_block_bytes", 0) or 232448)

    def _fits(self, ctx: TuneContext, bm: int, bn: int, bk: int, stages: int) -> bool:
        # Triton keeps `stages` copies of the A and B tiles in shared memory.
        return stages * (bm * bk + bk * bn) * self.elem_bytes <= self._smem_limit(ctx)

    def _moves(self, ctx: TuneContext) -> Iterable[Candidate]:
        src = ctx.best_source
        knobs = discover(src, ctx.path)
        roles = _roles(knobs)
        tiled_dot = knobs.uses_dot() and roles.bm is not None and roles.bn is not None
        # 1. structural: grouped program order for row-major tiled matmuls
        if tiled_dot and not knobs.is_grouped():
            try:
                new, kname = insert_grouped_order(src)
                values = {roles.group.name: 8} if roles.group is not None else {}
                if roles.group is not None:
                    new = set_knobs(new, values, {roles.group.name: roles.group.line})
                yield Candidate(id="", source=new, advisor=self.name, params={"program_order": "grouped", **values},
                                rationale=f"{kname} maps program ids to C tiles row-major, so the programs in flight "
                                          "read different panels of B and L2 reuse is poor; insert grouped "
                                          "(swizzled) program order with a group of 8 rows of tiles")
            except RewriteError as e:
                self.notes.append(f"grouped-order rewrite not applicable: {e}")
        # 2. presets for tiled kernels -- until one wins: then the budget is better spent on
        # the local search around it than on the remaining, mostly worse, presets.
        preset_won = any(a.verdict.accepted and a.candidate.params.get("preset") for a in ctx.history)
        if tiled_dot and not preset_won:
            yield from self._dot_presets(ctx, src, roles)
        elif roles.bm is not None and roles.bn is not None and not tiled_dot and not preset_won:
            yield from self._tile2d_presets(src, roles)
        # 3. directed local search around the best
        yield from self._local(ctx, src, knobs, roles, tiled_dot)

    def _make(self, src: str, setting: list[tuple[Optional[Knob], Any]], why: str) -> Optional[Candidate]:
        values = {k.name: v for k, v in setting if k is not None and k.value != v}
        if not values:
            return None
        try:
            new = set_knobs(src, values, {k.name: k.line for k, _ in setting if k is not None})
        except RewriteError as e:
            self.notes.append(str(e))
            return None
        return Candidate(id="", source=new, advisor=self.name, params=values, rationale=why)

    def _dot_presets(self, ctx: TuneContext, src: str, r: _Roles) -> Iterable[Candidate]:
        for bm, bn, bk, w, s in TILE_PRESETS:
            if r.bk is not None and r.bk.kind == "autotune":
                continue
            if not self._fits(ctx, bm, bn, bk, s):
                continue
            setting = [(r.bm, bm), (r.bn, bn), (r.bk, bk), (r.warps, w), (r.stages, s)]
            c = self._make(src, setting, f"tile {bm}x{bn}x{bk}, {w} warps, {s} stages: a proven matmul "
                                         "configuration with more reuse per byte loaded than the current tiles")
            if c:
                c.params["preset"] = True
                yield c

    def _tile2d_presets(self, src: str, r: _Roles) -> Iterable[Candidate]:
        for bm, bn, w in TILE_2D_PRESETS:
            setting = [(r.bm, bm), (r.bn, bn), (r.warps, w)]
            c = self._make(src, setting, f"{bm}x{bn} tiles with {w} warps: both loads and stores stay "
                                         "contiguous along a tile row")
            if c:
                c.params["preset"] = True
                yield c

    def _lever_order(self, ctx: TuneContext, knobs: Knobs) -> list[tuple[Knob, str]]:
        """(knob, direction) pairs named by the findings, most valuable finding first."""
        out: list[tuple[Knob, str]] = []
        for f in sorted(ctx.findings, key=lambda f: -f.estimated_gain_pct):
            for lever in f.levers:
                k = knobs.get(lever.name)
                if k is None and lever.name.lower() in ("num_warps", "warps"):
                    k = next(iter(knobs.of_kind("num_warps")), None)
                if k is None and lever.name.lower() in ("num_stages", "stages"):
                    k = next(iter(knobs.of_kind("num_stages")), None)
                if k is not None and lever.direction in ("increase", "decrease"):
                    out.append((k, lever.direction))
        return out

    def _steps(self, knob: Knob, direction: Optional[str], tiled_dot: bool) -> list[Any]:
        v = _int(knob.value)
        if v is None:
            return []
        if knob.kind == "num_warps":
            ups, downs = [w for w in _WARPS if w > v][:1], [w for w in reversed(_WARPS) if w < v][:1]
        elif knob.kind == "num_stages":
            ups, downs = ([v + 1] if v < 6 else []), ([v - 1] if v > 1 else [])
        elif (knob.param or knob.name).upper().startswith("GROUP"):
            ups, downs = [g for g in (4, 8, 16) if g > v][:1], [g for g in (16, 8, 4, 1) if g < v][:1]
        elif _POW2.search(knob.param or knob.name):
            cap = _MAX_TILE if tiled_dot else _MAX_BLOCK_1D
            # A long stride first (x4), then the fine step: fewer evaluations to the top.
            ups = [u for u in ((v * 4, v * 2) if not tiled_dot else (v * 2,)) if u <= cap]
            downs = [v // 2] if v >= 2 and v // 2 >= (16 if tiled_dot else 1) else []
        else:
            ups, downs = ([v * 4, v * 2] if v > 0 else []), ([v // 2] if v >= 2 else [])
        if direction == "decrease":
            return downs + ups
        return ups + downs

    def _local(self, ctx: TuneContext, src: str, knobs: Knobs, r: _Roles, tiled_dot: bool) -> Iterable[Candidate]:
        order: list[tuple[Knob, Optional[str]]] = list(self._lever_order(ctx, knobs))
        named = {id(k) for k, _ in order}
        rank = {"constexpr": 0, "block": 0, "num_warps": 1, "num_stages": 2, "autotune": 3}
        rest = sorted((k for k in knobs.knobs if id(k) not in named and _int(k.value) is not None),
                      key=lambda k: rank.get(k.kind, 4))
        order += [(k, None) for k in rest]
        if tiled_dot and r.bm is not None and r.bn is not None:
            # Square tiles move together as well as alone.
            for f in (2, 0.5):
                bm, bn = int(r.bm.value * f), int(r.bn.value * f)
                if 16 <= bm <= _MAX_TILE and 16 <= bn <= _MAX_TILE and self._fits(
                        ctx, bm, bn, _int(r.bk.value) if r.bk else 32, _int(r.stages.value) if r.stages else 2):
                    c = self._make(src, [(r.bm, bm), (r.bn, bn)], f"scale both tile sides by {f:g}: {bm}x{bn}")
                    if c:
                        yield c
        for knob, direction in order:
            for value in self._steps(knob, direction, tiled_dot):
                if tiled_dot and knob.kind == "num_stages" and r.bm and r.bn and not self._fits(
                        ctx, r.bm.value, r.bn.value, _int(r.bk.value) if r.bk else 32, value):
                    continue
                why = (f"{knob.shown()} (line {knob.line}) -> {value}"
                       + (f": the diagnosis says {direction} it" if direction else ": one step of the local search"))
                c = self._make(src, [(knob, value)], why)
                if c:
                    yield c
        # Pairs: a block size with the warps that would fill it.
        blocks = [k for k, _ in order if _POW2.search(k.param or k.name) and k.kind != "num_warps"]
        if r.warps is not None:
            for b, wf in itertools.product(blocks[:2], (2, 0.5)):
                bv, wv = _int(b.value), _int(r.warps.value)
                if bv and wv and int(wv * wf) in _WARPS and bv * wf >= 1 and float(bv * wf).is_integer():
                    c = self._make(src, [(b, int(bv * wf)), (r.warps, int(wv * wf))],
                                   f"{b.name} and num_warps together x{wf:g}: keep work per thread constant")
                    if c:
                        yield c


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1] if path else "kernel.py"


from advisors.rewriters import AdvisorSpec  # noqa: E402  (the registry's type, at the end to keep the module's top unchanged)

ADVISOR = AdvisorSpec(name="deterministic", summary="knob rewrites (tiles, warps, stages, grouped order) from the "
                      "findings; needs no LLM", build=lambda table: DeterministicAdvisor(), order=10)
