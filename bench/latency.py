"""Feedback latency: save -> first verdict, and save -> full (counter) report.

Starts the daemon as a user would (``python -m profd.cli watch DIR``, counters on when a GPU
is there) on a copy of the examples in a temporary directory under $HOME, waits until it is
idle, then saves each example ``--saves`` times the way an editor does (the file plus a
comment with a counter, written to a hidden temp file and renamed over the target) and
measures, per save:

* save -> queued: the daemon's "saved: ... queued" line (watcher + debounce);
* save -> first verdict: its "✓ name" / "✗ name" line on stdout (timestamped as read);
* save -> full report: the job's ``finished_at`` in the SQLite store, once the run row has
  its report (with the counters section when counters are on: the report names the
  profiler); the time the bench saw it by polling is kept too.

Each save waits for the previous one's job to finish. Medians per example. The files'
current contents are recorded as already profiled before the daemon starts (``--no-seed``
to let its start-up scan profile them all first), so the first measured save of a kernel
may include its compile.

Targets: first verdict <= 2 s; full counter report <= 10 s.

    python3 bench/latency.py                                  # GPU, counters on, 10 saves x 6 examples
    python3 bench/latency.py --saves 3 --examples vector_add,matmul
    python3 bench/latency.py --quick                          # CPU, 3 saves, counters off
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as C  # noqa: E402

QUESTION = "latency"
TARGET_VERDICT_S = 2.0
TARGET_REPORT_S = 10.0


def _max_id(con: Any, sql: str, *args: Any) -> int:
    row = con.execute(sql, args).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def one_save(daemon: C.DaemonProc, state: Path, target: Path, original: str, i: int, timeout_s: float) -> dict[str, Any]:
    name = target.name
    con = C.db_connect(state)
    try:
        last_run = _max_id(con, "SELECT MAX(id) FROM runs WHERE target=?", str(target))
        last_job = _max_id(con, "SELECT MAX(id) FROM jobs")
    finally:
        con.close()
    tmp = target.parent / f".{name}.bench-save.tmp"
    tmp.write_text(original + f"\n# profd bench save {i}\n")
    os.replace(tmp, target)  # an editor's atomic save
    t_mono, t_wall = time.monotonic(), time.time()
    rec: dict[str, Any] = {"save": i}
    q = daemon.wait_line(lambda s: s.startswith("saved: ") and f" {name} " in s + " ", t_mono, timeout_s)
    rec["queued_s"] = (q[0] - t_mono) if q else None
    v = daemon.wait_line(lambda s: s.startswith(f"✓ {name}") or s.startswith(f"✗ {name}"), t_mono, timeout_s)
    rec["verdict_s"] = (v[0] - t_mono) if v else None
    rec["verdict_line"] = v[1][:200] if v else None
    end = t_mono + timeout_s
    rec["report_s"] = rec["report_seen_s"] = None
    while time.monotonic() < end:
        con = C.db_connect(state)
        try:
            job = con.execute("SELECT * FROM jobs WHERE path=? AND kind='profile' AND id>? AND state IN "
                              "('done','failed') ORDER BY id DESC LIMIT 1", (str(target), last_job)).fetchone()
            run = con.execute("SELECT id, report, status FROM runs WHERE target=? AND id>? ORDER BY id DESC LIMIT 1",
                              (str(target), last_run)).fetchone()
        except Exception:
            job = run = None
        finally:
            con.close()
        if job is not None and run is not None and run["report"]:
            seen = time.monotonic()
            rep = run["report"]
            rec["report_seen_s"] = seen - t_mono
            rec["report_s"] = (job["finished_at"] - t_wall) if job["finished_at"] else rec["report_seen_s"]
            rec["job_state"] = job["state"]
            rec["status"] = run["status"]
            rec["counters_in_report"] = "**Profiler:**" in rep
            m = re.search(r"profiler step took ([0-9.]+) s", rep)
            rec["profiler_step_s"] = float(m.group(1)) if m else None
            warn = [ln.strip() for ln in rep.splitlines() if "hardware counters unavailable" in ln]
            rec["counter_warning"] = warn[0][:300] if warn else None
            break
        if daemon.proc.poll() is not None:
            break
        time.sleep(0.02)
    return rec


def summarize(name: str, saves: list[dict[str, Any]]) -> dict[str, Any]:
    med = lambda k: C.median([s[k] for s in saves if s.get(k) is not None])  # noqa: E731
    return {"example": name, "saves": len(saves), "verdicts": sum(1 for s in saves if s.get("verdict_s") is not None),
            "queued_median_s": med("queued_s"), "verdict_median_s": med("verdict_s"), "report_median_s": med("report_s"),
            "verdict_first_s": saves[0].get("verdict_s") if saves else None,
            "report_first_s": saves[0].get("report_s") if saves else None,
            "verdict_max_s": max((s["verdict_s"] for s in saves if s.get("verdict_s") is not None), default=None),
            "report_max_s": max((s["report_s"] for s in saves if s.get("report_s") is not None), default=None),
            "profiler_step_median_s": med("profiler_step_s"),
            "counters_in_report": sum(1 for s in saves if s.get("counters_in_report")),
            "statuses": sorted({s.get("status") or "none" for s in saves}),
            "counter_warning": next((s["counter_warning"] for s in saves if s.get("counter_warning")), None)}


def main(argv: Optional[list[str]] = None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--saves", type=int, default=None, help="saves per example (default 10; quick 3)")
    p.add_argument("--examples", help="comma-separated subset of the examples (default all six)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--counters", dest="counters", action="store_true", default=None,
                   help="collect hardware counters on each save (default on a GPU)")
    g.add_argument("--no-counters", dest="counters", action="store_false")
    p.add_argument("--no-seed", action="store_true", help="let the daemon's start-up scan profile every file first")
    p.add_argument("--timeout-per-save", type=float, default=None, help="seconds (default 180)")
    args = p.parse_args(argv)
    C.setup_quick(args.quick)
    C.install_sigterm()
    saves = args.saves if args.saves is not None else (3 if args.quick else 10)
    names = C.parse_examples(args.examples)
    on_gpu = not args.quick and C.gpu_name() is not None
    counters = on_gpu if args.counters is None else (args.counters and on_gpu)
    timeout = args.timeout_per_save or 180.0
    t_start = time.time()
    params = {"saves": saves, "examples": names, "counters": counters, "seeded": not args.no_seed,
              "debounce_ms": 400, "command": "python -m profd.cli watch DIR" + ("" if counters else " --no-counters")
              + (" --cpu" if args.quick else "")}
    refused = C.refuse_without_watchdog(QUESTION, args.quick, params, args.out)
    if refused is not None:
        return refused
    scratch = C.private_state_dir("latency")
    state = Path(os.environ["PROFD_STATE_DIR"])
    watch = Path(tempfile.mkdtemp(prefix="profd-bench-latency-", dir=Path.home()))
    files = C.copy_examples(names, watch)
    originals = {n: f.read_text() for n, f in files.items()}
    per_example: dict[str, list[dict[str, Any]]] = {}
    daemon = None
    info: dict[str, Any] = {}

    def write(final: bool) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
        """The result file; rewritten after every example, so a kill loses at most one."""
        summaries = [summarize(n, v) for n, v in per_example.items() if v]
        m = C.meta(QUESTION, args.quick, params)
        m["elapsed_s"] = time.time() - t_start
        m["complete"] = final and len(summaries) == len(names) and "error" not in info
        verdicts = [s["verdict_median_s"] for s in summaries]
        reports = [s["report_median_s"] for s in summaries]
        targets = {
            "verdict_le_2s": bool(summaries) and all(v is not None and v <= TARGET_VERDICT_S for v in verdicts),
            "report_le_10s": bool(summaries) and all(r is not None and r <= TARGET_REPORT_S for r in reports),
            "report_target_meaningful": counters and all(s["counters_in_report"] == s["saves"] for s in summaries),
        }
        out = C.write_json(C.result_path(args.out, QUESTION, m),
                           {"meta": m, "info": info, "summary": summaries, "saves": per_example, "targets": targets})
        return summaries, targets, out

    try:
        if not args.no_seed:
            C.seed_known(files.values())
        t0 = time.monotonic()
        daemon = C.DaemonProc(watch, counters=counters, cpu=args.quick)
        idle = C.wait_idle(state, daemon, timeout_s=600.0)
        info["start_to_idle_s"] = time.monotonic() - t0
        if not idle:
            raise RuntimeError(f"the daemon did not become idle; its output:\n{daemon.output()}")
        print(f"[{time.time() - t_start:6.1f} s] daemon idle after {info['start_to_idle_s']:.1f} s "
              f"(counters {'on' if counters else 'off'}); {saves} saves per example", flush=True)
        for n in names:
            per_example[n] = []
            for i in range(saves):
                rec = one_save(daemon, state, files[n], originals[n], i, timeout)
                per_example[n].append(rec)
                write(False)
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"the daemon exited ({daemon.proc.returncode}); its output:\n{daemon.output()}")
            s = summarize(n, per_example[n])
            print(f"[{time.time() - t_start:6.1f} s] {n}: verdict median {C.fmt(s['verdict_median_s'])} s, report "
                  f"median {C.fmt(s['report_median_s'])} s", flush=True)
    except (Exception, SystemExit) as e:  # SystemExit: SIGTERM from `timeout`; keep what was measured
        info["error"] = f"{type(e).__name__}: {e}"
        print(f"error: {info['error']}", flush=True)
    finally:
        if daemon is not None:
            info["daemon_exit"] = daemon.stop()
            info["daemon_output_tail"] = daemon.output(30)
        shutil.rmtree(watch, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    summaries, targets, out = write(True)
    print()
    print(f"results: {out}")
    if args.quick:
        print("CPU dry run (Triton interpreter, counters off): the verdict includes interpreter time; the 'report' "
              "has no counters.")
    print(C.table(["example", "saves", "queued s", "verdict s (median)", "report s (median)", "verdict max",
                   "report max", "counters in report", "profiler step s"],
                  [[s["example"], s["saves"], s["queued_median_s"], s["verdict_median_s"], s["report_median_s"],
                    s["verdict_max_s"], s["report_max_s"], f"{s['counters_in_report']}/{s['saves']}",
                    s["profiler_step_median_s"]] for s in summaries]))
    if "error" in info:
        print(f"INCOMPLETE ({info['error'][:200]}): the targets below cover the saves measured before it stopped")
    print(f"target: save -> verdict <= {TARGET_VERDICT_S:g} s: {'PASS' if targets['verdict_le_2s'] else 'FAIL'}")
    note = "" if targets["report_target_meaningful"] else " (not meaningful: some reports have no counters)"
    print(f"target: save -> full counter report <= {TARGET_REPORT_S:g} s: "
          f"{'PASS' if targets['report_le_10s'] else 'FAIL'}{note}")
    if any(s["counter_warning"] for s in summaries):
        print("counter warning: " + next(s["counter_warning"] for s in summaries if s["counter_warning"]))
    return 0 if "error" not in info else 1


if __name__ == "__main__":
    sys.exit(main())
