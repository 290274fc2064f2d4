"""Is a file a kernel target at all? Answered from its syntax tree, without running it.

``profd profile helpers.py`` on a module that defines no ``kernel``/``reference``/``get_inputs``
(nor KernelBench's ``Model``/``ModelNew``/``get_inputs``) is bad input, not a failed target:
it gets one paragraph and exit code 2, and it is never stored as a run. The loader in the
child (``profd.harness.target``) still decides for files this check lets through; a file that
does not parse is let through, so that the user sees the syntax error at its line.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable, Optional

PROFD_NAMES = ("get_inputs", "reference", "kernel")
KERNELBENCH_NAMES = ("Model", "ModelNew", "get_inputs")


class NotATarget(Exception):
    """The file is not a kernel target; the message says what a target defines."""


def _bound(body: Iterable[ast.stmt]) -> Optional[set[str]]:
    """Top-level names the statements bind; None when it cannot be told (``from x import *``)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name == "*":
                    return None
                names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            # Definitions behind `if torch.cuda.is_available():` or `try: import ...` still count.
            inner = [*getattr(node, "body", []), *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for h in getattr(node, "handlers", []):
                inner += h.body
            sub = _bound(inner)
            if sub is None:
                return None
            names |= sub
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            f = node.value.func
            if isinstance(f, ast.Name) and f.id in ("exec", "globals"):
                return None  # names made at run time: let the loader decide
    return names


def not_a_target_reason(path: Path) -> Optional[str]:
    """Why ``path`` is not a target (one paragraph), or None when it is one (or may be one)."""
    path = Path(path)
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return None  # the loader reports the syntax error at its line
    except OSError:
        return None  # the loader reports an unreadable file
    names = _bound(tree.body)
    if names is None or all(n in names for n in PROFD_NAMES) or all(n in names for n in KERNELBENCH_NAMES):
        return None
    missing = [n for n in PROFD_NAMES if n not in names]
    return (f"{path.name} is not a kernel target: it does not define {', '.join(missing)}. A target defines "
            "get_inputs() (fresh random inputs), reference(*inputs) (trusted result) and kernel(*inputs) (the "
            "implementation under test) -- or, in KernelBench's format, Model, ModelNew, get_inputs() and "
            "get_init_inputs(). See examples/kernels/ for complete files; profd stored nothing for this file.")


def check_target(path: Path) -> None:
    """Raise ``NotATarget`` for a file that is clearly no kernel target."""
    reason = not_a_target_reason(path)
    if reason is not None:
        raise NotATarget(reason)
