"""The daemon as a real process: saves become jobs, SIGKILL loses nothing,
SIGTERM abandons cleanly, one instance per state directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

try:
    from support import held_add_target
except ImportError:  # pragma: no cover
    from tests.support import held_add_target

def held_add(marker: str) -> str:
    """The add target, held in kernel(...) while ``marker`` exists."""
    return held_add_target("MARKER and os.path.exists(MARKER)", consts={"MARKER": marker})


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict]:
    watch = Path(tempfile.mkdtemp(prefix="profd-daemon-test-", dir=Path.home()))
    e = dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PROFD_CONFIG=str(tmp_path / "none.toml"),
             PYTHONUNBUFFERED="1")
    e["_watch"] = str(watch)
    try:
        yield e
    finally:
        shutil.rmtree(watch, ignore_errors=True)


def start_daemon(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "profd.cli", "watch", env["_watch"], "--no-counters", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def db(env: dict) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["PROFD_STATE_DIR"]) / "profd.db", timeout=30)


def wait_for(cond, timeout: float = 60.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def jobs(env: dict) -> list[tuple]:
    with db(env) as c:
        return c.execute("SELECT id, state, attempts FROM jobs ORDER BY id").fetchall()


def test_sigkill_mid_job_loses_nothing_and_the_job_reruns(env: dict) -> None:
    marker = Path(env["_watch"]) / "hold.flag"
    marker.write_text("hold")
    target = Path(env["_watch"]) / "add.py"
    target.write_text(held_add(str(marker)))
    d = start_daemon(env)
    try:
        wait_for(lambda: jobs(env) and jobs(env)[0][1] == "running", what="the job to start")
        d.send_signal(signal.SIGKILL)
        d.wait(timeout=10)
        assert jobs(env)[0][1] == "running"  # what a crash leaves behind
        with db(env) as c:
            assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    finally:
        if d.poll() is None:
            d.kill()
    marker.unlink()
    d2 = start_daemon(env, "--once")
    out, _ = d2.communicate(timeout=120)
    assert d2.returncode == 0, out
    assert "re-queued job 1" in out
    assert "✓ add.py: correct" in out
    assert jobs(env) == [(1, "done", 2)]  # the interrupted attempt and the re-run
    with db(env) as c:
        assert c.execute("SELECT status FROM runs").fetchall() == [("correct",)]


def test_sigterm_abandons_the_measurement_and_requeues_it(env: dict) -> None:
    marker = Path(env["_watch"]) / "hold.flag"
    marker.write_text("hold")
    (Path(env["_watch"]) / "add.py").write_text(held_add(str(marker)))
    d = start_daemon(env)
    wait_for(lambda: jobs(env) and jobs(env)[0][1] == "running", what="the job to start")
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    out, _ = d.communicate(timeout=30)
    assert time.monotonic() - t0 < 15
    assert d.returncode == 0, out
    assert "abandoned at shutdown" in out
    assert jobs(env)[0][1] == "queued"
    with db(env) as c:  # the abandoned measurement is not stored as a failure
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_saves_are_reported_and_broken_files_do_not_stop_the_daemon(env: dict) -> None:
    w = Path(env["_watch"])
    (w / "add.py").write_text(held_add(""))
    d = start_daemon(env)
    try:
        wait_for(lambda: jobs(env) == [(1, "done", 1)], what="the initial job")
        (w / "broken.py").write_text("def kernel(:\n")
        wait_for(lambda: len(jobs(env)) == 2 and jobs(env)[1][1] == "done", what="the broken file's job")
        tmp = w / "add.py.tmp"
        tmp.write_text(held_add("") + "\n# edited\n")
        os.replace(tmp, w / "add.py")
        wait_for(lambda: len(jobs(env)) == 3 and jobs(env)[2][1] == "done", what="the re-save's job")
        status = subprocess.run([sys.executable, "-m", "profd.cli", "status", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        data = json.loads(status.stdout)
        assert data["running"] is True
        assert data["daemon"]["watched"] == [str(w.resolve())]
        names = {Path(r["target"]).name: r["status"] for r in data["last_results"]}
        assert names == {"add.py": "correct", "broken.py": "load_error"}
        # a second daemon on the same state dir is refused with advice
        second = subprocess.run([sys.executable, "-m", "profd.cli", "watch", str(w)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "already uses the state directory" in second.stderr
    finally:
        d.send_signal(signal.SIGTERM)
        out, _ = d.communicate(timeout=30)
    assert "✗ broken.py: load_error" in out and "syntax error" in out
    assert out.count("✓ add.py: correct") == 2
