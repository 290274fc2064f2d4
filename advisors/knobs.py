"""Knob discovery: which launch parameters a user's Triton source exposes, and where.

A finding is only actionable when it names the knob in the user's own file: "BLOCK_SIZE = 64
at line 31: raise to 1024". This module reads the source with ``ast`` (it never imports or runs
it) and collects

* the ``tl.constexpr`` parameters of every ``@triton.jit`` kernel and the values the launcher
  passes for them (a literal in the launch call, a local variable, or a module constant),
* ``num_warps`` / ``num_stages`` launch keywords (literal or through a constant),
* block-size variables assigned in the launcher,
* ``@triton.autotune`` config lists,
* the grid expression (1-D / 2-D / 3-D and its text),
* whether the kernel walks its tiles in grouped (swizzled) program order,
* whether the kernel calls ``tl.dot`` (a tiled matmul-like kernel).

Each knob records the line to edit: when a launch passes ``BLOCK_SIZE=BLOCK_SIZE`` the knob's
line is the one of ``BLOCK_SIZE = 64``, not the call, because that is what the user changes.
The value is followed to where it is defined, the way real projects write launchers: module
constants, local and tuple assignments (``BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32``), launcher
defaults and the arguments its callers pass, a helper's return value
(``BLOCK_SIZE, num_warps = calculate_settings(n)``), computed expressions
(``min(MAX_FUSED_SIZE, triton.next_power_of_2(N))``), ``@triton.autotune`` config lists (literal,
a name, a function returning them, comprehensions over products), ``@triton.heuristics``,
``kernel.warmup(...)`` launches and the compiled handles they return, and launches that leave
``num_warps``/``num_stages`` at Triton's defaults. ``Knob.site`` says how to change each one
(advisors/rewrite.py does it) so that the grid and the launch stay consistent.
Values computed from run-time sizes are None here; ``Knobs.with_runtime`` fills ``Knob.runtime``
from what the harness recorded (profd/harness/launches.py).
"""

from __future__ import annotations

import ast
import re
import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from profd.model import JsonMixin, LaunchRecord

#: Kinds of knob, in the vocabulary levers use.
KINDS = ("constexpr", "num_warps", "num_stages", "autotune", "block", "launch")

#: How a knob is changed (advisors/rewrite.py): the value node where it is defined
#: ("constant", "tuple" element, "default" of a function, caller's "argument", launch "keyword",
#: computed "expression", "heuristic" function), an override after the call that unpacks a
#: "helper"'s return, a config put in front of an "autotune" list, or a keyword added where it
#: is "absent". "param": a value that arrives from outside the file (run time only).
SITES = ("constant", "tuple", "default", "argument", "keyword", "expression", "heuristic", "helper",
         "autotune", "absent", "param")

#: Triton's launch defaults when ``num_warps``/``num_stages`` are not passed (triton 3.x:
#: backends/nvidia/compiler.py CUDAOptions; AMD's HIPOptions has num_stages=2).
TRITON_DEFAULTS = {"num_warps": 4, "num_stages": 3}
TRITON_DEFAULTS_HIP = {"num_warps": 4, "num_stages": 2}

# Names that hold a tile or block size even when they are not constexpr parameters.
_BLOCKISH = re.compile(r"(BLOCK|TILE|^B[MNK]$|^BS$|GROUP|CHUNK|SPLIT|_SIZE$|^XBLOCK$|^RBLOCK$)", re.I)
_LIMIT = re.compile(r"(^MAX_|^MIN_|_MAX$|_MIN$|NUM_SMS?$|SMEM|NUM_CUS?$|REGS|_LIMIT$)", re.I)
_DEVICE_FACT = re.compile(r"(NUM_SMS?$|SMEM|NUM_CUS?$|REGS|WARP_SIZE|^IS_)", re.I)
_GROUP_NAMES = {"group_id", "first_pid_m", "first_pid_n", "group_size_m", "num_pid_in_group"}


@dataclass
class Knob(JsonMixin):
    """One tunable value in the user's source."""

    name: str  # the name the user edits: "BLOCK_SIZE", "NUM_WARPS", "num_warps"
    value: Any  # resolved Python value when it can be computed, else None
    line: int  # line to edit (1-based)
    kind: str  # one of KINDS
    text: str = ""  # source text of the value expression
    param: str = ""  # the kernel parameter / launch keyword it feeds ("BLOCK_SIZE", "num_warps")
    kernel: str = ""  # the @triton.jit function it is passed to, when known
    where: str = ""  # "module", "launcher", "launch call", "autotune", "helper", "caller", "heuristics"
    site: str = "constant"  # how to change it: one of SITES
    col: int = -1  # column of the value expression on ``line`` (-1: not a value node)
    index: int = -1  # element of a tuple assignment or of a helper's returned tuple
    helper: str = ""  # the function whose return value this is (site "helper")
    call_line: int = 0  # site "helper": the line that unpacks the helper's result in the launcher
    launch_line: int = 0  # the launch this knob feeds
    runtime: Any = None  # the value the launch really received (Knobs.with_runtime)
    choices: list[Any] = field(default_factory=list)  # constant values a helper's branches assign

    @property
    def current(self) -> Any:
        """The value in effect: the static one when computable, else the one seen at run time."""
        if self.value is not None and not isinstance(self.value, list):
            return self.value
        return self.runtime if self.runtime is not None else self.value

    def shown(self) -> str:
        """``NAME = value`` as the user would read it in the source."""
        if self.site == "absent":
            return f"{self.name} (not passed: Triton's default {self.value})"
        if self.site == "helper":
            at = f", {self.runtime} at run time" if self.runtime is not None else ""
            return f"{self.name} = {self.text} (from {self.helper}(){at})"
        v = self.text or repr(self.value)
        if self.value is None and self.runtime is not None:
            v += f" ({self.runtime} at run time)"
        return f"{self.name} = {v}"


@dataclass
class GridInfo(JsonMixin):
    """The launch grid of one kernel launch."""

    kernel: str
    dims: Optional[int]  # 1, 2, 3; None when the expression cannot be read (a callable, say)
    text: str
    line: int
    via: str = "launch"  # "launch" (kernel[grid](...)), "warmup" (grid= keyword), "compiled" (a warmup handle)


@dataclass
class AutotuneConfig(JsonMixin):
    """One ``triton.Config`` of an ``@triton.autotune`` list."""

    kwargs: dict[str, Any]
    num_warps: Optional[int] = None
    num_stages: Optional[int] = None
    line: int = 0


