"""``profd explain`` end to end on real captures, and the report it renders.

The captures are committed under ``tests/fixtures/`` (their sources in its README); tests skip
with a reason only when the collectors are absent.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from advisors.report import SECTION_TITLES, findings_json, render_markdown, render_terminal
from profd.model import (
    Candidate, CandidateVerdict, Evidence, Finding, Lever, Measurement, OutputCheck, Severity, Status, Timing,
    Verdict,
)

ROOT = Path(__file__).resolve().parents[1]
try:
    from support import FIXTURES
except ImportError:  # pragma: no cover
    from tests.support import FIXTURES

NCU = FIXTURES / "ncu"
ROCPROF = FIXTURES / "rocprof"
MATMUL_CAPTURE = NCU / "h200_matmul_full_details.csv"
VECTOR_CAPTURE = NCU / "h200_vector_add_basic_raw.csv"
MI300X_CAPTURE = ROCPROF / "v2_mi300x_omniperf_pmc_perf.csv"
STENCIL_CAPTURE = ROCPROF / "v1_mi250x_stencil_bankconflicts_pmc.csv"
MATMUL_SOURCE = ROOT / "examples" / "kernels" / "matmul.py"

_have_collectors = all(importlib.util.find_spec(m) is not None for m in ("collectors.ncu", "collectors.rocprof"))
needs_collectors = pytest.mark.skipif(not _have_collectors, reason="collectors.ncu / collectors.rocprof not there yet")


def capture(path: Path) -> Path:
    assert path.exists(), f"fixture {path} is missing: it is part of the repository (tests/fixtures/README.md)"
    return path


def section_positions(md: str) -> list[int]:
    return [md.find(f"## {t}") for t in SECTION_TITLES]


def section(md: str, n: int) -> str:
    """The text of section ``n`` (1-based)."""
    start = md.find(f"## {SECTION_TITLES[n - 1]}")
    end = md.find(f"## {SECTION_TITLES[n]}") if n < len(SECTION_TITLES) else len(md)
    return md[start:end]


def explain(*args, **kw):
    from profd.flow.explain import explain as run

    return run(*args, **kw)


def find(findings, rule):
    hits = [f for f in findings if f.rule == rule]
    assert hits, f"no {rule} finding in {[f.rule for f in findings]}"
    return hits[0]


def ev(finding, metric):
    return next(e for e in finding.evidence if e.metric == metric)


# --------------------------------------------------------------------------- NVIDIA captures


@needs_collectors
def test_h200_matmul_capture_finds_l2_locality_and_bank_conflicts():
    res = explain(capture(MATMUL_CAPTURE), device="h200")
    assert res.spec is not None and res.spec.key == "h200-sxm"
    rules = [f.rule for f in res.findings]
    l2 = find(res.findings, "l2-locality")
    bank = find(res.findings, "smem-bank-conflicts")
    assert rules[0] == "l2-locality"  # the biggest lever ranks first

    # The evidence is the capture's own numbers for the launch diagnosed (the longer of the two).
    frame = res.table.frame
    launch = frame["duration_ns"].astype(float).idxmax()
    assert ev(l2, "l2_hit_rate_pct").value == pytest.approx(float(frame.loc[launch, "l2_hit_rate_pct"]))
    assert ev(l2, "l2_hit_rate_pct").value < ev(l2, "l2_hit_rate_pct").threshold
    assert ev(l2, "l2_throughput_pct").value == pytest.approx(float(frame.loc[launch, "l2_throughput_pct"]))
    share = ev(bank, "smem_conflict_share_st").value
    assert share == pytest.approx(100 * frame.loc[launch, "smem_bank_conflicts_st"] /
                                  frame.loc[launch, "smem_wavefronts_st"])
    assert any(s.startswith("ncu SharedMemoryConflicts") for s in bank.supporting)
    assert "program order" in [lv.name for lv in l2.levers]

    occ = find(res.findings, "occupancy")
    assert next(e for e in occ.evidence if e.comparison == "limiter").metric == "occupancy_limit_registers"
    assert res.roofline is not None and res.roofline.bound == "memory-bound"

    md = res.markdown
    pos = section_positions(md)
    assert all(p >= 0 for p in pos) and pos == sorted(pos)
    assert "Not checked" in section(md, 1)
    assert "datasheet" in section(md, 3)
    limits = section(md, 4)
    assert limits.index("Poor L2 reuse") < limits.index("Shared-memory bank conflicts")
    profiler = section(md, 5)
    assert "MemoryL2Compression" in profiler.split("Not matched to a finding")[1]  # shown though unmatched
    assert "TheoreticalOccupancy" in profiler


@needs_collectors
def test_h200_matmul_levers_name_the_knobs_in_the_source():
    if not MATMUL_SOURCE.exists():
        pytest.skip("examples/kernels/matmul.py not written yet")
    res = explain(capture(MATMUL_CAPTURE), device="h200", source=MATMUL_SOURCE)
    text = MATMUL_SOURCE.read_text().splitlines()
    l2 = find(res.findings, "l2-locality")
    group = next(lv for lv in l2.levers if lv.name == "GROUP_M")
    assert text[group.line - 1].startswith("GROUP_M = ")
    assert f"**GROUP_M** = {group.current} at line {group.line}: set to 8" in res.markdown
    assert f"GROUP_M = {group.current} at line {group.line}: set to 8" in res.text
    bank = find(res.findings, "smem-bank-conflicts")
    bk = next(lv for lv in bank.levers if lv.name == "BLOCK_K")
    assert text[bk.line - 1].startswith("BLOCK_K = ") and int(bk.suggested) > int(bk.current)


@needs_collectors
def test_matmul_capture_without_device_still_diagnoses_and_says_why_no_ceilings():
    res = explain(capture(MATMUL_CAPTURE))
    assert res.spec is None and res.ceilings is None
    assert "--device" in res.device_note
    assert {"l2-locality", "smem-bank-conflicts"} <= {f.rule for f in res.findings}
    assert "No ceilings" in section(res.markdown, 3)


@needs_collectors
def test_h200_vector_add_is_near_the_dram_limit():
    res = explain(capture(VECTOR_CAPTURE))
    assert res.spec is not None and res.spec.vendor == "NVIDIA"  # named in the capture itself
    near = find(res.findings, "near-limit")
    dram = float(res.table.frame["dram_throughput_pct"].iloc[0])
    assert ev(near, "dram_throughput_pct").value == pytest.approx(dram)
    assert near.severity == Severity.INFO
    assert "memory-parallelism" not in {f.rule for f in res.findings}
    json.dumps(res.to_dict())  # --json must serialize


# --------------------------------------------------------------------------- AMD captures


@needs_collectors
def test_mi300x_rocprof_capture_goes_through_the_same_rules():
    res = explain(capture(MI300X_CAPTURE))
    assert res.spec is not None and res.spec.vendor == "AMD"
    mp = find(res.findings, "memory-parallelism")
    bw = ev(mp, "dram_bandwidth_bytes_per_s")
    frame = res.table.frame
    assert bw.value == pytest.approx(float(frame["dram_bandwidth_bytes_per_s"].median()), rel=0.2)
    assert bw.value < bw.threshold == pytest.approx(0.6 * res.ceilings.memory_gbps * 1e9)
    assert res.roofline.bound in ("latency-bound", "memory-bound")
    md = res.markdown
    assert section_positions(md) == sorted(section_positions(md))
    assert "rocprof has no guided-analysis rules" in section(md, 5)


@needs_collectors
def test_mi250x_stencil_capture_occupancy_fires_and_bank_conflict_rule_stays_silent_on_zero():
    from advisors.diagnosis import contexts
    from advisors.rules import get_rule

    res = explain(capture(STENCIL_CAPTURE), device="mi250x")
    assert res.spec is not None and res.spec.key == "mi250x"
    occ = [f for f in res.findings if f.rule == "occupancy"]
    assert occ, "the high-VGPR stencil kernels should be occupancy-limited"
    frame = res.table.frame
    for f in occ:
        regs = float(frame[frame["kernel"] == f.kernel]["registers_per_thread"].median())
        assert ev(f, "registers_per_thread").value == regs
        assert "estimated" in f.summary
    # The capture measured LDSBankConflict on every kernel and it is zero: the rule applies and is quiet.
    assert float(frame["smem_bank_conflict_pct"].max()) == 0.0
    rule = get_rule("smem-bank-conflicts")
    for ctx in contexts(res.table, res.spec, res.ceilings):
        assert rule.applies(ctx) and rule.evaluate(ctx) is None
    assert "smem-bank-conflicts" not in {f.rule for f in res.findings}


# --------------------------------------------------------------------------- the report itself


def _measurement(median: float, status: Status = Status.CORRECT, p25=None, p75=None) -> Measurement:
    timing = Timing(median_ms=median, min_ms=median * 0.98, max_ms=median * 1.05,
                    p25_ms=p25 if p25 is not None else median * 0.99, p75_ms=p75 if p75 is not None else median * 1.01,
                    stdev_ms=0.01, runs=50, method="cuda-events", representative=True, tflops=279.4, gbps=None)
    checks = [OutputCheck(trial=0, output=0, shape=[64, 64], dtype="torch.bfloat16", max_abs_err=1.6e-3,
                          max_rel_err=2e-3, norm_rel_err=1e-4, rtol=1e-2, atol=1e-2, passed=True)]
    verdict = Verdict(status=status, trials=3, checks=checks,
                      message="" if status == Status.CORRECT else "output 0 differs at [3, 7]")
    return Measurement(target="matmul.py", content_hash="x", verdict=verdict, timing=timing)


def _finding() -> Finding:
    return Finding(rule="tiny-grid", title="Grid smaller than the number of SMs", severity=Severity.HIGH,
                   summary="The launch has 66 blocks for 132 SMs.", kernel="k", estimated_gain_pct=50.0,
                   evidence=[Evidence(metric="grid_size", value=66.0, threshold=132.0, unit="blocks", comparison="<",
                                      meaning="blocks (workgroups) in the launch")],
                   levers=[Lever(name="BLOCK_SIZE", direction="decrease", line=12, current="1024", suggested="512",
                                 description="BLOCK_SIZE = 1024 at line 12: lower to 512")])


def test_report_speed_against_last_and_best_runs_with_dicts_and_measurements():
    now = _measurement(3.0)
    history = [_measurement(4.0).to_dict(), _measurement(2.5, status=Status.WRONG), _measurement(3.6)]
    md = render_markdown(target="matmul.py", measurement=now, history=history, findings=[_finding()])
    pos = section_positions(md)
    assert all(p >= 0 for p in pos) and pos == sorted(pos)
    speed = section(md, 2)
    assert "3.000 ms" in speed and "TFLOP/s" in speed
    last = re.search(r"vs last run:\*\* (.*)", speed).group(1)
    assert "3.000 ms vs 3.600 ms" in last and "1.20x faster" in last
    best = re.search(r"vs best so far:\*\* (.*)", speed).group(1)
    # The 2.5 ms run was wrong: it is not the best; 3.6 ms is.
    assert "3.000 ms vs 3.600 ms" in best and "over 2 correct earlier runs" in best
    assert "**Yes: correct** on 3 random input sets" in section(md, 1)
    assert "**BLOCK_SIZE** = 1024 at line 12: lower to 512" in section(md, 4)
    assert "Nothing yet" in section(md, 6)


def test_report_change_within_noise_and_failed_verdict():
    now = _measurement(3.0, p25=2.7, p75=3.3)  # 20% spread
    md = render_markdown(measurement=now, history=[_measurement(3.2)])
    assert "within noise" in section(md, 2)
    wrong = _measurement(3.0, status=Status.WRONG)
    md = render_markdown(measurement=wrong)
    assert "**No: wrong**" in section(md, 1) and "differs at [3, 7]" in section(md, 1)
    assert "first measurement" in section(md, 2)


def test_report_tuning_section_and_terminal_and_json():
    cand = Candidate(id="c1", source="", advisor="deterministic", rationale="bigger tiles",
                     params={"BLOCK_M": 128, "GROUP_M": 8})
    verdicts = [CandidateVerdict(candidate_id="c1", accepted=True, reason="correct, 2.1x faster", speedup=2.1),
                CandidateVerdict(candidate_id="c2", accepted=False, reason="wrong output", speedup=None)]
    md = render_markdown(measurement=_measurement(3.0), findings=[_finding()],
                         tuning={"verdicts": verdicts, "candidates": [cand]})
    tuning = section(md, 6)
    assert "BLOCK_M=128, GROUP_M=8" in tuning and "2.10x" in tuning and "Kept: **c1**" in tuning
    text = render_terminal(md)
    assert "**" not in text and "`" not in text and "|" not in text
    assert "4. What limits it?\n------------------" in text
    data = findings_json([_finding()], None)
    assert data["count"] == 1 and data["top"] == "tiny-grid"
    back = Finding.from_dict(json.loads(json.dumps(data))["findings"][0])
    assert back.severity == Severity.HIGH and back.levers[0].line == 12


def test_counter_appendix_lists_normalized_metrics_with_units() -> None:
    from advisors.report import render_counters
    from collectors.ncu import parse_csv

    path = capture(MATMUL_CAPTURE)
    md = render_counters(parse_csv(path.read_text()))
    assert "launch 0: `matmul_kernel`" in md and "launch 1: `matmul_kernel`" in md
    assert "`duration_ns` | 3.941 ms" in md
    assert "`l2_hit_rate_pct` | 52.9%" in md
    assert "`registers_per_thread`" in md
