"""The contract check: what a candidate may not change in a target file.

One judge serves every advisor (``profd/flow/judge.py``), so this check lives here,
beside the advisors, and not inside the LLM advisor that first needed it. The LLM
advisor still calls it while parsing a reply (to skip a block early, with a reason
the model can read); the judge calls it again for every candidate, whatever proposed
it. It is a static check against a candidate rewriting its own judge; the judge does
not rely on it alone: the trusted half is always taken from the user's file.
"""

from __future__ import annotations

import ast
from typing import Optional


def entry_point(source: str) -> str:
    """``"kernel"`` for profd's format, ``"ModelNew"`` for KernelBench's."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "kernel"
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return "ModelNew" if "ModelNew" in names and "kernel" not in names else "kernel"




#: Names whose definitions are the trusted half of a target file.
PROTECTED_ROOTS = ("reference", "get_inputs", "get_init_inputs", "Model", "SHAPES", "BENCH_SHAPE",
                   "RTOL", "ATOL", "TOLERANCE", "PRECISION", "flops", "bytes_moved")
_MUTATORS = {"append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem",
             "sort", "reverse", "__setitem__", "__delitem__"}


def contract_violations(original: str, candidate: str) -> list[str]:
    """What a candidate changed in the trusted part of the file (empty: nothing).

    The trusted part is every module-level binding of :data:`PROTECTED_ROOTS` and,
    transitively, of every name those bindings use (problem sizes, ``DEVICE``,
    imports, helpers), compared as ASTs so that formatting and comments don't
    matter. Names the original leaves unbound (a builtin such as ``abs``, or ``RTOL``)
    must stay unbound. Also flagged: the entry point missing, ``global`` statements,
    attribute/item assignment or mutating calls on trusted names (``torch.add = ...``,
    ``SHAPES.append(...)``), ``setattr``/``delattr`` on them, and ``globals()``.
    This is a static check against a model rewriting its own judge, not a sandbox.
    """
    try:
        orig_tree = ast.parse(original)
    except SyntaxError:
        return []  # nothing to protect against: the harness will report the original's error
    cand_tree = ast.parse(candidate)
    problems: list[str] = []
    entry = entry_point(original)
    cand_defs = {n.name for n in cand_tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    if entry not in cand_defs:
        problems.append(f"`{entry}` is not defined at module level")

    orig_b = _bindings(orig_tree)
    cand_b = _bindings(cand_tree)
    protected = _protected_names(orig_b)
    data_names = {n for n in protected
                  if any(isinstance(b, (ast.Assign, ast.AnnAssign, ast.AugAssign)) for b in orig_b.get(n, {}).values())}
    for name in sorted(protected):
        o, c = orig_b.get(name, {}), cand_b.get(name, {})
        if set(o) == set(c):
            continue
        if not o:
            problems.append(f"adds a module-level `{name}`, which the trusted code uses or the harness reads")
        elif not c:
            problems.append(f"removes or renames `{name}`")
        else:
            what = "body" if name in ("reference", "get_inputs", "get_init_inputs", "Model") else "definition"
            problems.append(f"changes the {what} of `{name}` (trusted: it must stay as in the original)")

    for desc in sorted(_side_effects(cand_tree, protected, data_names) - _side_effects(orig_tree, protected, data_names)):
        problems.append(desc)
    return problems


def _walk_module_scope(body: list[ast.stmt]):
    """Statements executed at module level, through if/try/with/for blocks but not into defs."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.AsyncWith, ast.AsyncFor)):
            yield from _walk_module_scope(node.body)
            yield from _walk_module_scope(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            yield from _walk_module_scope(node.body)
            for h in node.handlers:
                yield from _walk_module_scope(h.body)
            yield from _walk_module_scope(node.orelse)
            yield from _walk_module_scope(node.finalbody)


_COMPOUND = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor, ast.While,
             ast.With, ast.AsyncWith, ast.Try)


def _target_names(t: ast.AST) -> list[str]:
    if isinstance(t, ast.Name):
        return [t.id]
    if isinstance(t, (ast.Tuple, ast.List)):
        return [n for e in t.elts for n in _target_names(e)]
    if isinstance(t, ast.Starred):
        return _target_names(t.value)
    return []


