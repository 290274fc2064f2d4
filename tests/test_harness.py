"""The harness on real Triton kernels (CPU interpreter): good targets and every bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from profd.harness.runner import measure, scrubbed_env
from profd.model import Status

HEADER = '''
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)

SHAPES = [dict(n=1000), dict(n=3000)]

def get_inputs(n=1000):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]

def reference(x, y):
    return x + y

def bytes_moved(x, y):
    return 3 * x.numel() * x.element_size()
'''

GOOD_KERNEL = '''
def kernel(x, y):
    out = torch.empty_like(x)
    add_kernel[(triton.cdiv(x.numel(), 256),)](x, y, out, x.numel(), BLOCK=256)
    return out
'''


def write(tmp_path: Path, body: str, name: str = "target.py", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + textwrap.dedent(body))
    return p


def test_correct_triton_kernel_is_verified_and_timed(tmp_path: Path) -> None:
    m = measure(write(tmp_path, GOOD_KERNEL), timeout_s=120)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    # 3 trials on each of 2 shapes; the bench shape is the last declared one
    assert m.verdict.trials == 6
    assert all(c.passed for c in m.verdict.checks)
    assert m.device is not None and m.device.backend == "cpu"
    assert m.timing is not None and m.timing.representative is False
    assert m.timing.bytes_moved == 3 * 3000 * 4 and m.timing.gbps and m.timing.gbps > 0
    assert "interpreter" in m.timing.method
    assert len(m.content_hash) == 64


def test_kernelbench_format_moves_cpu_inputs_and_compares_models(tmp_path: Path) -> None:
    src = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl

@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0), mask=mask)

class Model(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
    def forward(self, x):
        return torch.relu(x) * self.scale

class ModelNew(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
    def forward(self, x):
        out = torch.empty_like(x)
        relu_kernel[(triton.cdiv(x.numel(), 128),)](x, out, x.numel(), BLOCK=128)
        return out * self.scale

def get_inputs():
    return [torch.randn(16, 100)]   # CPU tensors, KernelBench-style

def get_init_inputs():
    return [2.5]
'''
    m = measure(write(tmp_path, src, header=""), timeout_s=120)
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert m.verdict.checks[0].shape == [16, 100]


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ("def kernel(x, y)\n    return x\n", Status.LOAD_ERROR, "syntax error"),
        ("import does_not_exist_profd\n", Status.LOAD_ERROR, "does_not_exist_profd"),
        ("def kernel_typo(x, y):\n    return x + y\n", Status.LOAD_ERROR, "lacks kernel"),
        (
            "def kernel(x, y):\n    out = torch.empty_like(x)\n    raise RuntimeError('boom in launcher')\n",
            Status.KERNEL_ERROR,
            "boom in launcher",
        ),
        (
            # wrong result: subtracts instead of adds
            "def kernel(x, y):\n    return x - y\n",
            Status.WRONG,
            "outside tolerance",
        ),
        (
            "def kernel(x, y):\n    out = x + y\n    out[5] = float('nan')\n    return out\n",
            Status.NONFINITE,
            "NaN/Inf",
        ),
        (
            # grid too small: the last elements are never written
            "def kernel(x, y):\n    out = torch.empty_like(x)\n"
            "    add_kernel[(x.numel() // 256,)](x, y, out, x.numel(), BLOCK=256)\n    return out\n",
            Status.UNWRITTEN,
            "never written",
        ),
        (
            "def kernel(x, y):\n    x.add_(y)\n    return x\n",
            Status.MUTATED_INPUT,
            "modified input 0",
        ),
        (
            "def kernel(x, y):\n    return (x + y)[:-1]\n",
            Status.SHAPE_MISMATCH,
            "shape",
        ),
        (
            # results cached from the first call: later trials draw new inputs
            "_cache = {}\ndef kernel(x, y):\n    if 'o' not in _cache:\n        _cache['o'] = x + y\n"
            "    return _cache['o']\n",
            Status.WRONG,
            "trial 2",
        ),
    ],
    ids=["syntax", "import", "missing-entry", "exception", "wrong", "nan", "unwritten", "mutates-input",
         "shape", "cached-output"],
)
def test_bad_targets_get_a_clear_verdict(tmp_path: Path, body: str, status: Status, needle: str) -> None:
    m = measure(write(tmp_path, body), timeout_s=120)
    assert m.verdict.status == status, m.verdict.message
    assert needle in m.verdict.message
    assert not m.correct


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, "def kernel(x, y)\n    return x\n")
    bad_line = p.read_text().splitlines().index("def kernel(x, y)") + 1
    m = measure(p, timeout_s=60)
    assert m.verdict.line == bad_line
    assert f"target.py:{bad_line}" in m.verdict.message


def test_exception_in_kernel_names_the_user_line(tmp_path: Path) -> None:
    p = write(tmp_path, "def kernel(x, y):\n    return x.reshape(7, -1) + y\n")
    line = p.read_text().splitlines().index("    return x.reshape(7, -1) + y") + 1
    m = measure(p, timeout_s=60)
    assert m.verdict.status == Status.KERNEL_ERROR
    assert m.verdict.line == line


def test_triton_compile_error_points_into_the_jitted_function(tmp_path: Path) -> None:
    src = '''
@triton.jit
def broken_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(out_ptr + offs, x + undefined_name, mask=offs < n)

def kernel(x, y):
    out = torch.empty_like(x)
    broken_kernel[(triton.cdiv(x.numel(), 128),)](x, out, x.numel(), BLOCK=128)
    return out
'''
    p = write(tmp_path, src)
    m = measure(p, timeout_s=60)
    assert m.verdict.status == Status.KERNEL_ERROR
    assert "undefined_name" in m.verdict.message or "undefined_name" in m.verdict.traceback


def test_hanging_kernel_is_killed_and_reported(tmp_path: Path) -> None:
    src = '''
@triton.jit
def spin_kernel(x_ptr, n):
    i = 0
    while n > 0:   # n never changes: never returns
        i += 1

def kernel(x, y):
    spin_kernel[(1,)](x, x.numel())
    return x + y
'''
    m = measure(write(tmp_path, src), timeout_s=8)
    assert m.verdict.status == Status.TIMEOUT
    assert "did not finish within 8 s" in m.verdict.message
    assert "kernel" in m.verdict.message  # names the phase it hung in
    assert m.wall_s < 30


def test_child_crash_is_reported_not_raised(tmp_path: Path) -> None:
    m = measure(write(tmp_path, "import os\ndef kernel(x, y):\n    os.abort()\n"), timeout_s=60)
    assert m.verdict.status == Status.CRASH
    assert "SIGABRT" in m.verdict.message


def test_zero_inputs_are_refused(tmp_path: Path) -> None:
    src = GOOD_KERNEL + "\ndef get_inputs(n=1000):\n    return [torch.zeros(n), torch.zeros(n)]\n"
    m = measure(write(tmp_path, src), timeout_s=60)
    assert not m.correct
    assert "only zeros" in m.verdict.message


def test_tolerance_override_and_precision_loss(tmp_path: Path) -> None:
    # a kernel that computes in fp16 and returns fp32 loses ~1e-3 relative precision:
    # rejected under the fp32 default (1e-4), accepted with RTOL = 1e-2
    lossy = "def kernel(x, y):\n    return (x.half() + y.half()).float()\n"
    assert measure(write(tmp_path, lossy), timeout_s=60).verdict.status == Status.WRONG
    ok = measure(write(tmp_path, "RTOL = 1e-2\n" + lossy, name="t2.py"), timeout_s=60)
    assert ok.verdict.status == Status.CORRECT, ok.verdict.message


def test_secrets_are_scrubbed_from_the_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("PROFD_SMTP_PASSWORD", "hunter2")
    monkeypatch.setenv("HF_TOKEN", "tok")
    env = scrubbed_env()
    assert "OPENAI_API_KEY" not in env and "PROFD_SMTP_PASSWORD" not in env and "HF_TOKEN" not in env
    assert env["PATH"]


def test_child_cannot_see_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    src = GOOD_KERNEL.replace("return out", "assert 'OPENAI_API_KEY' not in __import__('os').environ\n    return out")
    m = measure(write(tmp_path, src), timeout_s=60)
    assert m.verdict.status == Status.CORRECT, m.verdict.message


def test_scratch_directories_do_not_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from profd.harness.runner import ChildRequest, run_child

    monkeypatch.delenv("PROFD_KEEP_SCRATCH", raising=False)
    work = tmp_path / "scratch-root"
    work.mkdir()
    run = run_child(ChildRequest(target=str(write(tmp_path, GOOD_KERNEL)), time=False), timeout_s=120, workdir=work)
    assert run.result is not None and run.result["verdict"]["status"] == "correct"
    assert list(work.iterdir()) == []  # the child's scratch dir went with its answer
    assert tempfile.gettempdir()  # (the default root is the system temp dir)


def test_an_idle_warm_worker_gives_its_memory_back_and_restarts_on_demand(tmp_path: Path) -> None:
    import time as _time

    from profd.harness.warm import WarmWorker

    w = WarmWorker(idle_close_s=1.0)
    w.start()
    try:
        target = write(tmp_path, GOOD_KERNEL)
        assert measure(target, runner=w, timeout_s=120, do_time=False).correct
        deadline = _time.time() + 10
        while w.alive() and _time.time() < deadline:
            _time.sleep(0.1)
        assert not w.alive()  # idle: the zygote (torch + Triton in memory) is gone
        assert measure(target, runner=w, timeout_s=120, do_time=False).correct
        assert w.alive()  # the next save started it again
    finally:
        w.close()


def test_launch_values_are_the_bench_shapes_when_every_shape_is_timed(tmp_path: Path) -> None:
    """The tuner reads each knob's current value from these records: a block computed from the size
    differs per shape, and the last shape timed must not stand in for the bench shape."""
    body = '''
    SHAPES = [dict(n=100), dict(n=1000), dict(n=3000)]
    BENCH_SHAPE = dict(n=1000)

    def kernel(x, y):
        out = torch.empty_like(x)
        BLOCK = triton.next_power_of_2(x.numel())
        add_kernel[(1,)](x, y, out, x.numel(), BLOCK=BLOCK)
        return out
    '''
    m = measure(write(tmp_path, body), timeout_s=180, trials=1, time_shapes="all")
    assert m.verdict.status == Status.CORRECT, m.verdict.message
    assert len(m.shape_timings) == 3
    assert [r.constexprs.get("BLOCK") for r in m.launches] == [1024]
