"""The ``profd`` command line. Every command takes ``--json``; exit codes:
0 success, 1 the target failed (incorrect, crashed, timed out), 2 bad input or
usage, 3 profd's own failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

EXIT_OK, EXIT_TARGET_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, exit code 2."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("profd")
    except Exception:  # running from a checkout that was never installed
        import tomllib

        data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
        return str(data["project"]["version"])


def _number(kind: type, minimum: float, flag: str, example: str, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` >= ``minimum`` (> with ``strict``), refused as bad input otherwise."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (strict and value == minimum):
            what = "a whole number" if kind is int else "a number"
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: give {what} {bound}, e.g. {flag} {example}")
        return value

    return parse


def _device_spec(name: str) -> Any:
    """The database entry ``--device NAME`` means; UserError (exit 2) naming the known keys otherwise."""
    import hwspecs

    try:
        return hwspecs.lookup(name)
    except KeyError as e:
        why = e.args[0] if e.args else name
        raise UserError(f"--device {name}: {why}. Give one of those keys (e.g. --device h100-sxm), or leave "
                        "--device out to use the detected GPU.") from None


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


def _target_file(p: str) -> Path:
    """An existing file that is a kernel target (checked without running it); UserError otherwise."""
    from profd.harness.recognise import not_a_target_reason

    path = _existing_file(p)
    reason = not_a_target_reason(path)
    if reason is not None:
        raise UserError(reason)
    return path


# --------------------------------------------------------------------------- commands


def cmd_profile(args: argparse.Namespace) -> int:
    from profd.flow.profile import profile
    from profd.store import Store

    path = _target_file(args.file)
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
    if not runs and not path.exists():
        raise UserError(f"{args.file}: no such file, and profd has no runs stored for it. Give the path of a "
                        "kernel target you profiled (`profd status` lists the targets with results).")
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


def _config(args: argparse.Namespace) -> Any:
    from profd import config

    try:
        return config.load(Path(args.config) if getattr(args, "config", None) else None)
    except config.ConfigError as e:
        raise UserError(str(e)) from None


def _run_daemon(args: argparse.Namespace, cfg: Any, service: bool) -> int:
    from profd.service.daemon import Daemon
    from profd.service.systemd import AlreadyRunning, setup_logging

    setup_logging(service=service, verbose=getattr(args, "verbose", False))
    try:
        return Daemon(cfg, service=service, config_file=Path(args.config) if args.config else None,
                      once=getattr(args, "once", False), json_events=bool(args.json) and not service).run()
    except AlreadyRunning as e:
        raise UserError(str(e)) from None


def cmd_watch(args: argparse.Namespace) -> int:
    cfg = _config(args)
    dirs = []
    for d in args.dirs:
        p = Path(d).expanduser().resolve()
        if not p.is_dir():
            raise UserError(f"{d}: not a directory. Give the directory that holds your kernel files.")
        dirs.append(str(p))
    cfg.watch.dirs = dirs
    if args.polling:
        cfg.watch.polling = True
    if args.no_counters:
        cfg.run.counters = False
    if args.cpu:
        cfg.run.force_cpu = True
    if args.tune is not None:
        cfg.run.auto_tune_budget = args.tune
    return _run_daemon(args, cfg, service=False)


def cmd_daemon(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if not cfg.watch.dirs:
        raise UserError(f"no directories to watch: set [watch] dirs in {cfg.source if cfg.source != 'defaults' else 'the config file'} "
                        "(or PROFD_WATCH_DIRS=dir1:dir2), or use `profd watch DIR` in the foreground.")
    return _run_daemon(args, cfg, service=True)


def cmd_status(args: argparse.Namespace) -> int:
    from profd.service.status import gather_status, render

    data = gather_status()
    _emit(args, data, render(data))
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune one file on the warm worker, taking turns with a running daemon on the GPU.

    ``--time``, Ctrl-C and SIGTERM end the session cleanly: the measurement in flight
    is abandoned, the best found so far is kept and its patch written, so that
    ``profd apply`` can use it. A second Ctrl-C stops at once (still recorded).
    """
    import signal
    import threading

    from profd.flow.profile import Cancelled
    from profd.flow.tune import Progress, build_advisors, local_device, open_runner, summary, tune
    from profd.service.status import gather_status
    from profd.store import Store

    path = _target_file(args.file)
    cfg = _config(args)
    if args.no_llm:
        cfg.llm = {}
    stop = threading.Event()
    why: dict[str, str] = {}
    prog = Progress(args.budget, enabled=not args.json)
    dev = local_device(args.cpu)

    def waiting(holder: Optional[dict[str, Any]]) -> None:
        who = f" ({holder['what']})" if holder and holder.get("what") else ""
        prog.say(f"waiting for {dev.name}: another profd process is measuring on it{who}; taking turns")

    # Advisors first: an LLM key leaves this process's environment before the warm worker starts.
    from profd.flow.tune import adopt_secrets

    advisors = build_advisors(cfg)
    for adv in advisors:
        adopt_secrets(adv)
    runner = open_runner(dev, should_abort=stop.is_set, on_wait=waiting)

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (the session is still closed)
        why["signal"] = signal.Signals(signum).name
        stop.set()
        runner.kill_current()  # abandon the measurement in flight; it is not counted

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        daemon = gather_status()
        if daemon["running"]:
            prog.say(f"a profd daemon (pid {daemon['daemon'].get('pid')}) is running: its jobs and this session "
                     f"take turns on {dev.name}, one measurement at a time")
        has_gpu = False
        if args.counters:  # only the counter pass needs to know (the probe may start a process)
            from profd.gpu import gpu_summary

            has_gpu, _ = gpu_summary()
        prog.say(f"tuning {path.name} on {dev.name} with a warm worker (budget {args.budget}"
                 f"{f', {args.time:g} s' if args.time is not None else ''}); Ctrl-C stops and keeps the best so far")
        with Store() as store:
            try:
                # A profile of this very content from the last minutes (the daemon's verdict on the
                # save, ``profd profile``) stands for the baseline's: no second measurement.
                from profd.flow.profile import recent_profile

                res = tune(path, store, budget=args.budget, time_budget_s=args.time, advisors=advisors,
                           profiled=recent_profile(store, path), device_name=dev.name,
                           runner=runner, counters=args.counters and has_gpu, force_cpu=args.cpu,
                           timeout_s=args.timeout, progress=prog, should_stop=stop.is_set, warm=runner,
                           allow_fallback=args.allow_fallback,
                           stop_reason=lambda: f"stopped by {why.get('signal', 'a signal')}; the best so far is kept")
            except Cancelled:
                _emit(args, {"target": str(path), "stopped": f"stopped by {why.get('signal')} during the baseline",
                             "evaluated": 0}, f"stopped by {why.get('signal')} before the baseline was measured; "
                                              "nothing was recorded")
                return 128 + int(getattr(signal, why.get("signal", "SIGINT")))
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        runner.close()
    data = res.to_dict()
    data["device"] = {"name": dev.name, "lock": dev.key}
    _emit(args, data, summary(res))
    if not res.baseline.correct:
        return EXIT_TARGET_FAILED
    if "signal" in why:
        return 128 + int(getattr(signal, why["signal"]))
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from profd.flow.apply import ApplyError, apply_best
    from profd.store import Store

    path = _existing_file(args.file)
    with Store() as store:
        try:
            a = apply_best(path, store, force=args.force, session_id=args.session)
        except ApplyError as e:
            raise UserError(str(e)) from None
    _emit(args, a.__dict__, a.message())
    return EXIT_OK