def _bindings(tree: ast.Module) -> dict[str, dict[str, ast.AST]]:
    """Module-level name -> {normalized dump of each binding statement: the node}."""
    out: dict[str, dict[str, ast.AST]] = {}

    def add(name: str, key: str, node: ast.AST) -> None:
        out.setdefault(name, {})[key] = node

    for node in _walk_module_scope(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(node.name, ast.dump(node), node)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for name in _target_names(t):
                    add(name, ast.dump(node), node)
        elif isinstance(node, ast.Import):
            for a in node.names:
                # `import torch` and `import torch.nn` both bind `torch` to the same module
                add(a.asname or a.name.split(".")[0], f"import {a.name if a.asname else a.name.split('.')[0]}", node)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                add(a.asname or a.name, f"from {'.' * node.level}{node.module} import {a.name}", node)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            for name in _target_names(node.target):
                add(name, ast.dump(node.target) + ast.dump(node.iter), node)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    for name in _target_names(item.optional_vars):
                        add(name, ast.dump(item), node)
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                for name in _target_names(t):
                    add(name, ast.dump(node), node)
        # a walrus in a module-level expression binds a module-level name too
        exprs = [node.test] if isinstance(node, (ast.If, ast.While)) else [] if isinstance(node, _COMPOUND) else [node]
        for e in exprs:
            for sub in ast.walk(e):
                if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                    add(sub.target.id, ast.dump(sub), sub)
    return out


def _function_locals(fn: ast.AST) -> set[str]:
    """Parameters and names assigned inside a function/lambda (its nested scopes included)."""
    names: set[str] = set()
    declared_global: set[str] = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.arguments):
            for a in n.posonlyargs + n.args + n.kwonlyargs + [x for x in (n.vararg, n.kwarg) if x]:
                names.add(a.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not fn:
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name.split(".")[0]) for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            declared_global.update(n.names)
    return names - declared_global


def _free_names(node: ast.AST) -> set[str]:
    """Module-level names a definition reads (attribute chains count by their root)."""
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        local: set[str] = set()
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                local |= _function_locals(sub)
            elif isinstance(sub, ast.comprehension):
                local |= set(_target_names(sub.target))
        loaded -= local
    return loaded


def _protected_names(bindings: dict[str, dict[str, ast.AST]]) -> set[str]:
    """PROTECTED_ROOTS plus the transitive closure of the module-level names they read."""
    protected: set[str] = set(PROTECTED_ROOTS)
    todo = [n for n in PROTECTED_ROOTS if n in bindings]
    while todo:
        name = todo.pop()
        for node in bindings.get(name, {}).values():
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for used in _free_names(node) - protected:
                protected.add(used)
                if used in bindings:
                    todo.append(used)
    return protected


def _root(node: ast.AST) -> Optional[str]:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


class _SideEffects(ast.NodeVisitor):
    """Statements anywhere in the file that could alter trusted module-level names.

    Inside a function, a name that is a parameter or local there is not the
    module-level one (``self.conv = ...`` in ``ModelNew`` is fine).
    """

    def __init__(self, protected: set[str], data_names: set[str]) -> None:
        self.protected = protected
        self.data_names = data_names  # trusted names bound to data (lists, dicts), not modules
        self.scopes: list[set[str]] = []
        self.found: set[str] = set()

    def _trusted(self, name: Optional[str]) -> bool:
        return name is not None and name in self.protected and not any(name in s for s in self.scopes)

    def _scoped(self, node: ast.AST) -> None:
        self.scopes.append(_function_locals(node))
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scoped

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            if name in self.protected:
                self.found.add(f"rebinds trusted `{name}` through a `global` statement")

    def _targets(self, targets: list[ast.AST]) -> None:
        for t in targets:
            for el in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]):
                if isinstance(el, (ast.Attribute, ast.Subscript)) and self._trusted(_root(el)):
                    self.found.add(f"assigns to `{ast.unparse(el)}`, which trusted code depends on")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._targets(node.targets)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._targets([node.target])
        self.generic_visit(node)

    visit_AnnAssign = visit_AugAssign

    def visit_Delete(self, node: ast.Delete) -> None:
        self._targets(node.targets)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("setattr", "delattr") and node.args and self._trusted(_root(node.args[0])):
            self.found.add(f"calls {f.id}() on `{ast.unparse(node.args[0])}`, which trusted code depends on")
        if isinstance(f, ast.Name) and f.id in ("globals", "vars") and not node.args and not any(f.id in s for s in self.scopes):
            self.found.add(f"calls {f.id}(), which can rewrite the module's trusted names")
        if (isinstance(f, ast.Attribute) and f.attr in _MUTATORS and isinstance(f.value, ast.Name)
                and f.value.id in self.data_names and self._trusted(f.value.id)):
            self.found.add(f"mutates trusted `{f.value.id}` with .{f.attr}()")
        self.generic_visit(node)


