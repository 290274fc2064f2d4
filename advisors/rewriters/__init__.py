"""Advisors that propose rewrites: one module each, each declaring itself in ``ADVISOR``.

Every public module (or sub-package) of this package that defines ``ADVISOR = AdvisorSpec(...)``
is registered: its name, the config table it reads (``[llm]``; None when it has no options), a
table of its options, whether its candidates carry a prompt/response exchange worth storing, and ``build``
(its config table -> an advisor, or None when it is not configured). ``build_advisors(cfg)``,
the config loader's list of sections and the tune loop's record code all read the registry;
adding an advisor means adding one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping, Optional

from advisors.base import Advisor
from profd.plugins import discover_plugins

__all__ = ["AdvisorSpec", "all_advisors", "build_advisors", "config_sections", "get", "records_llm_exchange"]


@dataclass(frozen=True)
class AdvisorSpec:
    """An advisor's self-description (Kernel Tuner style: one entry point and a table of options)."""

    name: str
    summary: str
    build: Callable[[Mapping[str, Any]], Optional[Advisor]]
    section: Optional[str] = None  # the config table it reads: "llm" -> [llm]
    options: Mapping[str, str] = field(default_factory=dict)  # option -> what it means
    records_llm_exchange: bool = False  # store prompt, response, tokens and cost of each candidate
    order: int = 50  # place in build_advisors' list: lower first

    def describe(self) -> dict[str, Any]:
        """JSON-able: name, summary, section, options."""
        return {"name": self.name, "summary": self.summary, "section": self.section, "options": dict(self.options),
                "records_llm_exchange": self.records_llm_exchange}


@lru_cache(maxsize=1)
def _discover() -> tuple[AdvisorSpec, ...]:
    found = discover_plugins(__name__, "ADVISOR", AdvisorSpec, lambda s: s.name, "advisors")
    return tuple(sorted(found, key=lambda s: (s.order, s.name)))


def all_advisors() -> list[AdvisorSpec]:
    """Every registered advisor, in build order."""
    return list(_discover())


def get(name: str) -> Optional[AdvisorSpec]:
    """The advisor registered as ``name`` (or whose name ``name`` starts with: "llm:model"), or None."""
    specs = _discover()
    return next((s for s in specs if s.name == name), None) or \
        next((s for s in specs if name.startswith(s.name + ":")), None)


def config_sections() -> list[str]:
    """The config tables advisors read (``[llm]``, ...)."""
    return [s.section for s in _discover() if s.section]


def records_llm_exchange(advisor_name: str) -> bool:
    """Whether candidates of this advisor carry a prompt/response exchange to store."""
    spec = get(advisor_name)
    return bool(spec and spec.records_llm_exchange)


def build_advisors(cfg: Any) -> list[Advisor]:
    """Every configured advisor. ``cfg`` has one mapping per section (``cfg.llm``) or ``cfg.advisor_tables``."""
    out: list[Advisor] = []
    extra = getattr(cfg, "advisor_tables", None) or {}
    for spec in _discover():
        table = (getattr(cfg, spec.section, None) or extra.get(spec.section) or {}) if spec.section else {}
        advisor = spec.build(table)
        if advisor is not None:
            out.append(advisor)
    return out
