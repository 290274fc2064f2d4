"""CUDA knobs inside a Python target: find the CUDA source strings, the knobs in them, and rewrite them.

The commonest KernelBench ``ModelNew`` builds a CUDA kernel with
``torch.utils.cpp_extension.load_inline(cpp_sources=..., cuda_sources=...)``; CuPy targets use
``cupy.RawKernel(code, name)`` / ``cupy.RawModule(code=...)``. The tunable values of such a
kernel live in C++ text inside Python string literals, so :mod:`advisors.knobs` (an AST pass over
Python) cannot see them. This module reads the Python file with ``ast`` (it never imports or runs
it), finds every CUDA/C++ source string, and inside them:

* ``#define TILE 16``                                     kind ``define``
* ``constexpr int BLOCK = 256;`` / ``static const int`` /
  ``const int threads = 256;`` in the wrapper                kind ``constexpr``
* plain ``int threads = 256;`` used by a launch             kind ``local``
* template arguments at a launch ``kern<16><<<...>>>``     kind ``template``
* ``__launch_bounds__(256)``                                kind ``launch_bounds``
* literal block / grid dims (``dim3 block(16, 16)``,
  ``<<<blocks, 256>>>``), literal dynamic shared memory     kinds ``block``, ``grid``, ``smem``
* ``__shared__ float tile[TILE][TILE]`` arrays (padding)    kind ``shared_array``
* CuPy launches ``kern((grid,), (block,), args)`` with the
  block (or grid) a Python constant                          kinds ``block`` / ``grid`` (where="python")

Each knob records the line **in the user's .py file** (the string's first line plus the line
within the string), so a finding can say "``#define TILE 16`` at line 31: set to 32".

Rewrites (:func:`set_cuda_knob`, :func:`set_threads_per_block`, :func:`pad_shared_tile`) change
a value where it is defined, so grid, block and shared tiles stay consistent, and return the new
full Python source. When a change cannot be made consistently they raise
:class:`CudaRewriteError` (a :class:`advisors.rewrite.RewriteError`) saying why.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

try:  # one exception type for every rewrite the tuner may try
    from advisors.rewrite import RewriteError as _RewriteBase
except Exception:  # pragma: no cover - advisors.rewrite moved or absent: stay usable on our own
    class _RewriteBase(Exception):  # type: ignore[no-redef]
        pass

try:
    from profd.model import JsonMixin
except Exception:  # pragma: no cover - keep this module importable on its own
    class JsonMixin:  # type: ignore[no-redef]
        def to_dict(self) -> dict[str, Any]:
            import dataclasses

            return dataclasses.asdict(self)  # type: ignore[arg-type]


class CudaRewriteError(_RewriteBase):
    """A CUDA knob change that cannot be made consistently (or whose knob is not there)."""


#: Kinds of CUDA knob.
CUDA_KINDS = ("define", "constexpr", "local", "template", "launch_bounds", "block", "grid", "smem",
              "shared_array")

#: Most threads a CUDA block may have (every architecture since Fermi).
MAX_THREADS_PER_BLOCK = 1024
#: Static shared memory a kernel may declare without opting in to more (cudaFuncSetAttribute).
MAX_STATIC_SHARED_BYTES = 48 * 1024

_CTYPE_BYTES = {"float": 4, "int": 4, "unsigned": 4, "double": 8, "half": 2, "__half": 2, "__nv_bfloat16": 2,
                "char": 1, "short": 2, "long": 8, "float2": 8, "float4": 16, "int4": 16, "int2": 8,
                "uint32_t": 4, "int32_t": 4, "int64_t": 8, "uint8_t": 1, "int8_t": 1, "scalar_t": 4}


# ---------------------------------------------------------------------------- data model


@dataclass
class SourceLine:
    """One line of a CUDA source string, as the compiler sees it, and where it sits in the .py file."""

    text: str  # the line (f-string placeholders kept as ``{expr}``, ``{{``/``}}`` undoubled)
    py_line: int  # 1-based line in the .py file
    col: int = 0  # column in the .py line where this line's text starts (0 except on the string's first line)


@dataclass
class CudaSource(JsonMixin):
    """A CUDA or C++ source string in the user's Python file."""

    name: str  # the variable it is bound to ("matmul_source"), or "" for an inline literal
    role: str  # "cuda" (cuda_sources=, RawKernel/RawModule code), "cpp" (cpp_sources=), "unknown"
    line: int  # .py line of the string's first line
    end_line: int
    kind: str  # "plain", "raw", "f-string"
    used_by: list[str] = field(default_factory=list)  # "load_inline(cuda_sources=) at line 80", ...
    lines: list[SourceLine] = field(default_factory=list)
    exact: bool = True  # every compiler line maps to its own .py line (False: escaped "\n" in a one-line string)

    @property
    def text(self) -> str:
        """The source as the compiler receives it (f-string placeholders left as ``{expr}``)."""
        return "\n".join(ln.text for ln in self.lines)

    def py_line(self, line_in_string: int) -> int:
        """The .py line of the string's ``line_in_string``-th line (1-based)."""
        if not self.lines:
            return self.line
        i = min(max(line_in_string, 1), len(self.lines)) - 1
        return self.lines[i].py_line

    def to_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"name": self.name, "role": self.role, "line": self.line, "end_line": self.end_line,
                "kind": self.kind, "used_by": list(self.used_by), "exact": self.exact}


@dataclass
class CudaKnob(JsonMixin):
    """One tunable value of a CUDA kernel, at the line of the user's .py file where it is defined."""

    name: str  # "TILE", "threads", "block.x", "matmul_kernel<0>", "__launch_bounds__(reduce_kernel)"
    value: Any  # int (tuple for a 2-D/3-D literal dim3), None when not a constant
    line: int  # .py line to edit
    kind: str  # one of CUDA_KINDS
    text: str = ""  # the source line, stripped
    source: str = ""  # the CudaSource it lives in (its variable name), "" for Python-side knobs
    kernel: str = ""  # the __global__ function it feeds, when known
    where: str = "cuda"  # "cuda" (inside a source string) or "python" (CuPy launch constants)
    feeds: list[str] = field(default_factory=list)  # "block", "grid", "smem", "shared", "launch_bounds", "template"

    def shown(self) -> str:
        """How the user reads the knob in the source (``#define TILE 16``)."""
        return self.text or f"{self.name} = {self.value!r}"


@dataclass
class Launch(JsonMixin):
    """One kernel launch: ``kern<T><<<grid, block, smem, stream>>>(...)`` or CuPy ``kern(grid, block, args)``."""

    kernel: str
    line: int
    grid: str
    block: str
    smem: str = ""
    template: list[str] = field(default_factory=list)
    source: str = ""
    where: str = "cuda"


@dataclass
class SharedArray(JsonMixin):
    """A ``__shared__`` array declaration."""

    name: str
    ctype: str
    dims: list[str]
    line: int
    text: str
    source: str = ""
    kernel: str = ""
    padded: bool = False  # the last dim is ``X + k`` (already padded against bank conflicts)
    bytes: Optional[int] = None  # static size when every dim is a known constant


