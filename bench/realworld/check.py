"""Check one materialized target: kernel vs reference on every one of its SHAPES.

    TRITON_INTERPRET=1 python bench/realworld/check.py TARGET.py     # on the CPU
    python bench/realworld/check.py TARGET.py                        # on a GPU

Prints one line per shape and exits 1 if any shape is wrong (or raises). Stand-alone: it
needs torch and triton, not profd, so the corpus can be checked on any machine.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType


def load(path: str | Path) -> ModuleType:
    """Import a target file as a fresh module (its own name, so several can coexist)."""
    path = Path(path)
    name = f"realworld_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses / pickling inside user code look modules up here
    spec.loader.exec_module(mod)
    return mod


def close(out, ref, rtol: float, atol: float) -> tuple[bool, float]:
    """(allclose, max abs error), comparing in float64 whatever the dtypes."""
    import torch

    out, ref = torch.as_tensor(out), torch.as_tensor(ref)
    if out.shape != ref.shape:
        return False, float("inf")
    # On the outputs' own device: copying a GPU-sized output to the host in float64 cost the grid
    # about 3 s per variant on an H200 (unsloth's SwiGLU), more than timing it.
    o = out.detach().double()
    r = ref.detach().to(device=o.device, dtype=torch.float64)
    err = (o - r).abs().max().item() if o.numel() else 0.0
    return bool(torch.allclose(o, r, rtol=rtol, atol=atol)), err


def check(path: str | Path, shapes: list[dict] | None = None, seed: int = 0) -> list[dict]:
    """Run kernel and reference on each shape; one result dict per shape."""
    import torch

    mod = load(path)
    rtol, atol = getattr(mod, "RTOL", 1e-5), getattr(mod, "ATOL", 1e-8)
    results = []
    for shape in shapes if shapes is not None else list(getattr(mod, "SHAPES", [{}])):
        torch.manual_seed(seed)
        inputs = mod.get_inputs(**shape)
        # The reference gets its own copies: some kernels write into their inputs (Liger's
        # cross-entropy zeroes ignored rows in place).
        ref = mod.reference(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs])
        t0 = time.perf_counter()
        out = mod.kernel(*inputs)
        dt = time.perf_counter() - t0
        ok, err = close(out, ref, rtol, atol)
        results.append(dict(shape=shape, ok=ok, max_abs_err=err, seconds=round(dt, 3)))
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    bad = 0
    for r in check(argv[0]):
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['shape']} max abs err {r['max_abs_err']:.3e} "
              f"({r['seconds']} s)")
        bad += not r["ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
