"""One measurement per device at a time, across processes.

The daemon's slots and a ``profd tune`` run from the command line are separate
processes; a timing taken while another process runs kernels on the same GPU is
worthless. Every harness child they start therefore runs under an exclusive
``flock`` on ``<state dir>/locks/<device key>.lock``: the kernel releases it when
the holder dies, however it dies, so a crashed or SIGKILLed process never leaves
the device locked. The lock is taken per child (a few seconds), not per job, so
a long tuning session and the daemon's saves take turns instead of one starving
the other. Beside the lock, ``<key>.holder`` says who holds it (pid, what), for
the waiting side's message and for ``profd status``.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from profd.paths import state_dir

_PIN_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def device_key(env: Mapping[str, str], cpu_index: int = 0) -> str:
    """The lock name of the device a child with ``env`` runs on.

    A pinned child (``CUDA_VISIBLE_DEVICES=1``) locks that GPU ("gpu-1"); a child
    without a GPU locks a CPU slot ("cpu-0"), so the interpreter path behaves the
    same way (and is testable without a GPU).
    """
    for var in _PIN_VARS:
        token = (env.get(var) or "").split(",")[0].strip()
        if token:
            return "gpu-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in token)
    return f"cpu-{cpu_index}"


def lock_dir() -> Path:
    d = state_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def holder(key: str) -> Optional[dict[str, Any]]:
    """Who holds (or last held) the lock of ``key``: {"pid", "what", "since"}, or None."""
    try:
        return json.loads((lock_dir() / f"{key}.holder").read_text())
    except (OSError, ValueError):
        return None


def is_held(key: str) -> bool:
    """Is ``key``'s device being measured on right now (by any process)?"""
    fd = os.open(lock_dir() / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


#: flock locks belong to open file descriptions: a second acquisition on a new fd in
#: the same process would deadlock on itself. Nested holds on one thread count instead.
_held = threading.local()


@contextmanager
def hold(key: str, what: str = "", *, on_wait: Callable[[Optional[dict[str, Any]]], None] = lambda h: None,
         should_abort: Callable[[], bool] = lambda: False, poll_s: float = 0.05) -> Iterator[bool]:
    """Hold ``key``'s device for the duration of the block.

    Blocks while another process measures there, calling ``on_wait(holder)`` once;
    yields True once held, or False if ``should_abort`` turned true while waiting
    (the caller then skips its measurement).
    """
    depth: dict[str, int] = getattr(_held, "depth", None) or {}
    _held.depth = depth
    if depth.get(key):
        depth[key] += 1
        try:
            yield True
        finally:
            depth[key] -= 1
        return
    d = lock_dir()
    fd = os.open(d / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    got = False
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if should_abort():
                    break
                if not told:
                    told = True
                    on_wait(holder(key))
                time.sleep(poll_s)
        if got:
            from profd.paths import write_private

            # User-only, like every state file: it names what the user is measuring.
            write_private(d / f"{key}.holder", json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}))
            depth[key] = 1
        try:
            yield got
        finally:
            if got:
                depth[key] = 0
    finally:
        os.close(fd)  # releases the flock


class LockedRunner:
    """A harness runner whose every child runs under its device's lock.

    Wraps a WarmWorker or ColdRunner; everything else (``alive``, ``kill_current``,
    ``close``, ``lost``) passes through to the wrapped runner.
    """

    def __init__(self, inner: Any, key: str, what: str = "",
                 on_wait: Callable[[Optional[dict[str, Any]]], None] = lambda h: None,
                 should_abort: Callable[[], bool] = lambda: False) -> None:
        self.inner = inner
        self.key = key
        self.what = what
        self.on_wait = on_wait
        self.should_abort = should_abort

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, req: Any, *, timeout_s: float = 120.0, workdir: Optional[Path] = None) -> Any:
        with hold(self.key, self.what or f"measuring {Path(req.target).name}", on_wait=self.on_wait,
                  should_abort=self.should_abort) as got:
            if not got:
                from profd.harness.runner import ChildRun

                return ChildRun(None, None, False, "", "abandoned while waiting for the device", "waiting for "
                                "the device", 0.0)
            return self.inner.run(req, timeout_s=timeout_s, workdir=workdir)
