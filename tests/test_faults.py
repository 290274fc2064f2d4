"""Fault injection (issue #9): the faults the other test files do not already inject.

Covered elsewhere, not repeated here: syntax/import error, exception, hang, crash, NaN,
wrong/unwritten output, mutated input, cached output, shape (tests/test_harness.py);
SIGKILL and SIGTERM mid-job (tests/test_daemon.py); LLM server down, 429, timeout, reply
without code, 5 MB reply (tests/test_llm_advisor.py); SMTP down + outbox (tests/test_mail.py);
malformed ncu / rocprof CSV (tests/test_collectors_*.py); watcher editor saves
(tests/test_watcher.py); wrong / partial / mutating candidates (tests/test_tune.py).

Here: the write sandbox of the harness child; disk full on the state dir; a save storm;
the target deleted or renamed mid-job; the inotify limit; the profiler missing or not
permitted; GPU faults (illegal access, OOM, side-stream timing; skip without CUDA);
candidates that hard-code the benchmark shape or lose precision; secrets and file modes.
Every daemon here is a real ``python -m profd.cli watch DIR --no-counters`` process with
its own state dir, watching a directory under $HOME (vim-style saves under /tmp differ).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

try:
    from support import ScriptedAdvisor, free_port, held_add_target, warm  # noqa: F401 (warm: a fixture)
except ImportError:  # pragma: no cover
    from tests.support import ScriptedAdvisor, free_port, held_add_target, warm  # noqa: F401

from profd.harness.runner import measure
from profd.model import Status
from profd.harness.sandbox import landlock_abi
from profd.store import Store
from profd.flow.tune import tune
from profd.harness.warm import WarmWorker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_server import ScriptedLLMServer  # noqa: E402

LANDLOCK_ABI, LANDLOCK_WHY = landlock_abi()
needs_landlock = pytest.mark.skipif(LANDLOCK_ABI == 0, reason=f"Landlock unavailable here: {LANDLOCK_WHY}")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")

def _held_add(marker: str, action: str) -> str:
    return held_add_target(
        "MARKER and os.path.exists(MARKER)", consts={"MARKER": marker},
        before="""
        if MARKER and os.path.exists(MARKER):      # tell the test we are inside (a file in our scratch dir)
            open("held-" + os.path.basename(MARKER), "w").close()
        """, after=action.replace("\n    ", "\n"))  # actions indent their continuation lines by 4


def add_source(marker: str = "", action: str = "pass", note: str = "") -> str:
    return _held_add(marker, action) + (f"\n# {note}\n" if note else "")


def held(marker: Path) -> bool:
    """Is a kernel (of add_source(marker=...)) inside its hold loop? It says so in its scratch dir."""
    return any(Path(tempfile.gettempdir()).glob(f"profd-child-*/held-{marker.name}"))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(cond: Callable[[], object], timeout: float = 60.0, what: str = "", proc: Optional["Profd"] = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except (sqlite3.OperationalError, FileNotFoundError, json.JSONDecodeError):
            pass
        if proc is not None and not proc.alive():
            raise AssertionError(f"the daemon exited (code {proc.proc.returncode}) while waiting for {what}:\n"
                                 f"{proc.output()[-4000:]}")
        time.sleep(0.1)
    tail = f"\n--- daemon output ---\n{proc.output()[-4000:]}" if proc is not None else ""
    raise AssertionError(f"timed out waiting for {what}{tail}")


@pytest.fixture
def home_dir() -> Iterator[Path]:
    """A directory under $HOME (not /tmp): the user's kernel directory."""
    d = Path(tempfile.mkdtemp(prefix="profd-faults-", dir=Path.home()))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# =========================================================================== the daemon as a process


