"""Issue 15, what a new user hits: the per-save report in CPU mode, one worst error, the roofline's
class and precision, `apply` twice, and tune/apply speedups from the interpreter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from advisors import roofline
from advisors.report import fmt_bandwidth, fmt_tflops, render_markdown
from hwspecs.spec import Ceilings
from profd.flow.profile import profile
from profd.model import OutputCheck
from profd.store import Store

try:
    from support import store  # noqa: F401 (a fixture)
except ImportError:  # pragma: no cover
    from tests.support import store  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
H200 = Ceilings(device="h200-sxm", memory_gbps=4800.0, tflops={"bf16": 989.0, "fp32": 67.0}, source="datasheet")


@pytest.fixture(scope="module")
def matmul_cpu(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real profile of the bundled matmul (three shapes, nine trials) in Triton's CPU interpreter."""
    state = tmp_path_factory.mktemp("state")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROFD_STATE_DIR", str(state))
    try:
        with Store() as s:
            res = profile(ROOT / "examples" / "kernels" / "matmul.py", s, timeout_s=300)
        return {"report": res.report, "measurement": json.loads(json.dumps(res.measurement.to_dict()))}
    finally:
        mp.undo()


def test_cpu_report_names_the_device_and_what_is_missing(matmul_cpu: dict) -> None:
    md = matmul_cpu["report"]
    assert "**Device:** unknown" not in md
    assert "CPU, through Triton's interpreter" in md
    assert "0.0 GFLOP/s" not in md and re.search(r"\d+\.\d [kM]FLOP/s", md)
    assert "Throughput in the interpreter" in md and "meaningless for a GPU" in md
    roof = md.split("## 3.")[1].split("## 4.")[0]
    assert "no time or traffic figures" not in roof  # the target has both; the device ceilings are missing
    assert "Triton's CPU interpreter, which has no device ceilings" in roof


def test_correctness_table_json_and_verdict_agree_on_the_worst_error(matmul_cpu: dict) -> None:
    m = matmul_cpu["measurement"]
    checks = m["verdict"]["checks"]
    assert len(checks) == 9 and len({tuple(c["shape"]) for c in checks}) == 3
    worst_abs = max(c["max_abs_err"] for c in checks)
    worst_rel = max(c["max_rel_err"] for c in checks)
    # The verdict line quotes the same worst absolute error as the JSON...
    assert f"max abs error {worst_abs:.2e}" in m["verdict"]["message"]
    section = matmul_cpu["report"].split("## 1.")[1].split("## 2.")[0]
    rows = [r for r in section.splitlines() if r.startswith("| 0 |")]
    assert len(rows) == 3  # one row per shape, each the worst of its trials
    table_abs = [float(r.split("|")[5]) for r in rows]
    table_rel = [float(r.split("|")[6]) for r in rows]
    # ...and so does the table: its largest entry is the JSON's maximum (rounded as shown).
    assert max(table_abs) == pytest.approx(worst_abs, rel=5e-3)
    assert max(table_rel) == pytest.approx(worst_rel, rel=5e-3)
    assert f"max abs error {worst_abs:.2e}" in section


def test_worst_of_takes_each_error_at_its_own_maximum() -> None:
    from profd.model import worst_of

    a = OutputCheck(1, 0, [4], "float16", 7.8e-3, 4.9e-4, 2.0e-4, 1e-2, 1e-2, True)
    b = OutputCheck(2, 0, [4], "float16", 1.5e-2, 4.7e-4, 2.1e-4, 1e-2, 1e-2, True)
    w = worst_of([a, b])
    assert (w.max_abs_err, w.max_rel_err, w.norm_rel_err, w.trial) == (1.5e-2, 4.9e-4, 2.1e-4, 2)
    assert worst_of([]) is None


def test_small_rates_keep_their_magnitude() -> None:
    assert fmt_tflops(5.02e-5) == "50.2 MFLOP/s"
    assert fmt_tflops(271.0) == "271.0 TFLOP/s" and fmt_tflops(0.0) == "0 FLOP/s"
    assert fmt_bandwidth(2.35e6) == "2.4 MB/s" and fmt_bandwidth(3.35e12) == "3.35 TB/s"


def test_roofline_uses_the_kernels_precision_and_counters_decide_the_class() -> None:
    n = 8192
    flops, nbytes = 2 * n ** 3, 3 * 2 * n ** 2
    t = flops / 271e12  # 271 TFLOP/s: 27% of the bf16 datasheet peak
    timed = roofline.place(flops, nbytes, t, H200, "bf16")
    assert timed.bound == "latency-bound"  # the datasheet comparison alone says this...
    row = {"sm_throughput_pct": 41.0, "tensor_pipe_pct": 86.0, "memory_throughput_pct": 35.0}
    assert roofline.refine_with_counters(timed, row)
    assert timed.bound == "compute-bound"  # ...the busy tensor pipes say otherwise
    assert timed.achieved_tflops == pytest.approx(271.0)  # the numbers stay the timed run's
    fp32 = roofline.place(2 * 4096 ** 3, 3 * 4 * 4096 ** 2, 2 * 4096 ** 3 / 50e12, H200, "fp32")
    assert fp32.peak_tflops == 67.0 and fp32.precision == "fp32" and fp32.bound == "compute-bound"


def test_zero_flop_kernel_is_placed_as_memory_only() -> None:
    nbytes = 2 * 4 * 8192 * 8192
    roof = roofline.place(0.0, nbytes, nbytes / 2900e9, H200, "fp32")
    assert roof.intensity == 0.0 and roof.bound == "memory-bound"
    md = render_markdown(target="transpose.py", roofline=roof, ceilings=H200)
    assert "Memory-only kernel (no floating-point work): 2.90 TB/s of 4.80 TB/s peak" in md


def test_why_not_placed_names_the_missing_piece() -> None:
    assert "CPU interpreter" in roofline.why_not_placed(representative=False, has_work_counts=True, has_ceilings=False)
    assert "not in profd's device database" in roofline.why_not_placed(
        representative=True, has_work_counts=True, has_ceilings=False, device="NVIDIA Foo")
    assert "flops() nor bytes_moved()" in roofline.why_not_placed(
        representative=True, has_work_counts=False, has_ceilings=True)


def test_tune_and_apply_twice_in_the_interpreter(tmp_path: Path, store: Store) -> None:
    from profd.flow.apply import AlreadyApplied, apply_best
    from profd.flow.tune import INTERPRETER_SPEEDUP_NOTE, summary, tune
    from profd.harness.warm import WarmWorker

    try:
        from test_tune import TINY_BLOCK
    except ImportError:  # pragma: no cover
        from tests.test_tune import TINY_BLOCK
    target = tmp_path / "add.py"
    target.write_text(TINY_BLOCK)
    w = WarmWorker()
    w.start()
    try:
        res = tune(target, store, budget=3, runner=w)
    finally:
        w.close()
    assert res.best_candidate, res.to_dict()
    assert INTERPRETER_SPEEDUP_NOTE in summary(res)
    applied = apply_best(target, store)
    assert INTERPRETER_SPEEDUP_NOTE in applied.message() and f"{applied.speedup:.2f}x faster" in applied.message()
    with pytest.raises(AlreadyApplied, match="already holds candidate"):
        apply_best(target, store)
    target.write_text(TINY_BLOCK + "\n# a newer edit\n")
    with pytest.raises(Exception, match="changed since"):
        apply_best(target, store)
