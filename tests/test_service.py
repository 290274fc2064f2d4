"""Service behaviour as systemd sees it: a real notify socket receives READY=1 only once
the daemon is up, WATCHDOG=1 keep-alives follow, SIGHUP reloads the config, STOPPING=1
on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def recv_all(sock: socket.socket, until: str, timeout: float) -> list[str]:
    got: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.05, end - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
        if any(until in g for g in got):
            break
    return got


def test_notify_watchdog_reload_and_stop(tmp_path: Path) -> None:
    a = Path(tempfile.mkdtemp(prefix="profd-svc-a-", dir=Path.home()))
    b = Path(tempfile.mkdtemp(prefix="profd-svc-b-", dir=Path.home()))
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\ndirs = ["{a}"]\n[run]\ncounters = false\nwarm_worker = false\n')
    state = tmp_path / "state"
    env = dict(os.environ, PROFD_STATE_DIR=str(state), NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="1000000",
               PYTHONUNBUFFERED="1")
    d = subprocess.Popen([sys.executable, "-m", "profd.cli", "daemon", "--config", str(cfg)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        msgs = recv_all(sock, "READY=1", 60)
        ready = next(m for m in msgs if "READY=1" in m)
        assert "MAINPID=" in ready and "STATUS=watching 1 dir(s)" in ready
        # once ready, the watcher and the state file are up
        status = json.loads((state / "daemon.json").read_text())
        assert status["watched"] == [str(a)] and status["watcher"] in ("inotify", "polling")
        beats = recv_all(sock, "WATCHDOG=1", 5)
        assert any("WATCHDOG=1" in m for m in beats)
        cfg.write_text(f'[watch]\ndirs = ["{a}", "{b}"]\n[run]\ncounters = false\nwarm_worker = false\n')
        d.send_signal(signal.SIGHUP)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if json.loads((state / "daemon.json").read_text())["watched"] == [str(a), str(b)]:
                break
            time.sleep(0.1)
        assert json.loads((state / "daemon.json").read_text())["watched"] == [str(a), str(b)]
        d.send_signal(signal.SIGTERM)
        out, _ = d.communicate(timeout=30)
        assert d.returncode == 0
        assert any("STOPPING=1" in m for m in recv_all(sock, "STOPPING=1", 5))
        # service mode logs carry journald priority prefixes
        assert "<6>" in out and "config reloaded" in out
    finally:
        if d.poll() is None:
            d.kill()
        sock.close()
        shutil.rmtree(a, ignore_errors=True)
        shutil.rmtree(b, ignore_errors=True)
