"""Running a profiler process: one process group, a time limit, and what it left behind."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


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
