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
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from profd.model import JsonMixin

#: Kinds of knob, in the vocabulary levers use.
KINDS = ("constexpr", "num_warps", "num_stages", "autotune", "block", "launch")

# Names that hold a tile or block size even when they are not constexpr parameters.
_BLOCKISH = re.compile(r"(BLOCK|TILE|^B[MNK]$|^BS$|GROUP|CHUNK|SPLIT|_SIZE$|^XBLOCK$|^RBLOCK$)", re.I)
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
    where: str = ""  # "module", "launcher", "launch call", "autotune"

    def shown(self) -> str:
        """``NAME = value`` as the user would read it in the source."""
        v = self.text or repr(self.value)
        return f"{self.name} = {v}"


@dataclass
class GridInfo(JsonMixin):
    """The launch grid of one kernel launch."""

    kernel: str
    dims: Optional[int]  # 1, 2, 3; None when the expression cannot be read (a callable, say)
    text: str
    line: int


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
    errors: list[str] = field(default_factory=list)

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

    def uses_dot(self, kernel: str = "") -> bool:
        return bool(self.dot_kernels) if not kernel else _kernel_in(kernel, self.dot_kernels)

    def is_grouped(self, kernel: str = "") -> bool:
        return self.grouped_order if not kernel else _kernel_in(kernel, self.grouped_kernels)

    def _for_kernel(self, kernel: str) -> list[Knob]:
        if not kernel or not any(_kernel_in(kernel, [k.kernel]) for k in self.knobs if k.kernel):
            return self.knobs
        # Knobs not tied to a kernel (module constants no launch uses) still apply.
        return [k for k in self.knobs if not k.kernel or _kernel_in(kernel, [k.kernel])]


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


