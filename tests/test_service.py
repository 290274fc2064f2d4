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
    # The daemon's stdout/stderr is "the journal" here: a pipe whose identity JOURNAL_STREAM names,
    # as systemd does for a service whose output goes to journald.
    journal_r, journal_w = os.pipe()
    st = os.fstat(journal_w)
    env = dict(os.environ, PROFD_STATE_DIR=str(state), NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="1000000",
               PYTHONUNBUFFERED="1", JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    d = subprocess.Popen([sys.executable, "-m", "profd.cli", "daemon", "--config", str(cfg)], env=env,
                         stdout=journal_w, stderr=journal_w, text=True)
    os.close(journal_w)
    journal = os.fdopen(journal_r, encoding="utf-8", errors="replace")
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
        d.wait(timeout=30)
        out = journal.read()
        assert d.returncode == 0
        assert any("STOPPING=1" in m for m in recv_all(sock, "STOPPING=1", 5))
        # on the journal, log lines carry journald priority prefixes
        assert "<6>" in out and "config reloaded" in out
    finally:
        if d.poll() is None:
            d.kill()
        sock.close()
        journal.close()
        shutil.rmtree(a, ignore_errors=True)
        shutil.rmtree(b, ignore_errors=True)


def test_daemon_by_hand_prints_no_journald_prefixes(tmp_path: Path) -> None:
    """Run on a terminal (or a pipe that is not the journal), `profd daemon` prints plain log lines."""
    a = Path(tempfile.mkdtemp(prefix="profd-svc-plain-", dir=Path.home()))
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\ndirs = ["{a}"]\n[run]\ncounters = false\nwarm_worker = false\n')
    env = dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1",
               JOURNAL_STREAM="1:1")  # inherited from a systemd session, but names another stream
    env.pop("NOTIFY_SOCKET", None)
    d = subprocess.Popen([sys.executable, "-m", "profd.cli", "daemon", "--config", str(cfg)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and not (tmp_path / "state" / "daemon.json").exists():
            time.sleep(0.1)
        time.sleep(0.5)
        d.send_signal(signal.SIGTERM)
        out, _ = d.communicate(timeout=30)
    finally:
        if d.poll() is None:
            d.kill()
        shutil.rmtree(a, ignore_errors=True)
    assert "profd stopped" in out, out
    assert not any(line.startswith("<") and line[1:2].isdigit() for line in out.splitlines()), out
