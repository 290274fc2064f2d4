"""Parent side of the warm worker (see ``profd.harness.zygote``): same contract as
``harness.run_child``, a fraction of the start-up time."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from profd.harness.child import MISMATCH_EXIT
from profd.harness.runner import ChildRequest, ChildRun, collect, prepare_scratch, run_child, scrubbed_env


class WarmWorker:
    """One zygote process; ``run`` forks a harness child from it."""

    def __init__(self, start_timeout_s: float = 120.0, should_abort: Callable[[], bool] = lambda: False,
                 env_overrides: Optional[dict[str, str]] = None, idle_close_s: float = 0.0) -> None:
        # The zygote and its forks get these (CUDA_VISIBLE_DEVICES=i: one warm worker per GPU).
        self.env_overrides = dict(env_overrides or {})
        self.proc: Optional[subprocess.Popen] = None
        self.start_timeout_s = start_timeout_s
        # Polled while a fork runs: the daemon is stopping, abandon the measurement.
        self.should_abort = should_abort
        self.lock = threading.Lock()
        self.current_pid: Optional[int] = None
        self.interpret = False
        self.disabled = False
        # The zygote holds torch and Triton (~0.5 GB): an idle daemon may give it back
        # after this many seconds (0: keep it) and pay one cold start at the next save.
        self.idle_close_s = idle_close_s
        self.last_used = time.time()
        self.starting = False
        self.ready_at: Optional[float] = None
        if idle_close_s > 0:
            threading.Thread(target=self._reaper, name="profd-warm-reaper", daemon=True).start()

    def start(self) -> None:
        self.starting = True
        try:
            self._start()
        finally:
            self.starting = False
            self.last_used = time.time()

    def start_async(self) -> threading.Thread:
        """Start the zygote in the background (importing torch takes seconds) while the
        caller does other work; ``run`` waits for it (or starts it itself)."""
        def go() -> None:
            with self.lock:
                if not self.alive():
                    try:
                        self.start()
                    except Exception:
                        pass  # run() tries once more, then falls back to a cold child

        t = threading.Thread(target=go, name="profd-warm-start", daemon=True)
        t.start()
        return t

    def _start(self) -> None:
        from profd.gpu import ENV, probe

        n, name, _ = probe()
        env = scrubbed_env({ENV: f"{n}|{name}", **self.env_overrides})
        self.proc = subprocess.Popen([sys.executable, "-m", "profd.harness.zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                     start_new_session=True)
        line = self._readline(self.start_timeout_s)
        if not line or "ready" not in line:
            self.close()
            raise RuntimeError("the warm worker did not start; falling back to a fresh process per job")
        self.interpret = bool(json.loads(line).get("interpret"))
        self.ready_at = time.time()  # a session's start-up figures say how long it waited for this

    def _readline(self, timeout_s: float) -> str:
        assert self.proc and self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        return self.proc.stdout.readline() if ready else ""

    def _reaper(self) -> None:
        while True:
            time.sleep(min(self.idle_close_s / 4, 30.0))
            with self.lock:
                if self.proc is not None and self.current_pid is None and not self.starting and \
                        time.time() - self.last_used > self.idle_close_s:
                    self.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=5)
            self.proc = None

    def kill_current(self) -> None:
        """Abandon the running measurement (SIGTERM of the daemon, pre-emption)."""
        pid = self.current_pid
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def fork_judged(self, scratch: Path, request: Path, fifo: Path, env: dict[str, str], *,
                    done: Callable[[], bool]) -> Optional[int]:
        """Fork a judge's candidate child (``profd.harness.judged``) in ``scratch``; its pid, or None
        when the zygote cannot (dead, wrong Triton mode): the caller then starts it cold. The fork is
        waited for through ``scratch/exit.json``; ``done`` is unused here and kept for symmetry."""
        if self.disabled:
            return None
        with self.lock:
            self.last_used = time.time()
            if not self.alive():
                try:
                    self.start()
                except Exception:
                    return None
            pid = self._send({"module": "judged", "request": str(request), "channel": str(fifo), "cwd": str(scratch),
                              "env": env})
            if pid is not None:
                self.current_pid = pid
            return pid

    def fork_module(self, module: str, scratch: Path, request: Path, env: dict[str, str]) -> Optional[int]:
        """Fork a helper child (``profd.harness.<module>``, e.g. ``precompile``) in ``scratch`` beside
        the measurement in flight (not tracked as it: its owner waits for and kills it); its pid, or
        None when the zygote cannot fork one. It exits through ``scratch/exit.json``."""
        if self.disabled:
            return None
        with self.lock:
            if not self.alive():
                return None
            return self._send({"module": module, "request": str(request), "cwd": str(scratch), "env": env})

    def _send(self, msg: dict) -> Optional[int]:
        """Ask the zygote (lock held) for one fork; its pid, or None after closing a zygote that
        did not answer."""
        try:
            assert self.proc and self.proc.stdin
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            return int(json.loads(self._readline(30.0))["pid"])
        except Exception:
            self.close()
            return None

    def run(self, req: ChildRequest, *, timeout_s: float = 120.0, workdir: Optional[Path] = None) -> ChildRun:
        """Fork a child for ``req``; a dead zygote falls back to a cold child."""
        if self.disabled or (req.force_cpu and self.alive() and not self.interpret):
            # This zygote's Triton is in GPU mode; the interpreter needs a cold child.
            return run_child(req, timeout_s=timeout_s, workdir=workdir, should_abort=self.should_abort,
                             env=scrubbed_env(self.env_overrides))
        with self.lock:
            self.last_used = time.time()
            if not self.alive():
                try:
                    self.start()
                except Exception:
                    return run_child(req, timeout_s=timeout_s, workdir=workdir, should_abort=self.should_abort,
                                     env=scrubbed_env(self.env_overrides))
            scratch, req_path, res_path = prepare_scratch(req, workdir)
            t0 = time.time()
            pid = self._send({"request": str(req_path), "result": str(res_path), "cwd": str(scratch),
                              "env": scrubbed_env(self.env_overrides)})
            if pid is None:
                return run_child(req, timeout_s=timeout_s, workdir=workdir, should_abort=self.should_abort,
                                 env=scrubbed_env(self.env_overrides))
            self.current_pid = pid
            exit_file = scratch / "exit.json"
            timed_out = False
            while not exit_file.exists():
                if self.should_abort():
                    self.kill_current()
                    break
                if time.time() - t0 > timeout_s:
                    timed_out = True
                    self.kill_current()
                    deadline = time.time() + 10
                    while not exit_file.exists() and time.time() < deadline:
                        time.sleep(0.02)
                    break
                if not self.alive():
                    break
                time.sleep(0.01)
            self.current_pid = None
            rc = json.loads(exit_file.read_text())["returncode"] if exit_file.exists() else None
            if rc == MISMATCH_EXIT:
                # This zygote's Triton is in the wrong mode for the device: never use it again.
                self.close()
                self.disabled = True
                return run_child(req, timeout_s=timeout_s, workdir=workdir, should_abort=self.should_abort,
                                 env=scrubbed_env(self.env_overrides))
            return collect(scratch, rc, timed_out, t0)
