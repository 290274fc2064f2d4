#!/usr/bin/env python3
"""A nightly run over examples/kernels on 1 GPU, then on 2 GPUs: wall time and placement.

Each run is ``profd nightly DIR --inline --budget N --json`` with the local executor
pinned to ``gpus = [0]``, then ``gpus = [0, 1]``, in a fresh state directory and a
fresh Triton cache each (so the second run is not helped by the first one's
compiled kernels or tuning history). Hardware counters are off by default: the
comparison is about the tuning throughput of the slots, not the profiler.

    python bench/multi_gpu.py --budget 6            # on a machine with >= 2 GPUs
    python bench/multi_gpu.py --dry-run             # here: 1 vs 2 CPU slots, tiny budget

Writes ``bench/results/multi-gpu-<date>-<device>.json`` and prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def preflight() -> None:
    """Fail early, with the fix, when a module profd's nightly needs is missing."""
    missing = []
    for mod in ("torch", "triton", "watchdog", "numpy", "pandas"):  # matplotlib is optional (report pictures)
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        hint = " (a wheel is in .whl/: pip install .whl/watchdog-*.whl)" if "watchdog" in missing else ""
        sys.exit(f"multi_gpu: missing Python module(s) {', '.join(missing)}{hint}")


def device_name() -> str:
    """GPU 0's name without a CUDA context (the runs must have the GPUs to themselves)."""
    sys.path.insert(0, str(ROOT))
    from profd.service.executors.local import local_gpus

    gpus = local_gpus()
    return gpus[0].name if gpus else "cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def one_run(label: str, executor: str, args: argparse.Namespace, kernels: Path, scratch: Path) -> dict[str, Any]:
    """One nightly run in its own state dir and Triton cache; returns its measurements."""
    here = scratch / slug(label)
    state, cache, cfg = here / "state", here / "triton-cache", here / "config.toml"
    cache.mkdir(parents=True)
    cfg.write_text(f"[run]\ncounters = {'true' if args.counters else 'false'}\nwarm_worker = true\n"
                   f"timeout_s = {args.timeout}\n\n[nightly]\nbudget = {args.budget}\n\n[executor]\n{executor}\n")
    env = dict(os.environ, PROFD_STATE_DIR=str(state), PROFD_CONFIG=str(cfg), TRITON_CACHE_DIR=str(cache),
               PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "profd.cli", "nightly", str(kernels), "--inline", "--budget", str(args.budget),
           "--json", "--config", str(cfg)]
    if args.dry_run:
        cmd.append("--cpu")
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU slots even on a machine with GPUs
    print(f"[{label}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.time()
    out: dict[str, Any] = {"label": label, "executor": executor.replace("\n", "; ")}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.run_timeout)
    except subprocess.TimeoutExpired:  # keep the other run's numbers: say this one did not finish
        out.update(exit="timeout", wall_s=round(time.time() - t0, 2),
                   error=f"did not finish within --run-timeout {args.run_timeout:g} s; lower --budget")
        return out
    wall = time.time() - t0
    (here / "stderr.log").write_text(proc.stderr)
    out.update({"exit": proc.returncode, "wall_s": round(wall, 2)})
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        out["error"] = (proc.stdout + proc.stderr)[-3000:]
        return out
    out["inner_wall_s"] = data.get("wall_s")
    out["counts"] = data.get("counts")
    out["placement"] = [{"target": Path(p["target"]).name, "slot": p["slot"], "device": p["device"],
                         "wall_s": round(p["wall_s"] or 0, 2), "error": p["error"]} for p in data.get("placement", [])]
    # The work done, so that two wall times are compared for the same amount of it.
    db = state / "profd.db"
    if db.exists():
        with sqlite3.connect(db) as c:
            out["runs"] = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            out["candidates"] = c.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
            out["kept"] = c.execute("SELECT COUNT(*) FROM candidates WHERE accepted=1").fetchone()[0]
    return out


