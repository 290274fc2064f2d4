"""Executors: the contract with the local executor (CPU slots, and GPU slots described by
hand to check the pinning), the daemon on two slots at once, and the Ray executor on a
local Ray instance (CPU-only jobs; skipped when Ray is not installed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

try:
    from support import held_add_target
except ImportError:  # pragma: no cover
    from tests.support import held_add_target

from profd import config
from profd.harness import runner as harness
from profd.service.executors import ExecutorConfig, ExecutorError, Slot, SlotBusy, create, run_all
from profd.service.executors.base import current_slot
from profd.service.executors.local import LocalExecutor, LocalGpu
from profd.model import Job, JobKind, JobState

ROOT = Path(__file__).resolve().parents[1]

try:
    import ray
except ImportError:  # the optional extra: pip install 'profd[ray]'
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'profd[ray]')")

# A target that the test can hold inside kernel() (the child may not write outside its
# scratch directory: the sandbox; so it only reads the flag). With PINNED set, its kernel
# fails with the GPU it was pinned to in the message: a read-only way to report it.
def held(marks: str, pinned: bool) -> str:
    """Held while MARKS/hold.flag exists; with ``pinned`` it fails naming its CUDA_VISIBLE_DEVICES."""
    return held_add_target(
        'os.path.exists(os.path.join(MARKS, "hold.flag"))', consts={"MARKS": marks, "PINNED": pinned}, n=333,
        block=128, before="""
        if PINNED:
            raise RuntimeError("pinned to CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "-") + ";")
        """)


def wait_for(cond, timeout: float = 90.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job(i: int, path: Path | str = "/nonexistent.py") -> Job:
    return Job(id=i, path=str(path), kind=JobKind.NIGHTLY, priority=10, state=JobState.QUEUED)


# --------------------------------------------------------------------------- config


def test_executor_config_is_checked() -> None:
    assert ExecutorConfig.from_mapping({}).kind == "local"
    c = ExecutorConfig.from_mapping({"kind": "Ray", "gpus": "0,1", "cpu_slots": "2"})  # env values are strings
    assert (c.kind, c.gpus, c.cpu_slots) == ("ray", [0, 1], 2)
    for bad, words in (({"kind": "slurm"}, "use one of"), ({"gpus": ["x"]}, "GPU indices"),
                       ({"cpu_slots": 0}, "at least 1"), ({"nodes": 3}, "unknown setting")):
        with pytest.raises(ValueError, match=words):
            ExecutorConfig.from_mapping(bad)
    cfg = config.load(Path("/nonexistent.toml"), env={"PROFD_EXECUTOR_KIND": "nope"})
    with pytest.raises(ExecutorError):
        create(cfg, lambda j, s: None)


def test_gpus_subset_must_exist() -> None:
    devices = [LocalGpu(0, "0", "fake GPU A"), LocalGpu(1, "1", "fake GPU B")]
    ex = LocalExecutor(lambda j, s: None, gpus=[1], warm=False, devices=devices)
    ex.start()
    try:
        assert [s.id for s in ex.slots()] == ["local:gpu1"]
        assert ex.slots()[0].env["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        ex.stop()
    with pytest.raises(ExecutorError, match="no GPU"):
        LocalExecutor(lambda j, s: None, gpus=[0, 5], warm=False, devices=devices).start()


# --------------------------------------------------------------------------- the contract, in process


def test_contract_one_job_per_slot_poll_cancel_describe() -> None:
    gate = threading.Event()
    seen: list[tuple[int, str, bool]] = []

    def job_fn(j: Job, slot: Slot) -> None:
        if j.id == 1:
            gate.wait(30)
        if j.id == 3:  # runs until cancelled
            while not slot.cancel.is_set():
                time.sleep(0.01)
        seen.append((j.id, slot.id, slot.cancel.is_set()))

    ex = LocalExecutor(job_fn, cpu_slots=2, warm=False, devices=[])
    ex.start()
    try:
        assert ex.wait_ready(30)
        assert [s.id for s in ex.slots()] == ["local:cpu0", "local:cpu1"]
        h1 = ex.submit(job(1), ex.slots()[0])
        with pytest.raises(SlotBusy):  # never two jobs on one slot
            ex.submit(job(2), ex.slots()[0])
        h2 = ex.submit(job(2))  # the free one
        assert h2.slot.id == "local:cpu1"
        with pytest.raises(SlotBusy):
            ex.submit(job(9))
        wait_for(h2.done, 10, "job 2")
        assert ex.busy() and not h1.done()
        desc = {d["id"]: d for d in ex.describe()}
        assert desc["local:cpu0"]["job"]["id"] == 1 and desc["local:cpu0"]["state"] == "busy"
        assert desc["local:cpu1"]["job"] is None and desc["local:cpu1"]["jobs_done"] == 1
        gate.set()
        wait_for(h1.done, 10, "job 1")
        assert {h.job.id for h in ex.poll()} == {1, 2}
        assert ex.poll() == []
        h3 = ex.submit(job(3))
        wait_for(lambda: ex.busy(), 5, "job 3 to run")
        assert ex.cancel(3) and not ex.cancel(42)
        wait_for(h3.done, 10, "the cancelled job")
        assert (3, h3.slot.id, True) in seen
        assert not ex.busy()
    finally:
        ex.stop()
    assert all(s.state == "stopped" for s in ex.slots())


def test_run_all_spreads_jobs_over_the_slots() -> None:
    def job_fn(j: Job, slot: Slot) -> None:
        time.sleep(0.4)

    ex = LocalExecutor(job_fn, cpu_slots=2, warm=False, devices=[])
    ex.start()
    t0 = time.monotonic()
    try:
        handles = run_all(ex, [job(i) for i in range(4)])
    finally:
        ex.stop()
    wall = time.monotonic() - t0
    assert sorted(h.job.id for h in handles) == [0, 1, 2, 3]
    assert {h.slot.id for h in handles} == {"local:cpu0", "local:cpu1"}
    assert wall < 1.5, f"4 jobs of 0.4 s on 2 slots took {wall:.2f} s"


def test_each_slot_pins_its_children_to_its_gpu(tmp_path: Path) -> None:
    """GPU slots (described by hand: this machine has none) put CUDA_VISIBLE_DEVICES into
    the zygote, its forks, and anything else started on the slot's thread (the profiler)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    targets = []
    for name in ("a", "b"):
        t = tmp_path / f"{name}.py"
        t.write_text(held(str(marks), True))
        targets.append(t)
    got: dict[str, tuple[str, str, str]] = {}

    def job_fn(j: Job, slot: Slot) -> None:
        m = harness.measure(Path(j.path), do_time=False, trials=1, runner=slot.runner, timeout_s=120)
        got[Path(j.path).stem] = (slot.id, m.verdict.message, harness.scrubbed_env()["CUDA_VISIBLE_DEVICES"])
        assert current_slot() is slot

    devices = [LocalGpu(0, "5", "fake GPU A"), LocalGpu(1, "7", "fake GPU B")]
    ex = LocalExecutor(job_fn, warm=True, devices=devices)
    ex.start()
    try:
        assert ex.wait_ready(120)
        assert all(s.runner_kind == "warm" for s in ex.slots())
        assert current_slot() is None
        handles = run_all(ex, [job(0, targets[0]), job(1, targets[1])])
    finally:
        ex.stop()
    assert not any(h.error for h in handles)
    token = {"local:gpu0": "5", "local:gpu1": "7"}
    assert {got[n][0] for n in ("a", "b")} == set(token)
    for name in ("a", "b"):
        slot_id, message, env_seen = got[name]
        assert env_seen == token[slot_id]  # on the slot thread: what the profiler's child would get
        assert f"pinned to CUDA_VISIBLE_DEVICES={token[slot_id]};" in message  # what the forked child saw


# --------------------------------------------------------------------------- the daemon on two slots


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict]:
    watch = Path(tempfile.mkdtemp(prefix="profd-exec-test-", dir=Path.home()))
    cfg = tmp_path / "config.toml"
    cfg.write_text("[executor]\nkind = \"local\"\ncpu_slots = 2\n")
    e = dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PROFD_CONFIG=str(cfg), PYTHONUNBUFFERED="1")
    e["_watch"] = str(watch)
    try:
        yield e
    finally:
        shutil.rmtree(watch, ignore_errors=True)