@dataclass
class Knobs(JsonMixin):
    """Everything ``discover`` found in one source file."""

    path: str = ""
    kernels: list[str] = field(default_factory=list)  # @triton.jit function names
    constexpr_params: dict[str, list[str]] = field(default_factory=dict)
    knobs: list[Knob] = field(default_factory=list)
    grids: list[GridInfo] = field(default_factory=list)
    autotune: dict[str, list[AutotuneConfig]] = field(default_factory=dict)
    grouped_order: bool = False  # some kernel uses GROUP_M-style swizzled program order
    grouped_evidence: str = ""  # what gave it away, with the line
    grouped_kernels: list[str] = field(default_factory=list)
    dot_kernels: list[str] = field(default_factory=list)  # kernels that call tl.dot
    loop_kernels: list[str] = field(default_factory=list)  # kernels with a loop (num_stages matters)
    #: kernel -> constexpr parameters whose block must span a whole row: the kernel reads the row
    #: with one masked ``tl.arange(0, P)`` and never steps over P (``_row_spanning``; ``spans_row``).
    row_blocks: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    launch_lines: dict[str, list[int]] = field(default_factory=dict)  # kernel -> lines that launch it
    #: Kernels whose autotune list depends on a run-time test (``[...] if IS_AMD else [...]``):
    #: ``autotune`` holds what either branch gives, so "already in the list" is not certain.
    autotune_uncertain: list[str] = field(default_factory=list)
    runtime: list[LaunchRecord] = field(default_factory=list)  # what the harness recorded, if merged
    ran: list[str] = field(default_factory=list)  # kernels seen launching at run time

    # ------------------------------------------------------------------ run time

    def with_runtime(self, launches: Sequence[LaunchRecord]) -> "Knobs":
        """A copy whose knobs carry the values the launches really received (``Knob.runtime``).

        ``launches`` are the ``Measurement.launches`` of a baseline run. Static values stay as
        they are; computed ones (``None``) and autotune lists gain the value in effect.
        """
        out = copy.deepcopy(self)
        out.runtime = list(launches)
        out.ran = sorted({r.kernel for r in launches})
        for k in out.knobs:
            recs = sorted((r for r in launches if r.kernel == k.kernel and r.via != "compiled"),
                          key=lambda r: -r.count)
            if not recs and k.kernel:
                # A handle from kernel.warmup(...) carries warps/stages but not constexprs.
                recs = [r for r in launches if r.kernel == k.kernel]
            for r in recs:
                v = _runtime_value(r, k)
                if v is not None:
                    k.runtime = v
                    break
        return out

    def kernel_class(self, kernel: str = "") -> str:
        """``matmul`` (tl.dot over 2-D tiles), ``tile2d`` (2-D tiles, no dot), ``rowwise`` (one
        program per row, the block covers the row) or ``elementwise``; ``""`` without knobs."""
        kernel = self.canonical(kernel) if kernel else kernel
        names = {(k.param or k.name).upper() for k in self._for_kernel(kernel)}
        two_d = bool(names & _M_NAMES) and bool(names & _N_NAMES)
        if self.uses_dot(kernel) and two_d:
            return "matmul"
        # 2-D tiles without tl.dot: the grid walks both sides (a BLOCK_N that covers a whole
        # softmax row is not a tile side).
        g = self.grid(kernel)
        grid_names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", g.text.upper())) if g is not None else set()
        if two_d and grid_names & _M_NAMES and grid_names & _N_NAMES:
            return "tile2d"
        blocks = [k for k in self._for_kernel(kernel) if k.kind in ("constexpr", "block", "autotune")
                  and _BLOCKISH.search(k.param or k.name)]
        if any("next_power_of_2" in k.text or k.site == "helper" for k in blocks):
            return "rowwise"
        return "elementwise" if blocks else ""

    def has_tiles(self, kernel: str = "") -> bool:
        """Does the kernel walk 2-D output tiles (where tile order and swizzling mean anything)?"""
        return self.kernel_class(kernel) in ("matmul", "tile2d")

    # ------------------------------------------------------------------ constraints

    def spans_row(self, knob: Knob, kernel: str = "") -> bool:
        """Must this block size cover a whole row of the data (so it may never be lowered)?

        The one rule every advisor consults (advisors/rules/_base.py ``_editable``, the
        deterministic advisor's moves, the LLM prompt's knob list) through ``allows``. Evidence,
        strongest first:

        * the kernel reads the row in one block: a single ``tl.arange(0, P)`` masked with ``< n``,
          with no loop and no program id stepping over ``P`` (``row_blocks``). unsloth's
          ``_cross_entropy_forward`` (``col_offsets = tl.arange(0, BLOCK_SIZE)``, ``mask =
          col_offsets < VOCAB_SIZE``), Liger's norms, the tutorial softmax;
        * the launcher of a row-wise kernel sizes it from the row: ``next_power_of_2(n)``, directly
          or through a helper such as ``calculate_settings(n)`` (the rule this replaces, kept so no
          knob it protected becomes free).

        A smaller block would silently drop the rest of the row (wrong results, not an error).
        """
        if knob.kind in ("num_warps", "num_stages") or knob.param in ("num_warps", "num_stages"):
            return False
        kern = knob.kernel or kernel
        if (knob.param or knob.name) in self.row_blocks.get(self.canonical(kern), []):
            return True
        return self.kernel_class(kernel or knob.kernel) == "rowwise" and (
            "next_power_of_2" in knob.text or knob.site == "helper")

    def row_floor(self, knob: Knob, kernel: str = "") -> Optional[int]:
        """The least value a row-spanning block (``spans_row``) may take: the largest it received
        in any recorded launch of its kernel (every shape's row stays covered), else its static
        value (for an autotune list, the smallest listed). None when neither is known."""
        seen: list[Any] = [knob.runtime]
        kern = self.canonical(knob.kernel or kernel)
        seen += [_runtime_value(r, knob) for r in self.runtime
                 if r.via != "compiled" and (not kern or _kernel_in(r.kernel, [kern]))]
        ints = [v for v in seen if isinstance(v, int) and not isinstance(v, bool)]
        if ints:
            return max(ints)
        if isinstance(knob.value, list):
            listed = [v for v in knob.value if isinstance(v, int) and not isinstance(v, bool)]
            return min(listed) if listed else None
        v = knob.value
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def allows(self, knob: Knob, value: Any, kernel: str = "") -> bool:
        """May an advisor set ``knob`` to ``value``? A row-spanning block may be raised (it only
        adds masked lanes), never lowered below ``row_floor``; when that floor is not known it is
        left alone. Every other knob: yes (the harness judges the rest)."""
        if not self.spans_row(knob, kernel):
            return True
        floor = self.row_floor(knob, kernel)
        return floor is not None and isinstance(value, int) and not isinstance(value, bool) and value >= floor

    def has_loop(self, kernel: str = "") -> bool:
        return bool(self.loop_kernels) if not kernel else _kernel_in(self.canonical(kernel), self.loop_kernels)

    # ------------------------------------------------------------------ lookups

    def get(self, *names: str, kernel: str = "") -> Optional[Knob]:
        """The first knob whose name or parameter matches one of ``names`` (case-insensitive)."""
        wanted = [n.lower() for n in names]
        for n in wanted:
            for k in self._for_kernel(kernel):
                if k.name.lower() == n or k.param.lower() == n:
                    return k
        return None

    def matching(self, pattern: str, kind: Optional[str] = None, kernel: str = "") -> list[Knob]:
        """Knobs whose name or parameter matches the regular expression ``pattern``."""
        rx = re.compile(pattern, re.I)
        return [
            k for k in self._for_kernel(kernel)
            if (rx.search(k.name) or rx.search(k.param)) and (kind is None or k.kind == kind)
        ]

    def of_kind(self, kind: str, kernel: str = "") -> list[Knob]:
        return [k for k in self._for_kernel(kernel) if k.kind == kind]

    def grid(self, kernel: str = "") -> Optional[GridInfo]:
        for g in self.grids:
            if not kernel or g.kernel == kernel:
                return g
        return self.grids[0] if self.grids and not kernel else None

    def canonical(self, kernel: str) -> str:
        """The source kernel a profiled name refers to; the only kernel when there is one."""
        for n in self.kernels:
            if kernel and _kernel_in(kernel, [n]):
                return n
        return self.kernels[0] if len(self.kernels) == 1 else kernel

    def knows(self, kernel: str) -> bool:
        """Does the source say which of its kernels ``kernel`` is?"""
        return bool(self.kernels) and self.canonical(kernel) in self.kernels

    def uses_dot(self, kernel: str = "") -> bool:
        return bool(self.dot_kernels) if not kernel else _kernel_in(kernel, self.dot_kernels)

    def is_grouped(self, kernel: str = "") -> bool:
        return self.grouped_order if not kernel else _kernel_in(kernel, self.grouped_kernels)

    def _for_kernel(self, kernel: str) -> list[Knob]:
        if not kernel or not any(_kernel_in(kernel, [k.kernel]) for k in self.knobs if k.kernel):
            return self.knobs
        # Knobs not tied to a kernel (module constants no launch uses) still apply.
        return [k for k in self.knobs if not k.kernel or _kernel_in(kernel, [k.kernel])]


