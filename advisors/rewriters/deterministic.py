"""The deterministic advisor: a kernel engineer's moves, no LLM needed.

Candidates come in this order, each step proposing only what has not been measured yet:

1. structural rewrites a parameter cannot express -- grouped ("swizzled") program order for a
   tiled matmul-like kernel that walks its tiles row-major;
2. presets known to be good for the kernel's class on this device: matmul/attention tiles for
   Hopper, MI300 or others (filtered by shared memory and accumulator registers), row-wise
   kernels' warps by row size, elementwise block sizes with the warps to fill them;
3. a local search around the best so far, in the spirit of a pattern search (Kernel Tuner's
   and Helion's): the knobs the diagnosis names first, in the direction it names, then every
   other knob one step, then joint moves (a block size with its warps, both tile sides), all
   under the same constraints, never a configuration already measured or known from the cache.

Knobs come from advisors.knobs (the value followed to where it is defined) and are changed by
advisors.rewrite at that site, so a candidate's grid and launch always agree. Values the source
computes from sizes are taken from the run-time record when the tune loop merged one
(``ctx.knobs.runtime``). With ``ctx.cache`` (``Store.tune_cache(device, shape)``) the results of
earlier sessions on the same source, device and shape are reused: known failures and losers
are not proposed again, known winners come first.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Protocol

from advisors.base import TuneContext, source_digest, unified_diff
from advisors.knobs import _BLOCKISH, Knob, Knobs, discover
from advisors.rewrite import RewriteError, apply_settings, insert_grouped_order
from profd.model import Candidate

_POW2 = re.compile(r"(BLOCK|TILE|^B[MNK]$|_SIZE$|XBLOCK|RBLOCK)", re.I)
#: Names that say "tile" outright; ``_SIZE$`` alone also matches problem sizes (``VOCAB_SIZE``).
_TILE_NAME = re.compile(r"(BLOCK|TILE)", re.I)
_WARPS = (1, 2, 4, 8, 16, 32)
_MAX_BLOCK_1D = 1 << 16
_MAX_TILE = 256
#: fp32 accumulator registers per thread a tile may need (of 255): beyond it, spills.
_MAX_ACC_REGS = 128

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), best first for each device family.
HOPPER_TILES = [
    (128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (128, 128, 64, 4, 4), (128, 128, 64, 8, 4),
    (64, 256, 32, 4, 4), (256, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 3),
]
MI300_TILES = [  # AMD: LDS 64 KiB, software pipelining with 2 stages, 256-wide tiles for 304 CUs
    (256, 256, 64, 8, 2), (256, 128, 64, 8, 2), (128, 256, 64, 8, 2), (128, 128, 64, 4, 2),
    (128, 128, 32, 4, 2), (256, 256, 32, 8, 2), (64, 128, 64, 4, 2),
]
# Triton's matmul tutorial configs for Ampere and others.
TILE_PRESETS = [
    (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 3), (128, 128, 32, 4, 4),
    (64, 256, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (128, 32, 32, 4, 4),
    (64, 64, 32, 4, 4), (64, 32, 32, 2, 5), (32, 64, 32, 2, 5),
]
# Square-ish tiles for 2-D kernels without tl.dot (transposes, stencils, copies).
TILE_2D_PRESETS = [(32, 32, 4), (64, 64, 8), (32, 64, 4), (64, 32, 4), (16, 64, 4), (128, 32, 8), (16, 16, 2)]
# Elementwise: (BLOCK, num_warps), wide blocks with enough warps to issue their loads.
ELEMENTWISE_PRESETS = [(1024, 4), (2048, 8), (4096, 8), (1024, 8), (2048, 4), (4096, 4)]
#: A size step this much slower than the best (or more) closes its direction for the session.
DEAD_END_SPEEDUP = 0.8


def rowwise_warps(block: int) -> list[int]:
    """Warps for a program that reduces one row of ``block`` elements, most likely first."""
    if block >= 32768:
        return [32, 16]
    if block >= 8192:
        return [16, 32, 8]
    if block >= 2048:
        return [8, 16, 4]
    if block >= 512:
        return [4, 8, 2]
    return [2, 4, 1]


class TuneCache(Protocol):
    """What earlier sessions measured for a source on this device and shape."""

    def get(self, source_digest: str) -> Optional[tuple[Optional[float], str]]:
        """(median ms or None, verdict: "accepted", "slower", or a failure status) or None."""
        ...


@dataclass
class _Roles:
    """Which knobs play which part in the kernel."""

    bm: Optional[Knob] = None
    bn: Optional[Knob] = None
    bk: Optional[Knob] = None
    group: Optional[Knob] = None
    warps: Optional[Knob] = None
    stages: Optional[Knob] = None
    block: Optional[Knob] = None  # the 1-D block of an elementwise or row-wise kernel


def _tunable(k: Knob) -> bool:
    return k.site != "param"


def _roles(k: Knobs, kernel: str = "") -> _Roles:
    r = _Roles()
    for knob in k._for_kernel(kernel):
        if not _tunable(knob):
            continue
        up = (knob.param or knob.name).upper()
        if knob.kind == "num_warps" or up == "NUM_WARPS":
            r.warps = r.warps or knob
        elif knob.kind == "num_stages" or up == "NUM_STAGES":
            r.stages = r.stages or knob
        elif up in ("BLOCK_M", "BLOCK_SIZE_M", "BM", "TILE_M"):
            r.bm = r.bm or knob
        elif up in ("BLOCK_N", "BLOCK_SIZE_N", "BN", "TILE_N"):
            r.bn = r.bn or knob
        elif up in ("BLOCK_K", "BLOCK_SIZE_K", "BK", "TILE_K"):
            r.bk = r.bk or knob
        elif up.startswith("GROUP"):
            r.group = r.group or knob
        elif _POW2.search(up) and knob.kind in ("constexpr", "block", "autotune"):
            # A tile name wins over a problem size that merely ends like one: unsloth's cross-entropy
            # passes VOCAB_SIZE before BLOCK_SIZE, and the row's block is BLOCK_SIZE.
            if r.block is None or (_TILE_NAME.search(up) and not _TILE_NAME.search(r.block.param or r.block.name)):
                r.block = knob
    return r


def _int(v: Any) -> Optional[int]:
    if isinstance(v, list):
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _cur(k: Optional[Knob]) -> Optional[int]:
    """The value in effect (static, or the one seen at run time; an autotune pick)."""
    if k is None:
        return None
    if isinstance(k.value, list):
        return _int(k.runtime) if k.runtime is not None else _int(k.value[0]) if k.value else None
    return _int(k.current)


def device_family(spec: Any) -> str:
    """``hopper``, ``mi300`` or ``other`` from a hwspecs DeviceSpec (or None)."""
    if spec is None:
        return "other"
    cc = str(getattr(spec, "compute_capability", ""))
    if cc.startswith("9."):
        return "hopper"
    if cc.startswith("gfx94") or cc.startswith("gfx95"):
        return "mi300"
    return "other"


class DeterministicAdvisor:
    """Proposes knob changes and rewrites from presets, findings and a local search."""

    name = "deterministic"

    def __init__(self, smem_limit_bytes: Optional[int] = None, elem_bytes: int = 2,
                 cache: Optional[TuneCache] = None) -> None:
        self.smem_limit = smem_limit_bytes
        self.elem_bytes = elem_bytes
        self.cache = cache
        self.notes: list[str] = []

    # ------------------------------------------------------------------ public

    def propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        """Up to ``n`` untried candidates, most promising first (none for a CUDA C++ target without
        a Triton kernel: those are the CUDA advisor's, which knows a block's thread limit)."""
        tried = ctx.tried_sources()
        cache = getattr(ctx, "cache", None) or self.cache
        out: list[Candidate] = []
        known_good: list[Candidate] = []
        seen: set[str] = set()
        knobs = self._knobs(ctx, ctx.best_source)
        dead = self._dead_ends(ctx, knobs)
        for cand in self._moves(ctx, knobs):
            d = source_digest(cand.source)
            if d in tried or d in seen:
                continue
            past = next((f"{n} = {x}" for n, x, up in dead if isinstance(cand.params.get(n), int)
                         and (cand.params[n] >= x if up else cand.params[n] <= x)), None)
            if past is not None:
                seen.add(d)
                self.notes.append(f"not proposed: {cand.params} -- beyond {past}, measured much slower this session")
                continue
            seen.add(d)
            hit = cache.get(d) if cache is not None else None
            if hit is not None and hit[1] != "accepted":
                self.notes.append(f"skipped {cand.params}: measured before ({hit[1]})")
                continue
            cand.diff = unified_diff(ctx.original_source, cand.source, _name(ctx.path))
            cand.id = f"det-{d[:10]}"
            (known_good if hit is not None else out).append(cand)
            if len(out) + len(known_good) >= n:
                break
        return (known_good + out)[:n]

    def _dead_ends(self, ctx: TuneContext, knobs: Knobs) -> list[tuple[str, int, bool]]:
        """(size knob, value, upward) for each single size step this session measured at least
        ``1 / DEAD_END_SPEEDUP`` times slower than the best it was screened against: sizes at or
        beyond it in that direction are not proposed again. On the softmax example (H200) a
        16384-element block was 0.73x of the 4096 one; the search then spent 15 s of a 50 s session
        on 32768 (a 10 s compile) and 16384 again from later bests, and ended at 0.94 of its grid.
        ``knobs``: the best's."""
        out: list[tuple[str, int, bool]] = []
        for a in ctx.history:
            p = {k: v for k, v in a.candidate.params.items() if k != "preset"}
            speed = a.verdict.speedup
            if len(p) != 1 or a.verdict.accepted or not speed or speed > DEAD_END_SPEEDUP:
                continue
            t = a.verdict.measurement.timing if a.verdict.measurement is not None else None
            if t is not None and not t.representative:
                continue  # the CPU interpreter: +-30% between processes, 0.8x says nothing
            ((name, x),) = p.items()
            k = knobs.get(name)
            if k is None or not isinstance(x, int) or k.kind in ("num_warps", "num_stages") \
                    or k.param in ("num_warps", "num_stages") or not _POW2.search(k.param or k.name):
                continue
            cur = _int(_cur(k))
            if cur is not None and cur != x:
                out.append((name, x, x > cur))
        return out

    # ------------------------------------------------------------------ constraints

    def _smem_limit(self, ctx: TuneContext) -> int:
        if self.smem_limit:
            return self.smem_limit
        spec = ctx.device_spec
        return int(getattr(spec, "max_shared_mem_per_block_bytes", 0) or 232448)

    def _fits(self, ctx: TuneContext, bm: int, bn: int, bk: int, stages: int, warps: int = 0) -> bool:
        # Triton keeps `stages` copies of the A and B tiles in shared memory (AMD: LDS, with
        # stages-1 buffered); the fp32 accumulator lives in the registers of the warps' threads.
        amd = device_family(ctx.device_spec) == "mi300"
        st = max(1, stages - 1) if amd else stages
        if st * (bm * bk + bk * bn) * self.elem_bytes > self._smem_limit(ctx):
            return False
        lanes = 64 if amd else 32  # a wavefront is 64 lanes
        return not warps or bm * bn / (lanes * warps) <= _MAX_ACC_REGS

    # ------------------------------------------------------------------ generation

    def _knobs(self, ctx: TuneContext, src: str) -> Knobs:
        knobs = discover(src, ctx.path)
        runtime = getattr(ctx.knobs, "runtime", None)
        return knobs.with_runtime(runtime) if runtime else knobs

    def _moves(self, ctx: TuneContext, knobs: Knobs) -> Iterable[Candidate]:
        """Every move from the best, most promising first; ``knobs``: the best's."""
        src = ctx.best_source
        if not knobs.kernels:
            from advisors.cuda_knobs import needs_cuda

            if needs_cuda(src):
                # On CuPy's saxpy this advisor took BLOCK (threads per block) for a Triton block and
                # proposed 2048 and 4096: CUDA_ERROR_INVALID_VALUE, 4 of an 8-candidate budget (H200,
                # 2026-12-03), while the CUDA advisor's block-count moves never ran.
                return
        kernel = self._kernel(knobs)
        roles = _roles(knobs, kernel)
        cls = knobs.kernel_class(kernel)
        tiled_dot = cls == "matmul" and roles.bm is not None and roles.bn is not None
        # 1. structural: grouped program order for row-major tiled matmuls
        if tiled_dot and not knobs.is_grouped(kernel):
            try:
                new, kname = insert_grouped_order(src)
                values = {}
                if roles.group is not None and roles.group.site != "autotune":
                    new = apply_settings(new, [(roles.group, 8)])
                    values = {roles.group.name: 8}
                yield Candidate(id="", source=new, advisor=self.name, params={"program_order": "grouped", **values},
                                rationale=f"{kname} maps program ids to C tiles row-major, so the programs in flight "
                                          "read different panels of B and L2 reuse is poor; insert grouped "
                                          "(swizzled) program order with a group of 8 rows of tiles")
            except RewriteError as e:
                self.notes.append(f"grouped-order rewrite not applicable: {e}")
        # 1b. a launcher constant that caps the program count below the SM count
        yield from self._program_counts(ctx, src, knobs, kernel)
        # 2. presets -- until one wins: then the budget is better spent on the local search
        # around it than on the remaining, mostly worse, presets.
        preset_won = any(a.verdict.accepted and a.candidate.params.get("preset") for a in ctx.history)
        if not preset_won:
            if tiled_dot:
                yield from self._dot_presets(ctx, src, knobs, roles)
            elif cls == "tile2d" and roles.bm is not None and roles.bn is not None:
                yield from self._tile2d_presets(src, knobs, roles)
            elif cls == "rowwise":
                yield from self._rowwise_presets(src, knobs, roles)
            elif cls == "elementwise" and roles.block is not None:
                yield from self._elementwise_presets(src, knobs, roles)
        # 3. directed local search around the best
        yield from self._local(ctx, src, knobs, roles, tiled_dot, cls)
        # 4. the joint space of the kernel's launch knobs, nearest the best first (a pattern search
        # whose radius grows): the budget is never left unspent while configurations remain.
        yield from self._space(ctx, src, knobs, roles, tiled_dot, cls)

    def _program_counts(self, ctx: TuneContext, src: str, knobs: Knobs, kernel: str) -> Iterable[Candidate]:
        """A launcher constant in the grid that sets how many programs run, below the device's SM
        count: the kernelbench_relu example's grid-stride ``NUM_PROGRAMS = 32`` on an H200's 132 SMs
        (its grid's best, the plain grid, is 7.7x faster). Its single steps (x4, x2) stay under one
        program per SM, and the session spent its budget on block sizes first. A few programs per SM,
        and first the launcher's own "no limit" value when the grid tests the constant against 0
        (``min(NUM_PROGRAMS, n_blocks) if NUM_PROGRAMS > 0 else n_blocks``)."""
        sms = int(getattr(ctx.device_spec, "sm_count", 0) or 0)
        g = knobs.grid(kernel)
        if sms <= 0 or g is None:
            return
        for k in knobs.of_kind("launch"):
            v = _int(_cur(k))
            name = re.escape(k.name)
            if v is None or v <= 0 or v >= sms or not re.search(rf"\b{name}\b", g.text):
                continue
            values: list[int] = [per * sms for per in (4, 16, 64)]
            if re.search(rf"\b{name}\s*(>|!=|==)\s*0\b|\bif\s+(not\s+)?{name}\b", g.text):
                values.insert(0, 0)
            for n in values:
                why = ("the launcher's own value for one program per block of work" if n == 0
                       else f"{n // sms} programs per SM")
                c = self._make(src, knobs, [(k, n)], f"{k.name} = {v} programs for {sms} SMs leaves {1 - v / sms:.0%} "
                                                     f"of the SMs idle; {n}: {why}")
                if c:
                    yield c

    def _kernel(self, knobs: Knobs) -> str:
        """The kernel to tune: the one that ran (or the first launched) when there are several."""
        for name in knobs.ran or list(knobs.launch_lines) or knobs.kernels:
            return name
        return ""

    def _make(self, src: str, knobs: Knobs, setting: list[tuple[Optional[Knob], Any]],
              why: str) -> Optional[Candidate]:
        """The candidate that applies ``setting`` to ``src``; None when it changes nothing, cannot
        be written, or sets a knob to a value ``knobs.allows`` refuses (a block lowered below the
        row it must cover): every move -- presets, local steps, joint moves, the pattern search --
        is made here, so none of them can propose such a value."""
        setting = [(k, v) for k, v in setting if k is not None and _cur(k) != v]
        if not setting:
            return None
        kernel = self._kernel(knobs)
        for k, v in setting:
            if not knobs.allows(k, v, kernel):
                floor = knobs.row_floor(k, kernel)
                self.notes.append(f"not proposed: {k.name} = {v!r} -- {k.name} must cover a whole row"
                                  + (f" ({floor} at run time)" if floor is not None else " (its width is unknown)"))
                return None
        try:
            new = apply_settings(src, setting)
        except RewriteError as e:
            self.notes.append(str(e))
            return None
        values = {k.name: v for k, v in setting}
        return Candidate(id="", source=new, advisor=self.name, params=values, rationale=why + _where(setting))

    def _dot_presets(self, ctx: TuneContext, src: str, knobs: Knobs, r: _Roles) -> Iterable[Candidate]:
        fam = device_family(ctx.device_spec)
        table = {"hopper": HOPPER_TILES, "mi300": MI300_TILES}.get(fam, TILE_PRESETS)
        label = {"hopper": "Hopper", "mi300": "MI300"}.get(fam, "Triton's matmul tutorial")
        for bm, bn, bk, w, s in table:
            if not self._fits(ctx, bm, bn, bk, s, w):
                continue
            setting = [(r.bm, bm), (r.bn, bn), (r.bk, bk), (r.warps, w), (r.stages, s)]
            c = self._make(src, knobs, setting, f"tile {bm}x{bn}x{bk}, {w} warps, {s} stages: a proven {label} matmul "
                                         "configuration with more reuse per byte loaded than the current tiles")
            if c:
                c.params["preset"] = True
                yield c

    def _tile2d_presets(self, src: str, knobs: Knobs, r: _Roles) -> Iterable[Candidate]:
        for bm, bn, w in TILE_2D_PRESETS:
            setting = [(r.bm, bm), (r.bn, bn), (r.warps, w)]
            c = self._make(src, knobs, setting, f"{bm}x{bn} tiles with {w} warps: both loads and stores stay "
                                         "contiguous along a tile row")
            if c:
                c.params["preset"] = True
                yield c

    def _rowwise_presets(self, src: str, knobs: Knobs, r: _Roles) -> Iterable[Candidate]:
        # The block covers the row (the kernel's correctness depends on it): tune the threads
        # that share the row, not the block.
        block = _cur(r.block) or _cur(r.bn)
        if r.warps is None:
            return
        # Without the run-time row size, try the usual spread of warps.
        for w in rowwise_warps(block) if block else [8, 16, 4, 32]:
            per = f"{max(1, block // (32 * w))} elements per thread" if block else "the row size is known only at run time"
            c = self._make(src, knobs, [(r.warps, w)], f"{w} warps for a row of {block or 'N'} elements: {per}")
            if c:
                c.params["preset"] = True
                yield c

    def _elementwise_presets(self, src: str, knobs: Knobs, r: _Roles) -> Iterable[Candidate]:
        for b, w in ELEMENTWISE_PRESETS:
            c = self._make(src, knobs, [(r.block, b), (r.warps, w)],
                           f"BLOCK {b} with {w} warps: {b // (32 * w)} elements per thread, wide vector loads "
                           "and enough bytes in flight per SM")
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
                if k is not None and _tunable(k) and lever.direction in ("increase", "decrease"):
                    out.append((k, lever.direction))
        return out

    def _steps(self, knob: Knob, direction: Optional[str], tiled_dot: bool, uncertain: bool = False) -> list[Any]:
        v = _cur(knob)
        if v is None:
            return []
        role = knob.kind if knob.kind in ("num_warps", "num_stages") else knob.param
        if knob.site == "autotune" and isinstance(knob.value, list) and knob.value:
            # The autotuner already tries the listed values: step from the one it picked, and
            # past the ends of the list.
            # A list behind a run-time test (`... if IS_AMD else [1]`) may hold only the pick.
            listed = [v] if uncertain else [x for x in knob.value if isinstance(x, int)]
            if role == "num_warps":
                out = [w for w in _WARPS if w not in listed or w == v]
            elif role == "num_stages":
                out = [x for x in (max(listed) + 1, min(listed) - 1) if 1 <= x <= 6]
            else:
                out = [x for x in (max(listed) * 2, min(listed) // 2) if x >= 1]
            near = sorted((x for x in out if x != v), key=lambda x: abs(x - v))
            if direction == "decrease":
                near.sort(key=lambda x: (x > v, abs(x - v)))
            return near[:3]
        if role == "num_warps":
            ups, downs = [w for w in _WARPS if w > v][:1], [w for w in reversed(_WARPS) if w < v][:1]
        elif role == "num_stages":
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

    def _local(self, ctx: TuneContext, src: str, knobs: Knobs, r: _Roles, tiled_dot: bool,
               cls: str) -> Iterable[Candidate]:
        order: list[tuple[Knob, Optional[str]]] = list(self._lever_order(ctx, knobs))
        named = {id(k) for k, _ in order}
        rank = {"constexpr": 0, "block": 0, "num_warps": 1, "num_stages": 2, "autotune": 3}
        kernel = self._kernel(knobs)
        # A block that must cover the row is never lowered (Knobs.allows, in _make) and raising it
        # only adds masked lanes: the search leaves it alone and tunes the threads sharing the row.
        fixed = {id(k) for k in knobs._for_kernel(kernel) if knobs.spans_row(k, kernel)}
        if not knobs.has_loop(kernel) and r.stages is not None and r.stages.site == "absent":
            fixed.add(id(r.stages))  # no loop to pipeline: num_stages changes nothing
        # Flags and sizes of the problem (HAS_BIAS, LONG_INDEXING, eps) are not launch knobs: only
        # block/tile/group sizes, warps, stages and program counts are searched.
        rest = sorted((k for k in knobs._for_kernel(self._kernel(knobs))
                       if id(k) not in named and id(k) not in fixed and _tunable(k) and _cur(k) is not None
                       and _sizeish(k)
                       and (k.kind in ("num_warps", "num_stages", "launch") or k.param in ("num_warps", "num_stages")
                            or _BLOCKISH.search(k.param or k.name)
                            or _BLOCKISH.search(k.name))),
                      key=lambda k: rank.get(k.kind, 4))
        order = [(k, d) for k, d in order if id(k) not in fixed] + [(k, None) for k in rest]
        bk = _cur(r.bk) or 32
        stages = _cur(r.stages) or 2
        warps = _cur(r.warps) or 4
        bm0, bn0 = _cur(r.bm), _cur(r.bn)
        if tiled_dot and bm0 and bn0:
            # Square tiles move together as well as alone.
            for f in (2, 0.5):
                bm, bn = int(bm0 * f), int(bn0 * f)
                if 16 <= bm <= _MAX_TILE and 16 <= bn <= _MAX_TILE and self._fits(ctx, bm, bn, bk, stages, warps):
                    c = self._make(src, knobs, [(r.bm, bm), (r.bn, bn)], f"scale both tile sides by {f:g}: {bm}x{bn}")
                    if c:
                        yield c
        blocks = [k for k, _ in order if _POW2.search(k.param or k.name) and k.kind not in ("num_warps",)]
        for i, (knob, direction) in enumerate(order):
            if i == 1:
                # The nearest area-keeping reshapes after the first knob's steps, not after every
                # knob's: FlagGems' [8, 256] tile is three reshapes from its grid's best [1, 4096]
                # (1.47x) and an H200 session spent its 60 s on single steps before reaching one.
                yield from self._reshapes(ctx, src, knobs, r, blocks, tiled_dot, bk, stages, warps, near=True)
            uncertain = knob.site == "autotune" and knob.kernel in knobs.autotune_uncertain
            for value in self._steps(knob, direction, tiled_dot, uncertain):
                if not knobs.allows(knob, value, kernel):
                    continue  # a block that must cover the row: only upward (Knobs.spans_row)
                if tiled_dot and bm0 and bn0:
                    bm = value if knob is r.bm else bm0
                    bn = value if knob is r.bn else bn0
                    k_ = value if knob is r.bk else bk
                    s_ = value if knob is r.stages else stages
                    w_ = value if knob is r.warps else warps
                    if not self._fits(ctx, bm, bn, k_, s_, w_):
                        continue
                why = (f"{knob.shown()} -> {value}"
                       + (f": the diagnosis says {direction} it" if direction else ": one step of the local search"))
                c = self._make(src, knobs, [(knob, value)], why)
                if c:
                    yield c
        # Joint moves: a block size with the warps that would fill it (work per thread constant).
        yield from self._reshapes(ctx, src, knobs, r, blocks, tiled_dot, bk, stages, warps)
        if r.warps is not None:
            for b, wf in itertools.product(blocks[:2], (2, 0.5)):
                bv, wv = _cur(b), _cur(r.warps)
                if bv and wv and int(wv * wf) in _WARPS and bv * wf >= 1 and float(bv * wf).is_integer():
                    if tiled_dot and b in (r.bm, r.bn) and not self._fits(
                            ctx, int(bv * wf) if b is r.bm else (bm0 or 64), int(bv * wf) if b is r.bn else (bn0 or 64),
                            bk, stages, int(wv * wf)):
                        continue
                    c = self._make(src, knobs, [(b, int(bv * wf)), (r.warps, int(wv * wf))],
                                   f"{b.name} and num_warps together x{wf:g}: keep work per thread constant")
                    if c:
                        yield c

    def _reshapes(self, ctx: TuneContext, src: str, knobs: Knobs, r: _Roles, blocks: list[Knob], tiled_dot: bool,
                  bk: int, stages: int, warps: int, near: bool = False) -> Iterable[Candidate]:
        """A 2-D tile's two sides traded against each other, its area (registers, work per
        program) kept: FlagGems' log-softmax tiles [BLOCK_M, BLOCK_N] = [8, 256]; the best of its
        grid is [1, 4096] (1.47x on an H200), which no single step reaches (a longer row alone
        doubles the registers and was slower) and a ±3-step pattern search around the best is
        eight steps from. Nearest reshapes first; the second side (the contiguous one in the
        usual ``offs_m[:, None] * stride + offs_n[None, :]``) may grow all the way, the first
        by at most 4x. ``near``: only the first three that lengthen the second side."""
        sides = [k for k in blocks if not (k.param or k.name).upper().startswith("GROUP") and _int(_cur(k))][:2]
        if len(sides) < 2 or sides[0].kernel != sides[1].kernel:
            return
        a, b = sides
        av, bv = int(_cur(a)), int(_cur(b))
        lo, hi = (16, _MAX_TILE) if tiled_dot else (1, _MAX_BLOCK_1D)
        for shift in (1, 2, 3) if near else (1, 2, 3, 4, 5, 6):
            for na, nb in ((av >> shift, bv << shift),) + (((av << shift, bv >> shift),) if shift <= 2 and not near
                                                           else ()):
                exact = (na << shift == av) if na < av else (nb << shift == bv)
                if not (exact and lo <= na <= hi and lo <= nb <= hi):
                    continue  # a side that would leave its range, or a size not divisible
                if tiled_dot:
                    bm = na if a is r.bm else (nb if b is r.bm else _cur(r.bm) or 64)
                    bn = na if a is r.bn else (nb if b is r.bn else _cur(r.bn) or 64)
                    if not self._fits(ctx, bm, bn, bk, stages, warps):
                        continue
                c = self._make(src, knobs, [(a, na), (b, nb)],
                               f"reshape the {a.name} x {b.name} tile {av}x{bv} -> {na}x{nb}: the same area (registers "
                               "and work per program), another aspect")
                if c:
                    yield c

    def _axes(self, knobs: Knobs, r: _Roles, tiled_dot: bool, cls: str) -> list[tuple[Knob, list[int], str]]:
        """(knob, values, scale) for each searched axis of the kernel being tuned; scale is "log2"
        (sizes, warps) or "linear" (stages), for the distance between configurations."""
        kernel = self._kernel(knobs)
        axes: list[tuple[Knob, list[int], str]] = []
        sizes = [k for k in (r.bm, r.bn, r.bk) if k is not None] if tiled_dot else \
            [k for k in knobs._for_kernel(kernel) if _tunable(k) and k.kind in ("constexpr", "block")
             and _POW2.search(k.param or k.name) and _int(_cur(k)) and not knobs.spans_row(k, kernel)
             and k not in (r.warps, r.stages, r.group)]
        for k in sizes[:3]:
            if not _sizeish(k):
                continue  # not a power-of-two size (a buffer bound, an element count)
            v = _cur(k) or 0
            lo, hi = (16, _MAX_TILE) if tiled_dot else (1, _MAX_BLOCK_1D)
            vals = [x for x in (v >> 3, v >> 2, v >> 1, v, v << 1, v << 2, v << 3) if lo <= x <= hi]
            axes.append((k, sorted(set(vals)), "log2"))
        if r.warps is not None and _cur(r.warps):
            axes.append((r.warps, list(_WARPS if not tiled_dot else (2, 4, 8)), "log2"))
        if r.stages is not None and _cur(r.stages) and (knobs.has_loop(kernel) or r.stages.site != "absent"):
            axes.append((r.stages, [1, 2, 3, 4, 5] if not tiled_dot else [2, 3, 4, 5], "linear"))
        return axes

    def _space(self, ctx: TuneContext, src: str, knobs: Knobs, r: _Roles, tiled_dot: bool,
               cls: str) -> Iterable[Candidate]:
        axes = self._axes(knobs, r, tiled_dot, cls)
        if not axes or any(k.site == "autotune" for k, _, _ in axes):
            return  # an autotuned kernel's own list is searched by the local moves above
        cur = [_cur(k) for k, _, _ in axes]

        def dist(combo: tuple[int, ...]) -> float:
            d = 0.0
            for (k, _, scale), v, c in zip(axes, combo, cur):
                if scale == "log2":
                    d += abs((v.bit_length() - 1) - ((c or 1).bit_length() - 1))
                else:
                    d += abs(v - (c or 0))
            return d

        combos = [c for c in itertools.product(*[vals for _, vals, _ in axes]) if list(c) != cur]
        combos.sort(key=lambda c: (dist(c), c))
        idx = {id(k): i for i, (k, _, _) in enumerate(axes)}
        for combo in combos:
            if tiled_dot:
                get = lambda role, dflt: combo[idx[id(role)]] if role is not None and id(role) in idx else dflt  # noqa: E731
                if not self._fits(ctx, get(r.bm, 64), get(r.bn, 64), get(r.bk, 32), get(r.stages, 2), get(r.warps, 4)):
                    continue
            elif cls == "elementwise" and r.warps is not None and id(r.warps) in idx and r.block is not None \
                    and id(r.block) in idx and combo[idx[id(r.block)]] < 32 * combo[idx[id(r.warps)]]:
                continue  # fewer elements than threads: idle lanes, never faster
            setting = [(k, v) for (k, _, _), v in zip(axes, combo)]
            c = self._make(src, knobs, setting, "pattern search around the best: "
                           + ", ".join(f"{k.name} {cv} -> {v}" for (k, _, _), v, cv in zip(axes, combo, cur) if v != cv))
            if c:
                yield c


def _sizeish(k: Knob) -> bool:
    """A value a launch knob can take: warps and stages, or a power-of-two size a block can be
    (not a buffer bound like unsloth's ``INT32_SAFETY_BUFFER = 2**31 - ...``)."""
    if k.kind in ("num_warps", "num_stages") or k.param in ("num_warps", "num_stages"):
        return True
    v = _cur(k)
    return v is None or (0 < v <= _MAX_BLOCK_1D and not v & (v - 1))


def _where(setting: list[tuple[Knob, Any]]) -> str:
    """Where each change is made, in the words of the diff: the rationale must match it."""
    parts = []
    for k, v in setting:
        if k.site == "helper":
            parts.append(f"{k.name} = {v!r} overrides {k.helper}()'s result after line {k.call_line}")
        elif k.site == "absent":
            parts.append(f"{k.name}={v!r} added to the launch at line {k.launch_line or k.line}")
        elif k.site == "autotune":
            parts.append(f"{k.name}={v!r} in a new config put first in {k.kernel}'s autotune list")
        else:
            parts.append(f"{k.name} {k.text or k.value} -> {v!r} at line {k.line}")
    return " (" + "; ".join(parts) + ")" if parts else ""


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1] if path else "kernel.py"


from advisors.rewriters import AdvisorSpec  # noqa: E402  (the registry's type, at the end to keep the module's top unchanged)

ADVISOR = AdvisorSpec(name="deterministic", summary="knob rewrites (tiles, warps, stages, grouped order) from the "
                      "findings; needs no LLM", build=lambda table: DeterministicAdvisor(), order=10)
