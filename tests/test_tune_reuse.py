"""A TUNE job queued by a save starts from that save's profile: the daemon measured the
file (and, on a GPU, ran the counter pass) seconds before, and measuring it again cost every
daemon session its start-up (with the default ``counters = true``, a second ncu run)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from profd.flow.judge import source_sha256
from profd.flow.tune import reusable
from profd.model import DeviceInfo, Measurement, Status, Timing, Verdict

ROOT = Path(__file__).resolve().parents[1]


def _measured(source: str, backend: str = "cuda", status: Status = Status.CORRECT) -> Measurement:
    return Measurement(target="k.py", content_hash=source_sha256(source), verdict=Verdict(status, ""),
                       device=DeviceInfo(name="NVIDIA H200" if backend == "cuda" else "cpu", backend=backend),
                       timing=Timing(median_ms=0.1, min_ms=0.1, max_ms=0.1, p25_ms=0.1, p75_ms=0.1, stdev_ms=0.0,
                                     runs=10, method="test", representative=backend != "cpu"))


class _Profiled:
    def __init__(self, m: Measurement, counters: object = None) -> None:
        self.measurement, self.counters = m, counters


def test_a_profile_stands_for_the_baseline_only_for_the_same_content_backend_and_counters() -> None:
    src = "def kernel(x):\n    return x\n"
    assert reusable(_Profiled(_measured(src), counters=object()), src, counters=True, force_cpu=False)
    assert reusable(_Profiled(_measured(src)), src, counters=False, force_cpu=False)
    # the file changed since
    assert not reusable(_Profiled(_measured(src), counters=object()), src + "# edited\n", True, False)
    # the session wants counters and the save's profile has none (its counter pass failed or was off)
    assert not reusable(_Profiled(_measured(src)), src, counters=True, force_cpu=False)
    # not correct, or measured on the GPU for a session on the CPU interpreter
    assert not reusable(_Profiled(_measured(src, status=Status.SHAPE_MISMATCH)), src, False, False)
    assert not reusable(_Profiled(_measured(src)), src, counters=False, force_cpu=True)
    # the interpreter has no counters to want
    assert reusable(_Profiled(_measured(src, backend="cpu")), src, counters=True, force_cpu=True)
    assert not reusable(None, src, False, False)


def test_the_daemon_tunes_a_saved_file_without_measuring_it_twice(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    shutil.copy(ROOT / "examples" / "kernels" / "vector_add.py", watch / "vector_add.py")
    env = dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PROFD_CONFIG=str(tmp_path / "none.toml"),
               PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, "-m", "profd.cli", "watch", str(watch), "--once", "--no-counters",
                          "--tune", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with sqlite3.connect(tmp_path / "state" / "profd.db") as c:
        runs = c.execute("SELECT kind, content_hash FROM runs").fetchall()
        sessions = c.execute("SELECT base_hash, evaluated, stopped FROM tune_sessions").fetchall()
    assert len(sessions) == 1 and sessions[0][1] == 1, (sessions, out.stdout[-2000:])
    # one profile of the file: the save's; the tune session started from it
    assert runs == [("profile", sessions[0][0])], runs


def test_profd_tune_starts_from_a_recent_profile_of_the_same_content_only(tmp_path: Path) -> None:
    import json

    f = tmp_path / "vector_add.py"
    shutil.copy(ROOT / "examples" / "kernels" / "vector_add.py", f)
    env = dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PROFD_CONFIG=str(tmp_path / "none.toml"))

    def cli(*args: str) -> dict:
        cp = subprocess.run([sys.executable, "-m", "profd.cli", *args, "--json"], env=env, capture_output=True,
                            text=True, timeout=600)
        assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
        return json.loads(cp.stdout)

    def runs() -> int:
        with sqlite3.connect(tmp_path / "state" / "profd.db") as c:
            return int(c.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    cli("profile", str(f))
    assert runs() == 1
    first = cli("tune", str(f), "--budget", "1", "--no-llm")
    assert first["startup"].get("profile_reused") == 1.0 and runs() == 1, first["startup"]
    # the same session figures as a measured start: the judge timed the original itself
    assert first["baseline_ms"] and first["evaluated"] == 1
    f.write_text(f.read_text() + "\n# edited after the profile\n")
    second = cli("tune", str(f), "--budget", "1", "--no-llm")
    assert "profile_reused" not in second["startup"] and runs() == 2, second["startup"]