_M_NAMES = {"BLOCK_M", "BLOCK_SIZE_M", "BM", "TILE_M"}
_N_NAMES = {"BLOCK_N", "BLOCK_SIZE_N", "BN", "TILE_N"}


def _runtime_value(r: LaunchRecord, k: Knob) -> Any:
    if k.kind == "num_warps" or k.param == "num_warps":
        return r.num_warps
    if k.kind == "num_stages" or k.param == "num_stages":
        return r.num_stages
    return r.constexprs.get(k.param or k.name)


def _kernel_in(profiled_name: str, names: Iterable[str]) -> bool:
    """Does a profiler's kernel name (possibly mangled or suffixed) refer to one of ``names``?"""
    p = profiled_name.lower()
    for n in names:
        n = n.lower()
        if n and (p == n or p.startswith(n + "(") or re.search(rf"\b{re.escape(n)}\b", p)):
            return True
    return False


# ---------------------------------------------------------------------- discovery


def discover(source: Union[str, Path], path: str = "") -> Knobs:
    """Find the knobs of a Triton source file.

    ``source`` is the file's text, or a ``Path`` to read. Nothing is imported or executed.
    A file that does not parse yields an empty ``Knobs`` with the syntax error in ``errors``.
    """
    if isinstance(source, Path):
        path = path or str(source)
        source = source.read_text()
    knobs = Knobs(path=path)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        knobs.errors.append(f"syntax error at line {e.lineno}: {e.msg}")
        return knobs
    _Finder(source, knobs).run(tree)
    return knobs


@dataclass
class _Def:
    """Where a name's value comes from, as far as the source says."""

    value: Any
    line: int
    text: str
    site: str
    col: int = -1
    index: int = -1
    helper: str = ""
    call_line: int = 0
    where: str = "launcher"
    choices: list[Any] = field(default_factory=list)


