"""Collectors: one module per profiler, each declaring itself in a module-level ``COLLECTOR``.

A collector either *wraps* the harness child (ncu, rocprof: the profiler starts the child and
records its kernels) or *observes* around it (nvml: device state sampled before and after).
Every public module of this package that defines ``COLLECTOR = Collector(...)`` is registered;
adding a profiler means adding one file. ``load_capture`` (``profd explain``), the counter step
(``profd.flow.capture``) and ``profd doctor`` iterate the registry; none of them names a
profiler.

The submodules load on first use of the registry, so ``import collectors`` stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from collectors.errors import CaptureError
from collectors.tool import ToolResult, run_tool
from profd.plugins import discover_plugins

__all__ = ["CaptureError", "Collector", "RunRequest", "ToolResult", "all_collectors", "for_backend", "get",
           "load_capture", "observers", "run_tool", "supported_formats", "wrappers"]

WRAPS = "wraps"  # runs the harness child under the profiler
OBSERVES = "observes"  # samples the device around the child


@dataclass
class RunRequest:
    """What the counter step asks of a wrapping collector: profile this child command."""

    python: str
    child_args: list[str]
    out_dir: Path  # where the profiler's own files go (a report, CSVs)
    timeout_s: float = 600.0
    env: Optional[dict[str, str]] = None
    cwd: Optional[Path] = None
    nvtx_range: str = "profd_kernel"  # the range around kernel(...) (NVIDIA only)
    full_set: bool = False  # every counter the profiler has, not the curated list
    metrics: Sequence[str] = ()  # canonical metrics wanted (the rules' requirements); empty: the default list


@dataclass(frozen=True)
class Collector:
    """A profiler's self-description: what it is, what it reads, how to run it.

    ``reads(path, head)`` says whether a capture is this profiler's (``head`` is the file's first
    64 KiB as text, or None for a directory or a binary file); ``load(path, **kw)`` parses it.
    ``run(RunRequest)`` profiles the child (wrapping collectors); ``find()`` returns the
    executable or None; ``counters_for(metrics)`` the profiler's own counter names that yield
    those canonical metrics. ``snapshot``/``assess`` are an observer's before/after probes.
    """

    name: str
    role: str  # WRAPS or OBSERVES
    summary: str
    backends: tuple[str, ...] = ()  # harness backends it profiles: "cuda", "hip"
    formats: tuple[str, ...] = ()  # capture formats it reads, one line each (for error messages)
    install: str = ""  # one sentence: how to get it
    find: Optional[Callable[[], Optional[str]]] = None
    reads: Optional[Callable[[Path, Optional[str]], bool]] = None
    load: Optional[Callable[..., Any]] = None
    run: Optional[Callable[[RunRequest], Any]] = None
    counters_for: Optional[Callable[[Sequence[str]], list[str]]] = None
    measures: frozenset[str] = field(default_factory=frozenset)  # canonical metrics it can produce
    unavailable: frozenset[str] = field(default_factory=frozenset)  # canonical metrics it cannot measure
    snapshot: Optional[Callable[..., Any]] = None
    assess: Optional[Callable[..., list[str]]] = None
    order: int = 50  # detection order in load_capture: lower asks first

    def describe(self) -> dict[str, Any]:
        """JSON-able: what ``profd doctor --json`` and the docs show."""
        return {"name": self.name, "role": self.role, "summary": self.summary, "backends": list(self.backends),
                "formats": list(self.formats), "install": self.install}


@lru_cache(maxsize=1)
def _discover() -> tuple[Collector, ...]:
    found = discover_plugins(__name__, "COLLECTOR", Collector, lambda c: c.name, "collectors")
    return tuple(sorted(found, key=lambda c: (c.order, c.name)))


def all_collectors() -> list[Collector]:
    """Every registered collector, in detection order."""
    return list(_discover())


def get(name: str) -> Optional[Collector]:
    """The collector called ``name``, or None."""
    return next((c for c in _discover() if c.name == name), None)


def wrappers() -> list[Collector]:
    """Collectors that run the child under a profiler (ncu, rocprof)."""
    return [c for c in _discover() if c.role == WRAPS]


def observers() -> list[Collector]:
    """Collectors that sample the device around the child (nvml)."""
    return [c for c in _discover() if c.role == OBSERVES]


def for_backend(backend: str) -> Optional[Collector]:
    """The wrapping collector for a harness backend ("cuda", "hip"), or None."""
    return next((c for c in wrappers() if backend in c.backends and c.run is not None), None)


def supported_formats() -> list[str]:
    """Every capture format some collector reads."""
    return [f for c in _discover() for f in c.formats]


def load_capture(path: Path, **kw: Any) -> Any:
    """Parse a profiler capture a user brings and return a ``CounterTable``.

    ``path`` may be any file or directory a registered collector reads (an ncu CSV or
    ``.ncu-rep``, a rocprof / rocprofv3 / rocprof-compute CSV or output directory, ...). Keyword
    arguments go to the collector's parser (the AMD one takes ``sysinfo``, ``sm_count``,
    ``max_waves_per_cu``, ``num_xcd``; others ignore them). Raises ``CaptureError`` for anything
    else, listing the formats that are supported.
    """
    path = Path(path)
    if not path.exists():
        raise CaptureError(
            f"The capture {path} does not exist. Pass the path of a profiler output file "
            f"(an ncu CSV or .ncu-rep, or a rocprof CSV) or of a rocprofv3 output directory.",
            kind="malformed", path=str(path),
        )
    head = None if path.is_dir() else _read_head(path)
    for c in _discover():
        if c.reads is not None and c.load is not None and c.reads(path, head):
            return c.load(path, **kw)
    if head is None and not path.is_dir():
        # Binary: SQLite (rocpd), a .ncu-rep renamed, an archive... nothing we parse as text.
        raise CaptureError(
            f"{path} is a binary file, not a CSV. A `.ncu-rep` report must keep its suffix (profd "
            f"exports it with ncu); a rocprofv3 SQLite database (`*_results.db`) must first be "
            f"converted with `rocpd convert -i {path.name} -f csv`.",
            kind="unsupported", path=str(path),
        )
    formats = "; ".join(supported_formats())
    raise CaptureError(
        f"{path} is not a profiler output profd can read: its first line does not match any known "
        f"header. Supported formats are: {formats}. If this is an ncu capture, re-export it with "
        f"`ncu --import report.ncu-rep --csv --page raw --print-units base > counters.csv`; if it "
        f"is a rocprofv3 SQLite database (`*_results.db`), convert it with `rocpd convert -f csv`.",
        kind="unsupported", path=str(path),
    )


def _read_head(path: Path, limit: int = 65536) -> Optional[str]:
    """The start of a file as text; None for a binary file."""
    with open(path, "rb") as fh:
        data = fh.read(limit)
    if b"\x00" in data[:4096]:
        return None
    return data.decode("utf-8", errors="replace")

