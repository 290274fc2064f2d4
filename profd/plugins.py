"""Plug-in discovery: each public module of a package declares one object in a module attribute.

``collectors`` (``COLLECTOR``), ``advisors.rewriters`` (``ADVISOR``) and ``advisors.rules``
(``RULE``) register their plug-ins this way, so adding one means adding one file. The lower
packages may import this module (tests/test_layout.py allows it) because it imports nothing
from profd: it knows packages and attributes, never the daemon.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

T = TypeVar("T")

__all__ = ["discover_plugins"]


def discover_plugins(package: str, attr: str, kind: type[T], name: Callable[[T], str], what: str,
                     required: bool = False) -> list[T]:
    """The ``attr`` object of every public module of ``package``, in module-name order.

    Modules whose name starts with ``_`` are private and skipped. A sub-package counts as one
    plug-in: it is imported and its ``attr`` read (from its ``__init__``), its own modules are
    not searched. A module without ``attr`` is a helper and skipped, unless ``required`` (then
    it is a TypeError, as is an ``attr`` that is not a ``kind``). ``name`` gives an object's
    registry key; two objects with the same key are a ValueError naming them (``what``: the
    plural noun for the message, "advisors"). ``package``'s ``__path__`` is read on each call,
    so a plug-in directory added to it is seen.
    """
    pkg = importlib.import_module(package)
    found: list[T] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        obj = getattr(importlib.import_module(f"{package}.{info.name}"), attr, None)
        if obj is None and not required:
            continue
        if not isinstance(obj, kind):
            raise TypeError(f"{package}.{info.name} must define {attr} = <a {kind.__qualname__}>, "
                            f"found {type(obj).__name__}: give the module its {attr} or a leading _ if it "
                            f"is a helper")
        found.append(obj)
    names = [name(o) for o in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two {what} share the name(s) {dupes}: rename one of them")
    return found
