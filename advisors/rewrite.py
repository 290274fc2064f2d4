"""Source-to-source rewrites of a Triton target, done on the text with AST positions.

Only the value expressions of knobs change, or one well-known block of a kernel
is replaced; everything else -- comments, formatting, the reference -- stays
byte-for-byte, so the diff a user reviews is the change and nothing else.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any, Optional


class RewriteError(Exception):
    """The requested rewrite does not apply to this source."""


def _replace(source: str, node: ast.AST, text: str) -> str:
    lines = source.splitlines(keepends=True)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    a = starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
    b = starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
    return source[:a] + text + source[b:]


def _value_nodes(tree: ast.Module, name: str, line: Optional[int]) -> list[ast.AST]:
    """Nodes holding the value of knob ``name``: ``NAME = v`` assignments and ``name=v`` keywords."""
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == name and (line is None or node.lineno == line):
                found.append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            if node.target.id == name and (line is None or node.lineno == line):
                found.append(node.value)
        elif isinstance(node, ast.keyword) and node.arg == name and (line is None or node.value.lineno == line):
            found.append(node.value)
    return found


def set_knob(source: str, name: str, value: Any, line: Optional[int] = None) -> str:
    """Set knob ``name`` (a module/launcher constant or a launch keyword) to ``value``."""
    tree = ast.parse(source)
    nodes = _value_nodes(tree, name, line)
    if not nodes and line is not None:
        nodes = _value_nodes(tree, name, None)
    if not nodes:
        raise RewriteError(f"no assignment or keyword '{name}' found to change")
    # `BLOCK_M = 64` feeds `BLOCK_M=BLOCK_M` in the launch: change the constant, not the wiring.
    keywords = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword)}
    assigned = [n for n in nodes if id(n) not in keywords]
    if assigned:
        nodes = assigned
    # Edit from the bottom up so earlier positions stay valid.
    for node in sorted(nodes, key=lambda n: (n.lineno, n.col_offset), reverse=True):  # type: ignore[attr-defined]
        source = _replace(source, node, repr(value))
    return source


def set_knobs(source: str, values: dict[str, Any], lines: Optional[dict[str, int]] = None) -> str:
    """Apply several knob settings."""
    for name, value in values.items():
        source = set_knob(source, name, value, (lines or {}).get(name))
    return source


# --------------------------------------------------------------------------- grouped program order


GROUPED = """\
# Grouped ("swizzled") program order, inserted by profd: programs that run at the
# same time work on GROUP rows of C tiles, so they share panels of A and B in L2.
{num_pid_m} = tl.cdiv({M}, {BLOCK_M})
{num_pid_n} = tl.cdiv({N}, {BLOCK_N})
num_pid_in_group = {GROUP} * {num_pid_n}
group_id = {pid} // num_pid_in_group
first_pid_m = group_id * {GROUP}
group_size_m = tl.minimum({num_pid_m} - first_pid_m, {GROUP})
{pid_m} = first_pid_m + ((({pid}) % num_pid_in_group) % group_size_m)
{pid_n} = (({pid}) % num_pid_in_group) // group_size_m
"""


def _jit_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                target = d.func if isinstance(d, ast.Call) else d
                text = ast.unparse(target)
                if text.endswith("jit") or text.endswith("autotune"):
                    out.append(node)
                    break
    return out


def _param(fn: ast.FunctionDef, *candidates: str) -> Optional[str]:
    names = [a.arg for a in fn.args.args]
    for c in candidates:
        for n in names:
            if n == c:
                return n
    for c in candidates:
        for n in names:
            if n.lower() == c.lower():
                return n
    return None


def insert_grouped_order(source: str, kernel: Optional[str] = None, group: int = 8) -> tuple[str, str]:
    """Replace a 2-D tiled kernel's row-major ``pid_m``/``pid_n`` with grouped order.

    Returns (new source, kernel name). The kernel must compute ``pid_m`` and
    ``pid_n`` from one program id in two assignments (the usual
    ``pid // num_pid_n`` / ``pid % num_pid_n``); the group size comes from an
    existing ``GROUP*`` constexpr parameter, or one is added with default ``group``.
    """
    tree = ast.parse(source)
    fns = [f for f in _jit_functions(tree) if kernel is None or f.name == kernel]
    for fn in fns:
        assigns = {}
        pid = None
        for st in fn.body:
            if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
                name = st.targets[0].id
                text = ast.unparse(st.value)
                if "program_id" in text and pid is None:
                    pid = name
                low = name.lower()
                if low in ("pid_m", "pid_n", "pid_x", "pid_y", "m_block", "n_block"):
                    assigns[low] = st
        pm = assigns.get("pid_m") or assigns.get("pid_x") or assigns.get("m_block")
        pn = assigns.get("pid_n") or assigns.get("pid_y") or assigns.get("n_block")
        if pid is None or pm is None or pn is None:
            continue
        if pid not in ast.unparse(pm.value) or pid not in ast.unparse(pn.value):
            continue  # already a 2-D grid (program_id(0) and (1)): not this rewrite
        M, N = _param(fn, "M", "m", "n_rows"), _param(fn, "N", "n", "n_cols")
        BM = _param(fn, "BLOCK_M", "BLOCK_SIZE_M", "BM", "TILE_M")
        BN = _param(fn, "BLOCK_N", "BLOCK_SIZE_N", "BN", "TILE_N")
        if not all((M, N, BM, BN)):
            raise RewriteError(f"{fn.name}: cannot tell the M/N sizes and tile parameters apart")
        G = _param(fn, "GROUP_M", "GROUP_SIZE_M", "GROUP_SIZE", "GROUP")
        lines = source.splitlines(keepends=True)
        indent = lines[pm.lineno - 1][: len(lines[pm.lineno - 1]) - len(lines[pm.lineno - 1].lstrip())]
        # Re-deriving num_pid_n is harmless when the kernel already computed it.
        block = GROUPED.format(num_pid_m="num_pid_m", num_pid_n="num_pid_n", M=M, N=N, BLOCK_M=BM, BLOCK_N=BN,
                               GROUP=G or "GROUP_SIZE_M", pid=pid, pid_m=pm.targets[0].id,  # type: ignore[attr-defined]
                               pid_n=pn.targets[0].id)  # type: ignore[attr-defined]
        block = textwrap.indent(block, indent)
        first, last = min(pm.lineno, pn.lineno), max(pm.end_lineno or pm.lineno, pn.end_lineno or pn.lineno)
        # Drop a comment line right above that describes the old order.
        if first >= 2 and lines[first - 2].strip().startswith("#") and "order" in lines[first - 2].lower():
            first -= 1
        new_lines = lines[: first - 1] + [block] + lines[last:]
        out = "".join(new_lines)
        if G is None:
            out = _add_constexpr_param(out, fn.name, "GROUP_SIZE_M", group)
        ast.parse(out)  # the rewrite must stay valid Python
        return out, fn.name
    raise RewriteError("no jitted kernel maps one program id to (pid_m, pid_n) in row-major order")


def _add_constexpr_param(source: str, kernel: str, name: str, default: int) -> str:
    tree = ast.parse(source)
    for fn in _jit_functions(tree):
        if fn.name == kernel:
            last = fn.args.args[-1]
            return _replace(source, last, ast.unparse(last) + f", {name}: tl.constexpr = {default}")
    raise RewriteError(f"kernel {kernel} not found")


def has_grouped_order(source: str) -> bool:
    """Does any jitted kernel already group its program ids?"""
    try:
        from advisors.knobs import discover

        return discover(source).grouped_order
    except Exception:
        return "group_id" in source or "swizzle2d" in source
