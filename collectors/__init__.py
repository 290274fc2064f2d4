"""Collectors: one module per profiler, each turning raw profiler output into a CounterTable.

``load_capture(path)`` is the entry point for a capture a user already has (``profd explain``):
it sniffs the file and hands it to the right parser. The profiler runners live in the
modules themselves (``collectors.ncu.run``, ``collectors.rocprof.run``).

The submodules are imported lazily so that ``import collectors`` stays cheap and so that the
small process helper below can be shared by both runners without an import cycle.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from collectors.errors import CaptureError

__all__ = ["CaptureError", "load_capture", "SUPPORTED_FORMATS", "ToolResult", "run_tool"]

SUPPORTED_FORMATS = (
    "Nsight Compute CSV: `ncu --csv --page raw` or `--page details` (live output or `ncu --import r.ncu-rep --csv ...`)",
    "Nsight Compute report: `.ncu-rep` (needs ncu installed to export it)",
    "rocprof v1: kernel trace `results.csv`, counter CSV from `rocprof -i input.txt`, `results.stats.csv`",
    "rocprofv2 / Omniperf / rocprof-compute: wide per-dispatch CSV (`pmc_perf.csv`, `SQ_*.csv`, `timestamps.csv`)",
    "rocprofv3: `*_kernel_trace.csv`, `*_counter_collection.csv`, `*_kernel_stats.csv`, or its output directory",
)


def load_capture(path: Path, **kw: Any) -> "Any":
    """Parse a profiler capture a user brings and return a ``CounterTable``.

    ``path`` may be an ncu CSV (raw or details page), a ``.ncu-rep`` report, any rocprof /
    rocprofv2 / rocprofv3 / rocprof-compute CSV, or a rocprofv3 output directory. Keyword
    arguments go to the AMD parser (``sysinfo``, ``sm_count``, ``max_waves_per_cu``,
    ``num_xcd``) and are ignored for NVIDIA captures. Raises ``CaptureError`` for anything
    else, listing the formats that are supported.
    """
    from collectors import ncu, rocprof

    path = Path(path)
    if not path.exists():
        raise CaptureError(
            f"The capture {path} does not exist. Pass the path of a profiler output file "
            f"(an ncu CSV or .ncu-rep, or a rocprof CSV) or of a rocprofv3 output directory.",
            kind="malformed", path=str(path),
        )
    if path.is_dir():
        return rocprof.parse_dir(path, **kw)
    if path.suffix == ".ncu-rep":
        return ncu.import_report(path)
    head = _read_head(path)
    if ncu.looks_like_ncu(head):
        table = ncu.parse_csv(path.read_text(encoding="utf-8", errors="replace"), source_path=str(path))
        table.artifact = str(path)
        return table
    if rocprof.sniff(path) is not None:
        return rocprof.parse(path, **kw)
    formats = "; ".join(SUPPORTED_FORMATS)
    raise CaptureError(
        f"{path} is not a profiler output profd can read: its first line does not match any known "
        f"header. Supported formats are: {formats}. If this is an ncu capture, re-export it with "
        f"`ncu --import report.ncu-rep --csv --page raw --print-units base > counters.csv`; if it "
        f"is a rocprofv3 SQLite database (`*_results.db`), convert it with `rocpd convert -f csv`.",
        kind="unsupported", path=str(path),
    )


def _read_head(path: Path, limit: int = 65536) -> str:
    with open(path, "rb") as fh:
        data = fh.read(limit)
    if b"\x00" in data[:4096]:
        # Binary: SQLite (rocpd), a .ncu-rep renamed, an archive... nothing we parse as text.
        raise CaptureError(
            f"{path} is a binary file, not a CSV. A `.ncu-rep` report must keep its suffix (profd "
            f"exports it with ncu); a rocprofv3 SQLite database (`*_results.db`) must first be "
            f"converted with `rocpd convert -i {path.name} -f csv`.",
            kind="unsupported", path=str(path),
        )
    return data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- running tools


@dataclass
class ToolResult:
    """What a profiler process left behind."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr

    def tail(self, n: int = 1500) -> str:
        """The end of the combined output, for error messages."""
        return " ".join(self.text.strip().split())[-n:]


def run_tool(cmd: list[str], *, timeout_s: float, env: Optional[dict[str, str]] = None,
             cwd: Optional[Path] = None) -> ToolResult:
    """Run a profiler command in its own process group and wait at most ``timeout_s``.

    The profiler starts the user's program (and it may start more processes), so on timeout
    the whole group is killed: killing only ncu would leave the child holding the GPU.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        env=full_env, cwd=str(cwd) if cwd else None, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return ToolResult(proc.returncode, out or "", err or "")
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a grandchild left its own session holding the pipes
            proc.kill()
            out, err = "", ""
        return ToolResult(proc.returncode if proc.returncode is not None else -9,
                          out or "", err or "", timed_out=True)
