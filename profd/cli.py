"""The ``profd`` command line. Every command takes ``--json``; exit codes:
0 success, 1 the target failed (incorrect, crashed, timed out), 2 bad input or
usage, 3 profd's own failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

EXIT_OK, EXIT_TARGET_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, exit code 2."""


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def _existing_file(p: str) -> Path:
    path = Path(p).expanduser()
    if not path.is_file():
        raise UserError(f"{p}: no such file. Give the path of a kernel target (a .py file); see examples/kernels/.")
    return path.resolve()


# --------------------------------------------------------------------------- commands


def cmd_profile(args: argparse.Namespace) -> int:
    from profd.pipeline import profile
    from profd.store import Store

    path = _existing_file(args.file)
    with Store() as store:
        res = profile(path, store, counters=args.counters, full_set=args.full, timeout_s=args.timeout,
                      force_cpu=args.cpu)
    _emit(args, res.to_dict(), res.report)
    return EXIT_OK if res.measurement.correct else EXIT_TARGET_FAILED


def cmd_history(args: argparse.Namespace) -> int:
    from profd.store import Store

    path = Path(args.file).expanduser().resolve()
    with Store() as store:
        runs = store.history(path, limit=args.limit)
    if not runs:
        _emit(args, {"target": str(path), "runs": []},
              f"No runs recorded for {path}. Run `profd profile {args.file}` (or save it under `profd watch`).")
        return EXIT_OK
    lines = [f"History of {path} ({len(runs)} runs, newest first)", ""]
    lines.append(f"{'run':>5}  {'when':19}  {'hash':8}  {'status':14}  {'median':>12}  {'spread':>7}  {'rate':>14}  device")
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
        med = f"{r.median_ms:.4f} ms" if r.median_ms is not None else "-"
        spread = f"{r.spread_pct:.1f}%" if r.spread_pct is not None else "-"
        rate = f"{r.tflops:.1f} TFLOP/s" if r.tflops else (f"{r.gbps:.1f} GB/s" if r.gbps else "-")
        flag = "" if r.representative or r.median_ms is None else " (cpu)"
        lines.append(f"{r.id:>5}  {when}  {r.content_hash[:8]}  {r.status:14}  {med:>12}  {spread:>7}  {rate:>14}  "
                     f"{r.device or '-'}{flag}")
    _emit(args, {"target": str(path), "runs": [r.to_dict() for r in runs]}, "\n".join(lines))
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profd", description="Profiling-guided optimization daemon for GPU kernels.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("profile", parents=[common], help="verify, time and diagnose one target now")
    s.add_argument("file")
    s.add_argument("--counters", action="store_true", help="also collect hardware counters (ncu/rocprof)")
    s.add_argument("--full", action="store_true", help="collect the profiler's full metric set")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is killed (default 120)")
    s.add_argument("--cpu", action="store_true", help="run in Triton's CPU interpreter even if a GPU exists")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("history", parents=[common], help="stored runs of one target")
    s.add_argument("file")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=cmd_history)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Optional[Callable[[argparse.Namespace], int]] = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except UserError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e)}))
        else:
            print(f"profd: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