class _Finder:
    def __init__(self, source: str, knobs: Knobs) -> None:
        self.src = source
        self.k = knobs
        self.module_consts: dict[str, tuple[Any, int, str]] = {}  # name -> (value, line, text)
        self.module_lists: dict[str, ast.AST] = {}
        self.jit: dict[str, ast.FunctionDef] = {}
        self.seen: set[tuple[str, int, str]] = set()

    # -------------------------------------------------------------- helpers

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.src, node) or ast.unparse(node)

    def const(self, node: ast.AST, local: Optional[dict[str, tuple[Any, int, str]]] = None) -> Any:
        """Evaluate a small constant expression; None when it depends on runtime values."""
        env = {n: v[0] for n, v in self.module_consts.items()}
        if local:
            env.update({n: v[0] for n, v in local.items()})
        return _eval_const(node, env)

    def add(self, knob: Knob) -> None:
        key = (knob.name, knob.line, knob.kind)
        if key in self.seen:
            return
        self.seen.add(key)
        self.k.knobs.append(knob)

    # -------------------------------------------------------------- passes

    def run(self, tree: ast.Module) -> None:
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for name, value in _assign_targets(node):
                    v = self.const(value)
                    if isinstance(value, (ast.List, ast.Tuple)):
                        self.module_lists[name] = value
                    if v is not None:
                        self.module_consts[name] = (v, node.lineno, self.text(value))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_jit(node):
                self.jit[node.name] = node  # type: ignore[assignment]
        self.k.kernels = list(self.jit)
        for name, fn in self.jit.items():
            self.k.constexpr_params[name] = _constexpr_params(fn)
            self._kernel_body(name, fn)
            self._autotune(name, fn)
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
        """Grouped program order and tl.dot use, read from the kernel body."""
        clues: list[tuple[int, int, str]] = []  # (strength rank, line, text): strongest clue wins
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and _attr_name(node.func) in ("dot", "dot_scaled"):
                if name not in self.k.dot_kernels:
                    self.k.dot_kernels.append(name)
            clue = self._grouping_evidence(node)
            if clue:
                clues.append((clue[0], getattr(node, "lineno", fn.lineno), clue[1]))
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
            names = {n.id for n in ast.walk(node.right) if isinstance(n, ast.Name)}
            if any(re.match(r"GROUP", n, re.I) for n in names):
                return 1, f"`{self.text(node)}`"
        if isinstance(node, ast.Name) and node.id.lower() in _GROUP_NAMES and isinstance(node.ctx, ast.Store):
            return 2, f"`{node.id}`"
        return None

    def _autotune(self, name: str, fn: ast.FunctionDef) -> None:
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and _attr_name(dec.func) == "autotune"):
                continue
            cfg_node: Optional[ast.AST] = None
            for kw in dec.keywords:
                if kw.arg == "configs":
                    cfg_node = kw.value
            if cfg_node is None and dec.args:
                cfg_node = dec.args[0]
            if isinstance(cfg_node, ast.Name):
                cfg_node = self.module_lists.get(cfg_node.id, cfg_node)
            configs = self._configs(cfg_node)
            self.k.autotune[name] = configs
            line = getattr(cfg_node, "lineno", dec.lineno)
            values: dict[str, list[Any]] = {}
            for c in configs:
                for key, v in list(c.kwargs.items()) + [("num_warps", c.num_warps), ("num_stages", c.num_stages)]:
                    if v is not None and v not in values.setdefault(key, []):
                        values[key].append(v)
            for key, vals in values.items():
                self.add(Knob(name=key, value=vals, line=line, kind="autotune",
                              text=", ".join(map(str, vals)), param=key, kernel=name, where="autotune"))

    def _configs(self, node: Optional[ast.AST]) -> list[AutotuneConfig]:
        out: list[AutotuneConfig] = []
        if not isinstance(node, (ast.List, ast.Tuple)):
            return out
        for elt in node.elts:
            if not (isinstance(elt, ast.Call) and _attr_name(elt.func) == "Config"):
                continue
            kwargs: dict[str, Any] = {}
            if elt.args and isinstance(elt.args[0], ast.Dict):
                for k, v in zip(elt.args[0].keys, elt.args[0].values):
                    if isinstance(k, ast.Constant):
                        kwargs[str(k.value)] = self.const(v)
            cfg = AutotuneConfig(kwargs=kwargs, line=elt.lineno)
            for kw in elt.keywords:
                if kw.arg == "kwargs" and isinstance(kw.value, ast.Dict):
                    for k, v in zip(kw.value.keys, kw.value.values):
                        if isinstance(k, ast.Constant):
                            kwargs[str(k.value)] = self.const(v)
                elif kw.arg in ("num_warps", "num_stages"):
                    setattr(cfg, kw.arg, self.const(kw.value))
            out.append(cfg)
        return out

    def _launches(self, tree: ast.Module) -> None:
        """``kernel[grid](...)`` calls: what each constexpr / launch keyword receives."""
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            if fn.name in self.jit:
                continue
            local = self._locals(fn)
            for node in ast.walk(fn):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)):
                    continue
                target = node.func.value
                kname = target.id if isinstance(target, ast.Name) else _attr_name(target)
                if kname not in self.jit:
                    continue
                self._grid(kname, node.func.slice, local, node.lineno)
                params = [a.arg for a in self.jit[kname].args.args]
                constexprs = set(self.k.constexpr_params.get(kname, []))
                for i, arg in enumerate(node.args):
                    if i < len(params) and params[i] in constexprs:
                        self._passed(kname, params[i], arg, local, node)
                for kw in node.keywords:
                    if kw.arg and (kw.arg in constexprs or kw.arg in ("num_warps", "num_stages")):
                        self._passed(kname, kw.arg, kw.value, local, node)
                # Block-size variables the launcher computes (used in the grid, say) are knobs too.
                passed = {k.name for k in self.k.knobs if k.kernel == kname}
                for lname, (v, line, text) in local.items():
                    if _BLOCKISH.search(lname) and lname not in constexprs and lname not in passed:
                        self.add(Knob(name=lname, value=v, line=line, kind="block", text=text,
                                      param=lname, kernel=kname, where="launcher"))

    def _locals(self, fn: ast.AST) -> dict[str, tuple[Any, int, str]]:
        """Simple assignments in a launcher function (the last one wins, as at run time)."""
        out: dict[str, tuple[Any, int, str]] = {}
        args = getattr(fn, "args", None)
        if args is not None:
            # Keyword defaults of the launcher (def kernel(x, BLOCK=1024)) are knobs the user edits.
            positional = args.posonlyargs + args.args
            for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults):
                out[a.arg] = (self.const(d), d.lineno, self.text(d))
            for a, d in zip(args.kwonlyargs, args.kw_defaults):
                if d is not None:
                    out[a.arg] = (self.const(d), d.lineno, self.text(d))
        for node in ast.walk(fn):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for name, value in _assign_targets(node):
                    out[name] = (self.const(value, out), node.lineno, self.text(value))
        return out

    def _passed(self, kname: str, param: str, value: ast.AST, local: dict, call: ast.Call) -> None:
        kind = param if param in ("num_warps", "num_stages") else "constexpr"
        if isinstance(value, ast.Name):
            src = local.get(value.id) or self.module_consts.get(value.id)
            where = "launcher" if value.id in local else "module"
            if src is not None:
                v, line, text = src
                self.add(Knob(name=value.id, value=v, line=line, kind=kind, text=text,
                              param=param, kernel=kname, where=where))
                return
        self.add(Knob(name=param, value=self.const(value, local), line=value.lineno, kind=kind,
                      text=self.text(value), param=param, kernel=kname, where="launch call"))

    def _grid(self, kname: str, node: ast.AST, local: dict, line: int) -> None:
        expr = node
        if isinstance(node, ast.Name):
            found = _find_assignment_value(self, node.id, local)
            if found is not None:
                expr, line = found
        if isinstance(expr, ast.Lambda):
            expr = expr.body
        dims = len(expr.elts) if isinstance(expr, (ast.Tuple, ast.List)) else None
        self.k.grids.append(GridInfo(kernel=kname, dims=dims, text=self.text(expr), line=line))

    def _module_knobs(self) -> None:
        """Module-level UPPERCASE tile constants that no launch consumed are still knobs."""
        used = {k.name for k in self.k.knobs}
        for name, (v, line, text) in self.module_consts.items():
            if name in used or not name.isupper() or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
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
            self.add(Knob(name=name, value=v, line=line, kind=kind, text=text, param=name, where="module"))


def _find_assignment_value(f: _Finder, name: str, local: dict) -> Optional[tuple[ast.AST, int]]:
    tree = ast.parse(f.src)
    best: Optional[tuple[ast.AST, int]] = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            for n, value in _assign_targets(node):
                if n == name and (name not in local or node.lineno == local[name][1]):
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
    except (ArithmeticError, ValueError, OverflowError):
        return None
    return None
