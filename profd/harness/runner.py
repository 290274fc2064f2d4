"""The parent side of the harness: run a child on a target, with a time limit.

The daemon never imports user code and never touches the GPU itself; it writes a
request, starts ``python -m profd.harness.child`` in its own session (so a hang can be
killed with everything it spawned) in a scratch directory with an environment
scrubbed of secrets, and reads back a typed Measurement. A child that dies
without answering still yields a Measurement that says what happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

from profd.model import Measurement, Status, Verdict

#: Environment variables that must never reach user or LLM-written code.
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION)", re.I)


#: Per-thread overrides for every child a thread starts (an executor slot pins its GPU
#: here, so that a child started by any code on that thread -- the profiler's too --
#: sees only that GPU). Thread-local because slots are threads of one process.
_pinned = threading.local()


@contextmanager
def pinned_env(overrides: dict[str, str]) -> Iterator[None]:
    """Add ``overrides`` (e.g. ``CUDA_VISIBLE_DEVICES=1``) to every child started on this thread."""
    old = getattr(_pinned, "env", None)
    _pinned.env = {**(old or {}), **overrides}
    try:
        yield
    finally:
        _pinned.env = old


def scrubbed_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The current environment minus anything that looks like a secret (plus this thread's pinning)."""
    env = {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}
    env.update(getattr(_pinned, "env", None) or {})
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The child imports profd from wherever this process got it.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class ChildRequest:
    """What the child should do; serialised to JSON for it."""

    target: str
    mode: str = "measure"  # "measure" or "counters"
    trials: int = 3
    seed: int = 1234
    time: bool = True
    rep_ms: float = 250.0
    force_cpu: bool = False
    nvtx_range: str = "profd_kernel"
    # Verification order: "declared" (as SHAPES lists them) or "smallest-first" (fail fast:
    # a broken candidate is rejected on the cheapest shape before the large ones run).
    shapes: str = "declared"
    # "bench": time BENCH_SHAPE only; "all": every declared shape too (Measurement.shape_timings).
    time_shapes: str = "bench"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChildRun:
    """The raw outcome of one child process."""

    result: Optional[dict[str, Any]]
    returncode: Optional[int]
    timed_out: bool
    stdout: str
    stderr: str
    phase: str
    wall_s: float


def child_command(request_path: Path, result_path: Path) -> list[str]:
    """The command line of a harness child (collectors wrap it in a profiler)."""
    return [sys.executable, "-m", "profd.harness.child", str(request_path), str(result_path)]


