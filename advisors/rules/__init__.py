"""The diagnosis rules, one module per rule, discovered at import time.

Every public module in this package (name not starting with ``_``) defines ``RULE``, an instance
of a ``Rule`` subclass. Adding a rule means adding a file; nothing else needs to change.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

from advisors.rules._base import Rule, Threshold
from profd.plugins import discover_plugins

__all__ = ["Rule", "Threshold", "all_rules", "get_rule", "describe_rules"]


@lru_cache(maxsize=1)
def _discover() -> tuple[Rule, ...]:
    return tuple(discover_plugins(__name__, "RULE", Rule, lambda r: r.id, "rules", required=True))


def all_rules() -> list[Rule]:
    """Every registered rule, in module-name order."""
    return list(_discover())


def get_rule(rule_id: str) -> Optional[Rule]:
    return next((r for r in _discover() if r.id == rule_id), None)


def describe_rules() -> list[dict]:
    """Self-descriptions of all rules (id, title, metrics, thresholds, profiler rules)."""
    return [r.describe() for r in _discover()]