class _Finder:
    def __init__(self, source: str, knobs: Knobs) -> None:
        self.src = source
        self.k = knobs
        self.module_consts: dict[str, tuple[Any, int, str]] = {}  # name -> (value, line, text)
        self.module_defs: dict[str, _Def] = {}
        self.module_lists: dict[str, ast.AST] = {}
        self.funcs: dict[str, ast.FunctionDef] = {}
        self.jit: dict[str, ast.FunctionDef] = {}
        self.seen: set[tuple[str, int, str]] = set()
        self.tree: Optional[ast.Module] = None

    # -------------------------------------------------------------- helpers

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.src, node) or ast.unparse(node)

    def const(self, node: ast.AST, local: Optional[dict[str, Any]] = None) -> Any:
        """Evaluate a small constant expression; None when it depends on runtime values."""
        env = {n: v[0] for n, v in self.module_consts.items()}
        if local:
            env.update({n: (v.value if isinstance(v, _Def) else v[0] if isinstance(v, tuple) else v)
                        for n, v in local.items()})
        return _eval_const(node, env)

    def add(self, knob: Knob) -> None:
        key = (knob.name, knob.line, knob.kind)
        if key in self.seen:
            return
        self.seen.add(key)
        self.k.knobs.append(knob)

    def value_def(self, node: ast.AST, local: dict[str, _Def], site: str, where: str, index: int = -1) -> _Def:
        """The definition a value expression gives its target."""
        if isinstance(node, ast.Name) and node.id in local:
            return local[node.id]  # an alias: follow the value to where it is set
        if isinstance(node, ast.Name) and node.id in self.module_defs:
            return self.module_defs[node.id]
        v = self.const(node, local)
        if site in ("constant", "tuple") and (v is None or _computed(node)):
            site = "expression"
        if site == "constant" and index >= 0:
            site = "tuple"
        return _Def(v, node.lineno, self.text(node), site, node.col_offset, index, where=where)

    # -------------------------------------------------------------- passes

    def run(self, tree: ast.Module) -> None:
        self.tree = tree
        self.extra_decorators: dict[str, list[ast.Call]] = {}
        for node in _module_statements(tree.body):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                wrapped = _functional_jit(node.value)
                if wrapped is not None:
                    # `_kernel = triton.heuristics({...})(triton.jit(_kernel))`: decorated by assignment.
                    fname, decs = wrapped
                    self.extra_decorators.setdefault(fname, []).extend(decs)
                    continue
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for name, value, index in _assign_targets_ix(node):
                    v = self.const(value)
                    if isinstance(value, (ast.List, ast.Tuple, ast.ListComp, ast.IfExp)):
                        self.module_lists[name] = value
                    if v is not None:
                        self.module_consts[name] = (v, node.lineno, self.text(value))
                        self.module_defs[name] = _Def(v, value.lineno, self.text(value),
                                                      "tuple" if index >= 0 else "constant", value.col_offset,
                                                      index, where="module")
            elif isinstance(node, ast.FunctionDef):
                self.funcs[node.name] = node
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    _is_jit(node) or node.name in self.extra_decorators):
                self.jit[node.name] = node  # type: ignore[assignment]
        self.k.kernels = list(self.jit)
        for name, fn in self.jit.items():
            self.k.constexpr_params[name] = _constexpr_params(fn)
            self._kernel_body(name, fn)
            spans = _row_spanning(fn, self.k.constexpr_params[name])
            if spans:
                self.k.row_blocks[name] = spans
            self._autotune(name, fn)
            self._heuristics(name, fn)
        self._launches(tree)
        # Names the launchers read (grid sizes, program counts): module constants among them
        # are knobs too. Launchers are every non-jit function (KernelBench's forward included)
        # except the contract's reference/input/roofline functions.
        skip = {"reference", "get_inputs", "get_init_inputs", "flops", "bytes_moved"}
        self.launcher_names = {n.id for fn in ast.walk(tree)
                               if isinstance(fn, ast.FunctionDef) and not _is_jit(fn) and fn.name not in skip
                               for n in ast.walk(fn) if isinstance(n, ast.Name)}
        self._module_knobs()

    def _kernel_body(self, name: str, fn: ast.FunctionDef) -> None:
        """Grouped program order, tl.dot use and loops, read from the kernel body."""
        clues: list[tuple[int, int, str]] = []  # (strength rank, line, text): strongest clue wins
        group_names: set[str] = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and _attr_name(node.func) in ("dot", "dot_scaled"):
                if name not in self.k.dot_kernels:
                    self.k.dot_kernels.append(name)
            if isinstance(node, (ast.For, ast.While)) and name not in self.k.loop_kernels:
                self.k.loop_kernels.append(name)
            clue = self._grouping_evidence(node)
            if clue:
                clues.append((clue[0], getattr(node, "lineno", fn.lineno), clue[1]))
            if isinstance(node, ast.Name) and node.id.lower() in _GROUP_NAMES and isinstance(node.ctx, ast.Store):
                group_names.add(node.id.lower())
                clues.append((2, node.lineno, f"`{node.id}`"))
        # One grouping-sounding name is not grouped order (a GQA kernel's `group_id = head // G`);
        # the tutorial's swizzle assigns several of them.
        strong = [c for c in clues if c[0] < 2]
        if not strong and len(group_names) < 2:
            clues = []
        if clues:
            rank, line, text = min(clues)
            self.k.grouped_kernels.append(name)
            self.k.grouped_order = True
            if not self.k.grouped_evidence:
                self.k.grouped_evidence = f"{text} at line {line}"

    def _grouping_evidence(self, node: ast.AST) -> Optional[tuple[int, str]]:
        if isinstance(node, ast.Call) and _attr_name(node.func) == "swizzle2d":
            return 0, "tl.swizzle2d"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.FloorDiv):
            # Tile swizzling divides the program id by a group *of tile rows*: GROUP_M * num_pid_n,
            # or the num_pid_in_group that holds it. Dividing a head index by GROUP_SIZE alone is
            # GQA's query-heads-per-KV-head, not a program order.
            right = node.right
            names = {n.id for n in ast.walk(right) if isinstance(n, ast.Name)}
            product = isinstance(right, ast.BinOp) and isinstance(right.op, ast.Mult)
            if (product and any(re.match(r"GROUP", n, re.I) for n in names) and len(names) >= 2) or \
                    (isinstance(right, ast.Name) and right.id.lower() == "num_pid_in_group"):
                return 1, f"`{self.text(node)}`"
        return None

    # -------------------------------------------------------------- autotune and heuristics

    def _decorators(self, name: str, fn: ast.FunctionDef) -> list[ast.expr]:
        return list(fn.decorator_list) + list(self.extra_decorators.get(name, []))

    def _autotune(self, name: str, fn: ast.FunctionDef) -> None:
        for dec in self._decorators(name, fn):
            if not (isinstance(dec, ast.Call) and _attr_name(dec.func) == "autotune"):
                continue
            cfg_node: Optional[ast.AST] = None
            for kw in dec.keywords:
                if kw.arg == "configs":
                    cfg_node = kw.value
            if cfg_node is None and dec.args:
                cfg_node = dec.args[0]
            if cfg_node is None:
                continue
            self.uncertain = False
            configs, line = self._configs_of(cfg_node, {}, 0)
            self.k.autotune[name] = configs
            if self.uncertain:
                self.k.autotune_uncertain.append(name)
            line = line or dec.lineno
            values: dict[str, list[Any]] = {}
            for c in configs:
                for key, v in list(c.kwargs.items()) + [("num_warps", c.num_warps), ("num_stages", c.num_stages)]:
                    if v is not None and v not in values.setdefault(key, []):
                        values[key].append(v)
            if not configs:
                self.k.errors.append(f"{name}: autotune configs `{self.text(cfg_node)}` cannot be read from the "
                                     "source; their values are known only at run time")
            for key, vals in values.items():
                self.add(Knob(name=key, value=vals, line=line, kind="autotune", text=", ".join(map(str, vals)),
                              param=key, kernel=name, where="autotune", site="autotune"))

    def _configs_of(self, node: ast.AST, env: dict[str, Any], depth: int) -> tuple[list[AutotuneConfig], int]:
        """The configs an expression builds, and the line that lists them (0: none found)."""
        if depth > 6:
            return [], 0
        if isinstance(node, ast.Name):
            if node.id in env and isinstance(env[node.id], ast.AST):
                return self._configs_of(env[node.id], env, depth + 1)
            if node.id in self.module_lists:
                return self._configs_of(self.module_lists[node.id], env, depth + 1)
            return [], 0
        if isinstance(node, (ast.List, ast.Tuple)):
            out: list[AutotuneConfig] = []
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    out += self._configs_of(elt.value, env, depth + 1)[0]
                else:
                    c = self._config(elt, {k: v for k, v in env.items() if not isinstance(v, ast.AST)})
                    if c is not None:
                        out.append(c)
            return out, node.lineno
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            a, la = self._configs_of(node.left, env, depth + 1)
            b, lb = self._configs_of(node.right, env, depth + 1)
            return a + b, la or lb
        if isinstance(node, ast.IfExp):
            a, la = self._configs_of(node.body, env, depth + 1)
            b, lb = self._configs_of(node.orelse, env, depth + 1)
            return a + [c for c in b if c not in a], la or lb
        if isinstance(node, ast.ListComp):
            return self._comprehension(node, env), node.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.funcs:
            f = self.funcs[node.func.id]
            local: dict[str, Any] = {}
            for st in ast.walk(f):
                if isinstance(st, ast.Assign):
                    for n, v, _ in _assign_targets_ix(st):
                        local[n] = v
            out, line = [], 0
            for st in ast.walk(f):
                if isinstance(st, ast.Return) and st.value is not None:
                    got, ln = self._configs_of(st.value, {**env, **local}, depth + 1)
                    out += [c for c in got if c not in out]
                    line = line or ln
            return out, line
        return [], 0

    def _comprehension(self, node: ast.ListComp, env: dict[str, Any]) -> list[AutotuneConfig]:
        consts = {k: v for k, v in env.items() if not isinstance(v, ast.AST)}
        envs: list[dict[str, Any]] = [consts]
        for gen in node.generators:
            seq = self._iter_values(gen.iter, env)
            if seq is None:
                return []
            nxt = []
            for e in envs:
                for item in seq:
                    b = dict(e)
                    if not _bind(gen.target, item, b):
                        return []
                    if all(_truthy(_eval_const(c, {**self._module_env(), **b})) for c in gen.ifs):
                        nxt.append(b)
                    if len(nxt) > 4096:
                        return []
            envs = nxt
        out = []
        for e in envs:
            c = self._config(node.elt, e)
            if c is not None:
                c.line = node.lineno
                out.append(c)
        return out

    def _module_env(self) -> dict[str, Any]:
        return {n: v[0] for n, v in self.module_consts.items()}

    def _iter_values(self, node: ast.AST, env: dict[str, Any]) -> Optional[list[Any]]:
        if isinstance(node, ast.Name) and isinstance(env.get(node.id), ast.AST):
            node = env[node.id]
        if isinstance(node, ast.Name) and node.id in self.module_lists:
            node = self.module_lists[node.id]
        v = _eval_const(node, self._module_env())
        if isinstance(v, list):
            return v
        if isinstance(node, ast.IfExp):
            # `[1, 2, 4, 8, 16] if IS_AMD else [1]`: the test is a run-time fact; list what either gives.
            self.uncertain = True
            a, b = self._iter_values(node.body, env), self._iter_values(node.orelse, env)
            if a is not None and b is not None:
                return a + [x for x in b if x not in a]
            return None
        if isinstance(node, ast.Call) and _attr_name(node.func) in ("product", "range", "zip"):
            parts = [self._iter_values(a, env) if _attr_name(node.func) != "range" else self.const(a)
                     for a in node.args]
            if any(p is None for p in parts):
                return None
            if _attr_name(node.func) == "product":
                return [list(t) for t in itertools.product(*parts)]
            if _attr_name(node.func) == "zip":
                return [list(t) for t in zip(*parts)]
            return list(range(*parts))
        return None

    def _config(self, elt: ast.AST, env: dict[str, Any]) -> Optional[AutotuneConfig]:
        if not (isinstance(elt, ast.Call) and _attr_name(elt.func) == "Config"):
            return None
        full = {**self._module_env(), **env}
        kwargs: dict[str, Any] = {}
        if elt.args and isinstance(elt.args[0], ast.Dict):
            for k, v in zip(elt.args[0].keys, elt.args[0].values):
                if isinstance(k, ast.Constant):
                    kwargs[str(k.value)] = _eval_const(v, full)
        cfg = AutotuneConfig(kwargs=kwargs, line=elt.lineno)
        for kw in elt.keywords:
            if kw.arg == "kwargs" and isinstance(kw.value, ast.Dict):
                for k, v in zip(kw.value.keys, kw.value.values):
                    if isinstance(k, ast.Constant):
                        kwargs[str(k.value)] = _eval_const(v, full)
            elif kw.arg in ("num_warps", "num_stages"):
                setattr(cfg, kw.arg, _eval_const(kw.value, full))
        return cfg

    def _heuristics(self, name: str, fn: ast.FunctionDef) -> None:
        """``@triton.heuristics({"BLOCK_N": lambda args: ..., "num_warps": heur})``: computed knobs."""
        for dec in self._decorators(name, fn):
            if not (isinstance(dec, ast.Call) and _attr_name(dec.func) == "heuristics"):
                continue
            table = dec.args[0] if dec.args else next((kw.value for kw in dec.keywords if kw.arg == "values"), None)
            if isinstance(table, ast.Name) and table.id in self.module_lists:
                table = self.module_lists[table.id]
            if not isinstance(table, ast.Dict):
                continue
            for key, val in zip(table.keys, table.values):
                if not isinstance(key, ast.Constant):
                    continue
                param = str(key.value)
                body: Optional[ast.AST] = None
                if isinstance(val, ast.Lambda):
                    body = val.body
                elif isinstance(val, ast.Name) and val.id in self.funcs:
                    rets = [r for r in ast.walk(self.funcs[val.id]) if isinstance(r, ast.Return) and r.value]
                    body = rets[-1].value if len(rets) == 1 else None
                    if body is None and rets:
                        self.add(Knob(name=param, value=None, line=rets[0].lineno, kind=_kind_of(param),
                                      text=f"{val.id}(args)", param=param, kernel=name, where="heuristics",
                                      site="param"))
                        continue
                if body is None:
                    continue
                self.add(Knob(name=param, value=self.const(body), line=body.lineno, kind=_kind_of(param),
                              text=self.text(body), param=param, kernel=name, where="heuristics",
                              site="heuristic", col=body.col_offset))

    # -------------------------------------------------------------- launches

    def _launches(self, tree: ast.Module) -> None:
        """``kernel[grid](...)``, ``kernel.warmup(..., grid=)`` and compiled-handle launches."""
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            if fn.name in self.jit:
                continue
            local = self._locals(fn)
            handles = self._handles(fn)
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                if isinstance(func, ast.Subscript):
                    target = func.value
                    kname = target.id if isinstance(target, ast.Name) else _attr_name(target)
                    if kname in handles and kname not in self.jit:
                        # h = k.warmup(...); h[grid](...): the constexprs were fixed at warm-up.
                        self._grid(handles[kname], func.slice, local, node.lineno, via="compiled")
                        self.k.launch_lines.setdefault(handles[kname], []).append(node.lineno)
                        continue
                    if kname not in self.jit:
                        continue
                    self._grid(kname, func.slice, local, node.lineno)
                    self._launch(kname, node, local, "launch", fn)
                elif isinstance(func, ast.Attribute) and func.attr in ("warmup", "run") and \
                        _attr_name(func.value) in self.jit:
                    kname = _attr_name(func.value)
                    g = next((kw.value for kw in node.keywords if kw.arg == "grid"), None)
                    if g is not None:
                        self._grid(kname, g, local, node.lineno, via="warmup")
                    self._launch(kname, node, local, "warmup", fn)

    def _handles(self, fn: ast.AST) -> dict[str, str]:
        """Local names bound to ``kernel.warmup(...)``: compiled handles, by kernel."""
        out: dict[str, str] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                f = node.value.func
                if isinstance(f, ast.Attribute) and f.attr == "warmup" and _attr_name(f.value) in self.jit:
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            out[t.id] = _attr_name(f.value)
        return out

    def _launch(self, kname: str, node: ast.Call, local: dict[str, _Def], via: str,
                fn: Optional[ast.AST] = None) -> None:
        self.k.launch_lines.setdefault(kname, []).append(node.lineno)
        params = [a.arg for a in self.jit[kname].args.args]
        constexprs = set(self.k.constexpr_params.get(kname, []))
        for i, arg in enumerate(node.args):
            if i < len(params) and params[i] in constexprs:
                self._passed(kname, params[i], arg, local, node)
        for kw in node.keywords:
            if kw.arg and (kw.arg in constexprs or kw.arg in ("num_warps", "num_stages")):
                self._passed(kname, kw.arg, kw.value, local, node)
            elif kw.arg is None and isinstance(kw.value, ast.Name) and fn is not None:
                # `kernel_args["BLOCK_ROW"] = BLOCK_ROW; k[grid](..., **kernel_args)` (Liger's rms_norm)
                for key, value in _dict_items(fn, kw.value.id, node.lineno):
                    if key in constexprs or key in ("num_warps", "num_stages"):
                        self._passed(kname, key, value, local, node)
        # Launches that leave num_warps/num_stages to Triton still have them: a knob to add.
        tuned = {k.param for k in self.k.knobs if k.kernel == kname and k.where in ("autotune", "heuristics")}
        given = {kw.arg for kw in node.keywords}
        # Constexprs the launch leaves to the kernel's own defaults (`BLOCK_M: tl.constexpr = 8`).
        fn = self.jit[kname]
        positional = fn.args.posonlyargs + fn.args.args
        passed_pos = {params[i] for i in range(min(len(node.args), len(params)))}
        defaults = list(zip(positional[len(positional) - len(fn.args.defaults):], fn.args.defaults))
        defaults += [(a, d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None]
        for a, d in defaults:
            if a.arg in constexprs and a.arg not in given and a.arg not in passed_pos and a.arg not in tuned:
                self.add(Knob(name=a.arg, value=self.const(d), line=d.lineno, kind="constexpr", text=self.text(d),
                              param=a.arg, kernel=kname, where="kernel", site="default", col=d.col_offset,
                              launch_line=node.lineno))
        if kname not in self.k.autotune:
            for opt, default in TRITON_DEFAULTS.items():
                if opt not in given and opt not in tuned:
                    self.add(Knob(name=opt, value=default, line=node.lineno, kind=opt, text="",
                                  param=opt, kernel=kname, where="launch call", site="absent",
                                  launch_line=node.lineno))
        # Block-size variables the launcher computes (used in the grid, say) are knobs too: of the
        # launch whose grid or arguments read them, not of every kernel the launcher starts.
        passed = {k.name for k in self.k.knobs if k.kernel == kname}
        reach = _reaching_names(fn, node) if fn is not None else None
        for lname, d in local.items():
            if _BLOCKISH.search(lname) and lname not in constexprs and lname not in passed \
                    and (reach is None or lname in reach) and d.site not in ("param",):
                self.add(self._knob(lname, lname, d, "block", kname, node.lineno))

    def _knob(self, name: str, param: str, d: _Def, kind: str, kname: str, launch_line: int) -> Knob:
        return Knob(name=name, value=d.value, line=d.line, kind=kind, text=d.text, param=param, kernel=kname,
                    where=d.where, site=d.site, col=d.col, index=d.index, helper=d.helper,
                    call_line=d.call_line, launch_line=launch_line, choices=list(d.choices))

    def _locals(self, fn: ast.FunctionDef) -> dict[str, _Def]:
        """Where each local name of a launcher gets its value (the last assignment wins, as at run time)."""
        out: dict[str, _Def] = {}
        args = fn.args
        positional = args.posonlyargs + args.args
        defaults = dict(zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
        for i, a in enumerate(positional + args.kwonlyargs):
            caller = self._caller_arg(fn, a.arg, i if a in positional else -1)
            if caller is not None:
                # Callers in this file pass it: edit the argument they pass.
                out[a.arg] = caller
            elif a.arg in defaults:
                d = defaults[a.arg]
                # Keyword defaults of the launcher (def kernel(x, BLOCK=1024)) are knobs the user edits.
                out[a.arg] = _Def(self.const(d), d.lineno, self.text(d), "default", d.col_offset, where="launcher")
            else:
                out[a.arg] = _Def(None, a.lineno, a.arg, "param", where="launcher")
        stmts = sorted((n for n in ast.walk(fn) if isinstance(n, (ast.Assign, ast.AnnAssign))),
                       key=lambda n: (n.lineno, n.col_offset))
        depth = _if_depths(fn)
        where_set: dict[str, int] = {}  # name -> if-nesting depth of the definition kept
        for node in stmts:
            names = [n for n, _, _ in _assign_targets_ix(node)]
            reads = {x.id for x in ast.walk(node.value) if isinstance(x, ast.Name)} if node.value else set()
            if names and all(n in out and n in reads and depth.get(id(node), 0) > where_set.get(n, 0)
                             for n in names):
                # `if is_cdna(): num_warps = num_warps // 2`: a conditional adjustment of a value
                # defined above; the definition that holds on the common path stays the knob.
                continue
            for n in names:
                where_set[n] = depth.get(id(node), 0)
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Name) and node.value.func.id in self.funcs \
                    and node.value.func.id not in self.jit:
                got = self._helper(node, out)
                if got:
                    out.update(got)
                    continue
            for name, value, index in _assign_targets_ix(node):
                out[name] = self.value_def(value, out, "constant", "launcher", index)
        return out

    def _caller_arg(self, fn: ast.FunctionDef, pname: str, pos: int) -> Optional[_Def]:
        """The literal a caller in this file passes for parameter ``pname`` of ``fn`` (one call only)."""
        if self.tree is None or fn.name in ("kernel", "forward"):
            return None  # the harness calls these with the inputs
        calls = [c for c in ast.walk(self.tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                 and c.func.id == fn.name]
        found: list[ast.AST] = []
        for c in calls:
            kw = next((k.value for k in c.keywords if k.arg == pname), None)
            if kw is not None:
                found.append(kw)
            elif 0 <= pos < len(c.args):
                found.append(c.args[pos])
        if len(found) != 1 or len(calls) != 1:
            return None
        v = self.const(found[0])
        if v is None or isinstance(v, (list, str)):
            return None
        return _Def(v, found[0].lineno, self.text(found[0]), "argument", found[0].col_offset, where="caller")

    def _helper(self, node: ast.Assign, local: dict[str, _Def]) -> dict[str, _Def]:
        """``A, B = helper(n)``: each name's definition inside the helper's body."""
        call = node.value
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
        h = self.funcs[call.func.id]
        target = node.targets[0]
        names = [e.id if isinstance(e, ast.Name) else "" for e in target.elts] if isinstance(target, ast.Tuple) \
            else [target.id] if isinstance(target, ast.Name) else []
        rets = [r.value for r in ast.walk(h) if isinstance(r, ast.Return) and r.value is not None]
        if not names or len(rets) != 1:
            return {}
        ret = rets[0]
        elts = ret.elts if isinstance(ret, ast.Tuple) and len(names) > 1 else [ret]
        if len(elts) != len(names):
            return {}
        assigns: dict[str, list[ast.stmt]] = {}
        for st in sorted((s for s in ast.walk(h) if isinstance(s, (ast.Assign, ast.AnnAssign))),
                         key=lambda s: s.lineno):
            for n, _, _ in _assign_targets_ix(st):
                assigns.setdefault(n, []).append(st)
        out: dict[str, _Def] = {}
        for i, (name, elt) in enumerate(zip(names, elts)):
            if not name:
                continue
            index = i if len(names) > 1 else -1
            src_nodes = assigns.get(elt.id, []) if isinstance(elt, ast.Name) else []
            values = [v for st in src_nodes for n, v, _ in _assign_targets_ix(st) if n == elt.id]  # type: ignore
            if values:
                first = values[0]
                choices = [c for c in (self.const(v) for v in values) if c is not None]
                single = len(values) == 1
                text = self.text(first) if single else " / ".join(self.text(v) for v in values)
                out[name] = _Def(self.const(first) if single else None, first.lineno, text, "helper",
                                 first.col_offset, index, h.name, node.lineno, "helper", choices)
            else:
                out[name] = _Def(self.const(elt), elt.lineno, self.text(elt), "helper", elt.col_offset, index,
                                 h.name, node.lineno, "helper")
        return out

    def _passed(self, kname: str, param: str, value: ast.AST, local: dict[str, _Def], call: ast.Call) -> None:
        kind = param if param in ("num_warps", "num_stages") else "constexpr"
        if isinstance(value, ast.Name):
            d = local.get(value.id) or self.module_defs.get(value.id)
            if d is None and value.id in self.module_consts:
                v, line, text = self.module_consts[value.id]
                d = _Def(v, line, text, "constant", where="module")
            if d is not None:
                self.add(self._knob(value.id, param, d, kind, kname, call.lineno))
                self._dependencies(d, param, kname, call.lineno)
                return
        v = self.const(value, local)
        site = "keyword" if v is not None and isinstance(value, (ast.Constant, ast.UnaryOp)) else "expression"
        self.add(Knob(name=param, value=v, line=value.lineno, kind=kind, text=self.text(value), param=param,
                      kernel=kname, where="launch call", site=site, col=value.col_offset, launch_line=call.lineno))

    def _dependencies(self, d: _Def, param: str, kname: str, launch_line: int) -> None:
        """Module constants a computed value reads (``min(MAX_FUSED_SIZE, ...)``) are its knobs too."""
        if d.site not in ("expression", "helper"):
            return
        try:
            names = {n.id for n in ast.walk(ast.parse(d.text.replace(" / ", " + "), mode="eval"))
                     if isinstance(n, ast.Name)}
        except SyntaxError:
            return
        for n in sorted(names):
            md = self.module_defs.get(n)
            if _DEVICE_FACT.search(n):
                continue  # SIZE_SMEM, NUM_SM: what the device has, not what the user picks
            if md is not None and isinstance(md.value, (int, float)) and not isinstance(md.value, bool):
                kind = "num_warps" if param == "num_warps" else "num_stages" if param == "num_stages" else "block"
                self.add(Knob(name=n, value=md.value, line=md.line, kind=kind, text=md.text, param=n, kernel=kname,
                              where="module", site=md.site, col=md.col, index=md.index, launch_line=launch_line))

    def _grid(self, kname: str, node: ast.AST, local: dict, line: int, via: str = "launch") -> None:
        expr = node
        if isinstance(node, ast.Name):
            found = _find_assignment_value(self, node.id, local)
            if found is not None:
                expr, line = found
        if isinstance(expr, ast.Lambda):
            expr = expr.body
        dims = len(expr.elts) if isinstance(expr, (ast.Tuple, ast.List)) else None
        self.k.grids.append(GridInfo(kernel=kname, dims=dims, text=self.text(expr), line=line, via=via))

    def _module_knobs(self) -> None:
        """Module-level UPPERCASE tile constants that no launch consumed are still knobs."""
        used = {k.name for k in self.k.knobs}
        for name, (v, line, text) in self.module_consts.items():
            if name in used or not name.isupper() or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if _LIMIT.search(name):
                continue  # MAX_FUSED_SIZE, NUM_SM, SIZE_SMEM: limits and device facts, not knobs
            if re.search(r"WARPS", name):
                kind = "num_warps"
            elif re.search(r"STAGES", name):
                kind = "num_stages"
            elif _BLOCKISH.search(name):
                kind = "block"
            elif name in getattr(self, "launcher_names", ()) and isinstance(v, int):
                kind = "launch"  # e.g. NUM_PROGRAMS in the grid expression
            else:
                continue
            d = self.module_defs.get(name)
            self.add(Knob(name=name, value=v, line=line, kind=kind, text=text, param=name, where="module",
                          site=d.site if d else "constant", col=d.col if d else -1,
                          index=d.index if d else -1))


def _reaching_names(fn: ast.AST, launch: ast.Call) -> set[str]:
    """Names a launch reads, directly or through the launcher's assignments above it
    (``grid = (triton.cdiv(n, BLOCK),)``; ``kernel_args["BLOCK_ROW"] = BLOCK_ROW``)."""
    deps: dict[str, set[str]] = {}
    for st in ast.walk(fn):
        if isinstance(st, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and st.value is not None \
                and st.lineno < launch.lineno:
            reads = {x.id for x in ast.walk(st.value) if isinstance(x, ast.Name)}
            for t in (st.targets if isinstance(st, ast.Assign) else [st.target]):
                for x in ast.walk(t):
                    if isinstance(x, ast.Name):
                        deps.setdefault(x.id, set()).update(reads)
    seen: set[str] = set()
    todo = [x.id for x in ast.walk(launch) if isinstance(x, ast.Name)]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps.get(n, ()))
    return seen


def _dict_items(fn: ast.AST, name: str, before: int) -> list[tuple[str, ast.AST]]:
    """The string keys a launcher puts in the dict ``name`` above line ``before``, with their values:
    ``d["K"] = v`` and ``d = {"K": v}`` / ``dict(K=v)``."""
    out: list[tuple[str, ast.AST]] = []
    for st in ast.walk(fn):
        if not isinstance(st, ast.Assign) or st.lineno >= before:
            continue
        for t in st.targets:
            if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name \
                    and isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str):
                out.append((t.slice.value, st.value))
            elif isinstance(t, ast.Name) and t.id == name:
                v = st.value
                if isinstance(v, ast.Dict):
                    out += [(k.value, x) for k, x in zip(v.keys, v.values)
                            if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                elif isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "dict":
                    out += [(k.arg, k.value) for k in v.keywords if k.arg]
    return out


def _if_depths(fn: ast.AST) -> dict[int, int]:
    """id(statement) -> how many ``if`` blocks enclose it inside ``fn``."""
    out: dict[int, int] = {}

    def visit(node: ast.AST, d: int) -> None:
        for child in ast.iter_child_nodes(node):
            cd = d + 1 if isinstance(node, ast.If) and isinstance(child, ast.stmt) else d
            if isinstance(child, ast.stmt):
                out[id(child)] = cd
            visit(child, cd)
    visit(fn, 0)
    return out


def _module_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements in source order, into if/else and try blocks (not into defs)."""
    out: list[ast.stmt] = []
    for st in body:
        if isinstance(st, ast.If):
            out += _module_statements(st.body) + _module_statements(st.orelse)
        elif isinstance(st, ast.Try):
            out += _module_statements(st.body) + _module_statements(st.orelse)
        else:
            out.append(st)
    return out


def _functional_jit(value: ast.AST) -> Optional[tuple[str, list[ast.Call]]]:
    """``triton.heuristics(...)(triton.jit(f))``: (f, the decorator calls other than jit)."""
    decs: list[ast.Call] = []
    node = value
    seen_jit = False
    while isinstance(node, ast.Call) and len(node.args) == 1:
        f = node.func
        if isinstance(f, ast.Call) and _attr_name(f.func) in ("autotune", "heuristics"):
            decs.append(f)  # triton.autotune(...)(X)
        elif _attr_name(f) == "jit":
            seen_jit = True
        else:
            return None
        node = node.args[0]
    if isinstance(node, ast.Name) and (seen_jit or decs):
        return node.id, decs
    return None


def _row_spanning(fn: ast.FunctionDef, params: Sequence[str]) -> list[str]:
    """The constexpr parameters whose one block must span a whole row of the kernel's data.

    ``P`` spans the row when the body builds offsets with ``tl.arange(0, P)`` (alone, or indexed
    as ``[None, :]``), compares them with ``<`` (the ``mask = cols < n_cols`` that drops the
    padding) and uses ``P`` nowhere else but as a shape (``tl.zeros([P], ...)``): not in a loop's
    range (``for off in range(0, n, P)``, a kernel that walks the row in chunks) and not in
    arithmetic (``pid * P + tl.arange(0, P)``, an elementwise kernel's blocks, where a smaller
    block just means more programs). unsloth's ``_cross_entropy_forward`` reads its vocabulary
    row this way; Liger's ``_softmax_multi_block_forward_kernel`` and cross-entropy loop instead.
    """
    nodes = [n for st in fn.body for n in ast.walk(st)]
    out: list[str] = []
    for p in params:
        aranges = [n for n in nodes if isinstance(n, ast.Call) and _attr_name(n.func) == "arange"
                   and len(n.args) == 2 and isinstance(n.args[0], ast.Constant) and n.args[0].value == 0
                   and isinstance(n.args[1], ast.Name) and n.args[1].id == p]
        if not aranges:
            continue
        allowed = {id(a.args[1]) for a in aranges}
        for n in nodes:  # shapes: tl.zeros([P], ...), tl.full((P,), ...), x.reshape((1, P))
            if isinstance(n, ast.Call):
                for a in list(n.args) + [kw.value for kw in n.keywords]:
                    if isinstance(a, (ast.List, ast.Tuple)):
                        allowed |= {id(e) for e in a.elts if isinstance(e, ast.Name) and e.id == p}
        if any(isinstance(n, ast.Name) and n.id == p and id(n) not in allowed for n in nodes):
            continue  # stepped over, scaled by a program id, or tested: not (only) a row's width
        ids = {id(a) for a in aranges}
        offsets = {t.id for n in nodes if isinstance(n, ast.Assign) and id(_unindexed(n.value)) in ids
                   for t in n.targets if isinstance(t, ast.Name)}

        def is_offsets(e: ast.AST) -> bool:
            e = _unindexed(e)
            return id(e) in ids or (isinstance(e, ast.Name) and e.id in offsets)

        if any(isinstance(n, ast.Compare) and len(n.ops) == 1 and (
                (isinstance(n.ops[0], (ast.Lt, ast.LtE)) and is_offsets(n.left))
                or (isinstance(n.ops[0], (ast.Gt, ast.GtE)) and is_offsets(n.comparators[0])))
               for n in nodes):
            out.append(p)
    return out


def _unindexed(node: ast.AST) -> ast.AST:
    """``x[None, :]`` -> ``x``: the value a broadcast index reads."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return node


def _computed(node: ast.AST) -> bool:
    """Does the expression read names or call functions (more than literal arithmetic)?"""
    return any(isinstance(n, (ast.Name, ast.Call)) for n in ast.walk(node))


def _kind_of(param: str) -> str:
    return param if param in ("num_warps", "num_stages") else "constexpr"


def _truthy(v: Any) -> bool:
    return bool(v) if v is not None else False


def _bind(target: ast.AST, item: Any, env: dict[str, Any]) -> bool:
    if isinstance(target, ast.Name):
        env[target.id] = item
        return True
    if isinstance(target, ast.Tuple) and isinstance(item, (list, tuple)) and len(item) == len(target.elts):
        return all(_bind(t, v, env) for t, v in zip(target.elts, item))
    return False


def _find_assignment_value(f: _Finder, name: str, local: dict) -> Optional[tuple[ast.AST, int]]:
    tree = f.tree or ast.parse(f.src)
    best: Optional[tuple[ast.AST, int]] = None
    want = local[name].line if name in local and isinstance(local[name], _Def) else None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            for n, value, _ in _assign_targets_ix(node):
                if n == name and (want is None or node.lineno == want or value.lineno == want):
                    best = (value, node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            # def grid(meta): return (...)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and sub.value is not None:
                    best = (sub.value, sub.lineno)
    return best


# ---------------------------------------------------------------------- ast helpers


def _assign_targets(node: ast.AST) -> list[tuple[str, ast.AST]]:
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.Assign):
        for t in node.targets:
            if isinstance(t, ast.Name):
                out.append((t.id, node.value))
            elif isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple) and len(t.elts) == len(node.value.elts):
                out += [(e.id, v) for e, v in zip(t.elts, node.value.elts) if isinstance(e, ast.Name)]
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        out.append((node.target.id, node.value))
    return out


def _assign_targets_ix(node: ast.AST) -> list[tuple[str, ast.AST, int]]:
    """(name, value node, tuple index or -1) for each name an assignment binds to a known value."""
    out: list[tuple[str, ast.AST, int]] = []
    if isinstance(node, ast.Assign):
        for t in node.targets:
            if isinstance(t, ast.Name):
                out.append((t.id, node.value, -1))
            elif isinstance(t, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List)) \
                    and len(t.elts) == len(node.value.elts):
                out += [(e.id, v, i) for i, (e, v) in enumerate(zip(t.elts, node.value.elts))
                        if isinstance(e, ast.Name)]
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        out.append((node.target.id, node.value, -1))
    return out


