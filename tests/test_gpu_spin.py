"""The full-GPU spin that opens every timing bracket (profd/harness/gpu_spin.py).

On a machine without a GPU: its PTX must assemble for the architectures profd is used on
(ptxas from the CUDA toolkit the test extra installs), the spin's length must cover the
host time and come in steps, and without a GPU it must say it is unavailable, so that
timing falls back to an idle start. On a GPU: it holds every SM, so a kernel on a side
stream cannot run before the bracket opens.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from profd.harness import gpu_spin
from profd.harness.cuda_build import find_nvcc
from profd.harness.timing import SPIN_MAX_NS, SPIN_MIN_NS, spin_duration_ns


def _ptxas() -> str | None:
    nvcc = find_nvcc()
    if nvcc:
        p = Path(nvcc).with_name("ptxas")
        if p.exists():
            return str(p)
    return shutil.which("ptxas")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_spin_ptx_assembles(tmp_path: Path, arch: str) -> None:
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("no ptxas (install the test extra: nvidia-cuda-nvcc)")
    src = tmp_path / "spin.ptx"
    src.write_bytes(gpu_spin.PTX.rstrip(b"\x00"))
    r = subprocess.run([ptxas, f"-arch={arch}", "-v", str(src), "-o", str(tmp_path / "spin.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "profd_spin" in r.stderr + r.stdout  # ptxas -v names the entry it compiled
    assert gpu_spin.PTX.endswith(b"\x00")  # cuModuleLoadData reads a NUL-terminated image


def test_spin_covers_host_time_in_steps() -> None:
    assert spin_duration_ns(0.0) == SPIN_MIN_NS
    assert spin_duration_ns(10.0) == SPIN_MAX_NS  # a wrapper that synchronises inside
    seventy_us = spin_duration_ns(70e-6)  # Liger's wrapper
    assert seventy_us >= 1.5 * 70_000 and seventy_us % 50_000 == 0
    # An original and a rewrite whose host times differ by microseconds get the same spin.
    assert spin_duration_ns(70e-6) == spin_duration_ns(72e-6)
    for h in (0.0, 1e-5, 1e-4, 3e-4, 1e-3):
        assert spin_duration_ns(h) >= min(SPIN_MAX_NS, 1.5 * h * 1e9)


def test_without_a_gpu_the_spin_says_why() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_spin.prepare() is False
    assert not gpu_spin.available() and gpu_spin.blocks() == 0
    assert gpu_spin.why_not()
    with pytest.raises(RuntimeError, match="not loaded"):
        gpu_spin.launch(100_000, 0)


@pytest.mark.gpu
def test_spin_holds_every_sm_against_a_side_stream() -> None:
    """A kernel queued on another stream during the spin starts only when the spin ends."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    torch.zeros(1, device="cuda")
    assert gpu_spin.prepare(), gpu_spin.why_not()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert gpu_spin.blocks() >= sms
    main, side = torch.cuda.current_stream(), torch.cuda.Stream()
    x = torch.ones(1 << 20, device="cuda")
    torch.cuda.synchronize()
    t0, t_side, t1 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    t0.record(main)
    gpu_spin.launch(2_000_000, main.cuda_stream)  # 2 ms
    with torch.cuda.stream(side):
        x.add_(1.0)
        t_side.record(side)
    t1.record(main)
    torch.cuda.synchronize()
    assert t0.elapsed_time(t1) >= 1.9
    # The side stream's small add could not start anywhere before the spin released the SMs.
    assert t0.elapsed_time(t_side) >= 1.9


def test_a_fixed_spin_is_used_and_reported() -> None:
    """The judge fixes one spin per session (the baseline's) for every child: both sides of an A/B
    then spend the same time per call outside the kernel on profd's clock."""
    import torch

    from profd.harness.timing import time_gpu

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    x = torch.ones(1 << 20, device="cuda")
    assert gpu_spin.prepare(), gpu_spin.why_not()
    own = time_gpu(lambda: x.add_(1.0), rep_ms=20)
    fixed = time_gpu(lambda: x.add_(1.0), rep_ms=20, spin_ns=450_000)
    assert own.spin_ns == spin_duration_ns(0.0) or own.spin_ns >= SPIN_MIN_NS
    assert fixed.spin_ns == 450_000 and "full-GPU spin" in fixed.method


def test_the_judge_gives_every_child_the_baselines_spin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sized from each child's own host time, the spin fell on either side of a 50 us step: on an
    H200 that much per call on profd's clock rejected genuine 1.2x wins as forged."""
    from profd.flow import judge as J
    from profd.model import Measurement, Status, Timing, Verdict

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    ex = Path(__file__).resolve().parents[1] / "examples" / "kernels" / "vector_add.py"
    target = tmp_path / "vector_add.py"
    target.write_text(ex.read_text())
    judge = J.Judge(target, force_cpu=True)
    try:
        t = Timing(0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 10, "cuda-events+device-sync, full-GPU spin", True,
                   spin_ns=150_000)
        fake = J.JudgedRun(Measurement(target=str(target), content_hash="", verdict=Verdict(Status.CORRECT),
                                       timing=t))
        monkeypatch.setattr(judge, "run", lambda *a, **k: fake)
        judge.baseline()
        assert judge.spin_ns == 150_000
        monkeypatch.undo()
        monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
        sent: list[dict] = []
        real = judge._launch
        monkeypatch.setattr(judge, "_launch", lambda req: (sent.append(req), real(req))[1])
        r = judge.run(target, rep_ms=1, trials=1, shapes=1, bench_check=False)
        assert r.measurement.correct, r.measurement.verdict.message
        assert sent and sent[0]["spin_ns"] == 150_000
    finally:
        judge.close()