def running_jobs(env: dict) -> int:
    db = Path(env["PROFD_STATE_DIR"]) / "profd.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as c:
        return c.execute("SELECT COUNT(*) FROM jobs WHERE state='running'").fetchone()[0]


def test_daemon_runs_two_jobs_at_once_on_two_slots(env: dict, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "hold.flag").write_text("hold")
    w = Path(env["_watch"])
    for name in ("one", "two"):
        (w / f"{name}.py").write_text(held(str(marks), False))
    d = subprocess.Popen([sys.executable, "-m", "profd.cli", "watch", str(w), "--no-counters", "--once"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Neither job can end while held: both running at once means they really run concurrently.
        wait_for(lambda: running_jobs(env) == 2, 120, "both jobs to be running")
        st = subprocess.run([sys.executable, "-m", "profd.cli", "status", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
        data = json.loads(st.stdout)
        assert data["running"] is True
        assert [x["id"] for x in data["workers"]] == ["local:cpu0", "local:cpu1"]
        assert all(x["state"] == "busy" and x["job"] for x in data["workers"])
        running = {Path(j["path"]).name: j["worker"] for j in data["queue"] if j["state"] == "running"}
        assert set(running) == {"one.py", "two.py"} and set(running.values()) == {"local:cpu0", "local:cpu1"}
        text = subprocess.run([sys.executable, "-m", "profd.cli", "status"], env=env, capture_output=True,
                              text=True, timeout=60).stdout
        assert "workers (local executor, 2 slot(s))" in text and "(running on local:cpu" in text
    finally:
        (marks / "hold.flag").unlink()
        out, _ = d.communicate(timeout=120)
    assert d.returncode == 0, out
    assert "executor local: 2 slot(s)" in out
    assert "✓ one.py: correct" in out and "✓ two.py: correct" in out
    with sqlite3.connect(Path(env["PROFD_STATE_DIR"]) / "profd.db") as c:
        rows = c.execute("SELECT path, state, worker FROM jobs ORDER BY id").fetchall()
        runs = c.execute("SELECT target, status FROM runs").fetchall()
    assert [r[1] for r in rows] == ["done", "done"]
    assert {r[2] for r in rows} == {"local:cpu0", "local:cpu1"}
    assert sorted((Path(t).name, s) for t, s in runs) == [("one.py", "correct"), ("two.py", "correct")]


def test_sigterm_requeues_the_jobs_of_every_slot(env: dict, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "hold.flag").write_text("hold")
    w = Path(env["_watch"])
    for name in ("one", "two"):
        (w / f"{name}.py").write_text(held(str(marks), False))
    d = subprocess.Popen([sys.executable, "-m", "profd.cli", "watch", str(w), "--no-counters"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: running_jobs(env) == 2, 120, "both jobs to be running")
    time.sleep(1.0)  # into their measurements
    d.send_signal(signal.SIGTERM)
    out, _ = d.communicate(timeout=30)
    assert d.returncode == 0, out
    assert out.count("abandoned at shutdown") == 2
    with sqlite3.connect(Path(env["PROFD_STATE_DIR"]) / "profd.db") as c:
        assert [r[0] for r in c.execute("SELECT state FROM jobs")] == ["queued", "queued"]
        assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


# --------------------------------------------------------------------------- Ray (local instance, CPU only)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    if ray is None:
        pytest.skip("Ray is not installed (pip install 'profd[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@needs_ray
def test_ray_daemon_profiles_real_targets_into_the_store(local_ray: None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon with [executor] kind = "ray": the jobs' children run in Ray actors (one CPU
    each), the verdicts come back as data and land in this host's store with the slot id."""
    from profd.service.daemon import Daemon
    from profd.store import Store

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    for name in ("vector_add.py", "kernelbench_relu.py"):
        shutil.copy(ROOT / "examples" / "kernels" / name, kernels / name)
    (kernels / "broken.py").write_text("import torch\n\ndef kernel(x:\n    return x\n")
    cfg = config.load(tmp_path / "none.toml", env={})
    cfg.watch.dirs = [str(kernels)]
    cfg.watch.polling = True  # nothing to watch after the first scan
    cfg.run.counters = False
    cfg.executor = {"kind": "ray"}
    out = io.StringIO()
    code = Daemon(cfg, out=out, once=True).run()
    text = out.getvalue()
    assert code == 0, text
    assert "executor ray: 2 slot(s)" in text
    assert "✓ vector_add.py: correct" in text and "✓ kernelbench_relu.py: correct" in text
    assert "✗ broken.py: load_error" in text
    with Store() as store:
        jobs = {Path(r["path"]).name: (r["state"], r["worker"], r["error"])
                for r in store.db.execute("SELECT * FROM jobs")}
        runs = {Path(r["target"]).name: (r["status"], r["message"], r["measurement"])
                for r in store.db.execute("SELECT * FROM runs")}
        targets = {r[0] for r in store.db.execute("SELECT target FROM runs")}
    assert set(jobs) == {"vector_add.py", "kernelbench_relu.py", "broken.py"}
    for name, (state, worker, error) in jobs.items():
        assert state == "done"  # a broken target is a verdict, not a failure of profd
        assert worker.startswith("ray:") and ":cpu" in worker
    assert jobs["broken.py"][2] == "load_error"
    assert runs["vector_add.py"][0] == runs["kernelbench_relu.py"][0] == "correct"
    status, message, measurement = runs["broken.py"]
    assert status == "load_error" and "syntax" in message.lower()
    # The remote scratch copy is invisible: the store names the user's files.
    assert targets == {str(kernels / n) for n in jobs}
    assert "profd-ray-" not in measurement, measurement


@needs_ray
def test_ray_executor_contract(local_ray: None, tmp_path: Path) -> None:
    """Slots come from the cluster's resources; a child's result comes back through the actor."""
    from profd.service.executors.ray_backend import RayExecutor

    target = tmp_path / "vector_add.py"
    shutil.copy(ROOT / "examples" / "kernels" / "vector_add.py", target)
    got: dict[int, str] = {}

    def job_fn(j: Job, slot: Slot) -> None:
        m = harness.measure(Path(j.path), do_time=False, trials=1, runner=slot.runner, timeout_s=120)
        got[j.id] = m.verdict.status.value
        assert m.target == str(target)

    ex = RayExecutor(job_fn, warm=False)
    ex.start()
    try:
        assert ex.wait_ready(120)
        assert len(ex.slots()) == 2 and all(s.id.startswith("ray:") and not s.local for s in ex.slots())
        assert all("ray actor" in s.runner_kind for s in ex.slots())
        handles = run_all(ex, [job(0, target), job(1, target)])
    finally:
        ex.stop()
    assert not any(h.error for h in handles), [h.error for h in handles]
    assert got == {0: "correct", 1: "correct"}
    assert ray.is_initialized()  # an instance the executor did not start is left running