@dataclass
class CudaKnobs(JsonMixin):
    """Everything :func:`discover_cuda` found in one Python file."""

    path: str = ""
    sources: list[CudaSource] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)  # __global__ functions
    knobs: list[CudaKnob] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    shared: list[SharedArray] = field(default_factory=list)
    # Features the levers ask about: "restrict", "vector_loads" (float4/int4 casts), "pragma_unroll",
    # "launch_bounds", "cupy", "load_inline", "dynamic_smem".
    features: dict[str, bool] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"path": self.path, "sources": [s.to_dict() for s in self.sources], "kernels": list(self.kernels),
                "knobs": [k.to_dict() for k in self.knobs], "launches": [x.to_dict() for x in self.launches],
                "shared": [x.to_dict() for x in self.shared], "features": dict(self.features),
                "errors": list(self.errors)}

    def get(self, name: str, kind: Optional[str] = None) -> Optional[CudaKnob]:
        """The first knob called ``name`` (case-sensitive first, then not), optionally of one kind."""
        for exact in (True, False):
            for k in self.knobs:
                if (k.name == name if exact else k.name.lower() == name.lower()) and (kind is None or k.kind == kind):
                    return k
        return None

    def of_kind(self, kind: str, kernel: str = "") -> list[CudaKnob]:
        """Knobs of one kind (for one kernel when ``kernel`` is given)."""
        return [k for k in self.knobs if k.kind == kind and (not kernel or not k.kernel or k.kernel == kernel)]

    def feeding(self, what: str, kernel: str = "") -> list[CudaKnob]:
        """Knobs that feed ``what`` ("block", "grid", "shared", ...) of a launch (of ``kernel``)."""
        return [k for k in self.knobs if what in k.feeds and (not kernel or not k.kernel or k.kernel == kernel)]

    def source_named(self, name: str) -> Optional[CudaSource]:
        for s in self.sources:
            if s.name == name:
                return s
        return None

    def source_for_text(self, text: str) -> Optional[CudaSource]:
        """The source string whose compiled text is ``text`` (what load_inline received at run time).

        f-string placeholders (``{expr}``) match any text on their line, so a runtime value
        built from an f-string still finds its literal."""
        for s in self.sources:
            if s.text == text:
                return s
        want = text.split("\n")
        for s in self.sources:
            if s.kind == "f-string" and len(s.lines) == len(want):
                if all(_line_matches(a.text, b) for a, b in zip(s.lines, want)):
                    return s
        stripped = text.strip("\n")
        for s in self.sources:  # a caller that .strip()ped or dedented the string
            if s.text.strip("\n") == stripped:
                return s
        return None

    @property
    def needs_cuda(self) -> bool:
        """Does this file build CUDA code (load_inline with CUDA sources, load, or CuPy)?"""
        return bool(self.features.get("load_inline") or self.features.get("cupy") or self.features.get("load"))


def _line_matches(template: str, actual: str) -> bool:
    parts = re.split(r"\{[^{}]*\}", template)
    if len(parts) == 1:
        return template == actual
    rx = "^" + "(.*?)".join(re.escape(p) for p in parts) + "$"
    return re.match(rx, actual) is not None


# ---------------------------------------------------------------------------- Python side: the strings


_LOAD_INLINE = ("load_inline",)
_LOAD = ("load",)
_CUPY = ("RawKernel", "RawModule")


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def _call_base(node: ast.Call) -> str:
    f = node.func
    return ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""


def _string_lines(src_lines: list[str], node: ast.expr) -> tuple[list[SourceLine], str, bool]:
    """The compiler lines of string literal ``node`` with their .py lines; (lines, kind, exact)."""
    assert node.end_lineno is not None and node.end_col_offset is not None
    first, last = node.lineno, node.end_lineno
    seg_lines = src_lines[first - 1:last]
    seg_lines = seg_lines[:]  # copy: trim the ends to the literal
    if len(seg_lines) == 1:
        seg_lines[0] = seg_lines[0][node.col_offset:node.end_col_offset]
    else:
        seg_lines[0] = seg_lines[0][node.col_offset:]
        seg_lines[-1] = seg_lines[-1][:node.end_col_offset]
    raw = "\n".join(seg_lines)
    m = re.match(r"(?i)([rbuf]*)('''|\"\"\"|'|\")", raw)
    if not m or not raw.endswith(m.group(2)):
        # implicit concatenation ("a" "b") or something exotic: one line, the evaluated value
        value = node.value if isinstance(node, ast.Constant) else ast.unparse(node)
        return [SourceLine(t, first) for t in str(value).split("\n")], "plain", False
    prefix, quote = m.group(1).lower(), m.group(2)
    is_f, is_raw = "f" in prefix, "r" in prefix
    kind = "f-string" if is_f else ("raw" if is_raw else "plain")
    body = raw[m.end():len(raw) - len(quote)]
    body_col = node.col_offset + m.end()
    out: list[SourceLine] = []
    exact = True
    carry: Optional[SourceLine] = None
    for i, pyl in enumerate(body.split("\n")):
        col = body_col if i == 0 else 0
        py_line = first + i
        text = pyl.replace("{{", "{").replace("}}", "}") if is_f else pyl
        pieces = [text]
        if not is_raw:
            # "\n" escapes in a non-raw literal are compiler line breaks on the same .py line
            pieces = re.split(r"(?<!\\)\\n", text)
            if len(pieces) > 1:
                exact = False
            pieces = [_unescape(p) for p in pieces]
        for j, piece in enumerate(pieces):
            if carry is not None and j == 0:
                carry.text += piece
                sl = carry
                carry = None
            else:
                sl = SourceLine(piece, py_line, col if j == 0 else 0)
                out.append(sl)
        if not is_raw and text.endswith("\\") and not text.endswith("\\\\"):
            # backslash-newline inside a non-raw literal joins the lines
            out[-1].text = out[-1].text[:-1]
            carry = out[-1]
    return out, kind, exact


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    try:
        return ast.literal_eval('"""' + s.replace('"""', '\\"\\"\\"') + '"""')
    except Exception:
        return s


@dataclass
class _StrDef:
    name: str
    node: ast.expr
    line: int


class _PyIndex:
    """String and integer constants of a Python module, by name (module level and inside functions)."""

    def __init__(self, source: str, tree: ast.Module) -> None:
        self.src = source
        self.lines = source.splitlines()
        self.tree = tree
        self.strings: dict[str, list[_StrDef]] = {}
        self.ints: dict[str, list[tuple[int, int, ast.expr]]] = {}  # name -> [(value, line, value node)]
        for node in ast.walk(tree):
            targets: list[tuple[str, ast.expr]] = []
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        targets.append((t.id, node.value))
                    elif isinstance(t, (ast.Tuple, ast.List)) and isinstance(node.value, (ast.Tuple, ast.List)):
                        for a, b in zip(t.elts, node.value.elts):
                            if isinstance(a, ast.Name):
                                targets.append((a.id, b))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                targets.append((node.target.id, node.value))
            for name, value in targets:
                if _is_str(value):
                    self.strings.setdefault(name, []).append(_StrDef(name, value, value.lineno))
                v = _py_int(value)
                if v is not None:
                    self.ints.setdefault(name, []).append((v, value.lineno, value))

    def string_nodes(self, expr: ast.expr) -> list[tuple[str, ast.expr]]:
        """The string literals an argument expression is made of: (bound name or "", literal node)."""
        if _is_str(expr):
            return [("", expr)]
        if isinstance(expr, ast.Name):
            return [(expr.id, d.node) for d in self.strings.get(expr.id, [])[-1:]]
        if isinstance(expr, (ast.List, ast.Tuple)):
            out = []
            for e in expr.elts:
                out += self.string_nodes(e)
            return out
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self.string_nodes(expr.left) + self.string_nodes(expr.right)
        return []

    def int_value(self, name: str) -> Optional[tuple[int, int, ast.expr]]:
        defs = self.ints.get(name)
        if defs and len({d[0] for d in defs}) == 1:
            return defs[0]
        return None


