"""The watcher with real files saved the way editors save them, outside /tmp
(vim writes in place under /tmp, which would hide the rename-over path)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from profd.service.jobqueue import JobQueue
from profd.model import JobKind
from profd.store import Store
from profd.service.watcher import Watcher, is_editor_temp

SRC = "def kernel(x):\n    return x\n# version {n}\n"


@pytest.fixture
def watch_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="profd-watch-test-", dir=Path.home()))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, str]] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path, digest: str) -> None:
        with self.lock:
            self.calls.append((path, digest))

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[Path, str]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.calls) < n:
            time.sleep(0.02)
        time.sleep(0.6)  # anything extra would arrive within a debounce period
        return list(self.calls)


def start(d: Path, rec: Recorder, **kw) -> Watcher:  # type: ignore[no-untyped-def]
    w = Watcher([d], rec, debounce_s=0.3, rescan_s=0, **kw)
    w.start()
    return w


def save_in_place(p: Path, text: str) -> None:
    """vim (backupcopy=yes), nano, many tools: truncate and write, in chunks."""
    with open(p, "w") as f:
        for i in range(0, len(text), 8):
            f.write(text[i:i + 8])
            f.flush()


def save_rename_over(p: Path, text: str) -> None:
    """vim's default: write a new file, move the original to a backup (file~), rename."""
    new = p.with_name(p.name + ".swp")
    new.write_text(text)
    os.rename(p, p.with_name(p.name + "~"))
    os.rename(new, p)
    os.unlink(p.with_name(p.name + "~"))


def save_atomic(p: Path, text: str) -> None:
    """VS Code / atomic savers / JetBrains: temp file in the same dir, then move over."""
    tmp = p.with_name(p.name + ".___jb_tmp___")
    tmp.write_text(text)
    os.replace(tmp, p)


@pytest.mark.parametrize("saver", [save_in_place, save_rename_over, save_atomic],
                         ids=["write-in-place", "rename-over", "temp-then-move"])
def test_each_editor_save_is_one_change(watch_dir: Path, saver) -> None:  # type: ignore[no-untyped-def]
    target = watch_dir / "k.py"
    target.write_text(SRC.format(n=0))
    rec = Recorder()
    w = start(watch_dir, rec, known_digest=lambda p: None)
    try:
        time.sleep(0.5)
        rec.calls.clear()
        w._digests[target] = __import__("hashlib").sha256(target.read_bytes()).hexdigest()
        saver(target, SRC.format(n=1))
        calls = rec.wait(1)
        assert [c[0] for c in calls] == [target], calls
        # the same bytes saved again: no new job
        saver(target, SRC.format(n=1))
        assert len(rec.wait(2, timeout=1.5)) == 1
        # new content: one more
        saver(target, SRC.format(n=2))
        assert len(rec.wait(2)) == 2
    finally:
        w.stop()


def test_burst_of_saves_collapses_to_one_job(watch_dir: Path, tmp_path: Path) -> None:
    target = watch_dir / "k.py"
    target.write_text(SRC.format(n=0))
    store = Store(tmp_path / "db.sqlite")
    queue = JobQueue(Store(store.path))
    w = Watcher([watch_dir], lambda p, d: queue.enqueue(p, JobKind.PROFILE, d), debounce_s=0.3, rescan_s=0)
    w.start()
    try:
        for n in range(20):  # 20 saves within ~0.2 s, three different editors' ways
            (save_in_place, save_atomic, save_rename_over)[n % 3](target, SRC.format(n=n + 1))
            time.sleep(0.01)
        time.sleep(1.0)
        jobs = JobQueue(store).pending()
        assert len(jobs) == 1, jobs
        assert jobs[0].content_hash == __import__("hashlib").sha256(target.read_bytes()).hexdigest()
    finally:
        w.stop()


def test_temp_files_and_state_dir_are_ignored(watch_dir: Path) -> None:
    state = watch_dir / "state"
    state.mkdir()
    rec = Recorder()
    w = Watcher([watch_dir], rec, debounce_s=0.2, rescan_s=0, exclude=[state])
    w.start()
    try:
        for name in (".k.py.swp", "k.py~", "4913", ".#k.py", "#k.py#", "k.py.___jb_old___", "notes.txt"):
            (watch_dir / name).write_text("x")
        (state / "cand.py").write_text("x = 1\n")
        (watch_dir / "__pycache__").mkdir()
        (watch_dir / "__pycache__" / "k.py").write_text("x")
        assert rec.wait(1, timeout=1.0) == []
        (watch_dir / "real.py").write_text("x = 2\n")
        assert [c[0].name for c in rec.wait(1)] == ["real.py"]
    finally:
        w.stop()
    assert is_editor_temp("k.py.swp") and not is_editor_temp("k.py")


def test_rescan_catches_changes_the_observer_missed(watch_dir: Path) -> None:
    target = watch_dir / "k.py"
    target.write_text(SRC.format(n=0))
    rec = Recorder()
    w = Watcher([watch_dir], rec, debounce_s=0.2, rescan_s=0, known_digest=lambda p: "stale-digest")
    # not started: no observer sees anything, only the rescan can find it
    w.rescan()
    assert [c[0] for c in rec.calls] == [target]


def test_polling_mode_sees_saves(watch_dir: Path) -> None:
    target = watch_dir / "k.py"
    target.write_text(SRC.format(n=0))
    rec = Recorder()
    w = start(watch_dir, rec, polling=True, known_digest=lambda p: __import__("hashlib").sha256(
        SRC.format(n=0).encode()).hexdigest())
    try:
        assert w.mode == "polling"
        time.sleep(1.2)
        save_atomic(target, SRC.format(n=1))
        assert [c[0] for c in rec.wait(1, timeout=6)] == [target]
    finally:
        w.stop()


def test_a_failing_callback_does_not_kill_the_watcher(watch_dir: Path) -> None:
    seen = []

    def explode(path: Path, digest: str) -> None:
        seen.append(path)
        raise RuntimeError("enqueue failed")

    w = Watcher([watch_dir], explode, debounce_s=0.1, rescan_s=0)
    w.start()
    try:
        (watch_dir / "a.py").write_text("a = 1\n")
        time.sleep(0.6)
        (watch_dir / "b.py").write_text("b = 1\n")
        time.sleep(0.6)
        assert [p.name for p in seen] == ["a.py", "b.py"]
        assert w.healthy()
    finally:
        w.stop()
