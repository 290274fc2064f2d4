"""How much of the available speed-up does `profd tune` recover on real-world kernels? (issue 17)

For every target of the real-world corpus (bench/realworld: upstream Liger-Kernel, unsloth, fla
and FlagGems kernels materialized from pinned wheels), this runs ``profd.flow.tune.tune`` with the
deterministic advisor and records: baseline and best median, speed-up, candidates evaluated, how
many failed (wrong / crashed / illegal access: a grid-launch mismatch shows up here), the kept
diff, what knob discovery found (name, site, line, static and run-time value) and the launches
recorded at run time. Results go to OUT/realworld_tune.json and OUT/realworld_tune.md.

    python3 bench/realworld_tune.py OUT [--budget 24] [--only liger_softmax ...] [--corpus DIR] [--cpu]

The exhaustive anchor (what is available from launch knobs alone) is bench/realworld/grid.py;
compare ``speedup`` here with its best point per target.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--corpus", type=Path, default=ROOT / "bench" / "realworld")
    ap.add_argument("--cpu", action="store_true", help="Triton interpreter (a dry run; tiny budgets only)")
    args = ap.parse_args(argv)
    if not (args.corpus / "materialize.py").exists():
        print(f"no corpus at {args.corpus}: merge the `corpus` branch or pass --corpus DIR", file=sys.stderr)
        return 2
    sys.path.insert(0, str(args.corpus))
    materialize = _load(args.corpus / "materialize.py", "realworld_materialize")

    from advisors.knobs import discover
    from advisors.rewriters.deterministic import DeterministicAdvisor
    from profd.flow.tune import tune
    from profd.store import Store

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profd-realworld-"))
    paths = sorted(materialize.materialize(work / "targets", only=args.only or None))
    rows: list[dict[str, Any]] = []
    with Store(work / "profd.db") as store:
        for path in paths:
            t0 = time.time()
            try:
                res = tune(path, store, budget=args.budget, advisors=[DeterministicAdvisor()], force_cpu=args.cpu,
                           timeout_s=300.0)
            except Exception as e:  # one target's failure must not lose the others
                rows.append({"target": path.stem, "error": f"{type(e).__name__}: {e}"})
                continue
            knobs = discover(path.read_text())
            if res.baseline.launches:
                knobs = knobs.with_runtime(res.baseline.launches)
            failed = [a.verdict.reason for a in res.attempts
                      if a.verdict.measurement is not None and not a.verdict.measurement.correct]
            rows.append({
                "target": path.stem, "baseline_ms": res.baseline_ms, "best_ms": res.best_ms,
                "speedup": (res.baseline_ms / res.best_ms) if res.baseline_ms and res.best_ms else None,
                "evaluated": res.evaluated, "failed": len(failed), "failures": failed[:5],
                "kept": res.best_candidate, "stopped": res.stopped, "wall_s": round(time.time() - t0, 1),
                "kept_diff": next((a.candidate.diff for a in res.attempts if a.candidate.id == res.best_candidate), ""),
                "knobs": [{"name": k.name, "kernel": k.kernel, "site": k.site, "line": k.line, "value": k.value,
                           "runtime": k.runtime} for k in knobs.knobs],
                "launches": [r.to_dict() for r in res.baseline.launches],
            })
            (args.out / "realworld_tune.json").write_text(json.dumps(rows, indent=1, default=str))
    lines = ["| target | baseline ms | best ms | speed-up | evaluated | failed | kept |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | error: {r['error'][:80]} | | | | | |")
            continue
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        lines.append(f"| {r['target']} | {r['baseline_ms'] or 0:.4g} | {r['best_ms'] or 0:.4g} | {sp} | "
                     f"{r['evaluated']} | {r['failed']} | {r['kept'] or '-'} |")
    (args.out / "realworld_tune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
