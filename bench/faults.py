"""Fault injection, counted (issue #9): faults injected / survived / records lost.

Runs the fault tests -- tests/test_faults.py and the fault tests of the other test files
(harness, daemon, watcher, collectors, LLM advisor, mail) -- in one pytest run with a
junit XML report, maps every test to the fault it injects, and prints one row per fault:

    fault | group | tests | injected | survived | records lost | skipped

* injected: tests of that fault that ran (GPU-only tests skip without a GPU: not injected);
* survived: those that passed (each asserts the daemon / harness stayed up, the user got a
  clear message, and nothing was lost);
* records lost: for the daemon faults of tests/test_faults.py, the saves with no stored
  result plus the jobs that never ended, as the tests count them (PROFD_FAULTS_LEDGER);
  for daemon tests of other files, 0 when they pass (they assert their job and result);
  "-" where no record is involved (a verdict, a parser); "?" when a test failed first.

Writes ``bench/results/faults-<YYYY-MM-DD>-<cpu|gpu>.json``. Usage::

    .venv/bin/python bench/faults.py [--out DIR] [--pytest-args ...]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]

H, D, W, C, L, M = ("tests/test_harness.py", "tests/test_daemon.py", "tests/test_watcher.py",
                    "tests/test_collectors_ncu.py", "tests/test_llm_advisor.py", "tests/test_mail.py")
F, R, T = "tests/test_faults.py", "tests/test_collectors_rocprof.py", "tests/test_tune.py"


@dataclass
class Fault:
    name: str
    group: str  # "fault" (issue #9's list), "verdict" (a faked speed-up), "security"
    tests: list[str]
    records: bool = False  # does the fault touch the queue/store (records lost is meaningful)?
    ledger: str = ""  # the fault's name in PROFD_FAULTS_LEDGER lines


FAULTS = [
    Fault("syntax error", "fault", [f"{H}::test_bad_targets_get_a_clear_verdict[syntax]",
                                    f"{H}::test_syntax_error_names_the_line"]),
    Fault("import error", "fault", [f"{H}::test_bad_targets_get_a_clear_verdict[import]"]),
    Fault("exception in the kernel", "fault", [f"{H}::test_bad_targets_get_a_clear_verdict[exception]",
                                               f"{H}::test_exception_in_kernel_names_the_user_line"]),
    Fault("infinite loop", "fault", [f"{H}::test_hanging_kernel_is_killed_and_reported"]),
    Fault("child crash (abort)", "fault", [f"{H}::test_child_crash_is_reported_not_raised"]),
    Fault("illegal memory access", "fault",
          [f"{F}::test_illegal_memory_access_then_the_next_measurement_in_the_same_warm_worker"]),
    Fault("GPU out of memory", "fault", [f"{F}::test_gpu_out_of_memory_is_named"]),
    Fault("NaN/Inf output", "fault", [f"{H}::test_bad_targets_get_a_clear_verdict[nan]"]),
    Fault("wrong output", "fault", [f"{H}::test_bad_targets_get_a_clear_verdict[wrong]"]),
    Fault("malformed ncu CSV", "fault", [f"{C}::test_garbage_is_a_malformed_capture",
                                         f"{C}::test_header_only_and_truncated_raw_are_errors",
                                         f"{C}::test_details_truncated_mid_row_keeps_complete_rows"]),
    Fault("malformed rocprof CSV", "fault", [f"{R}::test_garbage_and_header_only_and_truncated",
                                             f"{R}::test_outputs_without_kernel_counters_are_refused_with_a_reason"]),
    Fault("profiler missing", "fault", [f"{F}::test_profiler_missing_says_how_to_fix",
                                        f"{C}::test_run_without_ncu_raises_not_installed",
                                        f"{R}::test_run_without_rocprofv3_raises_not_installed"]),
    Fault("counter permission denied", "fault",
          [f"{F}::test_counters_permission_denied_says_how_to_fix",
           f"{F}::test_profile_with_counters_still_gives_verdict_and_timing",
           f"{F}::test_gpu_profile_with_counters_denied_keeps_verdict_and_timing",
           f"{C}::test_run_maps_permission_output_to_permission_error"]),
    Fault("LLM server down", "fault", [f"{L}::test_connection_refused_gives_up_with_a_clear_message",
                                       f"{L}::test_server_500_every_time_gives_up_with_a_message"]),
    Fault("429 with retry-after", "fault", [f"{L}::test_429_with_retry_after_is_respected",
                                            f"{L}::test_429_asking_for_a_long_wait_is_not_waited_for"]),
    Fault("LLM timeout", "fault", [f"{L}::test_timeout_gives_up_with_a_clear_message"]),
    Fault("LLM reply without code", "fault", [f"{L}::test_reply_without_code_gives_no_candidate_and_a_reason"]),
    Fault("5 MB LLM reply", "fault", [f"{L}::test_huge_reply_is_cut_off_quickly",
                                      f"{L}::test_huge_reply_without_content_length_is_cut_off_while_reading"]),
    Fault("SMTP down", "fault", [f"{M}::test_server_down_then_outbox_retry_delivers"], records=True),
    Fault("disk full on the state dir", "fault", [f"{F}::test_disk_full_on_the_state_dir"], records=True,
          ledger="disk full on the state dir"),
    Fault("save storm (200 saves in 2 s)", "fault",
          [f"{F}::test_save_storm_collapses_and_the_final_content_is_measured",
           f"{W}::test_burst_of_saves_collapses_to_one_job"], records=True, ledger="save storm (200 saves in 2 s)"),
    Fault("target deleted / renamed mid-job", "fault", [f"{F}::test_target_deleted_or_renamed_mid_job"],
          records=True, ledger="target deleted / renamed mid-job"),
    Fault("SIGKILL mid-job", "fault", [f"{D}::test_sigkill_mid_job_loses_nothing_and_the_job_reruns",
                                       f"{D}::test_sigterm_abandons_the_measurement_and_requeues_it"], records=True),
    Fault("inotify limit reached", "fault", [f"{F}::test_inotify_limit_falls_back_to_polling"], records=True,
          ledger="inotify limit reached"),
    Fault("cached output", "verdict", [f"{H}::test_bad_targets_get_a_clear_verdict[cached-output]"]),
    Fault("partial output write", "verdict", [f"{H}::test_bad_targets_get_a_clear_verdict[unwritten]",
                                              f"{T}::test_wrong_candidates_are_rejected_with_the_reason"]),
    Fault("mutated inputs", "verdict", [f"{H}::test_bad_targets_get_a_clear_verdict[mutates-input]"]),
    Fault("side-stream work (timer)", "verdict", [f"{F}::test_side_stream_work_is_caught_by_the_timer"]),
    Fault("hard-coded shape / precision loss", "verdict",
          [f"{F}::test_hard_coded_shape_and_precision_loss_are_rejected_with_the_reason",
           f"{H}::test_tolerance_override_and_precision_loss"]),
    Fault("candidate writes user files", "security",
          [f"{F}::test_apply_sandbox_allows_only_its_roots",
           f"{F}::test_kernel_cannot_write_the_users_files[warm]",
           f"{F}::test_kernel_cannot_write_the_users_files[cold]",
           f"{F}::test_kernel_cannot_write_the_store",
           f"{F}::test_a_kernel_under_the_temp_dir_is_protected_too",
           f"{F}::test_candidate_cannot_write_the_original",
           f"{F}::test_examples_still_run_under_the_sandbox_and_a_missing_sandbox_is_a_warning"]),
    Fault("secrets in logs/store/report; file modes", "security",
          [f"{F}::test_secrets_never_leak_and_state_files_are_private",
           f"{H}::test_child_cannot_see_secrets"]),
]


@dataclass
class Outcome:
    outcome: str  # passed, failed, error, skipped
    seconds: float
    message: str = ""


@dataclass
class Row:
    fault: str
    group: str
    tests: int
    injected: int
    survived: int
    skipped: int
    records_lost: Optional[int]  # None: not applicable
    unknown_loss: bool = False
    failed: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)

    def lost_text(self) -> str:
        if self.unknown_loss:
            return "?"
        return "-" if self.records_lost is None else str(self.records_lost)


def _nodeid(case: ET.Element) -> str:
    """junit classname 'tests.test_x' + name -> 'tests/test_x.py::name'."""
    cls = case.get("classname", "")
    parts = cls.split(".")
    # a test class would appear as tests.test_x.TestY; profd's tests are module-level functions
    mod = "/".join(parts) + ".py"
    return f"{mod}::{case.get('name', '')}"


def parse_junit(path: Path) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        t = float(case.get("time", "0") or 0)
        kind, msg = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                kind, msg = ("failed" if child.tag == "failure" else "error"), (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                kind, msg = "skipped", (child.get("message") or "")[:300]
        out[_nodeid(case)] = Outcome(kind, t, msg)
    return out


def tally(outcomes: dict[str, Outcome], ledger: list[dict]) -> list[Row]:
    rows = []
    for f in FAULTS:
        got: dict[str, Optional[Outcome]] = {}
        for t in f.tests:  # a parametrized test named without its parameters counts once per case
            cases = {k: v for k, v in outcomes.items() if k == t or ("[" not in t and k.startswith(t + "["))}
            got.update(cases or {t: None})
        missing = [t for t, o in got.items() if o is None]
        ran = {t: o for t, o in got.items() if o is not None and o.outcome != "skipped"}
        skipped = {t: o for t, o in got.items() if o is not None and o.outcome == "skipped"}
        passed = [t for t, o in ran.items() if o.outcome == "passed"]
        failed = [t for t in ran if t not in passed] + [f"{t} (not collected)" for t in missing]
        lost: Optional[int] = None
        unknown = False
        if f.records and ran:
            entries = [e for e in ledger if e.get("fault") == f.ledger] if f.ledger else []
            lost = sum(int(e["lost"]) for e in entries)
            # a test that failed before counting may have lost records: say so rather than guess
            unknown = bool(failed) and not entries
        rows.append(Row(f.name, f.group, len(got), len(ran) + len(missing), len(passed), len(skipped), lost,
                        unknown, failed, sorted({o.message for o in skipped.values()})))
    return rows


def table(rows: list[Row]) -> str:
    head = f"{'fault':42} {'group':8} {'injected':>8} {'survived':>8} {'records lost':>12} {'skipped':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.fault:42} {r.group:8} {r.injected:>8} {r.survived:>8} {r.lost_text():>12} {r.skipped:>7}")
    return "\n".join(lines)


def totals(rows: list[Row], group: Optional[str] = None) -> dict:
    sel = [r for r in rows if group is None or r.group == group]
    return {
        "kinds": len(sel),
        "kinds_injected": sum(1 for r in sel if r.injected),
        "kinds_survived": sum(1 for r in sel if r.injected and r.survived == r.injected),
        "tests_injected": sum(r.injected for r in sel),
        "tests_survived": sum(r.survived for r in sel),
        "records_lost": sum(r.records_lost or 0 for r in sel),
        "records_lost_unknown": sum(1 for r in sel if r.unknown_loss),
        "tests_skipped": sum(r.skipped for r in sel),
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results directory")
    ap.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], help="extra pytest arguments")
    args = ap.parse_args(argv)
    tests = sorted({t for f in FAULTS for t in f.tests})
    with tempfile.TemporaryDirectory(prefix="profd-faults-bench-") as tmp:
        junit, ledger_path = Path(tmp) / "junit.xml", Path(tmp) / "ledger.jsonl"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}",
               *tests, *args.pytest_args]
        env = dict(os.environ, PROFD_FAULTS_LEDGER=str(ledger_path))
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if not junit.exists():
            print(proc.stdout[-4000:] + proc.stderr[-4000:], file=sys.stderr)
            print("pytest wrote no junit report", file=sys.stderr)
            return 2
        outcomes = parse_junit(junit)
        ledger = [json.loads(ln) for ln in ledger_path.read_text().splitlines()] if ledger_path.exists() else []
    rows = tally(outcomes, ledger)
    print(table(rows))
    t_fault, t_all = totals(rows, "fault"), totals(rows)
    print()
    print(f"issue #9 faults: {t_fault['kinds_injected']} of {t_fault['kinds']} kinds injected here "
          f"({t_fault['tests_injected']} tests), {t_fault['kinds_survived']} kinds survived "
          f"({t_fault['tests_survived']} tests); records lost: {t_fault['records_lost']}"
          + (f" (+{t_fault['records_lost_unknown']} unknown)" if t_fault["records_lost_unknown"] else ""))
    print(f"all rows (faults + faked verdicts + security): {t_all['tests_injected']} injected / "
          f"{t_all['tests_survived']} survived / {t_all['records_lost']} records lost; "
          f"{t_all['tests_skipped']} skipped (GPU-only here)")
    for r in rows:
        for t in r.failed:
            print(f"FAILED [{r.fault}] {t}: {outcomes.get(t.split(' ')[0], Outcome('missing', 0)).message}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        torch_v = torch.__version__
    except Exception:
        cuda, torch_v = False, ""
    from profd.harness.sandbox import landlock_abi

    abi, why = landlock_abi()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout)
    device = "gpu" if cuda else "cpu"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"faults-{_dt.date.today():%Y-%m-%d}-{device}.json"
    data = {
        "benchmark": "faults", "issue": 9, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "device": device, "cuda": cuda, "torch": torch_v, "python": platform.python_version(),
        "kernel": platform.release(), "landlock_abi": abi, "landlock_note": why,
        "git_commit": commit, "git_dirty": dirty, "pytest_exit": proc.returncode, "wall_s": round(wall, 1),
        "command": " ".join(cmd[:8]) + f" <{len(tests)} tests>",
        "totals": {"issue_faults": t_fault, "all": t_all},
        "rows": [r.__dict__ for r in rows],
        "tests": {k: v.__dict__ for k, v in sorted(outcomes.items())},
        "ledger": ledger,
    }
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} ({wall:.0f} s)")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