def _attr_name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _is_jit(fn: ast.AST) -> bool:
    for dec in getattr(fn, "decorator_list", []):
        target = dec.func if isinstance(dec, ast.Call) else dec
        if _attr_name(target) in ("jit", "autotune", "heuristics"):
            return True
    return False


def _constexpr_params(fn: ast.FunctionDef) -> list[str]:
    out = []
    for a in fn.args.args + fn.args.kwonlyargs:
        if a.annotation is not None and "constexpr" in ast.unparse(a.annotation):
            out.append(a.arg)
    return out


_BINOPS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a // b, ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b,
    ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b, ast.Mod: lambda a, b: a % b,
}


_CMPS = {ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b, ast.Lt: lambda a, b: a < b,
         ast.LtE: lambda a, b: a <= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}


def _eval_const(node: ast.AST, env: dict[str, Any]) -> Any:
    """Evaluate literals, names of known constants and arithmetic on them; None otherwise."""
    try:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            return node.value
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            v = _eval_const(node.operand, env)
            return -v if isinstance(v, (int, float)) else None
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = _eval_const(node.left, env), _eval_const(node.right, env)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
                return _BINOPS[type(node.op)](a, b)
        if isinstance(node, (ast.Tuple, ast.List)):
            vals = [_eval_const(e, env) for e in node.elts]
            return None if any(v is None for v in vals) else vals
        if isinstance(node, ast.IfExp):
            test = _eval_const(node.test, env)
            return None if test is None else _eval_const(node.body if test else node.orelse, env)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPS:
            a, b = _eval_const(node.left, env), _eval_const(node.comparators[0], env)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                return _CMPS[type(node.ops[0])](a, b)
        if isinstance(node, ast.Call) and not node.keywords:
            fname = _attr_name(node.func)
            args = [_eval_const(a, env) for a in node.args]
            if any(not isinstance(a, (int, float)) or isinstance(a, bool) for a in args) or not args:
                return None
            if fname in ("min", "max"):
                return (min if fname == "min" else max)(args)
            if fname == "next_power_of_2" and len(args) == 1 and args[0] >= 1:
                return 1 << (int(args[0]) - 1).bit_length()
            if fname == "cdiv" and len(args) == 2 and args[1]:
                return -(-int(args[0]) // int(args[1]))
    except (ArithmeticError, ValueError, OverflowError):
        return None
    return None
