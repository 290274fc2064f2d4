"""Throughput: candidates verified and timed per GPU-minute, the way a user tunes.

Two paths, each with a fresh, empty Triton cache (every candidate pays its own compile,
as a new rewrite does) and the deterministic advisor, ``--budget`` candidates per kernel
(default 24, `profd tune`'s own) on the small kernels (vector_add, softmax, layernorm,
kernelbench_relu):

* **cli**: ``profd tune FILE --budget N --no-llm --json`` as a subprocess, one per kernel.
  The wall time runs from spawning the process to its exit: Python start-up, the warm
  worker's zygote (torch + Triton import), the baseline and every candidate included.
* **daemon**: ``profd watch DIR --no-counters --tune N`` (``--counters``: with the counter pass,
  as ``profd watch`` runs by default) on a directory holding copies of
  the kernels: the start-up scan profiles each, then tunes it (a TUNE job). Reported
  twice: per tuning session (the TUNE job, baseline included) and overall, from the
  daemon's launch to the last session's end (start-up, profiles and tuning included).

Candidates per minute = candidates evaluated / wall minutes. Per candidate, from the
``--json`` output: the screening child's time, the judge's time (only potential winners
reach it: a full measurement and an A/B pair), and the children each one ran.

Target: >= 30 candidates per GPU-minute on kernels under 1 ms, start-up included.

    python3 bench/throughput.py                  # GPU, both paths (~2-3 min on an H100/H200)
    python3 bench/throughput.py --paths cli      # only one path
    python3 bench/throughput.py --quick          # CPU dry run
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as C  # noqa: E402

QUESTION = "throughput"
SMALL = ["vector_add", "softmax", "layernorm", "kernelbench_relu"]
TARGET_PER_MIN = 30.0


def _split(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the candidates' time went, from ``profd tune --json``'s attempts."""
    costs = [a["cost"] for a in attempts if a.get("cost")]
    if not costs:
        return {}
    judged = [c for c in costs if c["outcome"].startswith("judged")]
    outcomes: dict[str, int] = {}
    for c in costs:
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
    return {"screen_s_median": statistics.median(c["screen_s"] for c in costs),
            "screen_s_total": sum(c["screen_s"] for c in costs),
            "judged": len(judged), "judge_s_total": sum(c["judge_s"] for c in judged),
            "children": sum(c["children"] for c in costs), "outcomes": outcomes}


def cli_one(name: str, path: Path, budget: int, quick: bool, timeout_s: float) -> dict[str, Any]:
    """``profd tune`` in a subprocess: what the user waits for."""
    cmd = [sys.executable, "-m", "profd.cli", "tune", str(path), "--budget", str(budget), "--no-llm", "--json"]
    if quick:
        cmd.append("--cpu")
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=C.child_env(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"example": name, "error": f"profd tune did not finish within {timeout_s:g} s"}
    wall = time.time() - t0
    try:
        data = json.loads(p.stdout)
    except json.JSONDecodeError:
        return {"example": name, "error": f"exit {p.returncode}, no JSON: {p.stderr[-800:]}", "wall_s": wall}
    ev = int(data.get("evaluated", 0))
    base_wall = (data.get("baseline") or {}).get("wall_s")
    return {
        "example": name, "budget": budget, "exit": p.returncode, "evaluated": ev, "stopped": data.get("stopped"),
        "accepted": sum(1 for a in data.get("attempts", []) if a["verdict"]["accepted"]),
        "speedup": data.get("speedup"), "wall_s": wall, "tune_wall_s": data.get("wall_s"),
        "startup_s": wall - (data.get("wall_s") or wall), "baseline_wall_s": base_wall,
        "candidates_per_min": ev / (wall / 60.0) if wall > 0 else None,
        "candidates_per_min_in_session": data.get("candidates_per_min"),
        "split": _split(data.get("attempts", [])),
    }


def _median(xs: list[float]) -> Optional[float]:
    return round(statistics.median(xs), 3) if xs else None


