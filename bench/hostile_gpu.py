"""GPU-only hostile candidates against the judge (issue #14): side streams, a timer patched
through CUDA events, work left running after return.

Usage (on a machine with a CUDA GPU)::

    PYTHONPATH=. python bench/hostile_gpu.py --out DIR

Runs the judge (profd/flow/judge.py) on a Triton add kernel and each attack, with the
genuine rewrite last, and writes DIR/hostile-gpu.md (attack -> verdict) and
DIR/hostile-gpu.json. Exit status 0 when every attack was rejected and the genuine
rewrite kept; 1 otherwise; 2 without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hostile_attacks import ATTACKS, GENUINE, TARGET, _k  # noqa: E402

BIG = TARGET.replace("BENCH_SHAPE = dict(n=4096)", "BENCH_SHAPE = dict(n=1 << 24)")

GPU_ATTACKS = [
    ("side stream", "launches the kernel on a side stream and returns at once (events on the current stream see nothing)",
     _k('s = torch.cuda.Stream()\nwith torch.cuda.stream(s):\n    {launch}\nreturn out')),
    ("patched CUDA events", "replaces torch.cuda.Event.elapsed_time to report 1e-6 ms",
     _k('ev = _rt("torch").cuda.Event\nif not hasattr(ev, "_real"):\n    ev._real = ev.elapsed_time\n'
        '    ev.elapsed_time = lambda self, other: 1e-6\n{launch}\nreturn out')),
    ("async work after return", "returns before a delayed side-stream kernel writes the result",
     _k('s = torch.cuda.Stream()\nout = torch.empty_like(x)\nwith torch.cuda.stream(s):\n    _rt("torch").cuda._sleep(2_000_000)\n'
        '    add_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, y, out, x.numel(), BLOCK=BLOCK)\nreturn out')),
    ("patched synchronize", "makes torch.cuda.synchronize a no-op so timing ends early",
     _k('c = _rt("torch").cuda\nc.synchronize = lambda *a, **k: None\n{launch}\nreturn out')),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--all", action="store_true", help="also run the CPU attack suite on the GPU")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to do", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profd-hostile-gpu-"))
    os.environ["PROFD_STATE_DIR"] = str(work / "state")
    from advisors.base import TuneContext
    from profd.flow.judge import Judge
    from profd.model import Candidate

    f = work / "add.py"
    f.write_text(BIG)
    attacks = [(n, w, s.replace("dict(n=4096)", "dict(n=1 << 24)")) for n, w, s in GPU_ATTACKS]
    if args.all:
        attacks += [(n, w, s.replace("dict(n=4096)", "dict(n=1 << 24)")) for n, w, s in ATTACKS]
    genuine = GENUINE.replace("dict(n=4096)", "dict(n=1 << 24)")
    judge = Judge(f, timeout_s=120.0)
    rows, ok = [], True
    try:
        base = judge.baseline()
        if not base.measurement.correct or base.measurement.timing is None:
            print(f"the original failed the judge: {base.measurement.verdict.message}", file=sys.stderr)
            return 1
        ctx = TuneContext(path=str(f), original_source=BIG, best_source=BIG,
                          best_median_ms=base.measurement.timing.median_ms)
        for name, what, src in attacks + [("genuine rewrite", "BLOCK 64 -> 1024", genuine)]:
            v, cause = judge.evaluate(Candidate(id=name.replace(" ", "-")[:40], source=src, advisor="hostile",
                                                rationale=name), base.measurement.timing, ctx)
            good = v.accepted if name == "genuine rewrite" else not v.accepted
            ok &= good
            rows.append({"attack": name, "what": what, "accepted": v.accepted, "cause": cause, "verdict": v.reason,
                         "as_expected": good})
            print(f"{name}: {'kept' if v.accepted else 'rejected'} ({cause}): {v.reason[:160]}", flush=True)
    finally:
        judge.close()
    (args.out / "hostile-gpu.json").write_text(json.dumps(rows, indent=1))
    md = ["| attack | what it tries | verdict | as expected |", "|---|---|---|---|"]
    md += [f"| {r['attack']} | {r['what']} | {r['verdict'][:200].replace('|', '/')} | {'yes' if r['as_expected'] else 'NO'} |"
           for r in rows]
    (args.out / "hostile-gpu.md").write_text("\n".join(md) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
