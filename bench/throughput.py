"""Throughput: candidates verified and timed per GPU-minute while tuning.

``profd.flow.tune.tune`` (deterministic advisor, ``--budget`` 12) on the small kernels
(vector_add, softmax, layernorm, kernelbench_relu), through a WarmWorker as the daemon
runs it, with a fresh, empty Triton cache (every candidate pays its own compile, as a
new rewrite does). Candidates per minute = candidates evaluated / wall time of the tune
call (baseline included; also given without it). The split per candidate: wall time of
its harness children (fork, CUDA init, compile, verification on every shape, timing),
the A/B re-measures of apparent wins, and what is left to profd itself (advisor, store,
files).

Target: >= 30 candidates per minute on the small kernels.

    python3 bench/throughput.py           # GPU (~1.5-2 min on an H100)
    python3 bench/throughput.py --quick   # CPU dry run
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as C  # noqa: E402

QUESTION = "throughput"
SMALL = ["vector_add", "softmax", "layernorm", "kernelbench_relu"]
TARGET_PER_MIN = 30.0


def one(name: str, path: Path, runner: C.TimedRunner, budget: int, quick: bool) -> dict[str, Any]:
    from advisors.rewriters.deterministic import DeterministicAdvisor
    from profd.store import Store
    from profd.flow.tune import tune

    n0 = len(runner.log)
    t0 = time.time()
    with Store() as store:
        res = tune(path, store, budget=budget, advisors=[DeterministicAdvisor()], runner=runner, force_cpu=quick,
                   timeout_s=300.0 if quick else 120.0)
    wall = time.time() - t0
    runs = runner.log[n0:]
    base = runs[0] if runs else None  # the baseline profile is the first child
    cand_runs = runs[1:]
    first_cand_start = (base.ended_at if base else t0)
    cand_wall = max(time.time() - first_cand_start, 1e-9)
    # A/B re-measures are the children with trials=1 (candidates and the baseline use 3).
    ab = [r for r in cand_runs if r.trials == 1]
    main_runs = [r for r in cand_runs if r.trials != 1]
    child_total = sum(r.wall_s for r in cand_runs)
    ev = res.evaluated
    return {
        "example": name, "budget": budget, "evaluated": ev, "stopped": res.stopped,
        "accepted": sum(1 for a in res.attempts if a.verdict.accepted),
        "tune_wall_s": wall, "baseline_wall_s": base.wall_s if base else None,
        "candidates_per_min": ev / (wall / 60.0) if wall > 0 else None,
        "candidates_per_min_excl_baseline": ev / (cand_wall / 60.0) if ev else None,
        "per_candidate_s": (cand_wall / ev) if ev else None,
        "split_per_candidate_s": {
            "harness_child_median": statistics.median(r.wall_s for r in main_runs) if main_runs else None,
            "ab_recheck_children": len(ab),
            "ab_recheck_s_total": sum(r.wall_s for r in ab),
            "profd_outside_children_s": ((cand_wall - child_total) / ev) if ev else None,
        },
        "statuses": {s: sum(1 for a in res.attempts if a.verdict.measurement
                            and a.verdict.measurement.verdict.status.value == s)
                     for s in {a.verdict.measurement.verdict.status.value for a in res.attempts
                               if a.verdict.measurement}},
        "speedup": res.speedup,
    }


def main(argv: Optional[list[str]] = None) -> int:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--examples", help=f"comma-separated subset (default {','.join(SMALL)})")
    p.add_argument("--budget", type=int, default=None, help="candidates per kernel (default 12; quick 3)")
    p.add_argument("--warm-cache", action="store_true", help="keep Triton's existing compile cache")
    args = p.parse_args(argv)
    C.setup_quick(args.quick)
    C.install_sigterm()
    budget = args.budget if args.budget is not None else (3 if args.quick else 12)
    names = C.parse_examples(args.examples, SMALL)
    t_start = time.time()
    scratch = C.private_state_dir("throughput")
    if not args.warm_cache:
        os.environ["TRITON_CACHE_DIR"] = str(scratch / "triton-cache")
    files = C.copy_examples(names, scratch / "user")
    rows: list[dict[str, Any]] = []
    worker = None
    start_s = None

    def write(final: bool) -> tuple[dict[str, Any], Path]:
        """The result file; rewritten after every example, so a kill loses at most one."""
        total_ev = sum(r["evaluated"] for r in rows)
        total_wall = sum(r["tune_wall_s"] for r in rows)
        overall = total_ev / (total_wall / 60.0) if total_wall else None
        m = C.meta(QUESTION, args.quick, {"budget": budget, "examples": names, "advisor": "deterministic",
                                          "runner": "WarmWorker", "triton_cache": "warm" if args.warm_cache else "fresh"})
        m["elapsed_s"] = time.time() - t_start
        summary = {"evaluated": total_ev, "tune_wall_s": total_wall, "candidates_per_min": overall,
                   "warm_worker_start_s": start_s, "target_per_min": TARGET_PER_MIN,
                   "meets_target": overall is not None and overall >= TARGET_PER_MIN}
        m["complete"] = final and len(rows) == len(names)
        out = C.write_json(C.result_path(args.out, QUESTION, m), {"meta": m, "examples": rows, "summary": summary})
        return summary, out

    try:
        worker, start_s = C.start_warm_worker()
        runner = C.TimedRunner(worker)
        for n in names:
            print(f"[{time.time() - t_start:6.1f} s] {n}: tune, budget {budget} ...", flush=True)
            rows.append(one(n, files[n], runner, budget, args.quick))
            write(False)
    finally:
        if worker is not None:
            worker.close()
        shutil.rmtree(scratch, ignore_errors=True)
    summary, out = write(True)
    print()
    print(f"results: {out}")
    if args.quick:
        print("CPU dry run (Triton interpreter): rates say nothing about a GPU.")
    print(C.table(["example", "evaluated", "kept", "tune s", "cand/min", "cand/min excl. baseline", "s/cand",
                   "child s (median)", "A/B children", "profd s/cand"],
                  [[r["example"], r["evaluated"], r["accepted"], r["tune_wall_s"], r["candidates_per_min"],
                    r["candidates_per_min_excl_baseline"], r["per_candidate_s"],
                    r["split_per_candidate_s"]["harness_child_median"], r["split_per_candidate_s"]["ab_recheck_children"],
                    r["split_per_candidate_s"]["profd_outside_children_s"]] for r in rows]))
    print(f"target: >= {TARGET_PER_MIN:g} candidates per minute: {'PASS' if summary['meets_target'] else 'FAIL'} "
          f"({C.fmt(summary['candidates_per_min'])} overall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