def daemon_run(names: list[str], files: dict[str, Path], budget: int, quick: bool, timeout_s: float,
               watch: Path, counters: bool = False) -> dict[str, Any]:
    """``profd watch --tune N`` on copies of the kernels; sessions read back from its store."""
    if C.watchdog_missing():
        return {"error": C.watchdog_missing()}
    watch.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy2(files[n], watch / files[n].name)
    # Its own state directory: the cli path's sessions must not be counted here.
    state = watch.parent / "daemon-state"
    os.environ["PROFD_STATE_DIR"] = str(state)
    t0 = time.time()
    d = C.DaemonProc(watch, counters=counters, cpu=quick, extra_args=["--tune", str(budget)])
    done = False
    cut: Optional[BaseException] = None
    try:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and d.proc.poll() is None:
            try:
                con = C.db_connect(state)
                try:
                    finished = con.execute("SELECT COUNT(*) FROM tune_sessions WHERE finished_at IS NOT NULL "
                                           "AND kind='tune'").fetchone()[0]
                    busy = con.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')").fetchone()[0]
                finally:
                    con.close()
            except Exception:
                finished, busy = 0, 1
            if finished >= len(names) and not busy:
                done = True
                break
            time.sleep(0.2)
    except (SystemExit, KeyboardInterrupt) as e:
        # A capped call (`timeout` sends SIGTERM) still reports the sessions that ended: on an
        # H200 (2026-12-03) a 100 s cap left nothing of two sessions, one of them finished.
        cut = e
    finally:
        d.stop()
    con = C.db_connect(state)
    try:
        rows = [dict(r) for r in con.execute("SELECT * FROM tune_sessions WHERE kind='tune' ORDER BY id")]
        # When each candidate's verdict was recorded: where a daemon session's time went (its
        # start-up is the wait before the first, which includes that candidate's own children).
        marks = {r["id"]: [(c[0], bool(c[1])) for c in con.execute(
            "SELECT created_at, accepted FROM candidates WHERE session_id=? ORDER BY id", (r["id"],))] for r in rows}
    finally:
        con.close()
    sessions = []
    for r in rows:
        wall = (r["finished_at"] or time.time()) - r["started_at"]
        gaps, prev = [], r["started_at"]
        for at, accepted in marks.get(r["id"], []):
            gaps.append({"s": round(at - prev, 3), "kept": accepted})
            prev = at
        sessions.append({"example": Path(r["target"]).stem, "evaluated": r["evaluated"], "stopped": r["stopped"],
                         "to_first_verdict_s": gaps[0]["s"] if gaps else None,
                         "median_loser_s": _median([g["s"] for g in gaps[1:] if not g["kept"]]),
                         "median_kept_s": _median([g["s"] for g in gaps[1:] if g["kept"]]),
                         "candidate_gaps": gaps,
                         "session_wall_s": wall, "best_candidate": r["best_candidate"],
                         "speedup": (r["baseline_ms"] / r["best_ms"]) if r["baseline_ms"] and r["best_ms"] else None,
                         "candidates_per_min": r["evaluated"] / (wall / 60.0) if wall > 0 else None})
    ev = sum(s["evaluated"] for s in sessions)
    last = max((r["finished_at"] or 0.0 for r in rows), default=0.0)
    overall_wall = (last - t0) if last else None
    if cut is not None:
        sessions = [x for x in sessions if x["stopped"]]  # only the sessions that closed
        ev = sum(x["evaluated"] for x in sessions)
    return {"complete": done, "cut_short": cut is not None, "sessions": sessions, "evaluated": ev,
            "session_wall_s": sum(s["session_wall_s"] for s in sessions),
            "candidates_per_min_sessions": ev / (sum(s["session_wall_s"] for s in sessions) / 60.0) if sessions else None,
            "wall_from_launch_s": overall_wall,
            "candidates_per_min_from_launch": ev / (overall_wall / 60.0) if overall_wall else None,
            "daemon_tail": d.output(15) if not done else ""}