class Profd:
    """A real ``profd watch`` process, its output in a file (a pipe could fill and block it)."""

    def __init__(self, watch: Path, state: Path, log: Path, env: Optional[dict[str, str]] = None) -> None:
        self.watch, self.state, self.log = watch, state, log
        self.env = dict(os.environ, PROFD_STATE_DIR=str(state), PROFD_CONFIG=str(log.parent / "none.toml"),
                        PYTHONUNBUFFERED="1")
        self.env.update(env or {})
        self.proc: Optional[subprocess.Popen] = None

    def start(self, *args: str) -> "Profd":
        out = open(self.log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "profd.cli", "watch", str(self.watch), "--no-counters",
                                      *args], env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        out.close()
        return self

    def ready(self, timeout: float = 90.0) -> "Profd":
        wait_for(lambda: "watching " in self.output(), timeout, "the daemon to start watching", self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.state / 'profd.db'}?mode=ro", uri=True, timeout=30)

    def jobs(self) -> list[tuple]:
        with self.db() as c:
            return c.execute("SELECT id, path, kind, state, error, content_hash FROM jobs ORDER BY id").fetchall()

    def runs(self) -> list[tuple]:
        with self.db() as c:
            return c.execute("SELECT id, target, status, content_hash FROM runs ORDER BY id").fetchall()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "profd.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def status(self) -> dict:
        r = self.cli("status", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def daemons(home_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Profd]]:
    made: list[Profd] = []

    def make(state: Optional[Path] = None, env: Optional[dict[str, str]] = None) -> Profd:
        p = Profd(home_dir, state or tmp_path / "state", tmp_path / f"daemon-{len(made)}.log", env)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def records_lost(fault: str, p: Profd, saved: set[str]) -> int:
    """Saves (by content hash) with no stored run, plus jobs that never ended (neither done nor failed).

    With PROFD_FAULTS_LEDGER set (bench/faults.py), the count is also appended there."""
    stored = {r[3] for r in p.runs()}
    jobs = p.jobs()
    lost = len(saved - stored) + sum(1 for j in jobs if j[3] not in ("done", "failed"))
    ledger = os.environ.get("PROFD_FAULTS_LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(json.dumps({"fault": fault, "saves": len(saved), "jobs": len(jobs), "lost": lost}) + "\n")
    return lost


def assert_clean(p: Profd) -> None:
    """The daemon is up and never printed a Python traceback."""
    assert p.alive(), p.output()[-4000:]
    assert "Traceback" not in p.output(), p.output()[-6000:]


# =========================================================================== 1. the write sandbox


def _sandbox_script(allowed: Path, other: Path) -> str:
    return textwrap.dedent(f'''
        import os, sys
        from pathlib import Path
        from profd.harness.sandbox import apply_sandbox
        allowed, other = Path({str(allowed)!r}), Path({str(other)!r})
        print(apply_sandbox([allowed]))
        (allowed / "a").mkdir()
        (allowed / "a" / "f").write_text("x")
        os.replace(allowed / "a" / "f", allowed / "g")        # re-parenting rename (Triton's cache does this)
        os.truncate(allowed / "g", 0)
        print("read:", len(other.read_text()))                 # reading stays allowed everywhere
        for what, fn in [("write", lambda: other.write_text("pwned")),
                         ("create", lambda: (other.parent / "new").write_text("x")),
                         ("unlink", lambda: other.unlink()), ("rename", lambda: os.rename(other, allowed / "stolen")),
                         ("truncate", lambda: os.truncate(other, 0))]:
            try:
                fn()
                print(what, "ALLOWED")
            except PermissionError:
                print(what, "denied")
    ''')


@needs_landlock
def test_apply_sandbox_allows_only_its_roots(home_dir: Path, tmp_path: Path) -> None:
    allowed = tmp_path / "scratch"
    allowed.mkdir()
    other = home_dir / "user.py"
    other.write_text("original")
    r = subprocess.run([sys.executable, "-c", _sandbox_script(allowed, other)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"landlock ABI {LANDLOCK_ABI}"), lines
    assert "read: 8" in lines
    expected = ["write denied", "create denied", "unlink denied", "rename denied"]
    if LANDLOCK_ABI >= 3:
        expected.append("truncate denied")  # truncate(2) is only controllable from ABI 3 on
    assert set(expected) <= set(lines), lines
    assert other.read_text() == "original" or LANDLOCK_ABI < 3
    assert sorted(p.name for p in home_dir.iterdir()) == ["user.py"]
    assert (allowed / "g").exists()


@needs_landlock
def test_a_moved_cuda_build_cache_stays_writable_for_the_child(home_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # PROFD_CUDA_CACHE_DIR moves CUDA builds out of ~/.cache; the child builds there, so the
    # sandbox must let it (on an H200 every CUDA target crashed with EACCES when it did not).
    cache = tmp_path / "moved-cuda-cache"
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROFD_CUDA_CACHE_DIR", str(cache))
    f = home_dir / "builds.py"
    f.write_text(add_source(action="os.makedirs(os.environ['PROFD_CUDA_CACHE_DIR'], exist_ok=True)\n    "
                                   "open(os.path.join(os.environ['PROFD_CUDA_CACHE_DIR'], 'lock'), 'w').write('x')"))
    m = measure(f, timeout_s=120)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert (cache / "lock").read_text() == "x"


HARMLESS_WRITES = '''import tempfile, threading, concurrent.futures
    Path(os.getcwd(), "scratch-note.txt").write_text("the scratch dir is writable")
    with tempfile.NamedTemporaryFile(prefix="profd-sandbox-test-") as f:
        f.write(b"so is the temp dir")
    name = lambda: open(f"/proc/self/task/{threading.get_native_id()}/comm", "w").write("profd-test")
    name()  # naming threads, as cuInit does for its own: this thread and a new one
    concurrent.futures.ThreadPoolExecutor(1).submit(name).result()'''


@needs_landlock
@pytest.mark.parametrize("runner_kind", ["warm", "cold"])
def test_kernel_cannot_write_the_users_files(home_dir: Path, tmp_path: Path, warm: WarmWorker,
                                             monkeypatch: pytest.MonkeyPatch, runner_kind: str) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    runner = warm if runner_kind == "warm" else None
    # a well-behaved kernel that writes into its scratch dir and the temp dir still passes
    ok = home_dir / "ok.py"
    ok.write_text(add_source(action="from pathlib import Path\n    " + HARMLESS_WRITES))
    m = measure(ok, timeout_s=120, runner=runner)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert not any("sandbox" in w for w in m.warnings), m.warnings
    # one that overwrites its own source, one that drops a file beside it
    for name, action, victim in [
        ("self.py", "open(__file__, 'w').write('pwned')", "self.py"),
        ("beside.py", "open(os.path.join(os.path.dirname(__file__), 'evil.py'), 'w').write('x = 1')", "evil.py"),
    ]:
        f = home_dir / name
        f.write_text(add_source(action=action))
        before = sha(f)
        m = measure(f, timeout_s=120, runner=runner)
        assert m.verdict.status == Status.KERNEL_ERROR, m.verdict.message
        assert "PermissionError" in m.verdict.message and "Permission denied" in m.verdict.message
        assert victim in m.verdict.message
        assert sha(f) == before
    assert sorted(p.name for p in home_dir.iterdir()) == ["beside.py", "ok.py", "self.py"]


@needs_landlock
def test_kernel_cannot_write_the_store(home_dir: Path, tmp_path: Path, warm: WarmWorker,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the state dir under /tmp here: the child's temp dir moves into its scratch dir so /tmp stays closed
    state = tmp_path / "state"
    monkeypatch.setenv("PROFD_STATE_DIR", str(state))
    Store().close()
    db = state / "profd.db"
    before = sha(db)
    f = home_dir / "vandal.py"
    f.write_text(add_source(action=f"open({str(db)!r}, 'r+b').write(b'garbage')"))
    m = measure(f, timeout_s=120, runner=warm)
    assert m.verdict.status == Status.KERNEL_ERROR and "Permission denied" in m.verdict.message, m.verdict.message
    assert sha(db) == before


@needs_landlock
def test_a_kernel_under_the_temp_dir_is_protected_too(tmp_path: Path, warm: WarmWorker,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Landlock cannot carve the user's directory out of a writable /tmp: the child gets a private
    # temp dir in its scratch dir instead, and /tmp itself becomes read-only for it
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    user = tmp_path / "kernels"
    user.mkdir()
    ok = user / "ok.py"
    ok.write_text(add_source(action="from pathlib import Path\n    " + HARMLESS_WRITES))
    m = measure(ok, timeout_s=120, runner=warm)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    bad = user / "bad.py"
    bad.write_text(add_source(action="open(__file__, 'a').write('# appended')"))
    before = sha(bad)
    m = measure(bad, timeout_s=120, runner=warm)
    assert m.verdict.status == Status.KERNEL_ERROR and "Permission denied" in m.verdict.message, m.verdict.message
    assert sha(bad) == before


@needs_landlock
def test_candidate_cannot_write_the_original(home_dir: Path, tmp_path: Path, warm: WarmWorker,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    target = home_dir / "add.py"
    target.write_text(add_source())
    before = sha(target)
    evil = add_source(action=f"open({str(target)!r}, 'w').write('# the candidate was here')")
    sneaky = add_source(action=f"open({str(home_dir / 'add_helper.py')!r}, 'w').write('x = 1')")
    with Store() as store:
        res = tune(target, store, budget=2, runner=warm,
                   advisors=[ScriptedAdvisor([("overwrite-original", evil), ("create-beside", sneaky)])])
    reasons = {a.candidate.id: a.verdict.reason for a in res.attempts}
    assert set(reasons) == {"overwrite-original", "create-beside"}
    for reason in reasons.values():
        assert reason.startswith("incorrect: kernel_error") and "Permission denied" in reason, reason
    assert res.best_candidate is None
    assert sha(target) == before
    assert sorted(p.name for p in home_dir.iterdir()) == ["add.py"]


def test_examples_still_run_under_the_sandbox_and_a_missing_sandbox_is_a_warning(
        warm: WarmWorker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    m = measure(ROOT / "examples" / "kernels" / "vector_add.py", timeout_s=180, runner=warm)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    if LANDLOCK_ABI:
        assert not any("sandbox" in w for w in m.warnings), m.warnings
    else:
        assert any("sandbox unavailable" in w for w in m.warnings), m.warnings
    # PROFD_SANDBOX=off: what a kernel without Landlock gets -- it runs, and the user is told
    monkeypatch.setenv("PROFD_SANDBOX", "off")
    m = measure(ROOT / "examples" / "kernels" / "vector_add.py", timeout_s=180, runner=warm)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert any(w.startswith("sandbox unavailable") and "without write restrictions" in w for w in m.warnings), \
        m.warnings


# =========================================================================== 2. disk full on the state dir


def _mount_tmpfs(where: Path, size: str) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({(r.stderr or r.stdout).strip()}); needs root or "
                    "CAP_SYS_ADMIN")


def _fill(directory: Path) -> Path:
    filler = directory / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    # the last few pages
    try:
        with open(filler, "ab") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass
    return filler


def _truncate_wal(db: Path) -> None:
    """Checkpoint the WAL into the database and truncate it: the next write needs new space."""
    for _ in range(50):
        with sqlite3.connect(db, timeout=30) as c:
            busy, _, _ = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy == 0:
            return
        time.sleep(0.1)
    raise AssertionError("could not checkpoint the WAL")


def test_disk_full_on_the_state_dir(daemons: Callable[..., Profd], home_dir: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    _mount_tmpfs(mnt, "2m")
    try:
        marker = home_dir / f"hold-{home_dir.name}.flag"
        marker.write_text("hold")
        add = home_dir / "add.py"
        add.write_text(add_source(marker=str(marker)))
        saved = {sha(add)}
        p = daemons(state=mnt, env={"PROFD_WATCH_RESCAN_S": "1"}).start().ready()
        wait_for(lambda: held(marker), 90, "job 1's kernel to be running", p)
        # the disk fills up while job 1 is being measured
        _truncate_wal(mnt / "profd.db")
        filler = _fill(mnt)
        assert shutil.disk_usage(mnt).free < 64 << 10
        marker.unlink()
        wait_for(lambda: "full" in p.output().split("watching ", 1)[1], 90, "a message about the full disk", p)
        # a save while the disk is full: it cannot even be queued yet
        late = home_dir / "late.py"
        late.write_text(add_source(note="saved while the disk was full"))
        saved.add(sha(late))
        time.sleep(4)
        assert p.alive(), p.output()
        jobs = p.jobs()
        assert [(j[0], j[3]) for j in jobs] == [(1, "running")] or jobs[0][3] in ("queued", "failed"), jobs
        if jobs[0][3] == "failed":
            assert "full" in jobs[0][4].lower() or "no space" in jobs[0][4].lower(), jobs
        assert p.runs() == []  # nothing half-stored
        out = p.output()
        assert str(mnt) in out or "state dir" in out, out[-3000:]
        # status still answers while the disk is full
        assert p.status()["running"] in (True, False)
        # space again: the interrupted job re-runs, the late save is queued and runs, a new save works
        filler.unlink()
        wait_for(lambda: {Path(r[1]).name for r in p.runs() if r[2] == "correct"} >= {"add.py", "late.py"}, 120,
                 "both results stored after space was freed", p)
        late.write_text(add_source(note="saved after space came back"))
        digest = sha(late)
        saved.add(digest)
        wait_for(lambda: any(r[3] == digest and r[2] == "correct" for r in p.runs()), 90, "the later save", p)
        wait_for(lambda: all(j[3] == "done" for j in p.jobs()), 60, "every job done", p)
        assert records_lost("disk full on the state dir", p, saved) == 0
        assert_clean(p)
        assert p.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# =========================================================================== 3. a save storm


def test_save_storm_collapses_and_the_final_content_is_measured(daemons: Callable[..., Profd],
                                                                home_dir: Path) -> None:
    p = daemons().start().ready()
    target = home_dir / "storm.py"
    t0 = time.monotonic()
    for i in range(200):
        src = add_source(note=f"save {i}")
        if i % 2:  # rename-over (atomic savers, vim's default)
            tmp = home_dir / "storm.py.tmp"
            tmp.write_text(src)
            os.replace(tmp, target)
        else:  # write in place
            with open(target, "w") as f:
                f.write(src)
        time.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.monotonic()))
    assert time.monotonic() - t0 < 4.0
    final = sha(target)
    wait_for(lambda: any(r[3] == final for r in p.runs()), 90, "the final content to be measured", p)
    wait_for(lambda: all(j[3] == "done" for j in p.jobs()), 60, "the jobs to finish", p)
    time.sleep(1.0)  # nothing more may arrive
    jobs = p.jobs()
    assert 1 <= len(jobs) <= 2, jobs
    runs = p.runs()
    assert runs[-1][3] == final and runs[-1][2] == "correct", runs
    assert records_lost("save storm (200 saves in 2 s)", p, {final}) == 0
    assert p.status()["running"] is True
    assert_clean(p)


# =========================================================================== 4. target deleted / renamed mid-job


def test_target_deleted_or_renamed_mid_job(daemons: Callable[..., Profd], home_dir: Path) -> None:
    hold_a, hold_b = home_dir / f"hold-a-{home_dir.name}.flag", home_dir / f"hold-b-{home_dir.name}.flag"
    hold_a.write_text("hold")
    gone = home_dir / "gone.py"
    gone.write_text(add_source(marker=str(hold_a)))
    saved = {sha(gone)}
    p = daemons().start().ready()
    wait_for(lambda: held(hold_a), 90, "gone.py's kernel to be running", p)
    gone.unlink()  # deleted while its kernel runs
    also_gone = home_dir / "also_gone.py"
    also_gone.write_text(add_source(note="deleted while queued"))
    wait_for(lambda: len(p.jobs()) == 2, 30, "also_gone.py to be queued", p)
    also_gone.unlink()  # deleted before its turn
    hold_a.unlink()
    wait_for(lambda: [j[3] for j in p.jobs()] == ["done", "done"], 60, "both jobs to end", p)
    # renamed while its kernel runs
    hold_b.write_text("hold")
    moved = home_dir / "moved.py"
    moved.write_text(add_source(marker=str(hold_b)))
    saved.add(sha(moved))
    wait_for(lambda: held(hold_b), 60, "moved.py's kernel to be running", p)
    renamed = home_dir / "renamed.py"
    os.rename(moved, renamed)
    wait_for(lambda: any(j[1].endswith("renamed.py") for j in p.jobs()), 30, "the new name to be queued", p)
    hold_b.unlink()
    wait_for(lambda: len(p.jobs()) == 4 and all(j[3] == "done" for j in p.jobs()), 90, "every job done", p)
    out = p.output()
    # the verdict says the file went away under it; the new name is queued and measured on its own
    assert "✓ gone.py: correct" in out and "gone.py was deleted or renamed while it was measured" in out, out
    assert "skipped job 2: also_gone.py was deleted or renamed" in out, out
    assert "✓ moved.py: correct" in out and "moved.py was deleted or renamed while it was measured" in out, out
    assert "saved: renamed.py -> job 4 queued" in out and "✓ renamed.py: correct" in out, out
    names = {Path(r[1]).name: r[2] for r in p.runs()}
    assert names == {"gone.py": "correct", "moved.py": "correct", "renamed.py": "correct"}, names
    assert records_lost("target deleted / renamed mid-job", p, saved) == 0
    assert p.status()["running"] is True
    assert_clean(p)


# =========================================================================== 5. the inotify limit


IN_CLOEXEC = os.O_CLOEXEC


def _exhaust_inotify() -> list[int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fds: list[int] = []
    while len(fds) < 100_000:
        fd = libc.inotify_init1(IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err != errno.EMFILE:
                for f in fds:
                    os.close(f)
                pytest.skip(f"inotify_init1 failed with {errno.errorcode.get(err, err)}, not EMFILE")
            return fds
        fds.append(fd)
    for f in fds:
        os.close(f)
    pytest.skip("no inotify limit reached after 100000 instances")


def test_inotify_limit_falls_back_to_polling(daemons: Callable[..., Profd], home_dir: Path) -> None:
    # The limit is per user: the daemon (same uid) cannot get an instance while we hold them all.
    # No sysctl is changed; the window is kept short (other processes of this user share it).
    p = daemons(env={"PROFD_RUN_WARM_WORKER": "0"})
    fds = _exhaust_inotify()
    try:
        p.start().ready()
    finally:
        for f in fds:
            os.close(f)
    out = p.output()
    assert "polling" in out and "inotify limit reached" in out, out
    st = p.status()
    assert st["running"] is True
    assert st["daemon"]["watcher"] == "polling"
    assert "inotify limit reached" in st["daemon"]["watcher_note"]
    target = home_dir / "polled.py"
    target.write_text(add_source(note="seen by polling"))
    digest = sha(target)
    wait_for(lambda: any(r[3] == digest and r[2] == "correct" for r in p.runs()), 90, "the save seen by polling", p)
    wait_for(lambda: all(j[3] == "done" for j in p.jobs()), 60, "the job to end", p)
    assert records_lost("inotify limit reached", p, {digest}) == 0
    assert_clean(p)


# =========================================================================== 6. profiler missing / not permitted

# ncu's own text (tests/test_collectors_ncu.py, profilers.md §5.9): counters restricted to admins.
NCU_PERM = ("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance "
            "Counters on the target device 0. For instructions on enabling permissions and to get more "
            "information see https://developer.nvidia.com/ERR_NVGPUCTRPERM")


def _fake_ncu(bindir: Path) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    ncu = bindir / "ncu"
    ncu.write_text("#!/bin/sh\n"
                   "echo '==PROF== Connected to process 4242 (/usr/bin/python3)'\n"
                   f"echo '{NCU_PERM}'\n"
                   "echo '==PROF== Disconnected from process 4242'\n"
                   "exit 1\n")
    ncu.chmod(0o755)
    return ncu


@pytest.fixture
def add_target(home_dir: Path) -> Path:
    f = home_dir / "add.py"
    f.write_text(add_source())
    return f


def test_counters_permission_denied_says_how_to_fix(add_target: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.errors import CaptureError
    from profd.flow.capture import capture_counters as collect

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    _fake_ncu(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    t0 = time.monotonic()
    with pytest.raises(CaptureError) as ei:
        collect(add_target, backend="cuda", timeout_s=60)
    assert time.monotonic() - t0 < 30
    assert ei.value.kind == "permission"
    msg = str(ei.value)
    assert "ERR_NVGPUCTRPERM" in msg and "NVreg_RestrictProfilingToAdminUsers=0" in msg and "SYS_ADMIN" in msg
    assert "Traceback" not in msg


def test_profiler_missing_says_how_to_fix(add_target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors import ncu, rocprof
    from collectors.errors import CaptureError
    from profd.flow.capture import capture_counters as collect

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for var, val in (("CUDA_HOME", str(empty)), ("CUDA_PATH", str(empty)), ("ROCM_PATH", str(empty))):
        monkeypatch.setenv(var, val)
    if ncu.find_ncu() or rocprof.find_rocprof("rocprofv3"):
        pytest.skip("a profiler is installed in a fixed location (/usr/local/cuda, /opt/...): cannot hide it")
    with pytest.raises(CaptureError) as ei:
        collect(add_target, backend="cuda", timeout_s=60)
    assert ei.value.kind == "not_installed"
    assert "Install Nsight Compute" in str(ei.value) and "PATH" in str(ei.value)
    with pytest.raises(CaptureError) as ei:
        collect(add_target, backend="hip", timeout_s=60)
    assert ei.value.kind == "not_installed" and "rocprofv3" in str(ei.value)


def test_profile_with_counters_still_gives_verdict_and_timing(add_target: Path, tmp_path: Path, warm: WarmWorker,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On this CPU machine the counter step is skipped with a note; the verdict and timing come back."""
    from profd.flow.profile import profile

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    _fake_ncu(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with Store() as store:
        res = profile(add_target, store, counters=True, timeout_s=120, runner=warm)
        stored = store.run(res.run_id)
    assert res.measurement.correct and res.measurement.timing is not None
    assert res.counters is None
    if _has_cuda():
        note = "hardware counters unavailable: Nsight Compute was not allowed"
    else:
        note = "no GPU: hardware counters"
    assert any(note in w for w in res.warnings), res.warnings
    assert note in res.report and stored["report"] == res.report


@gpu
@needs_cuda
def test_gpu_profile_with_counters_denied_keeps_verdict_and_timing(add_target: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from profd.flow.profile import profile

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    _fake_ncu(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with Store() as store:
        res = profile(add_target, store, counters=True, timeout_s=120)
    assert res.measurement.correct and res.measurement.timing and res.measurement.timing.representative
    assert any("ERR_NVGPUCTRPERM" in w and "NVreg_RestrictProfilingToAdminUsers" in w for w in res.warnings)
    assert "ERR_NVGPUCTRPERM" in res.report


# =========================================================================== 7. GPU faults (skip without CUDA)

GPU_HEADER = '''
import torch
import triton
import triton.language as tl

DEVICE = "cuda"

@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, SHIFT, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs + SHIFT, x + y)   # no mask, and SHIFT far away when > 0

def get_inputs(n=1 << 20):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]

def reference(x, y):
    return x + y
'''


@gpu
@needs_cuda
def test_illegal_memory_access_then_the_next_measurement_in_the_same_warm_worker(home_dir: Path,
                                                                                 warm: WarmWorker) -> None:
    bad = home_dir / "oob.py"
    bad.write_text(GPU_HEADER + textwrap.dedent('''
        def kernel(x, y):
            out = torch.empty_like(x)
            add_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, out, x.numel(), 1 << 40, BLOCK=1024)
            return out
    '''))
    m = measure(bad, timeout_s=120, runner=warm)
    assert m.verdict.status == Status.ILLEGAL_ACCESS, m.verdict.message
    assert "out of bounds" in m.verdict.message and "compute-sanitizer" in m.verdict.message
    good = home_dir / "ok.py"
    good.write_text(GPU_HEADER + textwrap.dedent('''
        def kernel(x, y):
            out = torch.empty_like(x)
            add_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, out, x.numel(), 0, BLOCK=1024)
            return out
    '''))
    m = measure(good, timeout_s=120, runner=warm)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert warm.alive()


@gpu
@needs_cuda
def test_gpu_out_of_memory_is_named(home_dir: Path, warm: WarmWorker) -> None:
    f = home_dir / "oom.py"
    f.write_text(GPU_HEADER + textwrap.dedent('''
        def kernel(x, y):
            total = torch.cuda.get_device_properties(0).total_memory
            scratch = torch.empty(4 * total // 4, dtype=torch.float32, device="cuda")  # 4x the GPU's memory
            return x + y + scratch[:0].sum()
    '''))
    m = measure(f, timeout_s=120, runner=warm)
    assert m.verdict.status == Status.OUT_OF_MEMORY, m.verdict.message
    assert "ran out of GPU memory" in m.verdict.message and "oom.py" in m.verdict.message


@gpu
@needs_cuda
def test_side_stream_work_is_caught_by_the_timer(home_dir: Path, warm: WarmWorker) -> None:
    f = home_dir / "side.py"
    f.write_text(textwrap.dedent('''
        import torch
        DEVICE = "cuda"
        _side = None

        def get_inputs(n=2048):
            return [torch.randn(n, n, device=DEVICE), torch.randn(n, n, device=DEVICE)]

        def reference(a, b):
            return a @ b

        def kernel(a, b):
            global _side
            _side = _side or torch.cuda.Stream()
            _side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(_side):       # the real work, where the current stream's events miss it
                for _ in range(8):
                    out = a @ b
            return out                            # no sync with the current stream
        RTOL = 1e-2
    '''))
    m = measure(f, timeout_s=180, runner=warm)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert m.timing is not None and "work outside the current stream" in m.timing.note, m.timing


# =========================================================================== 8. verdicts that must not be faked

TRUST_BASE = '''
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK_SIZE = 256

@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)

def kernel(x, y):
    out = torch.empty_like(x)
    n = x.numel()
    add_kernel[(triton.cdiv(n, BLOCK_SIZE),)](x, y, out, n, BLOCK_SIZE=BLOCK_SIZE)
    return out

def reference(x, y):
    return x + y

SHAPES = [dict(n=1000), dict(n=5000)]
BENCH_SHAPE = dict(n=1000)

def get_inputs(n=1000):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]
'''


def test_hard_coded_shape_and_precision_loss_are_rejected_with_the_reason(home_dir: Path, tmp_path: Path,
                                                                          warm: WarmWorker,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    target = home_dir / "add.py"
    target.write_text(TRUST_BASE)
    # sized for the benchmark's 1000 elements, whatever it is given
    hard_coded = TRUST_BASE.replace("    n = x.numel()\n", "    n = 1000  # the benchmark's size\n")
    # adds in fp16 and hands back fp32: ~1e-3 relative error, the fp32 tolerance is 1e-4
    lossy = TRUST_BASE.replace("tl.store(out_ptr + offs, x + y, mask=mask)",
                               "tl.store(out_ptr + offs, (x.to(tl.float16) + y.to(tl.float16)).to(tl.float32), "
                               "mask=mask)")
    assert hard_coded != TRUST_BASE and lossy != TRUST_BASE
    with Store() as store:
        res = tune(target, store, budget=2, runner=warm,
                   advisors=[ScriptedAdvisor([("hard-coded-shape", hard_coded), ("fp16-inside", lossy)])])
        rows = {r["candidate_id"]: dict(r) for r in store.db.execute(
            "SELECT candidate_id, accepted, status, reason FROM candidates WHERE session_id=?", (res.session_id,))}
    assert res.baseline.correct, res.baseline.verdict.message
    assert res.best_candidate is None
    v = {a.candidate.id: a.verdict for a in res.attempts}
    assert not v["hard-coded-shape"].accepted
    assert v["hard-coded-shape"].reason.startswith("incorrect: unwritten"), v["hard-coded-shape"].reason
    assert "never written" in v["hard-coded-shape"].reason and "'n': 5000" in v["hard-coded-shape"].reason
    assert not v["fp16-inside"].accepted
    assert v["fp16-inside"].reason.startswith("incorrect: wrong"), v["fp16-inside"].reason
    assert "outside tolerance (rtol 0.0001" in v["fp16-inside"].reason
    assert rows["hard-coded-shape"]["accepted"] == 0 and rows["hard-coded-shape"]["status"] == "unwritten"
    assert rows["fp16-inside"]["accepted"] == 0 and rows["fp16-inside"]["status"] == "wrong"
    assert rows["fp16-inside"]["reason"] == v["fp16-inside"].reason


# =========================================================================== 9. secrets and file modes

SECRETS = {"OPENAI_API_KEY": "sk-openai-FAULTS-7f3a9c11d2", "PROFD_LLM_API_KEY": "sk-llm-FAULTS-2b8e41aa90",
           "PROFD_SMTP_PASSWORD": "smtp-FAULTS-pw-93d0e7c5"}

# A target that tries to exfiltrate: it prints its whole environment (stored as the run's
# stderr tail) and writes it into its scratch dir. Plain torch: no knob for the deterministic
# advisor, so a tune goes to the LLM.
LEAKY = '''
import os, sys, json
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

def get_inputs(n=4096):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]

def reference(x, y):
    return x * y

def kernel(x, y):
    dump = json.dumps(dict(os.environ))
    print(dump)
    print(dump, file=sys.stderr)
    open("env-dump.json", "w").write(dump)
    return x * y
'''



def test_secrets_never_leak_and_state_files_are_private(daemons: Callable[..., Profd], home_dir: Path,
                                                        tmp_path: Path) -> None:
    candidate = LEAKY.replace('.write(dump)\n    return x * y\n', '.write(dump)\n    return torch.mul(x, y)\n')
    assert candidate.count("torch.mul") == 1
    reply = f"Rationale: use torch.mul directly.\n\n```python\n{candidate}```\n"  # differs only in kernel()
    closed_port = free_port()  # nothing listens: the mail fails and goes to the outbox
    t0 = time.time() - 1
    with ScriptedLLMServer([reply, reply, reply]) as srv:
        env = dict(SECRETS)
        # Keep the children's scratch dirs: the leaky kernel's environment dump is inspected below.
        env["PROFD_KEEP_SCRATCH"] = "1"
        env.update({"PROFD_LLM_BASE_URL": srv.base_url, "PROFD_LLM_MODEL": "scripted-model",
                    "PROFD_LLM_TIMEOUT_S": "10", "PROFD_LLM_MAX_RETRIES": "0",
                    "PROFD_MAIL_HOST": "127.0.0.1", "PROFD_MAIL_PORT": str(closed_port),
                    "PROFD_MAIL_FROM_ADDR": "profd@localhost", "PROFD_MAIL_TO": "team@example.com",
                    "PROFD_MAIL_USERNAME": "profd-bot", "PROFD_MAIL_PASSWORD_ENV": "PROFD_SMTP_PASSWORD",
                    "PROFD_MAIL_SECURITY": "starttls", "PROFD_MAIL_RETRIES": "0", "PROFD_MAIL_TIMEOUT_S": "3",
                    "PROFD_NIGHTLY_BUDGET": "0", "PROFD_WATCH_DIRS": str(home_dir)})
        p = daemons(env=env).start("--tune", "1").ready()
        (home_dir / "leaky.py").write_text(LEAKY)
        wait_for(lambda: any(j[2] == "tune" and j[3] == "done" for j in p.jobs()), 120, "the tune job", p)
        assert srv.chat_requests(), "the LLM advisor was never asked"
        # the key was really in use: it went to the LLM server, in the Authorization header only
        assert srv.chat_requests()[0].headers["authorization"] == f"Bearer {SECRETS['PROFD_LLM_API_KEY']}"
        nightly = p.cli("nightly", str(home_dir))
        assert nightly.returncode == 0, nightly.stdout + nightly.stderr
        wait_for(lambda: "nightly report:" in p.output(), 120, "the nightly report", p)
        report = p.cli("report", "--json")
        assert report.returncode == 0, report.stdout + report.stderr
        html_path = Path(json.loads(report.stdout)["html"])
        assert_clean(p)
        assert p.stop() == 0
    out = p.output()
    assert "mail failed" in out, out[-3000:]
    with p.db() as c:
        stderr_tails = [json.loads(m)["stderr_tail"] for (m,) in c.execute("SELECT measurement FROM runs")]
    assert any("PROFD_STATE_DIR" in t for t in stderr_tails)  # the kernel's dump of its environment was stored
    haystacks: dict[str, bytes] = {"daemon output": out.encode(), "report html": html_path.read_bytes(),
                                   "nightly cli": (nightly.stdout + nightly.stderr).encode()}
    for f in sorted(p.state.rglob("*")):
        if f.is_file():
            haystacks[str(f)] = f.read_bytes()
    # what the kernel managed to dump of its environment, in its scratch dirs
    dumps = [f for f in Path(tempfile.gettempdir()).glob("profd-child-*/env-dump.json") if f.stat().st_mtime >= t0]
    assert dumps, "the leaky kernel left no dump"
    haystacks.update({str(f): f.read_bytes() for f in dumps})
    assert len(haystacks) > 8
    for name, value in SECRETS.items():
        leaks = [where for where, data in haystacks.items() if value.encode() in data]
        assert not leaks, f"{name} leaked into {leaks}"
    # user-only state: files 0600 (or stricter), directories 0700
    loose = []
    for f in [p.state, *p.state.rglob("*")]:
        mode = stat.S_IMODE(f.lstat().st_mode)
        if mode & 0o077:
            loose.append(f"{f} {mode:04o}")
    assert not loose, loose
    kinds = {f.name for f in p.state.rglob("*")}
    assert {"profd.db", "daemon.json", "leaky.py", "verdict.json"} <= kinds, kinds
    assert any(f.suffix == ".html" for f in p.state.rglob("*")) and any(f.suffix == ".eml" for f in p.state.rglob("*"))