def run_child(req: ChildRequest, *, timeout_s: float = 120.0, wrap: Optional[list[str]] = None,
              env: Optional[dict[str, str]] = None, workdir: Optional[Path] = None,
              should_abort: Callable[[], bool] = lambda: False) -> ChildRun:
    """Run one child (optionally under a profiler command ``wrap``) and collect its answer.

    ``should_abort`` is polled while the child runs; when it turns true the child is
    killed (the daemon is stopping and will re-run the job later)."""
    scratch, req_path, res_path = prepare_scratch(req, workdir)
    cmd = (wrap or []) + child_command(req_path, res_path)
    t0 = time.time()
    out_f = open(scratch / "stdout.log", "w")
    err_f = open(scratch / "stderr.log", "w")
    proc = subprocess.Popen(cmd, cwd=scratch, env=env or scrubbed_env(), stdout=out_f, stderr=err_f,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    timed_out = False
    # Output goes to files, not pipes, so that waiting in small steps cannot deadlock on a full pipe.
    while True:
        try:
            proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if should_abort():
                kill_group(proc)
                proc.wait()
                break
            if time.time() - t0 > timeout_s:
                timed_out = True
                kill_group(proc)
                proc.wait()
                break
    out_f.close()
    err_f.close()
    return collect(scratch, proc.returncode, timed_out, t0)


def prepare_scratch(req: ChildRequest, workdir: Optional[Path] = None,
                    prefix: str = "profd-child-") -> tuple[Path, Path, Path]:
    """A user-only scratch directory holding the request: (dir, request path, result path)."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
    os.chmod(scratch, 0o700)
    req_path, res_path = scratch / "request.json", scratch / "result.json"
    req_path.write_text(json.dumps(req.__dict__))
    return scratch, req_path, res_path


def read_result(res_path: Path) -> Optional[dict[str, Any]]:
    """The child's JSON answer, or None when it wrote none (or a torn one)."""
    try:
        return json.loads(res_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(scratch: Path, returncode: Optional[int], timed_out: bool, started: float) -> ChildRun:
    """What a finished child left in its scratch dir (answer, logs, last phase); then remove the dir."""
    def read(name: str) -> str:
        f = scratch / name
        return f.read_text(errors="replace") if f.exists() else ""

    run = ChildRun(read_result(scratch / "result.json"), returncode, timed_out, read("stdout.log"),
                   read("stderr.log"), read("result.phase"), time.time() - started)
    remove_scratch(scratch)
    return run


def remove_scratch(scratch: Path) -> None:
    """Delete a child's scratch directory once its answer is read (PROFD_KEEP_SCRATCH=1 keeps it).

    A daemon runs thousands of children; their scratch dirs must not pile up in /tmp.
    """
    if os.environ.get("PROFD_KEEP_SCRATCH") == "1":
        return
    shutil.rmtree(scratch, ignore_errors=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole session: a hung kernel may have spawned helpers."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def reap_group(pgid: int, timeout_s: float = 2.0) -> bool:
    """SIGKILL process group ``pgid`` and wait until none of it is left running (zombies aside).

    A kill is delivered asynchronously: a candidate's forty forked sleepers could still be alive
    (on a loaded 2-core machine) when the judge had already returned its verdict. Returns False
    if members were still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return True
        if not _running_members(pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def _running_members(pgid: int) -> bool:
    """Does group ``pgid`` hold a process that is not a zombie (Linux /proc; False elsewhere)?"""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path("/proc", name, "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _tail(text: str, n: int = 2000) -> str:
    return text[-n:]


def to_measurement(run: ChildRun, target: Path, timeout_s: float) -> Measurement:
    """A Measurement from a child's answer, or one that explains its silence."""
    if run.result is not None and not run.timed_out:
        m = Measurement.from_dict(run.result)
        m.stderr_tail = _tail(run.stderr)
        return m
    from profd.harness.target import content_hash

    try:
        digest = content_hash(target)
    except OSError:
        digest = ""
    where = f" while in phase '{run.phase}'" if run.phase else ""
    if run.timed_out:
        verdict = Verdict(Status.TIMEOUT, f"{target.name} did not finish within {timeout_s:g} s{where}; profd "
                          "killed it. A kernel that never returns usually loops on a condition that never "
                          "changes (a while loop on a value no program writes, a wrong loop bound); a huge "
                          "BENCH_SHAPE in the CPU interpreter can also take this long.")
    else:
        rc = run.returncode
        sig = ""
        if rc is not None and rc < 0:
            try:
                sig = f" (signal {signal.Signals(-rc).name})"
            except ValueError:
                sig = f" (signal {-rc})"
        last = next((ln for ln in reversed(run.stderr.strip().splitlines()) if ln.strip()), "")
        verdict = Verdict(Status.CRASH, f"the harness process for {target.name} died with exit code {rc}{sig}"
                          f"{where} without reporting a result. Last error output: {last or '(none)'}. "
                          "A segfault in the Triton interpreter or a driver abort are typical causes: run the file "
                          "directly (python file.py) to see the full output.")
    return Measurement(target=str(target), content_hash=digest, verdict=verdict, started_at=time.time() - run.wall_s,
                       wall_s=run.wall_s, stderr_tail=_tail(run.stderr))


class Runner(Protocol):
    """Something that runs a harness child: a cold process, or a fork of a warm worker."""

    def run(self, req: ChildRequest, *, timeout_s: float = 120.0, workdir: Optional[Path] = None) -> ChildRun: ...


class ColdRunner:
    """A fresh ``python -m profd.harness.child`` per request."""

    def __init__(self, should_abort: Callable[[], bool] = lambda: False) -> None:
        self.should_abort = should_abort

    def run(self, req: ChildRequest, *, timeout_s: float = 120.0, workdir: Optional[Path] = None) -> ChildRun:
        return run_child(req, timeout_s=timeout_s, workdir=workdir, should_abort=self.should_abort)


def measure(target: Path, *, timeout_s: float = 120.0, trials: int = 3, do_time: bool = True,
            force_cpu: bool = False, rep_ms: float = 250.0, seed: int = 1234,
            runner: Optional[Runner] = None, time_shapes: str = "bench") -> Measurement:
    """Verify and time one target in an isolated child; never raises for user errors."""
    target = Path(target).resolve()
    req = ChildRequest(target=str(target), trials=trials, time=do_time, force_cpu=force_cpu, rep_ms=rep_ms,
                       seed=seed, time_shapes=time_shapes)
    run = (runner or ColdRunner()).run(req, timeout_s=timeout_s)
    m = to_measurement(run, target, timeout_s)
    m.wall_s = run.wall_s
    return m
