"""What every rewrite advisor receives and returns.

An advisor looks at the current best source, the findings of the diagnosis, the
device and the outcomes of earlier candidates, and proposes new sources. It never
measures anything itself: the tune loop runs every candidate through the same
harness as the original and decides.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from profd.model import Candidate, CandidateVerdict, Finding


@dataclass
class Attempt:
    """An earlier candidate and what the measurement said about it."""

    candidate: Candidate
    verdict: CandidateVerdict


@dataclass
class TuneContext:
    """Everything an advisor may use to propose the next candidates."""

    path: str  # the user's file (never written by advisors)
    original_source: str
    best_source: str  # the current best: the original until a candidate is kept
    best_median_ms: Optional[float]
    findings: list[Finding] = field(default_factory=list)
    report: str = ""  # the markdown report of the original
    device_spec: Any = None  # hwspecs.spec.DeviceSpec or None
    knobs: Any = None  # advisors.knobs.Knobs of best_source, or None
    history: list[Attempt] = field(default_factory=list)
    budget_left: int = 0
    #: Earlier results for this source's candidates on this device and shape
    #: (``Store.tune_cache(device, shape_key)``); advisors skip known losers. None: no cache.
    cache: Any = None

    def tried_sources(self) -> set[str]:
        """Hashes of every source already measured (the original included)."""
        return {source_digest(a.candidate.source) for a in self.history} | {source_digest(self.original_source)}


class Advisor(Protocol):
    """A source of candidate rewrites."""

    name: str

    def propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        """Up to ``n`` new candidates not yet tried; may return fewer (or none)."""
        ...


def source_digest(source: str) -> str:
    """Identity of a source up to trailing whitespace: the key for deduplication."""
    norm = "\n".join(line.rstrip() for line in source.strip().splitlines())
    return hashlib.sha256(norm.encode()).hexdigest()[:16]


def unified_diff(before: str, after: str, path: str = "kernel.py") -> str:
    """The candidate as a patch against the user's file."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))
