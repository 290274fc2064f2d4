"""Tuned vs exhaustive grid, as a user runs it: `profd tune` from the CLI against the grid's best.

For each target (the materialized real-world corpus, ``bench/realworld/``, and the bundled
examples):

1. ``profd tune FILE --budget B --no-llm --json`` in a subprocess, exactly as a user types it
   (start-up, baseline and every candidate included), on a copy of the file, with a fresh state
   directory and a fresh Triton cache, so nothing is pre-compiled for it. Its wall time gives
   candidates per minute; its attempts say how many candidates failed and why.
2. ``profd apply`` on that copy: the tuned file (the as-written file when nothing was kept).
3. The grid (the corpus's declared axes, ``bench/realworld/corpus.py``; the examples' grids,
   ``bench/tuning_quality.py``'s ``GRIDS``), compiled first by a pool of processes (Triton's
   on-disk cache), then the as-written file, the tuned file and every grid point verified and
   timed one after another in one child (``bench/realworld/grid.py``'s runner:
   ``triton.testing.do_bench`` medians on the same inputs), with the reference (the torch op)
   beside them.

Ratios, side by side: tuned / grid-best as ``grid_best_ms / tuned_ms`` (1.0 = the grid's best;
target >= 0.95), profd's claimed speed-up against the grid's (controls must not claim > 3%
unless the grid shows more), and candidates per minute (target >= 30 on kernels under 1 ms).

    python bench/tune_vs_grid.py --corpus DIR --examples examples/kernels --out DIR      # GPU
    python bench/tune_vs_grid.py --corpus DIR --only liger_swiglu --quick --out DIR     # CPU smoke
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "realworld"))

import corpus  # noqa: E402
import grid as G  # noqa: E402

#: Inconsistent-rewrite symptoms: a launch whose grid no longer matches its block sizes.
INCONSISTENT = ("illegal_access", "unwritten", "wrong")
BIG = {"matmul", "fla_matmul"}  # matmul/attention: budget 48


def _env(state: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PROFD_STATE_DIR=str(state), PROFD_CONFIG=str(state / "none.toml"), TRITON_CACHE_DIR=str(cache),
               PYTHONPATH=f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}", PYTHONUNBUFFERED="1")
    return env


def run_tune(path: Path, budget: int, work: Path, quick: bool, timeout_s: float) -> dict[str, Any]:
    """`profd tune` then `profd apply` on a copy of ``path``, as a user runs them."""
    user = work / "user"
    user.mkdir(parents=True, exist_ok=True)
    copy = user / path.name
    shutil.copy(path, copy)
    env = _env(work / "state", work / "triton-cache")
    # profd's own time limit, short of the bench's: a tune that runs long still ends with its
    # JSON (and what it found), instead of being killed without a word.
    cmd = [sys.executable, "-m", "profd.cli", "tune", str(copy), "--budget", str(budget), "--no-llm", "--json",
           "--time", str(max(30, int(timeout_s) - 40))]
    if quick:
        cmd.append("--cpu")
    t0 = time.time()
    try:
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        rc, out, err = cp.returncode, cp.stdout, cp.stderr
    except subprocess.TimeoutExpired as e:
        dec = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        rc, out, err = None, dec(e.stdout), "timeout; progress: " + dec(e.stderr)[-3000:]
    wall = time.time() - t0
    rec: dict[str, Any] = {"rc": rc, "wall_s": round(wall, 2), "stderr_tail": (err or "")[-1500:]}
    try:
        data = json.loads(out)
    except (json.JSONDecodeError, TypeError):
        rec["error"] = f"no JSON from profd tune (rc {rc}): {(out or '')[-500:]} {(err or '')[-800:]}"
        return rec
    attempts = data.get("attempts", [])
    statuses = [a.get("status") or "" for a in attempts]
    rec.update(evaluated=data.get("evaluated"), claimed_speedup=data.get("speedup"), stopped=data.get("stopped"),
               baseline_ms=data.get("baseline_ms"), best_ms=data.get("best_ms"),
               best_candidate=data.get("best_candidate"), statuses=statuses,
               kept=[a.get("candidate", {}).get("rationale", "")[:160] for a in attempts
                     if a.get("verdict", {}).get("accepted")],
               inconsistent=sum(1 for s in statuses if s in INCONSISTENT),
               failed=[(a.get("candidate", {}).get("rationale", "")[:120], a.get("status"),
                        (a.get("verdict", {}).get("reason") or "")[:200])
                       for a in attempts if (a.get("status") or "") not in ("", "correct")],
               configs=data.get("triton_configs") or data.get("best_configs"),
               startup=data.get("startup"), precompile=data.get("precompile"), profd_wall_s=data.get("wall_s"),
               attempts=[{"params": (a.get("candidate") or {}).get("params"), "status": a.get("status"),
                          "median_ms": a.get("median_ms"), "accepted": (a.get("verdict") or {}).get("accepted"),
                          "reason": ((a.get("verdict") or {}).get("reason") or "")[:160]} for a in attempts])
    # Where the candidates' time went, summed over them (the judge's children: spawn, compile, checks).
    phases: dict[str, float] = {}
    for a in attempts:
        for k, v in ((a.get("cost") or {}).get("phases") or {}).items():
            phases[k] = round(phases.get(k, 0.0) + float(v), 3)
    rec["candidate_phases_s"] = phases
    rec["candidate_s"] = [round(((a.get("cost") or {}).get("screen_s") or 0) + ((a.get("cost") or {}).get("judge_s")
                                                                                or 0), 2) for a in attempts]
    if data.get("evaluated"):
        rec["candidates_per_min"] = round(60.0 * data["evaluated"] / wall, 1)
    if data.get("best_candidate"):
        ap = subprocess.run([sys.executable, "-m", "profd.cli", "apply", str(copy), "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
        rec["apply_rc"] = ap.returncode
        if ap.returncode != 0:
            rec["apply_error"] = (ap.stdout + ap.stderr)[-800:]
    rec["tuned_file"] = str(copy)
    return rec


def grid_points(name: str, path: Path, quick: bool) -> list[tuple[Any, str]]:
    """(knobs, source) for every grid point of a corpus target or a bundled example."""
    source = path.read_text()
    if name in [t.name for t in corpus.TARGETS]:
        t = corpus.target(name)
        return [(k, G.apply_variant(source, t, k)) for k in G.variants(t, quick)]
    from bench import tuning_quality as TQ

    pts = TQ.quick_points(name) if quick else TQ.GRIDS[name]["points"]
    grouped = bool(TQ.GRIDS[name].get("grouped"))
    return [(p, TQ.variant_source(source, p, grouped)) for p in pts]


def warm(files: list[Path], base: Path, args: argparse.Namespace, work: Path, name: str,
         meta: Optional[dict[str, Any]] = None) -> None:
    """Compile every grid file once, in parallel, so the serial timing compiles nothing.

    It runs while the tunes measure: with ``meta`` (``G.specs``: the device's Triton target and
    the bench inputs' specs) it compiles on meta tensors with the GPU hidden (CUDA_VISIBLE_DEVICES
    empty); without, it compiles nothing (the timing pass then compiles each point itself): a
    warm-up on the GPU put fourteen CUDA contexts and their input fills beside profd's timed calls."""
    if args.quick or not files or not meta:
        return
    chunks = [files[i::args.jobs] for i in range(args.jobs)]
    wargs = argparse.Namespace(**{**vars(args), "rep_ms": 1, "warmup_ms": 1, "verbose": False, "compile_only": True,
                                  "meta": meta})

    def one(i: int, chunk: list[Path]) -> None:
        d = work / f"warm{i}"
        d.mkdir(exist_ok=True)
        G.run_files(base, [{"id": f"w{j}", "knobs": None, "path": str(p)} for j, p in enumerate(chunk)],
                    wargs, d, f"{name}-warm{i}", {"errors": []})

    with cf.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda ic: one(*ic), [(i, c) for i, c in enumerate(chunks) if c]))


