"""The diagnosis rules, one module per rule, discovered at import time.

Every public module in this package (name not starting with ``_``) defines ``RULE``, an instance
of a ``Rule`` subclass. Adding a rule means adding a file; nothing else needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Optional

from advisors.rules._base import Rule, Threshold

__all__ = ["Rule", "Threshold", "all_rules", "get_rule", "describe_rules"]


@lru_cache(maxsize=1)
def _discover() -> tuple[Rule, ...]:
    found: list[Rule] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        rule = getattr(mod, "RULE", None)
        if not isinstance(rule, Rule):
            raise TypeError(f"advisors.rules.{info.name} must define RULE = <Rule instance>")
        found.append(rule)
    ids = [r.id for r in found]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise ValueError(f"duplicate rule ids: {sorted(dupes)}")
    return tuple(found)


def all_rules() -> list[Rule]:
    """Every registered rule, in module-name order."""
    return list(_discover())


def get_rule(rule_id: str) -> Optional[Rule]:
    return next((r for r in _discover() if r.id == rule_id), None)


def describe_rules() -> list[dict]:
    """Self-descriptions of all rules (id, title, metrics, thresholds, profiler rules)."""
    return [r.describe() for r in _discover()]
