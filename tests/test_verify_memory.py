"""Verification memory (issue #15): a comparison that stays a few chunks whatever the output's
size, a float64 reference only where its copies are small, and a shape that cannot fit named
before it runs. The chunked result must equal the whole-tensor arithmetic it replaced."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from profd.harness import verify as V
from profd.harness.target import load_target
from profd.model import Status


class _LargestTensor(TorchDispatchMode):
    """Records the largest new storage (in bytes) any operator allocated while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        given = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                 if isinstance(a, torch.Tensor)}
        for o in (out if isinstance(out, (list, tuple)) else [out]):
            # Views (reshape, slices) share their input's storage: only new storage is memory.
            if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() not in given:
                self.largest = max(self.largest, o.untyped_storage().nbytes())
        return out


def _target(tmp_path: Path, body: str = "") -> Any:
    f = tmp_path / "t.py"
    f.write_text(textwrap.dedent('''
        import torch
        def get_inputs(n=8):
            return [torch.randn(n, 4, 16, 16)]
        def reference(x):
            return x * 2
        def kernel(x):
            return x * 2
    ''') + textwrap.dedent(body))
    return load_target(f)


def _naive(out: torch.Tensor, ref: torch.Tensor, rtol: float) -> tuple[int, float, int]:
    """The whole-tensor float64 arithmetic the chunked comparison replaced."""
    o, r = out.double(), ref.double()
    rf = torch.isfinite(r)
    rms = float(torch.sqrt(torch.mean(torch.abs(r[rf]) ** 2)))
    floor = rtol * rms
    diff = torch.where(rf & torch.isfinite(o), (o - r).abs(), torch.zeros_like(r))
    outside = (diff > floor + rtol * torch.where(rf, r, torch.zeros_like(r)).abs()) | ((~torch.isfinite(o)) & rf)
    return int(outside.sum()), float(diff.max()), int(torch.nonzero(outside.flatten())[0])


def test_chunked_comparison_matches_the_whole_tensor_arithmetic(tmp_path: Path) -> None:
    t = _target(tmp_path)
    torch.manual_seed(0)
    ref = torch.randn(8, 4, 16, 16)
    out = ref.clone()
    out.view(-1)[5000] += 1.0          # a wrong element in a late chunk
    out.view(-1)[7000] = float("nan")  # and a NaN where the reference is finite
    out.view(-1)[300] += 1e-9          # within tolerance
    rtol, _ = t.tolerance_for("float32")
    bad, max_abs, first = _naive(out, ref, rtol)
    for chunk in (1000, 1 << 24):
        c = V._compare_chunked(1, 0, out, ref, "float32", rtol, None, chunk)
        assert (c.mismatched, c.nonfinite) == (bad, 1)
        assert math.isclose(c.max_abs_err, max_abs, rel_tol=1e-12)
        assert not c.passed and "NaN/Inf" in c.reason
    out.view(-1)[7000] = ref.view(-1)[7000]
    c = V._compare_chunked(1, 0, out, ref, "float32", rtol, None, 1000)
    assert c.mismatched == 1 and f"got {float(out.view(-1)[first]):.6g}" in c.reason
    assert "(4, 3, 8, 8)" in c.reason  # index 5000 unravelled in the output's own shape


def test_comparison_memory_is_a_few_chunks_not_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _target(tmp_path)
    ref = torch.randn(64, 4, 64, 64)  # 1M elements: 4 MB fp32, 8 MB as float64
    out = ref.clone()
    out.view(-1)[-1] += 1.0
    monkeypatch.setattr(V, "CHUNK", 1 << 14)
    with _LargestTensor() as seen:
        c = V.compare(1, 0, out, ref, t)
    assert c.mismatched == 1 and not c.passed
    # float64 chunk of 16K elements = 128 KiB; boolean indexing's int64 indices at most twice that.
    assert seen.largest <= 4 * (1 << 14) * 8, seen.largest
    # The strict (judge's) comparison runs through the same chunks.
    with _LargestTensor() as seen:
        c2 = V.compare_strict(1, 0, out, ref, torch.float32, t, chunk=1 << 14)
    assert (c2.mismatched, c2.max_abs_err) == (c.mismatched, c.max_abs_err)
    assert seen.largest <= 4 * (1 << 14) * 8, seen.largest


def test_large_inputs_keep_the_reference_in_its_own_dtype(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _target(tmp_path, '''
        SEEN = []
        def reference(x):
            SEEN.append(x.dtype)
            return x * 2
    ''')
    x = [torch.randn(8, 4, 16, 16)]
    V.reference_outputs(t, x)
    assert t.module.SEEN == [torch.float64]  # small: the float64 reference
    monkeypatch.setattr(V, "UPCAST_MAX_BYTES", x[0].numel() * 8 - 1)
    out = V.reference_outputs(t, x)
    assert t.module.SEEN[-1] == torch.float32 and out[0].dtype == torch.float32
    v = V.verify(t, torch.device("cpu"), trials=2)
    assert v.status == Status.CORRECT, v.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_shape_that_cannot_fit_is_named_before_it_runs(tmp_path: Path) -> None:
    free, _ = torch.cuda.mem_get_info()
    n = int(free * 0.3) // 4 // 1024  # inputs of 30% of the free memory: verifying needs ~150%
    t = _target(tmp_path, f'''
        RAN = []
        def get_inputs(n={n}):
            return [torch.randn(n, 1024, device="cuda")]
        def kernel(x):
            RAN.append(1)
            return x * 2
    ''')
    v = V.verify(t, torch.device("cuda"), trials=1)
    assert v.status == Status.OUT_OF_MEMORY and "does not fit" in v.message and "GiB" in v.message, v.message
    assert t.module.RAN == []
