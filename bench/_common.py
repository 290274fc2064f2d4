"""Shared plumbing for the bench scripts: metadata, result files, tables, daemons.

Nothing here initialises CUDA: the device is named through NVML, so that a bench
parent process never holds a GPU context of its own (the overhead benchmark
measures the GPU memory other processes hold).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXAMPLES_DIR = ROOT / "examples" / "kernels"
EXAMPLES = ["vector_add", "softmax", "layernorm", "matmul", "transpose", "kernelbench_relu"]
DEFAULT_OUT = ROOT / "bench" / "results"


# --------------------------------------------------------------------------- arguments


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results directory (default bench/results)")
    p.add_argument("--quick", action="store_true",
                   help="CPU dry run: Triton's interpreter, tiny budgets (checks the script, measures nothing real)")
    return p


def parse_examples(text: Optional[str], default: Iterable[str] = EXAMPLES) -> list[str]:
    if not text:
        return list(default)
    names = [n.strip().removesuffix(".py") for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in EXAMPLES]
    if bad:
        raise SystemExit(f"unknown example(s) {', '.join(bad)}; choose from {', '.join(EXAMPLES)}")
    return names


def setup_quick(quick: bool) -> None:
    """--quick: force the CPU interpreter everywhere (also on a machine with a GPU)."""
    if quick:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["PROFD_FORCE_CPU"] = "1"


def install_sigterm() -> None:
    """`timeout` sends SIGTERM: turn it into SystemExit so finally-blocks stop daemons and workers."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def child_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment for subprocesses: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    pp = env.get("PYTHONPATH", "")
    parts = [p for p in pp.split(os.pathsep) if p]
    if str(ROOT) not in parts:
        parts.insert(0, str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- metadata


def gpu_name() -> Optional[str]:
    """The first GPU's name through NVML (no CUDA context), or None."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() == 0:
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def device_name(quick: bool) -> str:
    if quick:
        return "cpu (Triton interpreter)"
    return gpu_name() or "cpu (Triton interpreter)"


def slug(name: str) -> str:
    if name.startswith("cpu"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    named = os.environ.get("BENCH_GIT_COMMIT")
    if named:
        # The GPU machine's copy of the working tree can hold a stale .git (an H200 run of
        # 2026-12-03 recorded the previous day's HEAD): the caller's word wins.
        return {"commit": named, "dirty": None, "note": "commit from $BENCH_GIT_COMMIT"}
    commit = git("rev-parse", "HEAD")
    if commit:
        return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    # A copy of the working tree without .git (the GPU machine): the caller may name the commit.
    return {"commit": os.environ.get("BENCH_GIT_COMMIT") or None, "dirty": None,
            "note": "no git checkout here; commit from $BENCH_GIT_COMMIT" if os.environ.get("BENCH_GIT_COMMIT")
            else "no git checkout here and $BENCH_GIT_COMMIT unset"}


def versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": sys.version.split()[0]}
    for mod in ("torch", "triton"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def meta(question: str, quick: bool, params: dict[str, Any]) -> dict[str, Any]:
    dev = device_name(quick)
    now = _dt.datetime.now(_dt.timezone.utc)
    return {"question": question, "date": now.strftime("%Y-%m-%d"), "time_utc": now.isoformat(timespec="seconds"),
            "device": dev, "device_slug": slug(dev), "quick": quick,
            "mode": "CPU dry run (Triton interpreter): numbers are not GPU performance" if quick or dev.startswith("cpu")
            else "GPU", **versions(), "git": git_commit(), "host_cpus": os.cpu_count(), "params": params}


def result_path(out: str | Path, question: str, m: dict[str, Any]) -> Path:
    return Path(out) / f"{question}-{m['date']}-{m['device_slug']}.json"


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Atomic write (a kill mid-write never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- output


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:.0f}"
        return f"{v:.{nd}g}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def median(xs: list[float]) -> Optional[float]:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


# --------------------------------------------------------------------------- scratch space


def private_state_dir(prefix: str) -> Path:
    """A throw-away profd state directory for this run (never the user's)."""
    d = Path(tempfile.mkdtemp(prefix=f"profd-bench-{prefix}-"))
    os.environ["PROFD_STATE_DIR"] = str(d / "state")
    os.environ["PROFD_CONFIG"] = str(d / "no-config.toml")  # defaults, whatever the user configured
    return d


def copy_examples(names: Iterable[str], dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in names:
        out[n] = Path(shutil.copy2(EXAMPLES_DIR / f"{n}.py", dest / f"{n}.py"))
    return out


# --------------------------------------------------------------------------- runners


@dataclass
class RunLog:
    target: str
    trials: int
    wall_s: float
    ended_at: float


class TimedRunner:
    """Wraps a harness runner (a WarmWorker) and logs every child it runs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[RunLog] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, req: Any, *, timeout_s: float = 120.0, workdir: Optional[Path] = None) -> Any:
        t0 = time.time()
        run = self.inner.run(req, timeout_s=timeout_s, workdir=workdir)
        self.log.append(RunLog(Path(req.target).name, int(req.trials), time.time() - t0, time.time()))
        return run


def start_warm_worker() -> tuple[Any, float]:
    """A WarmWorker (the daemon's zygote) and the seconds it took to start."""
    from profd.harness.warm import WarmWorker

    t0 = time.time()
    w = WarmWorker(start_timeout_s=300.0)
    w.start()
    return w, time.time() - t0


class ScriptedAdvisor:
    """Proposes fixed (id, source) pairs, in order: identical candidates here, wrong or hostile ones in tests/."""

    name = "scripted"

    def __init__(self, sources: list[tuple[str, str]]) -> None:
        self.sources = list(sources)

    def propose(self, ctx: Any, n: int) -> list[Any]:
        from profd.model import Candidate

        out = []
        while self.sources and len(out) < n:
            cid, src = self.sources.pop(0)
            out.append(Candidate(id=cid, source=src, advisor=self.name, rationale=cid))
        return out


# --------------------------------------------------------------------------- the daemon under test


_SLOT_PREFIX = re.compile(r"^\[[^\]\s]+\] ")


class DaemonProc:
    """``python -m profd.cli watch DIR`` in a subprocess, its stdout lines timestamped."""

    def __init__(self, watch_dir: Path, *, counters: bool, cpu: bool, extra_args: Iterable[str] = ()) -> None:
        self.watch_dir = watch_dir
        args = [sys.executable, "-m", "profd.cli", "watch", str(watch_dir)]
        if not counters:
            args.append("--no-counters")
        if cpu:
            args.append("--cpu")
        args += list(extra_args)
        self.args = args
        self.lines: list[tuple[float, float, str]] = []  # (monotonic, wall, text)
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(args, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1, cwd=str(watch_dir))
        self.started = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # With several GPU slots the daemon prefixes its lines with the slot ("[local:gpu0] ").
            text = _SLOT_PREFIX.sub("", line.rstrip("\n"))
            with self.cond:
                self.lines.append((time.monotonic(), time.time(), text))
                self.cond.notify_all()

    def wait_line(self, pred: Callable[[str], bool], after: float, timeout_s: float) -> Optional[tuple[float, str]]:
        """The first line after monotonic time ``after`` that satisfies ``pred``."""
        end = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for t, _, text in self.lines:
                    if t >= after and pred(text):
                        return t, text
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.2))

    def output(self, last: int = 40) -> str:
        with self.cond:
            return "\n".join(t for _, _, t in self.lines[-last:])

    def stop(self, timeout_s: float = 20.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def db_connect(state: Path) -> Any:
    import sqlite3

    con = sqlite3.connect(state / "profd.db", timeout=30)
    con.row_factory = sqlite3.Row
    return con


def wait_idle(state: Path, daemon: DaemonProc, timeout_s: float, settle_s: float = 1.0) -> bool:
    """True once the daemon has a warm worker (or gave up on one) and no job is queued or running."""
    import sqlite3

    end = time.monotonic() + timeout_s
    quiet_since: Optional[float] = None
    while time.monotonic() < end:
        if daemon.proc.poll() is not None:
            return False
        idle = False
        try:
            info = json.loads((state / "daemon.json").read_text())
            if info.get("watcher") not in (None, "stopped") and info.get("current_job") is None:
                con = db_connect(state)
                try:
                    n = con.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')").fetchone()[0]
                finally:
                    con.close()
                idle = n == 0
        except (OSError, ValueError, sqlite3.Error):
            idle = False
        if idle:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_s:
                return True
        else:
            quiet_since = None
        time.sleep(0.1)
    return False


def seed_known(paths: Iterable[Path]) -> None:
    """Record each file's current content as already profiled, so the daemon's start-up
    scan queues nothing (the benchmark's own saves are what gets measured)."""
    from profd.service.jobqueue import JobQueue
    from profd.model import JobKind, JobState
    from profd.store import Store
    from profd.harness.target import content_hash

    with Store() as store:
        q = JobQueue(store)
        for p in paths:
            job, _ = q.enqueue(p, JobKind.PROFILE, content_hash(p))
            q.finish(job, JobState.DONE, "seeded by bench: already known")


def refuse_without_watchdog(question: str, quick: bool, params: dict, out_dir: Any) -> Optional[int]:
    """When watchdog is missing: record why in the result file, print it, return exit code 2."""
    missing = watchdog_missing()
    if not missing:
        return None
    m = meta(question, quick, params)
    out = write_json(result_path(out_dir, question, m), {"meta": m, "error": missing})
    print(f"error: {missing}\n(results: {out})")
    return 2


def watchdog_missing() -> Optional[str]:
    """The daemon's watcher needs the watchdog package; say so plainly when it is absent."""
    try:
        import watchdog  # noqa: F401

        return None
    except Exception as e:
        return (f"watchdog is not importable ({type(e).__name__}: {e}); the daemon cannot start. On the GPU machine "
                "install the carried wheel: python3 -m pip install --no-index --target /tmp/site .whl/*.whl and put "
                "/tmp/site on PYTHONPATH (bench/run_all_gpu.sh does this)")