def cmd_specs(args: argparse.Namespace) -> int:
    import hwspecs
    from hwspecs.ceilings import ceilings_for, measure_ceilings

    spec = _device_spec(args.device) if args.device else None
    detected = None if args.device and not args.measure else hwspecs.detect()
    if args.measure and (detected is None or not detected.is_gpu):
        why = f" ({detected.message})" if detected is not None and detected.message else ""
        raise UserError(f"--measure needs the GPU it measures, and this machine has none{why}. Run "
                        "`profd specs --measure` on the machine with the device; every later report there uses "
                        "the measured ceilings.")
    if args.measure and spec is None and detected.spec is None:  # type: ignore[union-attr]
        raise UserError(f"--measure: the detected GPU ({detected.name}) is not in profd's device database, so "  # type: ignore[union-attr]
                        "there is no entry to attach the measured ceilings to. Pass --device with the closest "
                        "entry (`profd specs --device x` lists the keys).")
    spec = spec or (detected.spec if detected is not None else None)
    ceil = None
    if spec is not None:
        if args.measure:
            from profd.paths import state_dir

            ceil = measure_ceilings(spec, state_dir())  # cached: every later report uses them
        else:
            ceil = ceilings_for(spec)
    _emit(args, hwspecs.specs_json(detected, ceil, spec=spec), hwspecs.describe(detected, ceil, spec=spec))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from profd.flow.explain import explain
    from collectors.errors import CaptureError

    path = Path(args.capture).expanduser()
    if not path.exists():
        raise UserError(f"{args.capture}: no such file. Give an ncu CSV (--csv --page raw or details), a .ncu-rep, "
                        "or a rocprof / rocprofv3 / rocprof-compute CSV.")
    source = _existing_file(args.source) if args.source else None
    if args.device:
        _device_spec(args.device)  # an unknown device is bad input here too, as for `profd specs`
    try:
        res = explain(path, args.device, source=source)
    except CaptureError as e:
        raise UserError(str(e)) from None
    except KeyError as e:
        raise UserError(str(e.args[0] if e.args else e)) from None
    from advisors.diagnosis import kernel_rows

    # Launch geometry alone (what a kernel-list export holds) is nothing to diagnose.
    if not any(set(r.metrics) - {"block_size", "grid_size"} for r in kernel_rows(res.table)):
        raise UserError(f"{args.capture}: the capture holds no kernel metrics ({res.table.source}, "
                        f"{len(res.table.frame) if res.table.frame is not None else 0} launch row(s)), so there is "
                        "nothing to explain. Export the metrics: `ncu --csv --page raw -i report.ncu-rep > "
                        "raw.csv` (or --page details), or a rocprof counter CSV (rocprofv3 --pmc ...).")
    _emit(args, res.to_dict(), res.text)
    return EXIT_OK