def _is_str(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(node, ast.JoinedStr)


def _py_int(node: ast.AST) -> Optional[int]:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


# ---------------------------------------------------------------------------- C side: the knobs

_RE_DEFINE = re.compile(r"^\s*#\s*define\s+(?P<name>[A-Za-z_]\w*)\s+\(?\s*(?P<value>\d+)[uUlL]*\s*\)?\s*(?://.*|/\*.*)?$")
_RE_CONST = re.compile(
    r"\b(?P<decl>(?:static\s+)?(?:constexpr|const)\s+(?:static\s+)?(?:const\s+)?"
    r"(?:unsigned\s+int|unsigned|int|long|size_t|int32_t|int64_t|uint32_t|auto)|"
    r"(?:unsigned\s+int|unsigned|int|long|size_t|int32_t|int64_t|uint32_t)\s+const)\s+"
    r"(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<value>\d+)[uUlL]*\s*;")
_RE_LOCAL = re.compile(r"(?<![\w.])(?P<decl>int|unsigned|size_t|int64_t|long)\s+(?P<name>[A-Za-z_]\w*)\s*=\s*"
                       r"(?P<value>\d+)[uUlL]*\s*;")
_RE_LAUNCH = re.compile(r"(?P<kernel>[A-Za-z_]\w*)\s*(?:<(?P<tmpl>[^<>;]*)>\s*)?<<<(?P<cfg>.*?)>>>", re.S)
_RE_BOUNDS = re.compile(r"__launch_bounds__\s*\(\s*(?P<args>[^)]*)\)")
_RE_GLOBAL = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(?:static\s+)?(?:void)\s+"
                        r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(?P<name>[A-Za-z_]\w*)\s*\(")
_RE_TEMPLATE = re.compile(r"template\s*<(?P<params>[^<>]*)>\s*(?:__global__)")
_RE_SHARED = re.compile(r"(?:extern\s+)?__shared__\s+(?:__align__\(\d+\)\s+)?(?P<ctype>[A-Za-z_][\w:]*(?:\s+[A-Za-z_]\w*)?)"
                        r"\s+(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\])+)\s*;")
_RE_DIM3 = re.compile(r"\bdim3\s+(?P<name>[A-Za-z_]\w*)\s*(?:\(\s*(?P<a>[^;]*?)\s*\)|=\s*dim3\s*\(\s*(?P<b>[^;]*?)\s*\)|"
                      r"\{\s*(?P<c>[^;]*?)\s*\})\s*;")


def _split_args(text: str) -> list[str]:
    """Split a C argument list on top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def c_eval(expr: str, env: dict[str, int]) -> Optional[int]:
    """Evaluate a small integer C expression (``(TILE + 1) * 4``) with ``env``; None if it is not constant."""
    e = expr.strip()
    e = re.sub(r"(\d+)[uUlL]+\b", r"\1", e)
    e = re.sub(r"sizeof\s*\(\s*([A-Za-z_]\w*)\s*\)", lambda m: str(_CTYPE_BYTES.get(m.group(1), 0) or "x"), e)
    if not re.fullmatch(r"[\w\s+\-*/%()<>]*", e):
        return None
    e = re.sub(r"(?<![/])/(?!/)", "//", e)
    try:
        tree = ast.parse(e, mode="eval")
    except SyntaxError:
        return None

    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and type(n.value) is int:
            return n.value
        if isinstance(n, ast.Name) and n.id in env:
            return env[n.id]
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a // b, ast.Mod: lambda: a % b, ast.LShift: lambda: a << b,
                   ast.RShift: lambda: a >> b}
            for t, f in ops.items():
                if isinstance(n.op, t):
                    return f()
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError

    try:
        return ev(tree)
    except Exception:
        return None


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\b[A-Za-z_]\w*\b", expr))


class _CScan:
    """Scan the lines of all CUDA sources of a file for knobs, launches and shared arrays."""

    def __init__(self, out: CudaKnobs) -> None:
        self.k = out
        self.env: dict[str, int] = {}
        self.by_name: dict[str, CudaKnob] = {}
        self.dim3: dict[str, tuple[list[str], SourceLine, CudaSource]] = {}
        self.locals: list[tuple[CudaKnob, CudaSource]] = []

    def run(self) -> None:
        # Pass 1: definitions (defines, constants, dim3, kernels), so pass 2 can resolve launches.
        for src in self.k.sources:
            at = _kernel_at_lines(src)
            for name in at:
                if name and name not in self.k.kernels:
                    self.k.kernels.append(name)
            for i, ln in enumerate(src.lines):
                t = _strip_comment(ln.text)
                kernel = at[i]
                m = _RE_DEFINE.match(ln.text)
                if m:
                    self._add(CudaKnob(m.group("name"), int(m.group("value")), ln.py_line, "define",
                                       ln.text.strip(), src.name))
                for m in _RE_CONST.finditer(t):
                    self._add(CudaKnob(m.group("name"), int(m.group("value")), ln.py_line, "constexpr",
                                       ln.text.strip(), src.name, kernel=kernel))
                if not _RE_CONST.search(t):
                    for m in _RE_LOCAL.finditer(t):
                        kn = CudaKnob(m.group("name"), int(m.group("value")), ln.py_line, "local", ln.text.strip(),
                                      src.name, kernel=kernel)
                        self.locals.append((kn, src))
                for m in _RE_DIM3.finditer(t):
                    args = _split_args(m.group("a") or m.group("b") or m.group("c") or "")
                    self.dim3[m.group("name")] = (args, ln, src)
                if "__restrict__" in t:
                    self.k.features["restrict"] = True
                if re.search(r"\b(float4|int4|float2|double2|half2|__half2)\b", t) and re.search(r"reinterpret_cast|\*\)", t):
                    self.k.features["vector_loads"] = True
                if re.match(r"\s*#\s*pragma\s+unroll", t):
                    self.k.features["pragma_unroll"] = True
                for m in _RE_BOUNDS.finditer(t):
                    self.k.features["launch_bounds"] = True
                    args = _split_args(m.group("args"))
                    # the kernel name follows on this line or the next few
                    nxt = " ".join(_strip_comment(x.text) for x in src.lines[max(i - 1, 0):i + 3])
                    kg = _RE_GLOBAL.search(nxt)
                    kname = kg.group("name") if kg else kernel
                    v = c_eval(args[0], self.env) if args else None
                    self._add(CudaKnob(f"__launch_bounds__({kname})", v, ln.py_line, "launch_bounds",
                                       ln.text.strip(), src.name, kernel=kname, feeds=["launch_bounds"]))
        # Pass 2: launches and shared arrays.
        for src in self.k.sources:
            text = src.text
            kernel = ""
            offsets = _line_offsets(text)
            for m in _RE_LAUNCH.finditer(text):
                li = _line_at(offsets, m.start())
                ln = src.lines[li]
                name = m.group("kernel")
                cfg = _split_args(m.group("cfg"))
                tmpl = _split_args(m.group("tmpl")) if m.group("tmpl") else []
                launch = Launch(name, ln.py_line, cfg[0] if cfg else "", cfg[1] if len(cfg) > 1 else "",
                                cfg[2] if len(cfg) > 2 else "", tmpl, src.name)
                self.k.launches.append(launch)
                self._launch_knobs(launch, src, li, m)
            at = _kernel_at_lines(src)
            for i, ln in enumerate(src.lines):
                t = _strip_comment(ln.text)
                kernel = at[i]
                for m in _RE_SHARED.finditer(t):
                    dims = re.findall(r"\[([^\]]*)\]", m.group("dims"))
                    ctype = m.group("ctype").split()[-1]
                    padded = bool(dims) and bool(re.search(r"[+]\s*\d+\s*$", dims[-1]))
                    size = None
                    vals = [c_eval(d, self.env) for d in dims] if dims and dims[0].strip() else []
                    if vals and all(v is not None for v in vals) and ctype in _CTYPE_BYTES:
                        size = _CTYPE_BYTES[ctype]
                        for v in vals:
                            size *= v  # type: ignore[operator]
                    sa = SharedArray(m.group("name"), ctype, dims, ln.py_line, ln.text.strip(), src.name, kernel,
                                     padded, size)
                    self.k.shared.append(sa)
                    if "extern" in t:
                        self.k.features["dynamic_smem"] = True
                    self.k.knobs.append(CudaKnob(sa.name, dims, ln.py_line, "shared_array", ln.text.strip(),
                                                 src.name, kernel=kernel, feeds=["shared"]))
                    for d in dims:
                        for n in _names(d):
                            self._feed(n, "shared", kernel)

    def _add(self, knob: CudaKnob) -> None:
        if knob.kind in ("define", "constexpr") and knob.name in self.by_name:
            old = self.by_name[knob.name]
            if old.value != knob.value:
                self.k.errors.append(f"{knob.name} is defined twice with different values (lines {old.line} "
                                     f"and {knob.line}); profd changes neither")
            return
        self.k.knobs.append(knob)
        if knob.kind in ("define", "constexpr", "local") and isinstance(knob.value, int):
            self.by_name[knob.name] = knob
            self.env[knob.name] = knob.value

    def _feed(self, name: str, what: str, kernel: str) -> None:
        k = self.by_name.get(name)
        if k is None:
            for kn, _src in self.locals:
                if kn.name == name and kn not in self.k.knobs:
                    self.k.knobs.append(kn)
                    self.by_name[name] = kn
                    self.env[name] = kn.value
                    k = kn
                    break
        if k is None:
            return
        if what not in k.feeds:
            k.feeds.append(what)
        if kernel and not k.kernel and k.kind != "define":
            k.kernel = kernel

    def _launch_knobs(self, launch: Launch, src: CudaSource, li: int, m: re.Match[str]) -> None:
        ln = src.lines[li]
        for role, expr in (("grid", launch.grid), ("block", launch.block), ("smem", launch.smem)):
            if not expr:
                continue
            v = _literal_dims(expr)
            if v is not None:
                self.k.knobs.append(CudaKnob(f"{launch.kernel}.{role}", v, ln.py_line, role, ln.text.strip(),
                                             src.name, kernel=launch.kernel, feeds=[role]))
                continue
            inner = re.fullmatch(r"\s*dim3\s*\((.*)\)\s*", expr)
            parts = _split_args(inner.group(1)) if inner else [expr]
            for part in parts:
                name = part.strip()
                if name in self.dim3:
                    self._dim3_knobs(name, role, launch.kernel)
                    continue
                for n in _names(part):
                    self._feed(n, role, launch.kernel)
                    # blocks = (n + threads - 1) / threads: what the local is made of feeds the grid too
                    self._follow_assignment(n, role, launch.kernel, src)
            if role == "smem":
                self.k.features["dynamic_smem"] = True
        for i, targ in enumerate(launch.template):
            v = c_eval(targ, {})
            if v is not None:
                self.k.knobs.append(CudaKnob(f"{launch.kernel}<{i}>", v, ln.py_line, "template", ln.text.strip(),
                                             src.name, kernel=launch.kernel, feeds=["template"]))
            else:
                for n in _names(targ):
                    self._feed(n, "template", launch.kernel)

    def _follow_assignment(self, name: str, role: str, kernel: str, src: CudaSource) -> None:
        """``const int blocks = (n + threads - 1) / threads;``: the names on its right feed ``role`` too."""
        rx = re.compile(rf"\b(?:const\s+)?(?:int|unsigned|size_t|int64_t|long|auto)\s+{re.escape(name)}\s*=\s*(?P<rhs>[^;]+);")
        for ln in src.lines:
            m = rx.search(_strip_comment(ln.text))
            if m:
                for n in _names(m.group("rhs")):
                    if n != name:
                        self._feed(n, role, kernel)
                break

    def _dim3_knobs(self, var: str, role: str, kernel: str) -> None:
        args, ln, src = self.dim3[var]
        lits = [c_eval(a, {}) if re.fullmatch(r"\s*\d+\s*", a) else None for a in args]
        for axis, (a, v) in enumerate(zip(args, lits)):
            axis_name = "xyz"[axis] if axis < 3 else str(axis)
            if v is not None:
                kn = CudaKnob(f"{var}.{axis_name}", v, ln.py_line, role, ln.text.strip(), src.name, kernel=kernel,
                              feeds=[role])
                if not any(k.name == kn.name and k.line == kn.line for k in self.k.knobs):
                    self.k.knobs.append(kn)
            else:
                for n in _names(a):
                    self._feed(n, role, kernel)
                    self._follow_assignment(n, role, kernel, src)


def _kernel_at_lines(src: CudaSource) -> list[str]:
    """For each line of ``src``, the __global__ function whose definition it is in (or "")."""
    text = "\n".join(_strip_comment(ln.text) for ln in src.lines)
    offsets = _line_offsets(text)
    out = [""] * len(src.lines)
    starts = [(_line_at(offsets, m.start()), m.group("name")) for m in _RE_GLOBAL.finditer(text)]
    # a kernel's body ends where its braces close; approximate by the next top-level function
    ends = [li for li, _ in starts[1:]] + [len(src.lines)]
    for (li, name), end in zip(starts, ends):
        depth, opened = 0, False
        stop = end
        for j in range(li, end):
            depth += src.lines[j].text.count("{") - src.lines[j].text.count("}")
            opened = opened or "{" in src.lines[j].text
            if opened and depth <= 0:
                stop = j + 1
                break
        for j in range(li, stop):
            out[j] = name
    return out


def _literal_dims(expr: str) -> Optional[Union[int, tuple[int, ...]]]:
    e = expr.strip()
    if re.fullmatch(r"\d+", e):
        return int(e)
    m = re.fullmatch(r"dim3\s*\(\s*(\d+(?:\s*,\s*\d+){0,2})\s*\)", e)
    if m:
        vals = tuple(int(x) for x in re.split(r"\s*,\s*", m.group(1)))
        return vals if len(vals) > 1 else vals[0]
    return None


def _strip_comment(t: str) -> str:
    return re.sub(r"//.*$", "", t)


def _line_offsets(text: str) -> list[int]:
    offs = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            offs.append(i + 1)
    return offs


def _line_at(offsets: list[int], pos: int) -> int:
    import bisect

    return bisect.bisect_right(offsets, pos) - 1


# ---------------------------------------------------------------------------- discovery


def discover_cuda(source: Union[str, Path], path: str = "") -> CudaKnobs:
    """Find the CUDA source strings of a Python target and the knobs inside them.

    ``source`` is the file's text or a ``Path``. Nothing is imported or executed. A file
    that does not parse yields an empty result with the syntax error in ``errors``.
    """
    if isinstance(source, Path):
        path = path or str(source)
        source = source.read_text()
    out = CudaKnobs(path=path)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        out.errors.append(f"syntax error at line {e.lineno}: {e.msg}")
        return out
    idx = _PyIndex(source, tree)
    seen: dict[int, CudaSource] = {}

    def take(name: str, node: ast.expr, role: str, used: str) -> None:
        key = id(node)
        if key in seen:
            s = seen[key]
            if used not in s.used_by:
                s.used_by.append(used)
            if s.role == "unknown" or (s.role == "cpp" and role == "cuda"):
                s.role = role
            return
        lines, kind, exact = _string_lines(idx.lines, node)
        s = CudaSource(name, role, node.lineno, node.end_lineno or node.lineno, kind, [used], lines, exact)
        seen[key] = s
        out.sources.append(s)

    cupy_kernels: dict[str, str] = {}  # python variable -> kernel name, for CuPy launches
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        cname = _call_name(node)
        if cname in _LOAD_INLINE:
            out.features["load_inline"] = True
            args = {kw.arg: kw.value for kw in node.keywords if kw.arg}
            if len(node.args) > 1 and "cpp_sources" not in args:
                args["cpp_sources"] = node.args[1]
            if len(node.args) > 2 and "cuda_sources" not in args:
                args["cuda_sources"] = node.args[2]
            for kw, role in (("cuda_sources", "cuda"), ("cpp_sources", "cpp")):
                if kw in args:
                    for name, sn in idx.string_nodes(args[kw]):
                        take(name, sn, role, f"load_inline({kw}=) at line {node.lineno}")
        elif cname in _LOAD and ("cpp_extension" in _call_base(node) or any(kw.arg == "sources" for kw in node.keywords)):
            out.features["load"] = True
        elif cname in _CUPY:
            out.features["cupy"] = True
            code = node.args[0] if node.args else next((kw.value for kw in node.keywords if kw.arg == "code"), None)
            if code is not None:
                for name, sn in idx.string_nodes(code):
                    take(name, sn, "cuda", f"cupy.{cname} at line {node.lineno}")
    # A module-level string with a __global__ kernel that no call we recognise takes is still CUDA.
    for name, defs in idx.strings.items():
        for d in defs:
            if id(d.node) in seen:
                continue
            val = d.node.value if isinstance(d.node, ast.Constant) else ast.unparse(d.node)
            if "__global__" in str(val):
                take(name, d.node, "cuda", "")
    out.sources.sort(key=lambda s: s.line)
    _CScan(out).run()
    _cupy_launches(tree, idx, out, cupy_kernels)
    out.knobs.sort(key=lambda k: (k.line, k.name))
    return out


def _cupy_launches(tree: ast.Module, idx: _PyIndex, out: CudaKnobs, _kernels: dict[str, str]) -> None:
    """``kern((grid,), (block,), (args...))`` calls of CuPy kernels; block/grid constants in Python.

    The callee is a variable bound to ``RawKernel(...)`` / ``get_function(...)``, or -- in a file
    that uses CuPy -- any call shaped like a CuPy launch (three tuples), since the kernel object
    usually travels through a helper (``saxpy = _raw()``)."""
    if not out.features.get("cupy"):
        return
    raw_vars: dict[str, str] = {}
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            cname = _call_name(node)
            kname = ""
            if cname == "RawKernel" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                kname = str(node.args[1].value)
            elif cname == "get_function" and node.args and isinstance(node.args[0], ast.Constant):
                kname = str(node.args[0].value)
            if kname:
                names.append(kname)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            c = node.value
            cname = _call_name(c)
            kname = ""
            if cname == "RawKernel" and len(c.args) > 1 and isinstance(c.args[1], ast.Constant):
                kname = str(c.args[1].value)
            elif cname == "get_function" and c.args and isinstance(c.args[0], ast.Constant):
                kname = str(c.args[0].value)
            if kname:
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        raw_vars[t.id] = kname
                    elif isinstance(t, ast.Attribute):
                        raw_vars[t.attr] = kname
    for k in names:
        if k not in out.kernels:
            out.kernels.append(k)
    # local assignments per function, to follow `grid = (n + BLOCK - 1) // BLOCK`
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def local_rhs(fn: Optional[ast.AST], name: str) -> Optional[ast.expr]:
        for n in ast.walk(fn) if fn is not None else []:
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
                return n.value
        return None

    for fn in funcs + [tree]:
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call) or len(node.args) < 3:
                continue
            f = node.func
            var = f.id if isinstance(f, ast.Name) else (f.attr if isinstance(f, ast.Attribute) else "")
            shaped = all(isinstance(a, (ast.Tuple, ast.List)) for a in node.args[:3])
            if var not in raw_vars and not shaped:
                continue
            if any(la.where == "python" and la.line == node.lineno for la in out.launches):
                continue
            kname = raw_vars.get(var) or (names[0] if len(set(names)) == 1 else var)
            grid, block = node.args[0], node.args[1]
            smem = next((kw.value for kw in node.keywords if kw.arg == "shared_mem"), None)
            out.launches.append(Launch(kname, node.lineno, ast.unparse(grid), ast.unparse(block),
                                       ast.unparse(smem) if smem is not None else "", [], "", "python"))
            scope = fn if fn is not tree else None
            for role, expr in (("grid", grid), ("block", block)):
                elts = expr.elts if isinstance(expr, (ast.Tuple, ast.List)) else [expr]
                for axis, e in enumerate(elts):
                    axis_name = "xyz"[axis] if axis < 3 else str(axis)
                    v = _py_int(e)
                    if v is not None:
                        out.knobs.append(CudaKnob(f"{kname}.{role}.{axis_name}", v, e.lineno, role,
                                                  idx.lines[e.lineno - 1].strip(), "", kname, "python", [role]))
                        continue
                    _py_feed(e, role, kname, scope, local_rhs, idx, out, depth=3)
    return


def _py_feed(e: ast.AST, role: str, kname: str, scope: Optional[ast.AST], local_rhs: Any, idx: _PyIndex,
             out: CudaKnobs, depth: int) -> None:
    """Python int constants that ``e`` is computed from feed ``role`` (following local assignments)."""
    for n in sorted({x.id for x in ast.walk(e) if isinstance(x, ast.Name)}):
        rhs = local_rhs(scope, n)
        if rhs is not None and _py_int(rhs) is None:
            if depth > 0:
                _py_feed(rhs, role, kname, scope, local_rhs, idx, out, depth - 1)
            continue
        d = (_py_int(rhs), rhs.lineno, rhs) if rhs is not None else idx.int_value(n)
        if d is None or d[0] is None:
            continue
        existing = next((k for k in out.knobs if k.where == "python" and k.name == n), None)
        if existing:
            if role not in existing.feeds:
                existing.feeds.append(role)
            continue
        out.knobs.append(CudaKnob(n, d[0], d[1], "constexpr", idx.lines[d[1] - 1].strip(), "", kname, "python",
                                  [role]))


# ---------------------------------------------------------------------------- line mapping


def py_line_for(source: Union[str, Path, CudaKnobs], string_text: str, line_in_string: int) -> Optional[int]:
    """The .py line of line ``line_in_string`` (1-based) of a CUDA source whose runtime text is ``string_text``.

    Used to map a compiler's line in torch's generated ``cuda.cu`` / ``main.cpp`` back to the user's file.
    Returns None when no literal of the file produces that text.
    """
    k = source if isinstance(source, CudaKnobs) else discover_cuda(source)
    s = k.source_for_text(string_text)
    if s is None:
        return None
    if s.text != string_text and s.text.strip("\n") == string_text.strip("\n"):
        # the caller stripped leading blank lines: shift by the difference
        lead = lambda t: len(t) - len(t.lstrip("\n"))  # noqa: E731
        line_in_string += lead(s.text) - lead(string_text)
    return s.py_line(line_in_string)


# ---------------------------------------------------------------------------- rewriting


def _replace_on_line(source: str, py_line: int, pattern: re.Pattern[str], group: str, new: str,
                     start_col: int = 0, occurrence: Optional[int] = None) -> str:
    lines = source.splitlines(keepends=True)
    if not 1 <= py_line <= len(lines):
        raise CudaRewriteError(f"line {py_line} is not in the file")
    text = lines[py_line - 1]
    matches = [m for m in pattern.finditer(text, start_col)]
    if not matches:
        raise CudaRewriteError(f"line {py_line} no longer reads as expected: {text.strip()!r}")
    m = matches[occurrence or 0]
    a, b = m.span(group)
    lines[py_line - 1] = text[:a] + new + text[b:]
    return "".join(lines)


def _check(new_source: str, before: CudaKnobs) -> CudaKnobs:
    """Re-discover the rewritten file and refuse results the GPU would reject."""
    try:
        ast.parse(new_source)
    except SyntaxError as e:  # pragma: no cover - our edits touch digits only
        raise CudaRewriteError(f"the rewrite broke the Python syntax at line {e.lineno}: {e.msg}") from None
    after = discover_cuda(new_source, before.path)
    env = {k.name: k.value for k in after.knobs if k.kind in ("define", "constexpr", "local")
           and isinstance(k.value, int) and k.where == "cuda"}
    penv = {k.name: k.value for k in after.knobs if k.where == "python" and isinstance(k.value, int)}
    for sa in after.shared:
        if sa.bytes is not None and sa.bytes > MAX_STATIC_SHARED_BYTES:
            raise CudaRewriteError(f"__shared__ {sa.name}[{']['.join(sa.dims)}] at line {sa.line} would need "
                                   f"{sa.bytes} bytes, more than the {MAX_STATIC_SHARED_BYTES} bytes of static "
                                   "shared memory a block may declare")
    for la in after.launches:
        threads = launch_threads(after, la, penv if la.where == "python" else env)
        if threads is not None and threads > MAX_THREADS_PER_BLOCK:
            raise CudaRewriteError(f"the launch of {la.kernel} at line {la.line} would have {threads} threads per "
                                   f"block, more than {MAX_THREADS_PER_BLOCK}")
        if threads is not None:
            lb = after.get(f"__launch_bounds__({la.kernel})")
            if lb is not None and isinstance(lb.value, int) and threads > lb.value:
                raise CudaRewriteError(f"{la.kernel} declares __launch_bounds__({lb.value}) at line {lb.line} but "
                                       f"would be launched with {threads} threads per block at line {la.line}")
    return after


def launch_threads(knobs: CudaKnobs, launch: Launch, env: Optional[dict[str, int]] = None) -> Optional[int]:
    """Threads per block of ``launch`` when it is a compile-time constant, else None."""
    if env is None:
        env = {k.name: k.value for k in knobs.knobs if k.kind in ("define", "constexpr", "local")
               and isinstance(k.value, int)}
    expr = launch.block.strip()
    if launch.where == "python":
        expr = expr.strip("()[] ,")
        parts = [p for p in expr.split(",") if p.strip()]
    else:
        inner = re.fullmatch(r"dim3\s*\((.*)\)", expr)
        if inner:
            parts = _split_args(inner.group(1))
        else:
            m = re.fullmatch(r"[A-Za-z_]\w*", expr)
            if m and expr not in env:
                src = knobs.source_named(launch.source)
                parts = [expr]
                for s in knobs.sources if src is None else [src]:
                    for ln in s.lines:
                        d = _RE_DIM3.search(_strip_comment(ln.text))
                        if d and d.group("name") == expr:
                            parts = _split_args(d.group("a") or d.group("b") or d.group("c") or "")
                            break
            else:
                parts = [expr]
    total = 1
    for p in parts:
        v = c_eval(p, env)
        if v is None:
            return None
        total *= v
    return total


def set_cuda_knob(source: str, name: str, value: Any, line: Optional[int] = None, path: str = "") -> str:
    """Set CUDA knob ``name`` (as :func:`discover_cuda` names it) to ``value``; return the new .py source.

    The value is changed where it is defined: ``#define TILE 16`` changes the define (which sizes
    the block and the shared tile alike), ``const int threads = 256`` changes that constant (the
    ``blocks = (n + threads - 1) / threads`` computed from it follows), a literal block dim changes
    the literal and, for a literal ``<<<(n + 255) / 256, 256>>>``, the grid's ceil-division with it.
    Raises :class:`CudaRewriteError` when the knob is not there or the change would leave the
    launch inconsistent (a literal that duplicates a constant, more than 1024 threads, more
    static shared memory than allowed, a block larger than ``__launch_bounds__``).
    """
    before = discover_cuda(source, path)
    cands = [k for k in before.knobs if k.name == name and (line is None or k.line == line)]
    if not cands:
        cands = [k for k in before.knobs if k.name.lower() == name.lower() and (line is None or k.line == line)]
    if not cands:
        names = sorted({k.name for k in before.knobs if k.kind != "shared_array"})
        raise CudaRewriteError(f"no CUDA knob {name!r}" + (f" at line {line}" if line else "") +
                               (f"; the file has {', '.join(names)}" if names else "; the file has no CUDA knobs"))
    knob = cands[0]
    new = _set_one(source, before, knob, value)
    _check(new, before)
    return new


def _set_one(source: str, before: CudaKnobs, knob: CudaKnob, value: Any) -> str:
    if knob.kind == "shared_array":
        raise CudaRewriteError(f"{knob.name} is a shared array: change the constants that size it, or use "
                               "pad_shared_tile")
    if knob.kind == "launch_bounds":
        if not isinstance(value, int):
            raise CudaRewriteError("__launch_bounds__ takes an integer thread count")
        rx = re.compile(r"__launch_bounds__\s*\(\s*(?P<v>[^,)]+)")
        return _replace_on_line(source, knob.line, rx, "v", str(value))
    if knob.where == "python":
        return _set_python_int(source, knob, value)
    if knob.kind == "define":
        rx = re.compile(rf"#\s*define\s+{re.escape(knob.name)}\s+\(?\s*(?P<v>\d+)")
        return _replace_on_line(source, knob.line, rx, "v", str(int(value)))
    if knob.kind in ("constexpr", "local"):
        rx = re.compile(rf"\b{re.escape(knob.name)}\s*=\s*(?P<v>\d+)")
        return _replace_on_line(source, knob.line, rx, "v", str(int(value)))
    if knob.kind == "template":
        i = int(knob.name.rsplit("<", 1)[1].rstrip(">"))
        la = next(la for la in before.launches if la.kernel == knob.kernel and la.line == knob.line)
        old = knob.value
        for role, expr in (("grid", la.grid), ("block", la.block), ("smem", la.smem)):
            if re.search(rf"(?<![\w.]){old}(?![\w.])", expr):
                raise CudaRewriteError(
                    f"the template argument {old} of {knob.kernel} at line {knob.line} also appears as a literal in "
                    f"the launch's {role} ({expr}); name it once (a constexpr used in both) before tuning it")
        rx = re.compile(rf"\b{re.escape(knob.kernel)}\s*<(?P<args>[^<>;]*)>\s*<<<")
        lines = source.splitlines(keepends=True)
        m = rx.search(lines[knob.line - 1])
        if not m:
            raise CudaRewriteError(f"line {knob.line} no longer launches {knob.kernel}<...>")
        args = _split_args(m.group("args"))
        args[i] = str(int(value))
        a, b = m.span("args")
        lines[knob.line - 1] = lines[knob.line - 1][:a] + ", ".join(args) + lines[knob.line - 1][b:]
        return "".join(lines)
    if knob.kind in ("block", "grid", "smem"):
        return _set_literal_dim(source, before, knob, value)
    raise CudaRewriteError(f"cannot change a {knob.kind} knob")


def _set_python_int(source: str, knob: CudaKnob, value: Any) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) is int and node.lineno == knob.line \
                and node.value == knob.value:
            lines = source.splitlines(keepends=True)
            t = lines[node.lineno - 1]
            lines[node.lineno - 1] = t[:node.col_offset] + str(int(value)) + t[node.end_col_offset:]
            return "".join(lines)
    raise CudaRewriteError(f"line {knob.line} no longer holds {knob.name} = {knob.value}")


def _set_literal_dim(source: str, before: CudaKnobs, knob: CudaKnob, value: Any) -> str:
    old = knob.value
    new_vals = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    old_vals = tuple(old) if isinstance(old, tuple) else (old,)
    if knob.name.endswith((".x", ".y", ".z")) and "." in knob.name[:-2]:
        # dim3 block(16, 16): one axis
        var, axis = knob.name.rsplit(".", 1)
        ai = "xyz".index(axis)
        _refuse_duplicated_constant(before, knob, old_vals[0])
        rx = re.compile(rf"\bdim3\s+{re.escape(var)}\s*(?:\(|=\s*dim3\s*\(|\{{)(?P<args>[^;]*?)(?:\)|\}})\s*;")
        lines = source.splitlines(keepends=True)
        m = rx.search(lines[knob.line - 1])
        if not m:
            raise CudaRewriteError(f"line {knob.line} no longer declares dim3 {var}")
        args = _split_args(m.group("args"))
        args[ai] = str(int(new_vals[0]))
        a, b = m.span("args")
        lines[knob.line - 1] = lines[knob.line - 1][:a] + ", ".join(args) + lines[knob.line - 1][b:]
        return "".join(lines)
    # a literal in <<<grid, block, smem>>>
    if len(new_vals) != len(old_vals):
        raise CudaRewriteError(f"{knob.name} has {len(old_vals)} dims; give {len(old_vals)} values")
    for ov in old_vals:
        _refuse_duplicated_constant(before, knob, ov)
    la = next(la for la in before.launches if la.kernel == knob.kernel and la.line == knob.line)
    role = knob.kind
    expr_old = {"grid": la.grid, "block": la.block, "smem": la.smem}[role]
    expr_new = _literal_text(new_vals)
    lines = source.splitlines(keepends=True)
    t = lines[knob.line - 1]
    cfg_rx = re.compile(rf"\b{re.escape(la.kernel)}\s*(?:<[^<>;]*>\s*)?<<<(?P<cfg>.*?)>>>")
    m = cfg_rx.search(t)
    if not m:
        raise CudaRewriteError(f"the launch of {la.kernel} at line {knob.line} spans lines; profd edits one-line "
                               "launches only")
    cfg = _split_args(m.group("cfg"))
    pos = {"grid": 0, "block": 1, "smem": 2}[role]
    cfg[pos] = expr_new
    if role == "block" and len(old_vals) == 1:
        # <<<(n + 255) / 256, 256>>>: keep the grid covering n
        g = cfg[0]
        ob, nb = old_vals[0], new_vals[0]
        ceil = re.compile(rf"\(\s*(?P<n>[^()]+?)\s*\+\s*{ob - 1}\s*\)\s*/\s*{ob}\b")
        if ceil.search(g):
            cfg[0] = ceil.sub(lambda mm: f"({mm.group('n')} + {nb - 1}) / {nb}", g)
        elif re.search(rf"(?<![\w.]){ob}(?![\w.])", g):
            raise CudaRewriteError(f"the grid of {la.kernel} at line {knob.line} ({g}) uses the literal {ob} in a "
                                   "way profd cannot follow; name the block size once (const int threads = ...)")
        elif not _names(g) - {"dim3"}:
            pass  # a fixed literal grid: it does not depend on the block
    a, b = m.span("cfg")
    lines[knob.line - 1] = t[:a] + ", ".join(cfg) + t[b:]
    del expr_old
    return "".join(lines)


def _literal_text(vals: tuple[int, ...]) -> str:
    return str(int(vals[0])) if len(vals) == 1 else "dim3(" + ", ".join(str(int(v)) for v in vals) + ")"


def _refuse_duplicated_constant(before: CudaKnobs, knob: CudaKnob, old: int) -> None:
    """A literal block dim equal to a constant that sizes shared tiles is that constant, written twice."""
    for k in before.knobs:
        if k.kind in ("define", "constexpr") and k.where == "cuda" and k.value == old and "shared" in k.feeds \
                and (not k.kernel or not knob.kernel or k.kernel == knob.kernel):
            raise CudaRewriteError(
                f"{knob.name} = {old} at line {knob.line} equals {k.name} ({k.text!r} at line {k.line}), which sizes "
                f"the shared tile; changing the literal alone would break the kernel's tiling. Change {k.name}, or "
                f"write the dim as {k.name} so that it follows")


def set_threads_per_block(source: str, threads: Union[int, tuple[int, ...]], kernel: str = "", path: str = "") -> str:
    """Change the threads per block of ``kernel``'s launch (the first launch when ``kernel`` is empty).

    Follows the launch's block argument to its definition: a constant (``const int threads``,
    ``#define BLOCK``, a Python constant for CuPy), a literal ``dim3``, or a literal in ``<<<>>>``.
    When the block is 2-D and computed from one constant (``dim3 block(TILE, TILE)``), give the new
    value of that constant. A literal ``__launch_bounds__`` smaller than the new block is raised to it.
    """
    before = discover_cuda(source, path)
    launches = [la for la in before.launches if not kernel or la.kernel == kernel]
    if not launches:
        raise CudaRewriteError(f"no launch of {kernel or 'any kernel'} found")
    la = launches[0]
    block_knobs = [k for k in before.knobs if "block" in k.feeds and (not k.kernel or k.kernel == la.kernel
                                                                       or k.kind == "define")]
    # prefer the definition over a literal, and one knob only
    defs = [k for k in block_knobs if k.kind in ("define", "constexpr", "local")]
    lits = [k for k in block_knobs if k.kind == "block"]
    if defs:
        # grid constants (blocks = ...) do not feed the block; a define that feeds both is the tile
        if len({k.name for k in defs}) > 1:
            only = [k for k in defs if "grid" not in k.feeds or "shared" in k.feeds]
            defs = only or defs
        if len({k.name for k in defs}) > 1:
            raise CudaRewriteError(f"the block of {la.kernel} at line {la.line} is made of several constants "
                                   f"({', '.join(sorted({k.name for k in defs}))}); set each with set_cuda_knob")
        knob = defs[0]
        value = threads if isinstance(threads, int) else threads[0]
    elif lits:
        knob = lits[0]
        value = threads
        if len(lits) > 1 and isinstance(threads, tuple):
            new = source
            for k, v in zip(lits, threads):
                new = _set_one(new, discover_cuda(new, path), next(x for x in discover_cuda(new, path).knobs
                                                                  if x.name == k.name), v)
            return _fix_bounds_and_check(new, before, la.kernel, path)
    else:
        raise CudaRewriteError(f"the block of {la.kernel} at line {la.line} ({la.block}) is not a constant profd "
                               "can follow")
    new = _set_one(source, before, knob, value)
    return _fix_bounds_and_check(new, before, la.kernel, path)


def _fix_bounds_and_check(new: str, before: CudaKnobs, kernel: str, path: str) -> str:
    mid = discover_cuda(new, path)
    lb = mid.get(f"__launch_bounds__({kernel})")
    la = next((x for x in mid.launches if x.kernel == kernel), None)
    if lb is not None and la is not None and isinstance(lb.value, int):
        t = launch_threads(mid, la)
        if t is not None and t > lb.value and re.fullmatch(r"\s*\d+\s*", lb.text.split("(", 1)[1].split(",")[0].split(")")[0]):
            new = _set_one(new, mid, lb, t)
    _check(new, before)
    return new


def pad_shared_tile(source: str, array: str = "", line: Optional[int] = None, pad: int = 1, path: str = "") -> str:
    """Pad the last dim of a 2-D ``__shared__`` tile: ``[TILE][TILE]`` -> ``[TILE][TILE + 1]``.

    A column walk through an unpadded tile whose row is a multiple of 32 words hits one bank
    32 times; one extra word per row spreads it over all banks. ``array`` (or ``line``) picks the
    array; without either, every unpadded 2-D tile is padded. Refused for 1-D arrays, tiles already
    padded, and tiles read through vector casts (``reinterpret_cast<float4*>``), whose alignment
    the pad would break.
    """
    before = discover_cuda(source, path)
    cands = [s for s in before.shared if (not array or s.name == array) and (line is None or s.line == line)]
    if not cands:
        have = ", ".join(f"{s.name} (line {s.line})" for s in before.shared) or "none"
        raise CudaRewriteError(f"no __shared__ array {array or ''}{' at line %d' % line if line else ''}; "
                               f"the file has {have}")
    if not array and line is None:
        cands = [s for s in cands if len(s.dims) >= 2 and not s.padded]
        if not cands:
            raise CudaRewriteError("every 2-D __shared__ tile is already padded")
    new = source
    for sa in sorted(cands, key=lambda s: -s.line):
        if len(sa.dims) < 2:
            raise CudaRewriteError(f"__shared__ {sa.name} at line {sa.line} is 1-D; padding applies to 2-D tiles")
        if sa.padded:
            raise CudaRewriteError(f"__shared__ {sa.name} at line {sa.line} is already padded ([{sa.dims[-1]}])")
        src = before.source_named(sa.source) if sa.source else None
        body = src.text if src is not None else ""
        if re.search(rf"reinterpret_cast\s*<[^>]*(?:4|2)\s*\*?\s*>\s*\(\s*&?\s*{re.escape(sa.name)}\b", body) or \
                re.search(rf"\(\s*(?:float|int|double)[24]\s*\*\s*\)\s*&?\s*{re.escape(sa.name)}\b", body):
            raise CudaRewriteError(f"__shared__ {sa.name} at line {sa.line} is read through vector casts; a padded "
                                   "row would misalign them")
        last = sa.dims[-1]
        rx = re.compile(rf"\b{re.escape(sa.name)}\s*" + r"".join(r"\[[^\]]*\]" for _ in sa.dims[:-1]) +
                        r"\[(?P<last>[^\]]*)\]")
        new = _replace_on_line(new, sa.line, rx, "last", f"{last.strip()} + {int(pad)}")
    _check(new, before)
    return new


def tile_knobs(knobs: CudaKnobs) -> list[CudaKnob]:
    """Tile sizes that size both the block and a shared tile, however they are spelled: a
    ``#define TILE 16`` or KernelBench's ``constexpr int TILE_SIZE = 16;``."""
    return [kn for kn in knobs.knobs if kn.kind in ("define", "constexpr") and kn.where == "cuda"
            and "shared" in kn.feeds and "block" in kn.feeds and isinstance(kn.value, int)]


def fixed_block_counts(knobs: CudaKnobs) -> list[CudaKnob]:
    """Constants that set the number of blocks and not their size (a grid-stride loop's
    ``GRID = 32``): they feed the grid, not the block, and hold a positive int."""
    return [k for k in knobs.knobs if "grid" in k.feeds and "block" not in k.feeds
            and isinstance(k.value, int) and not isinstance(k.value, bool) and k.value > 0]


def needs_cuda(source: Union[str, Path]) -> bool:
    """Does this Python target build CUDA code (load_inline / load / CuPy)? Cheap enough for the loader."""
    text = source.read_text() if isinstance(source, Path) else source
    if not re.search(r"load_inline|cpp_extension|RawKernel|RawModule", text):
        return False
    return discover_cuda(text).needs_cuda


def knobs_summary(knobs: CudaKnobs) -> list[str]:
    """One line per knob, for reports and debugging: ``31: #define TILE 16 (define; feeds block, shared)``."""
    out = []
    for k in knobs.knobs:
        feeds = f"; feeds {', '.join(k.feeds)}" if k.feeds else ""
        out.append(f"{k.line}: {k.shown()} ({k.kind}{feeds})")
    return out


__all__: Iterable[str] = [
    "CUDA_KINDS", "CudaKnob", "CudaKnobs", "CudaRewriteError", "CudaSource", "Launch", "SharedArray", "SourceLine",
    "c_eval", "discover_cuda", "knobs_summary", "launch_threads", "needs_cuda", "pad_shared_tile", "py_line_for",
    "set_cuda_knob", "set_threads_per_block",
]