def prepare_grid(name: str, path: Path, args: argparse.Namespace, gdir: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Write every grid point of ``name`` into ``gdir``: (files, timing todo without as-written/tuned)."""
    gdir.mkdir(parents=True, exist_ok=True)
    files, todo = [], []
    for i, (knobs, src) in enumerate(grid_points(name, path, args.quick)):
        f = gdir / f"{name}__g{i:03d}.py"
        f.write_text(src)
        files.append(f)
        todo.append({"id": i, "knobs": knobs, "path": str(f)})
    return files, todo


def run_target(name: str, path: Path, args: argparse.Namespace, work: Path, gdir: Path, todo_grid: list[dict[str, Any]],
               warmed: Optional["cf.Future[float]"] = None) -> dict[str, Any]:
    budget = args.budget_big if name in BIG else args.budget
    res: dict[str, Any] = {"name": name, "file": str(path), "budget": budget,
                           "kind": "corpus" if name in [t.name for t in corpus.TARGETS] else "example"}
    if res["kind"] == "corpus":
        res["control"] = corpus.target(name).defect is None
    else:
        res["control"] = False
    timeout = args.tune_timeout_big if name in BIG and args.tune_timeout_big else args.tune_timeout
    res["tune"] = run_tune(path, budget, work / "tune", args.quick, timeout)
    todo = [{"id": "as_written", "knobs": None, "path": str(path)}]
    tuned = res["tune"].get("tuned_file")
    if tuned:
        todo.append({"id": "tuned", "knobs": None, "path": tuned})
    todo += todo_grid
    t0 = time.time()
    if warmed is not None:
        res["grid_warm_s"] = round(warmed.result(), 1)  # compiled in the background during earlier tunes
    res["grid_wait_s"] = round(time.time() - t0, 1)
    done = G.run_files(path, todo, args, gdir, name, res)
    res["grid_time_s"] = round(time.time() - t0, 1)
    pts_ok = [done[v["id"]] for v in todo[2 if tuned else 1:] if done[v["id"]].get("ok") and done[v["id"]].get("ms")]
    res["n_grid"], res["n_grid_ok"] = len(todo_grid), len(pts_ok)
    res["grid_points"] = [{k: (done[v["id"]].get(k) if k != "error" else (done[v["id"]].get(k) or "")[:200] or None)
                           for k in ("variant", "knobs", "ok", "ms", "bench_ms", "device_ms_1", "device_ms_2",
                                     "final_ms", "wall_s", "error")} for v in todo if v["id"] in done]
    # The same ratios on do_bench's medians (host time included), beside the device-time ones.
    bpts = [done[v["id"]] for v in todo[2 if tuned else 1:] if done[v["id"]].get("ok") and done[v["id"]].get("bench_ms")]
    tb = done["tuned"].get("bench_ms") if tuned else None
    if bpts and tb:
        res["tuned_over_grid_do_bench"] = round(min(r["bench_ms"] for r in bpts) / tb, 3)
    aw = done["as_written"].get("ms")
    tu = done["tuned"].get("ms") if tuned else None
    if tuned and not done["tuned"].get("ok"):
        res["tuned_error"] = done["tuned"].get("error") or "tuned file is not correct"
    res["as_written_ms"], res["tuned_ms"] = aw, tu
    if pts_ok:
        best = min(pts_ok, key=lambda r: r["ms"])
        res["grid_best_ms"], res["grid_best_knobs"] = best["ms"], best["knobs"]
        if tu:
            res["tuned_over_grid"] = round(best["ms"] / tu, 3)
        if aw:
            res["grid_speedup"] = round(aw / best["ms"], 3)
    if aw and tu:
        res["measured_speedup"] = round(aw / tu, 3)
    head_to_head(res, done)
    return res


def head_to_head(res: dict[str, Any], done: dict[Any, dict[str, Any]]) -> None:
    """The headline ratio from the interleaved re-timing of the tuned file and the sweep's fastest
    points (``grid._head_to_head``), where it ran: median of each one's rounds, the fastest grid
    point's over the tuned file's. The sweep's own ratio stays beside it (``tuned_over_grid_sweep``)."""
    fin = {k: statistics.median(r["final_ms"]) for k, r in done.items() if r.get("final_ms")}
    if "tuned" not in fin or len(fin) < 2:
        return
    best = min((k for k in fin if k != "tuned"), key=lambda k: fin[k])
    res["tuned_over_grid_sweep"] = res.get("tuned_over_grid")
    res["head_to_head"] = {"tuned_ms": fin["tuned"], "grid_ms": fin[best], "grid_knobs": done[best].get("knobs"),
                           "rounds": len(done["tuned"]["final_ms"]), "points": len(fin) - 1}
    res["tuned_over_grid"] = round(fin[best] / fin["tuned"], 3)


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| target | kind | as written ms | tuned ms | grid best ms | tuned/grid-best | (sweep) | grid speed-up | "
            "claimed | evaluated | cand/min | inconsistent | stopped |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v: Any, nd: int = 4) -> str:
        return "-" if v is None else (f"{v:.{nd}g}" if isinstance(v, float) else str(v))

    for r in results:
        t = r.get("tune", {})
        kind = r["kind"] + (" (control)" if r.get("control") else "")
        rows.append(f"| {r['name']} | {kind} | {f(r.get('as_written_ms'))} | {f(r.get('tuned_ms'))} | "
                    f"{f(r.get('grid_best_ms'))} | {f(r.get('tuned_over_grid'), 3)} | "
                    f"{f(r.get('tuned_over_grid_sweep'), 3)} | {f(r.get('grid_speedup'), 3)} | "
                    f"{f(t.get('claimed_speedup'), 3)} | {f(t.get('evaluated'))} | {f(t.get('candidates_per_min'), 3)} | "
                    f"{f(t.get('inconsistent'))} | {(t.get('stopped') or t.get('error') or '')[:60]} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="materialized corpus (bench/realworld/materialize.py OUTDIR)")
    ap.add_argument("--examples", help="the bundled examples directory (examples/kernels)")
    ap.add_argument("--only", nargs="*", help="target names")
    ap.add_argument("--out", required=True, help="directory for tune_vs_grid-DATE-DEVICE.json and .md")
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--budget-big", type=int, default=48, help="budget for matmul/attention targets")
    ap.add_argument("--quick", action="store_true", help="CPU smoke: interpreter, two grid points")
    ap.add_argument("--jobs", type=int, default=12, help="parallel compile processes for the grid")
    ap.add_argument("--rep-ms", type=int, default=100)
    ap.add_argument("--warmup-ms", type=int, default=25)
    ap.add_argument("--variant-timeout", type=int, default=120)
    ap.add_argument("--tune-timeout", type=float, default=400)
    ap.add_argument("--tune-timeout-big", type=float, default=None,
                    help="--tune-timeout for matmul/attention targets (default: the same)")
    ap.add_argument("--head-to-head", type=int, default=4,
                    help="rounds of the tuned file against the sweep's 3 fastest points, interleaved (0: none)")
    ap.add_argument("--max-seconds", type=float, default=None, help="start no target after this many seconds")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    args = ap.parse_args(argv)
    args.interpret = args.quick
    args.device_time = not args.quick  # grid points timed by profd's device timer too (see grid.py)
    args.max_variants = None
    args.verbose = False
    targets: list[tuple[str, Path]] = []
    if args.corpus:
        targets += [(n, Path(args.corpus) / f"{n}.py") for n in [t.name for t in corpus.TARGETS] if (Path(args.corpus) / f"{n}.py").exists()]
    if args.examples:
        from bench import tuning_quality as TQ

        targets += [(n, Path(args.examples) / f"{n}.py") for n in TQ.ORDER if (Path(args.examples) / f"{n}.py").exists()]
    if args.only:  # in the order given: a call that runs out of time has done the first ones
        by = dict(targets)
        targets = [(n, by[n]) for n in args.only if n in by]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = G._device()
    stamp = time.strftime("%Y-%m-%d")
    devname = (dev.get("gpu") or "cpu").lower().replace(" ", "-")
    base = out / f"tune_vs_grid-{stamp}-{devname}{args.tag}"
    results: list[dict[str, Any]] = []
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="tvg-"))
    # One Triton cache for every grid, filled by a pool of processes in the background while the
    # tunes run (they use the GPU and a few cores; each tune has its own fresh cache), so that
    # a target's grid is compiled by the time its tune ends.
    os.environ["TRITON_CACHE_DIR"] = str(root / "grid-cache")
    grids = {}
    for name, path in targets:
        grids[name] = prepare_grid(name, path.resolve(), args, root / name / "grid")
    # What a GPU-free compile of each grid needs, from one process on the GPU before anything is measured.
    s0 = time.time()
    metas = {} if args.quick else G.specs([p.resolve() for _, p in targets])
    print(f"grid compile specs for {len(metas)} of {len(targets)} targets in {time.time() - s0:.1f} s", flush=True)
    background = cf.ThreadPoolExecutor(1, thread_name_prefix="grid-warm")

    def warm_one(name: str, path: Path) -> float:
        w0 = time.time()
        warm(grids[name][0], path.resolve(), args, root / name, name, metas.get(str(path.resolve())))
        return time.time() - w0

    futures = {name: background.submit(warm_one, name, path) for name, path in targets}
    for name, path in targets:
        if args.max_seconds is not None and time.time() - t0 > args.max_seconds:
            results.append({"name": name, "kind": "-", "skipped": "time budget of the call used up",
                            "tune": {"stopped": "not run: out of time"}})
            futures[name].cancel()
            continue
        print(f"== {name} ({time.time() - t0:.0f} s)", flush=True)
        try:
            r = run_target(name, path.resolve(), args, root / name, root / name / "grid", grids[name][1],
                           futures[name])
        except Exception as e:  # noqa: BLE001 - one target's failure is a result
            r = {"name": name, "kind": "-", "error": f"{type(e).__name__}: {e}", "tune": {}}
        results.append(r)
        print(f"   tuned/grid {r.get('tuned_over_grid')} (sweep {r.get('tuned_over_grid_sweep')}) ; evaluated {r['tune'].get('evaluated')} in "
              f"{r['tune'].get('wall_s')} s ; claimed {r['tune'].get('claimed_speedup')} ; "
              f"inconsistent {r['tune'].get('inconsistent')} {r.get('error') or r['tune'].get('error') or ''}",
              flush=True)
        doc = {"question": "tune_vs_grid", "date": stamp, "device": dev, "quick": args.quick,
               "commit": os.environ.get("BENCH_GIT_COMMIT", ""), "results": results}
        base.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
        base.with_suffix(".md").write_text(f"# tune vs grid, {stamp}, {dev.get('gpu') or 'cpu'}\n\n{table(results)}\n")
    background.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