def cmd_nightly(args: argparse.Namespace) -> int:
    from profd.gpu import gpu_summary
    from profd.service.jobqueue import JobQueue
    from profd.model import JobKind
    from profd.flow.nightly import run_inline, targets_of
    from profd.service.status import gather_status
    from profd.store import Store

    cfg = _config(args)
    if args.dirs:
        cfg.watch.dirs = [str(Path(d).expanduser().resolve()) for d in args.dirs]
    if args.budget is not None:
        cfg.nightly.budget = args.budget
    if args.cpu:
        cfg.run.force_cpu = True
    with Store() as store:
        targets = targets_of(cfg, store)
        if not targets:
            raise UserError("no targets: set [watch] dirs in the config, pass directories, or profile a file first.")
        if gather_status()["running"] and not args.inline:
            from profd.flow.nightly import retry_mail

            kept = retry_mail(cfg)  # the start of a nightly is a retry point, daemon or not
            if kept and not args.json:
                print(kept, file=sys.stderr)
            q = JobQueue(store)
            jobs = [q.enqueue(t, JobKind.NIGHTLY)[0].id for t in targets]
            _emit(args, {"queued": jobs}, f"queued {len(jobs)} nightly job(s) in the running daemon; saves go first. "
                                          "The report is written when the last one finishes (`profd report`).")
            return EXIT_OK
        from profd.service.executors import ExecutorError

        has_gpu, _ = gpu_summary()
        placement: list[dict[str, Any]] = []
        t0 = time.time()
        try:
            # On the configured executor: one target per GPU (slot) at a time.
            rep, where, note = run_inline(cfg, store, has_gpu=has_gpu and not cfg.run.force_cpu, targets=targets,
                                          say=lambda s: None if args.json else print(s, file=sys.stderr),
                                          on_done=placement.append)
        except ExecutorError as e:  # a wrong [executor] table, no slot to run on
            raise UserError(f"cannot run the nightly: {e}") from None
    _emit(args, {"report": str(where), "mail": note, "counts": rep.counts(), "wall_s": round(time.time() - t0, 2),
                 "placement": placement},
          f"nightly report: {where}\n{note}\n" + ", ".join(f"{k}: {v}" for k, v in rep.counts().items()))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from profd.report.nightly import load_latest

    saved = load_latest()
    if saved is None:
        raise UserError("no nightly report yet: run `profd nightly` (or wait for the timer).")
    _emit(args, saved.to_dict(), saved.text() + f"\n(HTML: {saved.html_path})")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from profd.doctor import render, run_checks

    cfg = _config(args)
    checks = run_checks(cfg, progress=(lambda c: None) if args.json else (lambda c: print(render(c), flush=True)))
    if args.json:
        print(json.dumps({"checks": [c.to_dict() for c in checks]}, indent=2))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_TARGET_FAILED


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profd", description="Profiling-guided optimization daemon for GPU kernels.")
    p.add_argument("--version", action="version", version=f"profd {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("-v", "--verbose", action="store_true",
                        help="more detail: debug logging, and a traceback when profd itself fails")
    timeout = _number(float, 0, "--timeout", "120", strict=True)

    s = sub.add_parser("profile", parents=[common], help="verify, time and diagnose one target now")
    s.add_argument("file")
    s.add_argument("--counters", action="store_true", help="also collect hardware counters (ncu/rocprof)")
    s.add_argument("--full", action="store_true", help="collect the profiler's full metric set")
    s.add_argument("--timeout", type=timeout, default=120.0, help="seconds before a run is killed (default 120)")
    s.add_argument("--cpu", action="store_true", help="run in Triton's CPU interpreter even if a GPU exists")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser("history", parents=[common], help="stored runs of one target")
    s.add_argument("file")
    s.add_argument("--limit", type=_number(int, 1, "--limit", "50"), default=50)
    s.set_defaults(func=cmd_history)

    s = sub.add_parser("specs", parents=[common], help="the detected device, its database entry and roofline")
    s.add_argument("--device", help="show a database entry instead of the detected GPU (e.g. h100-sxm, MI300X)")
    s.add_argument("--measure", action="store_true", help="measure the copy bandwidth and matmul ceilings now")
    s.set_defaults(func=cmd_specs)

    s = sub.add_parser("explain", parents=[common], help="explain a profiler capture you already have (no GPU)")
    s.add_argument("capture", help="ncu CSV / .ncu-rep, rocprof / rocprofv3 / rocprof-compute CSV")
    s.add_argument("--device", help="the GPU it was captured on, when the file does not say (e.g. h200)")
    s.add_argument("--source", help="the kernel's source file, so levers name your knobs and lines")
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser("tune", parents=[common], help="try rewrites, keep what is correct and faster")
    s.add_argument("file")
    s.add_argument("--budget", type=_number(int, 1, "--budget", "24"), default=24,
                   help="candidates to evaluate (default 24)")
    s.add_argument("--time", type=_number(float, 0, "--time", "600", strict=True), default=None,
                   help="stop after this many seconds, keeping the best so far (Ctrl-C and SIGTERM do the same)")
    s.add_argument("--counters", action="store_true", help="profile the baseline for findings (GPU)")
    s.add_argument("--no-llm", action="store_true", help="deterministic advisor only, even if [llm] is set")
    s.add_argument("--allow-fallback", action="store_true",
                   help="keep candidates that launch no kernel of their own (plain PyTorch), if faster")
    s.add_argument("--cpu", action="store_true", help="run in Triton's CPU interpreter even if a GPU exists")
    s.add_argument("--timeout", type=timeout, default=120.0)
    s.add_argument("--config", help="config file")
    s.set_defaults(func=cmd_tune)

    s = sub.add_parser("apply", parents=[common], help="write the best tuned candidate into the file (with backup)")
    s.add_argument("file")
    s.add_argument("--force", action="store_true", help="even if the file changed since tuning")
    s.add_argument("--session", type=int, help="a specific tuning session (default: the latest)")
    s.set_defaults(func=cmd_apply)

    s = sub.add_parser("nightly", parents=[common], help="re-check, tune deeper and report on every target")
    s.add_argument("dirs", nargs="*", metavar="DIR", help="kernel directories (default: [watch] dirs)")
    s.add_argument("--budget", type=_number(int, 0, "--budget", "48"),
                   help="candidates per target (default: [nightly] budget; 0: re-check only)")
    s.add_argument("--inline", action="store_true", help="run here even if a daemon is running")
    s.add_argument("--cpu", action="store_true", help="run in Triton's CPU interpreter")
    s.add_argument("--config", help="config file")
    s.set_defaults(func=cmd_nightly)

    s = sub.add_parser("report", parents=[common], help="show the latest nightly report")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("doctor", parents=[common], help="check GPU, profiler permissions, LLM endpoint, mail")
    s.add_argument("--config", help="config file")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("watch", parents=[common], help="watch directories in the foreground; re-check every save")
    s.add_argument("dirs", nargs="+", metavar="DIR")
    s.add_argument("--config", help="config file (default: $XDG_CONFIG_HOME/profd/config.toml)")
    s.add_argument("--polling", action="store_true", help="poll instead of inotify (network file systems)")
    s.add_argument("--no-counters", action="store_true", help="skip the hardware-counter pass")
    s.add_argument("--cpu", action="store_true", help="run kernels in Triton's CPU interpreter")
    s.add_argument("--tune", type=_number(int, 0, "--tune", "8"), metavar="N",
                   help="after each correct save, try N candidates automatically")
    s.add_argument("--once", action="store_true", help="exit once the initial scan's jobs are done")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("daemon", parents=[common], help="service mode (systemd Type=notify)")
    s.add_argument("--config", help="config file (default: $XDG_CONFIG_HOME/profd/config.toml)")
    s.set_defaults(func=cmd_daemon)

    s = sub.add_parser("status", parents=[common], help="is the daemon running; queue; last results")
    s.set_defaults(func=cmd_status)
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
        _error(args, str(e), "bad_input")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # profd's own failure: one paragraph with the fix; the traceback only with -v
        if getattr(args, "verbose", False):
            import traceback

            traceback.print_exc()
        _error(args, internal_error_paragraph(e, verbose=getattr(args, "verbose", False)), "internal")
        return EXIT_INTERNAL