def main(argv: Optional[list[str]] = None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--examples", help=f"comma-separated subset (default {','.join(SMALL)})")
    p.add_argument("--budget", type=int, default=None, help="candidates per kernel (default 24; quick 3)")
    p.add_argument("--paths", default="cli,daemon", help="cli, daemon or both (default cli,daemon)")
    p.add_argument("--warm-cache", action="store_true", help="keep Triton's existing compile cache")
    p.add_argument("--counters", action="store_true",
                   help="the daemon with its counter pass on each save (profd watch's default)")
    args = p.parse_args(argv)
    C.setup_quick(args.quick)
    C.install_sigterm()
    budget = args.budget if args.budget is not None else (3 if args.quick else 24)
    names = C.parse_examples(args.examples, SMALL)
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    timeout_s = 600.0 if args.quick else 300.0
    t_start = time.time()
    scratch = C.private_state_dir("throughput")
    files = C.copy_examples(names, scratch / "user")
    result: dict[str, Any] = {"cli": [], "daemon": None}

    def write(final: bool) -> tuple[dict[str, Any], Path]:
        """The result file; rewritten after every step, so a kill loses at most one."""
        cli = [r for r in result["cli"] if "error" not in r]
        ev, wall = sum(r["evaluated"] for r in cli), sum(r["wall_s"] for r in cli)
        dm = result["daemon"] or {}
        summary = {"cli_evaluated": ev, "cli_wall_s": wall,
                   "cli_candidates_per_min": ev / (wall / 60.0) if wall else None,
                   "daemon_candidates_per_min_from_launch": dm.get("candidates_per_min_from_launch"),
                   "daemon_candidates_per_min_sessions": dm.get("candidates_per_min_sessions"),
                   "target_per_min": TARGET_PER_MIN}
        rates = [summary["cli_candidates_per_min"] if "cli" in paths else None,
                 summary["daemon_candidates_per_min_from_launch"] if "daemon" in paths else None]
        summary["meets_target"] = all(r is not None and r >= TARGET_PER_MIN for r, want in
                                      zip(rates, ["cli" in paths, "daemon" in paths]) if want)
        m = C.meta(QUESTION, args.quick, {"budget": budget, "examples": names, "advisor": "deterministic",
                                          "paths": paths, "daemon_counters": args.counters,
                                          "triton_cache": "warm" if args.warm_cache else "fresh"})
        m["elapsed_s"] = time.time() - t_start
        m["complete"] = final
        out = C.write_json(C.result_path(args.out, QUESTION, m), {"meta": m, **result, "summary": summary})
        return summary, out

    try:
        if "cli" in paths:
            if not args.warm_cache:
                os.environ["TRITON_CACHE_DIR"] = str(scratch / "triton-cache-cli")
            for n in names:
                print(f"[{time.time() - t_start:6.1f} s] cli: profd tune {n}.py --budget {budget} ...", flush=True)
                result["cli"].append(cli_one(n, files[n], budget, args.quick, timeout_s))
                write(False)
        if "daemon" in paths:
            if not args.warm_cache:
                os.environ["TRITON_CACHE_DIR"] = str(scratch / "triton-cache-daemon")
            print(f"[{time.time() - t_start:6.1f} s] daemon: profd watch --tune {budget} on {len(names)} kernels ...",
                  flush=True)
            result["daemon"] = daemon_run(names, files, budget, args.quick, timeout_s * len(names),
                                          scratch / "watched", counters=args.counters)
            if result["daemon"].get("cut_short"):
                raise SystemExit(143)  # the sessions that ended are written by the finally below
    finally:
        summary, out = write(True)
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(f"results: {out}")
    if args.quick:
        print("CPU dry run (Triton interpreter): rates say nothing about a GPU.")
    if result["cli"]:
        print(C.table(["cli: example", "evaluated", "kept", "wall s", "start-up s", "cand/min", "screen s (med)",
                       "judged", "children"],
                      [[r["example"], r.get("evaluated"), r.get("accepted"), r.get("wall_s"), r.get("startup_s"),
                        r.get("candidates_per_min"), (r.get("split") or {}).get("screen_s_median"),
                        (r.get("split") or {}).get("judged"), (r.get("split") or {}).get("children")]
                       if "error" not in r else [r["example"], r["error"][:60], "", "", "", "", "", "", ""]
                       for r in result["cli"]]))
    dm = result["daemon"]
    if dm:
        if dm.get("error"):
            print(f"daemon: {dm['error']}")
        else:
            print(C.table(["daemon: example", "evaluated", "session s", "cand/min", "to 1st verdict s",
                           "loser s (med)", "kept s (med)"],
                          [[s["example"], s["evaluated"], s["session_wall_s"], s["candidates_per_min"],
                            s.get("to_first_verdict_s"), s.get("median_loser_s"), s.get("median_kept_s")]
                           for s in dm["sessions"]]))
            print(f"daemon overall, from launch: {C.fmt(dm['candidates_per_min_from_launch'])} candidates/min "
                  f"({dm['evaluated']} in {C.fmt(dm['wall_from_launch_s'])} s)")
    print(f"target: >= {TARGET_PER_MIN:g} candidates per minute, start-up included: "
          f"{'PASS' if summary['meets_target'] else 'FAIL'} (cli {C.fmt(summary['cli_candidates_per_min'])}, "
          f"daemon {C.fmt(summary['daemon_candidates_per_min_from_launch'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