def _side_effects(tree: ast.Module, protected: set[str], data_names: set[str]) -> set[str]:
    v = _SideEffects(protected, data_names)
    v.visit(tree)
    return v.found


#: Attribute chains and modules a kernel rewrite has no business touching: they reach into
#: profd's frames and state, the interpreter's object graph, other processes or the network.
_REACHING = {
    "sys._getframe": "reaches into the caller's frames (profd's harness)",
    "sys.modules": "rebinds modules at run time (the trusted half must come from the user's file)",
    "sys.settrace": "traces profd's harness", "sys.setprofile": "traces profd's harness",
    "inspect.currentframe": "reaches into profd's frames", "inspect.stack": "reaches into profd's frames",
    "inspect.getouterframes": "reaches into profd's frames",
    "gc.get_objects": "walks the interpreter's objects (profd's state)",
    "gc.get_referrers": "walks the interpreter's objects (profd's state)",
    "gc.get_referents": "walks the interpreter's objects (profd's state)",
    "os.kill": "sends signals", "os.killpg": "sends signals", "os.getppid": "looks for its parent process",
    "os.system": "runs shell commands", "os.fork": "forks processes", "os.chmod": "changes file modes",
    "os.utime": "changes file times", "os.environ": "reads the environment",
    "time.perf_counter": "touches the timer profd uses", "torch.cuda.Event": "touches the timer profd uses",
}
_MODULES = {"ctypes": "loads native code through ctypes", "socket": "opens network sockets",
            "subprocess": "starts processes", "signal": "handles signals", "profd": "imports profd itself",
            "importlib": "imports modules by name at run time", "builtins": "patches builtins",
            "urllib": "uses the network", "http": "uses the network", "requests": "uses the network",
            "multiprocessing": "starts processes", "pickle": "unpickles data"}


def _dotted(node: ast.AST) -> Optional[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _reaching(tree: ast.AST) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            d = _dotted(node)
            if d:
                for chain, why in _REACHING.items():
                    if d == chain or d.startswith(chain + "."):
                        found[f"`{chain}`"] = why
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                top = n.split(".")[0]
                if top in _MODULES:
                    found[f"`import {top}`"] = _MODULES[top]
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    chain = f"{node.module}.{a.name}"
                    if chain in _REACHING:
                        found[f"`{chain}`"] = _REACHING[chain]
        elif isinstance(node, ast.Name) and node.id in ("__import__", "__builtins__", "eval", "exec", "compile",
                                                        "globals", "vars"):
            found[f"`{node.id}`"] = "runs or looks up code by name at run time"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "reference":
            found["a call of `reference`"] = "computes the result with the trusted reference instead of a kernel"
    return found


def reaching_violations(original: str, candidate: str) -> list[str]:
    """Constructs in ``candidate`` (absent from ``original``) that reach outside a kernel rewrite.

    A static first line of defence with a readable cause; the judge does not depend on
    it (the candidate child is confined and never holds the reference or the verdict)."""
    try:
        orig, cand = ast.parse(original), ast.parse(candidate)
    except SyntaxError:
        return []
    before = _reaching(orig)
    return [f"uses {k}: {v}" for k, v in sorted(_reaching(cand).items()) if k not in before]
