"""Overhead of the idle daemon: CPU (% of one core), memory (MB) and GPU memory held.

Starts ``python -m profd.cli watch DIR`` on a copy of the examples (in a temporary
directory under $HOME), waits until its start-up scan has profiled every file and it is
idle, then samples once a second for ``--minutes`` (default 5) with psutil: the daemon
and all its descendants (the warm zygote; forks while a job runs, none when idle):

* CPU: (user + system CPU time consumed over the window) / wall time, in % of one core
  (also the per-second samples' mean and max);
* memory: RSS of daemon + zygote (the target's measure), and PSS/USS next to it (the
  zygote is a fork server: RSS counts torch's shared pages once per process);
* GPU: NVML's per-process used memory for those PIDs, and the device's total used memory
  minus what it was before the daemon started. The bench process itself never creates a
  CUDA context (the device is looked at through NVML only).

The start-up scan runs with counters off by default (``--counters`` to turn them on): the
idle state is the same, the scan is cheaper.

Targets: < 0.5% of a core, < 150 MB, 0 MiB of GPU memory.

    python3 bench/overhead.py                 # GPU, 5 minutes (~5.5 min)
    python3 bench/overhead.py --minutes 1     # what bench/run_all_gpu.sh runs
    python3 bench/overhead.py --quick         # CPU, 0.25 minutes
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as C  # noqa: E402

QUESTION = "overhead"
TARGET_CPU_PCT = 0.5
TARGET_RSS_MB = 150.0
TARGET_GPU_MIB = 0.0


class Nvml:
    """Device 0 through NVML, or nothing (CPU machine)."""

    def __init__(self) -> None:
        self.h = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self.nv = pynvml
                self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self.h = None

    def used_mib(self) -> Optional[float]:
        if self.h is None:
            return None
        try:
            return self.nv.nvmlDeviceGetMemoryInfo(self.h).used / 2**20
        except Exception:
            return None

    def per_pid_mib(self) -> Optional[dict[int, Optional[float]]]:
        if self.h is None:
            return None
        out: dict[int, Optional[float]] = {}
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                for p in getattr(self.nv, fn)(self.h):
                    used = getattr(p, "usedGpuMemory", None)
                    out[int(p.pid)] = (used / 2**20) if isinstance(used, int) else None
            except Exception:
                pass
        return out

    def close(self) -> None:
        if self.h is not None:
            try:
                self.nv.nvmlShutdown()
            except Exception:
                pass


def family(pid: int) -> list[Any]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:
            pass
    return total


def main(argv: Optional[list[str]] = None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=None, help="idle window to sample (default 5; quick 0.25)")
    p.add_argument("--examples", help="comma-separated subset for the start-up scan (default all six)")
    p.add_argument("--counters", action="store_true", help="start-up scan with hardware counters")
    args = p.parse_args(argv)
    C.setup_quick(args.quick)
    C.install_sigterm()
    import psutil

    minutes = args.minutes if args.minutes is not None else (0.25 if args.quick else 5.0)
    names = C.parse_examples(args.examples)
    on_gpu = not args.quick and C.gpu_name() is not None
    counters = args.counters and on_gpu
    params = {"minutes": minutes, "examples": names, "scan_counters": counters, "interval_s": 1.0,
              "command": "python -m profd.cli watch DIR" + ("" if counters else " --no-counters")
              + (" --cpu" if args.quick else "")}
    refused = C.refuse_without_watchdog(QUESTION, args.quick, params, args.out)
    if refused is not None:
        return refused
    t_start = time.time()
    nvml = Nvml() if on_gpu else None
    scratch = C.private_state_dir("overhead")
    state = Path(os.environ["PROFD_STATE_DIR"])
    watch = Path(tempfile.mkdtemp(prefix="profd-bench-overhead-", dir=Path.home()))
    C.copy_examples(names, watch)
    info: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    daemon = None
    try:
        info["gpu_used_before_mib"] = nvml.used_mib() if nvml else None
        t0 = time.monotonic()
        daemon = C.DaemonProc(watch, counters=counters, cpu=args.quick)
        if not C.wait_idle(state, daemon, timeout_s=900.0, settle_s=2.0):
            raise RuntimeError(f"the daemon did not become idle; its output:\n{daemon.output()}")
        info["scan_s"] = time.monotonic() - t0
        con = C.db_connect(state)
        try:
            info["scan_jobs"] = {r[0]: r[1] for r in con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
        finally:
            con.close()
        print(f"[{time.time() - t_start:6.1f} s] start-up scan of {len(names)} files done in {info['scan_s']:.1f} s; "
              f"sampling the idle daemon for {minutes:g} min ...", flush=True)
        procs = family(daemon.pid)
        for q in procs:
            q.cpu_percent(None)
        info["processes"] = [{"pid": q.pid, "cmdline": " ".join(q.cmdline())[:160]} for q in procs]
        cpu0, w0 = cpu_seconds(procs), time.monotonic()
        cpu0_by_pid = {q.pid: cpu_seconds([q]) for q in procs}
        end = w0 + minutes * 60.0
        while time.monotonic() < end:
            time.sleep(1.0)
            procs_now = family(daemon.pid)
            known = {q.pid for q in procs}
            for q in procs_now:
                if q.pid not in known:
                    q.cpu_percent(None)
                    procs.append(q)
            s: dict[str, Any] = {"t": time.monotonic() - w0, "n_procs": len(procs_now)}
            cpu = rss = pss = uss = 0.0
            for q in procs_now:
                try:
                    cpu += q.cpu_percent(None)
                    mi = q.memory_full_info()
                    rss += mi.rss / 2**20
                    pss += getattr(mi, "pss", 0) / 2**20
                    uss += getattr(mi, "uss", 0) / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            s.update(cpu_pct=cpu, rss_mb=rss, pss_mb=pss, uss_mb=uss, cpu_s_cum=cpu_seconds(procs_now) - cpu0)
            if nvml:
                per = nvml.per_pid_mib() or {}
                ours = [per[q.pid] for q in procs_now if q.pid in per]
                s["gpu_pids_seen"] = len(ours)
                s["gpu_mib_ours"] = sum(v for v in ours if v is not None)
                s["gpu_mib_ours_unknown"] = sum(1 for v in ours if v is None)
                used = nvml.used_mib()
                s["gpu_used_delta_mib"] = (used - info["gpu_used_before_mib"]) \
                    if used is not None and info["gpu_used_before_mib"] is not None else None
                s["gpu_processes_all"] = len(per)
            samples.append(s)
        wall = time.monotonic() - w0
        info["window_s"] = wall
        info["cpu_seconds"] = cpu_seconds(family(daemon.pid)) - cpu0
        info["cpu_pct_of_core"] = 100.0 * info["cpu_seconds"] / wall if wall > 0 else None
        per = []
        for q in family(daemon.pid):
            try:
                mi = q.memory_full_info()
                per.append({"pid": q.pid, "cmdline": " ".join(q.cmdline())[:160], "rss_mb": mi.rss / 2**20,
                            "pss_mb": getattr(mi, "pss", 0) / 2**20, "uss_mb": getattr(mi, "uss", 0) / 2**20,
                            "cpu_s_in_window": cpu_seconds([q]) - cpu0_by_pid.get(q.pid, 0.0),
                            "threads": q.num_threads()})
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        info["per_process_at_end"] = per
        con = C.db_connect(state)
        try:
            info["jobs_after"] = {r[0]: r[1] for r in con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}
        finally:
            con.close()
    except (Exception, SystemExit) as e:  # SystemExit: SIGTERM from `timeout`; keep the samples taken
        info["error"] = f"{type(e).__name__}: {e}"
        print(f"error: {info['error']}", flush=True)
    finally:
        if daemon is not None:
            info["daemon_exit"] = daemon.stop()
            info["daemon_output_tail"] = daemon.output(20)
        if nvml:
            nvml.close()
        shutil.rmtree(watch, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    def stat(key: str, f: Any) -> Optional[float]:
        xs = [s[key] for s in samples if s.get(key) is not None]
        return f(xs) if xs else None

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    if info.get("cpu_pct_of_core") is None and samples and samples[-1]["t"] > 0:  # interrupted mid-window
        info["window_s"] = samples[-1]["t"]
        info["cpu_pct_of_core"] = 100.0 * samples[-1]["cpu_s_cum"] / samples[-1]["t"]
    summary = {
        "cpu_pct_of_core": info.get("cpu_pct_of_core"), "cpu_pct_samples_mean": stat("cpu_pct", mean),
        "cpu_pct_samples_max": stat("cpu_pct", max), "rss_mb_max": stat("rss_mb", max),
        "rss_mb_mean": stat("rss_mb", mean), "pss_mb_max": stat("pss_mb", max), "uss_mb_max": stat("uss_mb", max),
        "gpu_mib_ours_max": stat("gpu_mib_ours", max), "gpu_used_delta_mib_max": stat("gpu_used_delta_mib", max),
        "gpu_pids_seen_max": stat("gpu_pids_seen", max), "samples": len(samples),
    }
    gpu_ok = None
    if on_gpu:
        # Our PIDs in NVML's process list (none when the container hides host PIDs), and the device's
        # used memory against the value before the daemon started (covers hidden PIDs).
        delta = summary["gpu_used_delta_mib_max"]
        gpu_ok = ((summary["gpu_mib_ours_max"] or 0) <= TARGET_GPU_MIB and (summary["gpu_pids_seen_max"] or 0) == 0
                  and (delta is None or delta < 1.0))
    targets = {"cpu_lt_0_5pct": summary["cpu_pct_of_core"] is not None and summary["cpu_pct_of_core"] < TARGET_CPU_PCT,
               "rss_lt_150mb": summary["rss_mb_max"] is not None and summary["rss_mb_max"] < TARGET_RSS_MB,
               "gpu_0mib": gpu_ok}
    m = C.meta(QUESTION, args.quick, params)
    m["elapsed_s"] = time.time() - t_start
    out = C.write_json(C.result_path(args.out, QUESTION, m),
                       {"meta": m, "info": info, "summary": summary, "targets": targets, "samples": samples})
    print()
    print(f"results: {out}")
    if args.quick:
        print(f"CPU dry run: a {minutes:g}-minute window; GPU memory not measured.")
    print(C.table(["window s", "CPU % of a core", "CPU % max (1 s)", "RSS MB max", "PSS MB max", "USS MB max",
                   "GPU MiB (our PIDs)", "GPU used delta MiB", "procs"],
                  [[info.get("window_s"), summary["cpu_pct_of_core"], summary["cpu_pct_samples_max"],
                    summary["rss_mb_max"], summary["pss_mb_max"], summary["uss_mb_max"], summary["gpu_mib_ours_max"],
                    summary["gpu_used_delta_mib_max"], len(info.get("processes", []))]]))
    if "error" in info:
        print(f"INCOMPLETE ({info['error'][:200]}): {len(samples)} samples taken")
    print(f"target: CPU < {TARGET_CPU_PCT:g}% of a core: {'PASS' if targets['cpu_lt_0_5pct'] else 'FAIL'}; "
          f"RSS < {TARGET_RSS_MB:g} MB: {'PASS' if targets['rss_lt_150mb'] else 'FAIL'}; GPU 0 MiB: "
          + ("n/a (no GPU)" if gpu_ok is None else ("PASS" if gpu_ok else "FAIL")))
    return 0 if "error" not in info else 1


if __name__ == "__main__":
    sys.exit(main())
