"""Timing precision: how much does profd's timing of one unchanged kernel move between runs,
and is a candidate identical to the original ever accepted as faster?

1. The same target (vector_add at its BENCH_SHAPE, and matmul) measured ``--runs`` times (10),
   each in its own harness child (``profd.harness.runner.measure``; children forked from a
   WarmWorker, as the daemon runs them): median, min, max and the relative spread of the
   per-run medians, next to the within-run spread (IQR/median) and the acceptance floor.
2. ``--identical`` candidates (20) that are the original plus a comment, fed to
   ``profd.flow.tune.tune`` by a scripted advisor (budget = their number): every one goes through
   the acceptance rule (correct, faster than the best by more than the noise, confirmed by an
   independent A/B re-measure). Count accepted: must be 0.

    python3 bench/timing_precision.py            # GPU (~1-1.5 min on an H100)
    python3 bench/timing_precision.py --quick    # CPU dry run
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as C  # noqa: E402

QUESTION = "timing_precision"


def repeat(path: Path, runs: int, runner: Any, quick: bool) -> dict[str, Any]:
    from profd.harness.runner import measure

    rows = []
    t0 = time.time()
    for i in range(runs):
        m = measure(path, runner=runner, force_cpu=quick, timeout_s=300.0 if quick else 120.0)
        t = m.timing
        rows.append({"run": i, "status": m.verdict.status.value, "median_ms": t.median_ms if t else None,
                     "spread_pct": t.spread_pct if t else None, "timed_runs": t.runs if t else None,
                     "min_ms": t.min_ms if t else None, "representative": t.representative if t else None,
                     "wall_s": m.wall_s, "warnings": m.warnings[:3]})
    meds = [r["median_ms"] for r in rows if r["median_ms"] is not None]
    out: dict[str, Any] = {"target": path.name, "runs": rows, "wall_s": time.time() - t0}
    if meds:
        mid = statistics.median(meds)
        out.update({
            "median_of_medians_ms": mid, "min_ms": min(meds), "max_ms": max(meds),
            "range_pct": 100.0 * (max(meds) - min(meds)) / mid if mid else None,
            "cv_pct": 100.0 * statistics.pstdev(meds) / statistics.mean(meds) if len(meds) > 1 else 0.0,
            "within_run_spread_pct_median": statistics.median(r["spread_pct"] for r in rows
                                                              if r["spread_pct"] is not None),
            "n_ok": len(meds),
        })
    return out


def identical(path: Path, n: int, runner: Any, quick: bool) -> dict[str, Any]:
    from profd.store import Store
    from profd.flow.tune import NOISE_FLOOR_PCT, tune

    src = path.read_text()
    same = [(f"identical-{i:02d}", src + f"\n# identical candidate {i}: same code, only this comment differs\n")
            for i in range(n)]
    t0 = time.time()
    with Store() as store:
        res = tune(path, store, budget=n, advisors=[C.ScriptedAdvisor(same)], runner=runner, force_cpu=quick,
                   timeout_s=300.0 if quick else 120.0)
    rows = []
    for a in res.attempts:
        m = a.verdict.measurement
        rows.append({"id": a.candidate.id, "accepted": a.verdict.accepted, "apparent_speedup": a.verdict.speedup,
                     "median_ms": m.timing.median_ms if m and m.timing else None,
                     "status": m.verdict.status.value if m else None, "reason": a.verdict.reason})
    speeds = [r["apparent_speedup"] for r in rows if r["apparent_speedup"]]
    rechecked = sum(1 for r in rows if "A/B re-check" in (r["reason"] or "") or r["accepted"])
    return {"target": path.name, "candidates": n, "evaluated": res.evaluated,
            "accepted": sum(1 for r in rows if r["accepted"]), "needed_ab_recheck": rechecked,
            "baseline_ms": res.baseline_ms, "max_apparent_speedup": max(speeds) if speeds else None,
            "min_apparent_speedup": min(speeds) if speeds else None,
            "noise_floor_pct": NOISE_FLOOR_PCT[bool(res.baseline.timing and res.baseline.timing.representative)], "stopped": res.stopped, "wall_s": time.time() - t0,
            "attempts": rows}


def main(argv: Optional[list[str]] = None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=None, help="separate measurements per kernel (default 10; quick 3)")
    p.add_argument("--identical", type=int, default=None, help="identical candidates (default 20; quick 3)")
    p.add_argument("--kernels", default="vector_add,matmul", help="kernels to time repeatedly")
    p.add_argument("--identical-target", default="vector_add")
    args = p.parse_args(argv)
    C.setup_quick(args.quick)
    C.install_sigterm()
    runs = args.runs if args.runs is not None else (3 if args.quick else 10)
    n_same = args.identical if args.identical is not None else (3 if args.quick else 20)
    kernels = C.parse_examples(args.kernels)
    same_target = C.parse_examples(args.identical_target)[0]
    t_start = time.time()
    scratch = C.private_state_dir("precision")
    files = C.copy_examples(set(kernels) | {same_target}, scratch / "user")
    result: dict[str, Any] = {"repeat": {}, "identical": None}
    worker = None

    def write(final: bool) -> Path:
        """The result file; rewritten after each part, so a kill loses at most one."""
        m = C.meta(QUESTION, args.quick, {"runs": runs, "identical": n_same, "kernels": kernels,
                                          "identical_target": same_target, "runner": "WarmWorker forks"})
        m["elapsed_s"] = time.time() - t_start
        m["complete"] = final and result["identical"] is not None
        ident = result["identical"]
        if ident is not None:
            result["targets"] = {"identical_never_accepted": ident["accepted"] == 0,
                                 "accepted_of": f"{ident['accepted']} of {ident['evaluated']}"}
        return C.write_json(C.result_path(args.out, QUESTION, m), {"meta": m, **result})

    try:
        worker, start_s = C.start_warm_worker()
        result["warm_worker_start_s"] = start_s
        for k in kernels:
            print(f"[{time.time() - t_start:6.1f} s] {k}: {runs} separate measurements ...", flush=True)
            result["repeat"][k] = repeat(files[k], runs, worker, args.quick)
            write(False)
        print(f"[{time.time() - t_start:6.1f} s] {same_target}: {n_same} identical candidates through the tune "
              "loop ...", flush=True)
        result["identical"] = identical(files[same_target], n_same, worker, args.quick)
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(scratch, ignore_errors=True)
    out = write(True)
    ident = result["identical"]
    print()
    print(f"results: {out}")
    if args.quick:
        print("CPU dry run (Triton interpreter): wall-clock times, far noisier than GPU event timing.")
    rows = []
    for k, r in result["repeat"].items():
        rows.append([k, r.get("n_ok"), r.get("median_of_medians_ms"), r.get("min_ms"), r.get("max_ms"),
                     r.get("range_pct"), r.get("cv_pct"), r.get("within_run_spread_pct_median")])
    print(C.table(["kernel", "runs", "median ms", "min ms", "max ms", "range %", "CV %", "within-run IQR %"], rows))
    print()
    print(C.table(["identical candidates", "evaluated", "accepted", "A/B re-checks", "apparent speedup range",
                   "noise floor %"],
                  [[ident["target"], ident["evaluated"], ident["accepted"], ident["needed_ab_recheck"],
                    f"{C.fmt(ident['min_apparent_speedup'])}-{C.fmt(ident['max_apparent_speedup'])}x",
                    ident["noise_floor_pct"]]]))
    print(f"target: an identical candidate is never accepted: {'PASS' if ident['accepted'] == 0 else 'FAIL'} "
          f"({ident['accepted']} of {ident['evaluated']} accepted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
