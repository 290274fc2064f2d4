"""The warm worker: a process that has imported torch and Triton once and forks a
fresh child per job.

Importing torch costs seconds; forking a process that already has it costs
milliseconds. The zygote never initialises CUDA (so its forks may), never runs
user code itself, and each fork gets its own session, scratch directory and
scrubbed environment -- the same isolation as a cold ``python -m profd.harness.child``.

Protocol on stdin/stdout, one JSON object per line: the parent sends
``{"request": ..., "result": ..., "cwd": ..., "env": {...}}`` and receives
``{"pid": N}``; when a fork exits, the zygote writes ``exit.json`` (its exit
status) into that fork's scratch directory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Optional

_children: dict[int, str] = {}


def _reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        cwd = _children.pop(pid, None)
        if cwd is None:
            continue
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        tmp = Path(cwd) / "exit.json.tmp"
        tmp.write_text(json.dumps({"returncode": rc}))
        os.replace(tmp, Path(cwd) / "exit.json")


def _run_fork(msg: dict) -> None:
    """In the forked child: become an isolated harness child and run the request."""
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.chdir(msg["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, "stdout.log"), (2, "stderr.log")):
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.environ.clear()
    os.environ.update(msg["env"])
    code = 0
    try:
        if msg.get("module") == "judged":  # the judge's confined candidate child
            from profd.harness.judged import main as judged_main

            code = judged_main([msg["request"], msg["channel"]])
        elif msg.get("module") == "precompile":  # a compile-only fork (no GPU) for a later candidate
            from profd.harness.precompile import main as precompile_main

            code = precompile_main([msg["request"]])
        else:
            from profd.harness.child import main

            code = main([msg["request"], msg["result"]])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def choose_backend() -> bool:
    """True when forks will run Triton's CPU interpreter.

    Decided before Triton is imported: Triton's own library functions (tl.max,
    tl.sum, ...) are decorated at import time, in whichever mode is set then. GPU
    presence is asked without initialising CUDA here (``profd.gpu``), before fork.
    """
    from profd.gpu import gpu_present

    interpret = os.environ.get("PROFD_FORCE_CPU") == "1" or not gpu_present()
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    return interpret


def prewarm_triton() -> list[str]:
    """Fill the per-process caches every fork's first Triton launch would fill: names of those filled.

    Triton keys its kernel cache with ``triton_key()``, a SHA-256 of its own sources and of
    ``libtriton.so`` (500 MB in 3.6-3.9), and its NVIDIA backend's key with ``ptxas --version``
    (a subprocess); both are cached per process. Every fork computed them afresh on its first
    launch, cache hit or not: 0.49 s of each baseline child's first call on an H200, paid by
    every candidate child (up to three per candidate) and every compile-ahead fork. Filled here,
    before any fork, they are inherited. Neither touches the GPU driver (the zygote must not)."""
    import importlib

    done: list[str] = []
    for modname in ("triton.runtime.cache", "triton.compiler.compiler"):
        try:
            fn = getattr(importlib.import_module(modname), "triton_key", None)
            if callable(fn):
                fn()
                done.append(f"{modname}.triton_key")
                break  # one function, re-exported: one cache
        except Exception:
            pass
    arch = _gpu_arch()
    if arch:
        try:
            from triton.backends.nvidia import compiler as nv

            nv.get_ptxas_version(arch)
            done.append(f"ptxas --version (sm_{arch})")
        except Exception:
            pass
    return done


def _gpu_arch() -> Optional[int]:
    """The first NVIDIA GPU's compute capability as Triton's arch number (90 for an H200), asked of
    NVML (no CUDA context); None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
            index = int(first) if first.isdigit() else 0  # the warm worker's pinned GPU
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(pynvml.nvmlDeviceGetHandleByIndex(index))
        finally:
            pynvml.nvmlShutdown()
        return int(major) * 10 + int(minor)
    except Exception:
        return None


def main() -> int:
    # The expensive imports, once. Nothing here may initialise CUDA.
    interpret = choose_backend()
    import numpy  # noqa: F401

    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        pass
    if not interpret:
        prewarm_triton()
    import profd.harness.child  # noqa: F401
    import profd.harness.judged  # noqa: F401
    import profd.harness.precompile  # noqa: F401
    import profd.harness.timing  # noqa: F401
    import profd.harness.verify  # noqa: F401

    signal.signal(signal.SIGCHLD, _reap)
    out = sys.stdout
    out.write(json.dumps({"ready": os.getpid(), "interpret": interpret}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_fork(msg)
        _children[pid] = msg["cwd"]
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
    # stdin closed: the daemon is gone (even by SIGKILL). Its measurements die with it;
    # the persisted queue re-runs them when a daemon starts again.
    for pid in list(_children):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
