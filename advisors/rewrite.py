"""Source-to-source rewrites of a Triton target, done on the text with AST positions.

Only the value expressions of knobs change, or one well-known block of a kernel
is replaced; everything else -- comments, formatting, the reference -- stays
byte-for-byte, so the diff a user reviews is the change and nothing else.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any, Optional, Sequence


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
            # `BLOCK_M=BLOCK_M` is wiring, not a value: changing it alone would leave the grid,
            # computed from the variable, launching for the old tile (issue 17).
            if not isinstance(node.value, ast.Name):
                found.append(node.value)
    return found


def set_knob(source: str, name: str, value: Any, line: Optional[int] = None) -> str:
    """Set knob ``name`` (as ``advisors.knobs.discover`` names it) to ``value``, where it is defined.

    The knob is looked up by name (and ``line`` when given) and changed at its site -- a constant,
    a tuple element, a default, a helper's result, a launch keyword -- so that the launch and the
    grid computed from the same variable stay consistent.
    """
    from advisors.knobs import discover

    knobs = discover(source)
    cands = [k for k in knobs.knobs if k.name == name and k.kind != "autotune"]
    if line is not None and any(k.line == line for k in cands):
        cands = [k for k in cands if k.line == line]
    if cands and cands[0].col >= 0 or cands and cands[0].site in ("helper", "absent"):
        return set_value(source, cands[0], value)
    return _set_by_name(source, name, value, line)


def _set_by_name(source: str, name: str, value: Any, line: Optional[int]) -> str:
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
    """Apply several knob settings by name."""
    for name, value in values.items():
        source = set_knob(source, name, value, (lines or {}).get(name))
    return source


# --------------------------------------------------------------------------- by site


def _node_at(source: str, tree: ast.AST, line: int, col: int, text: str) -> Optional[ast.expr]:
    """The value expression at (line, col): the one whose text is the knob's, else the outermost.

    Several nodes start there: `64, 64, 32` (the tuple) and `64` (its element); `a + b` and `a`.
    """
    here = [n for n in ast.walk(tree) if isinstance(n, ast.expr) and n.lineno == line and n.col_offset == col]
    same = [n for n in here if ast.get_source_segment(source, n) == text]
    pool = same or here
    return max(pool, key=lambda n: (n.end_lineno, n.end_col_offset), default=None)


def _line_start(source: str, line: int) -> int:
    return sum(len(ln) for ln in source.splitlines(keepends=True)[: line - 1])


def _stmt_at(tree: ast.AST, line: int) -> Optional[ast.stmt]:
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == line and not isinstance(node, (ast.FunctionDef, ast.If)):
            return node
    return None


def set_value(source: str, knob: Any, value: Any) -> str:
    """Change one ``advisors.knobs.Knob`` to ``value`` at its site (see ``advisors.knobs.SITES``)."""
    tree = ast.parse(source)
    site = knob.site
    if site == "helper":
        # The helper may serve other launches and other sizes: override its result right after
        # the call that unpacks it, for this launch only -- one readable line.
        st = _stmt_at(tree, knob.call_line)
        if st is None:
            raise RewriteError(f"the call of {knob.helper}() at line {knob.call_line} is gone")
        lines = source.splitlines(keepends=True)
        first = lines[st.lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        end = st.end_lineno or st.lineno
        note = f"  # profd: instead of {knob.helper}()'s {knob.runtime if knob.runtime is not None else 'choice'}"
        lines.insert(end, f"{indent}{knob.name} = {value!r}{note}\n")
        return "".join(lines)
    if site == "absent":
        return _add_keyword(source, tree, knob.launch_line or knob.line, knob.kernel, knob.name, value)
    if site == "autotune":
        raise RewriteError("autotune knobs change as a whole config: use add_autotune_config")
    if site == "param":
        raise RewriteError(f"{knob.name} arrives from outside this file ({knob.text}); nothing here to change")
    node = _node_at(source, tree, knob.line, knob.col, knob.text) if knob.col >= 0 else None
    if node is None:
        return _set_by_name(source, knob.name, value, knob.line)
    return _replace(source, node, repr(value))


def _add_keyword(source: str, tree: ast.AST, line: int, kernel: str, name: str, value: Any) -> str:
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.lineno == line):
            continue
        f = node.func
        target = f.value if isinstance(f, (ast.Subscript, ast.Attribute)) else None
        if target is None or (kernel and _name_of(target) != kernel):
            continue
        if any(kw.arg == name for kw in node.keywords):
            raise RewriteError(f"the launch at line {line} already passes {name}")
        last = max(list(node.args) + [kw.value for kw in node.keywords],
                   key=lambda n: (n.end_lineno, n.end_col_offset), default=None)
        text = f"{name}={value!r}"
        if last is None:
            # `k[grid]()`: between the parentheses
            lines = source.splitlines(keepends=True)
            pos = _line_start(source, node.end_lineno) + node.end_col_offset - 1  # type: ignore[arg-type]
            return source[:pos] + text + source[pos:]
        pos = _line_start(source, last.end_lineno) + last.end_col_offset  # type: ignore[arg-type]
        return source[:pos] + ", " + text + source[pos:]
    raise RewriteError(f"no launch of {kernel or 'a kernel'} at line {line}")


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def apply_settings(source: str, settings: Sequence[tuple[Any, Any]]) -> str:
    """Apply several (Knob, value) settings; autotune knobs of one kernel become one new config.

    Edits go from the bottom of the file up, so the positions of the ones above stay valid.
    """
    autotune: dict[str, dict[str, Any]] = {}
    plain = []
    for knob, value in settings:
        if knob.site == "autotune":
            autotune.setdefault(knob.kernel, {})[knob.param or knob.name] = value
        else:
            plain.append((knob, value))

    def key(kv: tuple[Any, Any]) -> tuple[int, int]:
        k = kv[0]
        if k.site == "helper":
            return (k.call_line, 1 << 30)
        if k.site == "absent":
            return (k.launch_line or k.line, 1 << 30)
        return (k.line, k.col)

    for knob, value in sorted(plain, key=key, reverse=True):
        source = set_value(source, knob, value)
    for kernel, values in autotune.items():
        source = add_autotune_config(source, kernel, values)
    ast.parse(source)
    return source


def add_autotune_config(source: str, kernel: str, values: dict[str, Any], base: Optional[dict[str, Any]] = None) -> str:
    """Put a new ``triton.Config`` in front of ``kernel``'s autotune configs; the user's stay.

    ``values`` holds constexprs and ``num_warps``/``num_stages``; the rest of the config comes
    from ``base`` (the config the autotuner picked, when known) or the first existing config.
    """
    from advisors.knobs import discover

    knobs = discover(source)
    existing = knobs.autotune.get(kernel, [])
    tree = ast.parse(source)
    fn = next((f for f in _jit_functions(tree) if f.name == kernel), None)
    dec = next((d for d in (fn.decorator_list if fn else []) if isinstance(d, ast.Call)
                and _name_of(d.func) == "autotune"), None)
    if dec is None:
        raise RewriteError(f"{kernel} has no @triton.autotune decorator")
    cfg_node = next((kw.value for kw in dec.keywords if kw.arg == "configs"), dec.args[0] if dec.args else None)
    if cfg_node is None:
        raise RewriteError(f"{kernel}'s @triton.autotune has no configs")
    start = dict(base or {})
    if not start and existing:
        first = existing[0]
        start = dict(first.kwargs)
        if first.num_warps is not None:
            start["num_warps"] = first.num_warps
        if first.num_stages is not None:
            start["num_stages"] = first.num_stages
    start.update(values)
    warps, stages = start.pop("num_warps", None), start.pop("num_stages", None)
    for c in existing if kernel not in knobs.autotune_uncertain else []:
        if c.kwargs == start and c.num_warps == warps and c.num_stages == stages:
            raise RewriteError(f"{kernel}'s autotune list already has this config")
    prefix = "triton."
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name_of(node.func) == "Config":
            prefix = ast.unparse(node.func)[: -len("Config")]
            break
    kw = "".join(f", {k}={v!r}" for k, v in (("num_warps", warps), ("num_stages", stages)) if v is not None)
    cfg = f"{prefix}Config({start!r}{kw})"
    if isinstance(cfg_node, ast.List) and cfg_node.elts:
        lines = source.splitlines(keepends=True)
        first_elt = cfg_node.elts[0]
        at = _line_start(source, cfg_node.lineno) + cfg_node.col_offset + 1
        if first_elt.lineno > cfg_node.lineno:
            indent = lines[first_elt.lineno - 1][: first_elt.col_offset]
            return source[:at] + f"\n{indent}{cfg},  # profd" + source[at:]
        return source[:at] + f"{cfg}, " + source[at:]
    # A name, a call or a comprehension: extend it in the decorator, the list itself stays as is.
    return _replace(source, cfg_node, f"[{cfg}] + {ast.get_source_segment(source, cfg_node)}")


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
                if text.endswith("jit") or text.endswith("autotune") or text.endswith("heuristics"):
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