def _error(args: argparse.Namespace, text: str, kind: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": text, "kind": kind}))
    else:
        print(f"profd: {text}", file=sys.stderr)


def internal_error_paragraph(e: BaseException, verbose: bool = False) -> str:
    """What went wrong inside profd, as one paragraph that says what to do."""
    import sqlite3

    from profd.paths import state_dir

    more = "" if verbose else " (run the command again with -v for the traceback)"
    where = Path(os.environ.get("PROFD_STATE_DIR") or "") if os.environ.get("PROFD_STATE_DIR") else None
    try:
        sd = where or state_dir()
    except Exception:
        sd = where or Path("~/.local/state/profd")
    if isinstance(e, sqlite3.DatabaseError):
        return (f"profd's state database {sd / 'profd.db'} cannot be used: {e}. It is not a profd database, or "
                f"it is damaged. Move it away (`mv {sd / 'profd.db'} {sd / 'profd.db.bad'}`; profd then starts an "
                f"empty one) or point PROFD_STATE_DIR at another directory{more}.")
    if isinstance(e, OSError) and (sd.exists() and not sd.is_dir() or
                                   any(p.exists() and not p.is_dir() for p in sd.parents)):
        return (f"profd's state directory {sd} is not a directory ({e.strerror or e}). Move the file that is in "
                f"the way, or point PROFD_STATE_DIR at a directory you own{more}.")
    if isinstance(e, OSError) and e.filename and str(e.filename).startswith(str(sd)):
        return (f"profd cannot use its state directory {sd}: {e.strerror or e} ({e.filename}). Check that it is "
                f"yours, writable and not full, or point PROFD_STATE_DIR elsewhere{more}.")
    return (f"profd failed inside itself: {type(e).__name__}: {e}. This is profd's fault, not your kernel's; "
            f"please report it with the traceback{more}.")


if __name__ == "__main__":
    sys.exit(main())