def table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'run':8} {'exit':>4} {'wall s':>8} {'runs':>5} {'cands':>6} {'kept':>5}  placement (target@slot s)"]
    for r in runs:
        place = ", ".join(f"{p['target']}@{p['slot'].split(':')[-1]} {p['wall_s']:.0f}"
                          for p in r.get("placement", []))
        lines.append(f"{r['label']:8} {r['exit']:>4} {r['wall_s']:>8.1f} {r.get('runs', '-'):>5} "
                     f"{r.get('candidates', '-'):>6} {r.get('kept', '-'):>5}  {place or r.get('error', '')[-200:]}")
    if len(runs) == 2 and runs[0].get("exit") == 0 and runs[1].get("exit") == 0:
        lines.append(f"speed-up with 2 slots: {runs[0]['wall_s'] / runs[1]['wall_s']:.2f}x "
                     f"({runs[0]['wall_s']:.1f} s -> {runs[1]['wall_s']:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=None, help="candidates per target (default 6; dry run 1)")
    p.add_argument("--dry-run", action="store_true", help="CPU only: 1 vs 2 CPU slots, Triton's interpreter")
    p.add_argument("--kernels", default=str(ROOT / "examples" / "kernels"), help="the targets (a directory)")
    p.add_argument("--only", nargs="*", help="just these file names from --kernels (dry run default: two small ones)")
    p.add_argument("--counters", action="store_true", help="also collect hardware counters (ncu) per target")
    p.add_argument("--timeout", type=float, default=300.0, help="per-measurement limit, s")
    p.add_argument("--run-timeout", type=float, default=3600.0, help="per nightly run limit, s")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where the JSON goes")
    p.add_argument("--runs", choices=("1", "2", "both"), default="both",
                   help="only the 1-GPU or the 2-GPU run (each fits a shorter time limit); the second call "
                        "adds its run to the same day's JSON for that device and budget")
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 1 if args.dry_run else 6
    preflight()
    device = "cpu" if args.dry_run else device_name()
    if not args.dry_run:
        sys.path.insert(0, str(ROOT))
        from profd.service.executors.local import local_gpus

        if len(local_gpus()) < 2:
            sys.exit(f"multi_gpu: needs 2 GPUs, this machine shows {len(local_gpus())}; use --dry-run for a CPU check")
    scratch = Path(tempfile.mkdtemp(prefix="profd-multigpu-"))
    kernels = Path(args.kernels).resolve()
    only = args.only if args.only is not None else (["vector_add.py", "kernelbench_relu.py", "softmax.py",
                                                     "transpose.py"] if args.dry_run else None)
    if only:  # a directory of just those targets (the nightly takes directories)
        sub = scratch / "kernels"
        sub.mkdir()
        for name in only:
            shutil.copy(kernels / name, sub / name)
        kernels = sub
    if args.dry_run:
        configs = [("1 slot", 'kind = "local"\ncpu_slots = 1'), ("2 slots", 'kind = "local"\ncpu_slots = 2')]
    else:
        configs = [("1 GPU", 'kind = "local"\ngpus = [0]'), ("2 GPUs", 'kind = "local"\ngpus = [0, 1]')]
    if args.runs != "both":
        configs = [configs[int(args.runs) - 1]]
    fresh = [one_run(label, ex, args, kernels, scratch) for label, ex in configs]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"multi-gpu-{time.strftime('%Y-%m-%d')}-{slug(device)}{'-dryrun' if args.dry_run else ''}.json"
    targets = sorted(f.name for f in kernels.glob("*.py"))
    runs = fresh
    if args.runs != "both" and dest.exists():  # the other run of the pair, from an earlier call
        try:
            old = json.loads(dest.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("budget") == args.budget and old.get("targets") == targets:
            keep = {r["label"]: r for r in old.get("runs", [])}
            keep.update({r["label"]: r for r in fresh})
            runs = [keep[label] for label, _ in ([("1 GPU", ""), ("2 GPUs", "")] if not args.dry_run
                                                 else [("1 slot", ""), ("2 slots", "")]) if label in keep]
    ok = len(runs) == 2 and all(r["exit"] == 0 for r in runs)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device, "host": platform.node(),
              "dry_run": args.dry_run, "budget": args.budget, "counters": args.counters, "targets": targets,
              "runs": runs, "speedup": round(runs[0]["wall_s"] / runs[1]["wall_s"], 3) if ok else None,
              "logs": str(scratch)}
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {dest} (logs and state: {scratch})")
    print(table(runs))
    return 0 if all(r["exit"] == 0 for r in fresh) else 1


if __name__ == "__main__":
    sys.exit(main())
