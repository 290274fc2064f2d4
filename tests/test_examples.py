"""The example kernels in examples/kernels/ are correct and follow the target contract.

Each file runs in its own subprocess with ``TRITON_INTERPRET=1`` (Triton's CPU
interpreter; it must be set before triton is imported, and it must not leak into
the pytest process). The subprocess imports the file, draws seeded inputs for
every shape in SHAPES (and BENCH_SHAPE), runs kernel and reference, and compares
them with the file's own tolerance, the way profd compares (elementwise
``|out - ref| <= atol + rtol * |ref|``, the reference run in float64 where it
accepts float64, ``atol`` defaulting to ``rtol`` times the reference's RMS).
KernelBench-format files compare ``ModelNew`` with ``Model``. The file's
``__main__`` block is run too.

This tests the examples themselves, not profd's harness.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "examples" / "kernels"
# The CUDA-from-Python examples (load_inline / CuPy) need nvcc and a GPU; tests/test_cuda_knobs.py covers them.
FILES = sorted(p for p in KERNELS.glob("*.py") if not p.name.startswith("_")
               and not any(w in p.read_text() for w in ("load_inline", "RawKernel", "RawModule")))

#: Imports a target may use: it must stay runnable without profd installed.
ALLOWED_IMPORTS = {"torch", "triton", "math", "os", "sys", "typing", "functools", "__future__"}

WORKER = r'''
import importlib.util, json, math, runpy, sys, traceback
import torch

DEFAULT_RTOL = {"float64": 1e-7, "float32": 1e-4, "tf32": 1e-3, "bfloat16": 1e-2, "float16": 1e-2}

def as_list(r):
    return list(r) if isinstance(r, (list, tuple)) else [r]

def upcast(vals):
    return [v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in vals]

def clone(vals):
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in vals]

def tolerance(mod, dtype):
    tol = getattr(mod, "TOLERANCE", None) or {}
    rtol = tol.get("rtol", getattr(mod, "RTOL", None))
    atol = tol.get("atol", getattr(mod, "ATOL", None))
    if rtol is None:
        prec = getattr(mod, "PRECISION", None)
        rtol = DEFAULT_RTOL.get(prec if prec in DEFAULT_RTOL else dtype, 1e-4)
    return float(rtol), (None if atol is None else float(atol))

def compare(mod, out, ref, native, what):
    assert isinstance(out, torch.Tensor), f"{what}: output is {type(out).__name__}, not a tensor"
    assert tuple(out.shape) == tuple(native.shape), f"{what}: shape {tuple(out.shape)} != {tuple(native.shape)}"
    assert out.dtype == native.dtype, f"{what}: dtype {out.dtype} != reference's {native.dtype}"
    rtol, atol = tolerance(mod, str(out.dtype).replace("torch.", ""))
    o, r = out.detach().double().cpu(), ref.detach().double().cpu()
    assert torch.isfinite(o).all(), f"{what}: NaN/Inf in the kernel's output"
    floor = atol if atol is not None else rtol * float(r.pow(2).mean().sqrt())
    diff = (o - r).abs()
    bad = int((diff > floor + rtol * r.abs()).sum())
    assert bad == 0, (f"{what}: {bad}/{o.numel()} elements outside rtol {rtol:g} atol {floor:.3g}, "
                      f"max abs diff {float(diff.max()):.3e}")
    return float(diff.max())

def reference_pair(ref_fn, inputs):
    """(reference in float64 if it accepts it, reference in the inputs' own dtype)."""
    with torch.no_grad():
        native = as_list(ref_fn(*clone(inputs)))
        try:
            hi = as_list(ref_fn(*upcast(clone(inputs))))
            if not all(t.dtype == torch.float64 for t in hi if isinstance(t, torch.Tensor) and t.is_floating_point()):
                hi = native
        except Exception:
            hi = native
    return hi, native

def check_profd(mod, res):
    shapes = list(mod.SHAPES)
    bench = getattr(mod, "BENCH_SHAPE", None) or shapes[-1]
    init = list(mod.get_init_inputs()) if hasattr(mod, "get_init_inputs") else []
    for shape in shapes + ([bench] if bench not in shapes else []):
        for seed in (0, 1):
            torch.manual_seed(seed)
            inputs = list(mod.get_inputs(**shape))
            tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
            assert tensors and all(bool((t != 0).any()) for t in tensors), f"{shape}: inputs must be random, not zeros"
            assert all(t.device.type == mod.DEVICE for t in tensors), f"{shape}: inputs not on DEVICE"
            inputs += init
            snapshot = clone(inputs)
            hi, native = reference_pair(mod.reference, inputs)
            outs = as_list(mod.kernel(*inputs))
            for a, b in zip(snapshot, inputs):
                if isinstance(a, torch.Tensor):
                    assert torch.equal(a, b), f"{shape}: the kernel modified its inputs"
            assert len(outs) == len(native), f"{shape}: {len(outs)} outputs, reference has {len(native)}"
            for i, (o, r, n) in enumerate(zip(outs, hi, native)):
                err = compare(mod, o, r, n, f"shape {shape} seed {seed} output {i}")
                res["checks"].append(dict(shape=shape, seed=seed, output=i, max_abs=err))
            for fn in ("flops", "bytes_moved"):
                if callable(getattr(mod, fn, None)):
                    v = getattr(mod, fn)(*inputs)
                    assert isinstance(v, (int, float)) and v >= 0, f"{fn} returned {v!r}"

def check_kernelbench(mod, res):
    init = list(mod.get_init_inputs())
    models = {}
    for name in ("Model", "ModelNew"):
        torch.manual_seed(0)
        models[name] = getattr(mod, name)(*init).to(mod.DEVICE).eval()
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        inputs = list(mod.get_inputs())
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        assert tensors and all(t.device.type == "cpu" for t in tensors), "KernelBench get_inputs() makes CPU tensors"
        assert all(bool((t != 0).any()) for t in tensors), "inputs must be random, not zeros"
        inputs = [t.to(mod.DEVICE) if isinstance(t, torch.Tensor) else t for t in inputs]
        with torch.no_grad():
            outs = as_list(models["ModelNew"](*clone(inputs)))
            native = as_list(models["Model"](*clone(inputs)))
            try:
                hi = as_list(models["Model"].double()(*upcast(clone(inputs))))
            except Exception:
                hi = native
            finally:
                models["Model"].float()
        for i, (o, r, n) in enumerate(zip(outs, hi, native)):
            err = compare(mod, o, r, n, f"seed {seed} output {i}")
            res["checks"].append(dict(seed=seed, output=i, max_abs=err))

path = sys.argv[1]
res = {"file": path, "checks": [], "ok": False}
try:
    spec = importlib.util.spec_from_file_location("example_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.DEVICE == "cpu", "the test runs on the CPU interpreter"
    if callable(getattr(mod, "ModelNew", None)):
        res["format"] = "kernelbench"
        check_kernelbench(mod, res)
    else:
        res["format"] = "profd"
        assert isinstance(mod.SHAPES, list) and len(mod.SHAPES) >= 2, "SHAPES needs at least two shapes"
        check_profd(mod, res)
    runpy.run_path(path, run_name="__main__")
    res["ok"] = True
except BaseException as e:
    res["error"] = f"{type(e).__name__}: {e}"
    res["traceback"] = traceback.format_exc()
print("RESULT " + json.dumps(res))
'''


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    """Run every example in its own interpreter-mode subprocess, all at once."""
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    procs = {
        p.name: subprocess.Popen([sys.executable, "-c", WORKER, str(p)], cwd=str(KERNELS), env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in FILES
    }
    out: dict[str, dict] = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            out[name] = {"ok": False, "error": "timed out after 300 s", "stderr": stderr[-4000:]}
            continue
        lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            out[name] = {"ok": False, "error": f"exit code {proc.returncode}, no result", "stderr": stderr[-4000:]}
        else:
            out[name] = json.loads(lines[-1][len("RESULT "):])
            out[name]["stdout"] = stdout
    return out


def test_the_examples_exist():
    names = {p.name for p in FILES}
    for required in ("vector_add.py", "softmax.py", "layernorm.py", "matmul.py", "transpose.py"):
        assert required in names
    assert any("kernelbench" in n for n in names)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_example_is_correct(path: Path, results: dict[str, dict]):
    res = results[path.name]
    assert res.get("ok"), f"{path.name}: {res.get('error')}\n{res.get('traceback', res.get('stderr', ''))}"
    assert res["checks"], f"{path.name}: nothing was compared"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_example_is_a_self_contained_deliberately_flawed_target(path: Path):
    source = path.read_text()
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or ""
    assert "Deliberate defect:" in doc, "the module docstring names its deliberate defect"
    assert "What profd should find" in doc
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= ALLOWED_IMPORTS, f"{path.name} imports {roots - ALLOWED_IMPORTS}: targets need only torch + triton"
    # Knobs: module-level UPPERCASE int constants, at least one of them a launch kwarg.
    knobs = {
        t.id for node in tree.body if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant) and type(node.value.value) is int
        for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()
    }
    assert "NUM_WARPS" in knobs, f"{path.name}: no module-level NUM_WARPS knob"
    launch_kwargs = {
        kw.arg for node in ast.walk(tree) if isinstance(node, ast.Call)
        for kw in node.keywords if isinstance(kw.value, ast.Name) and kw.value.id in knobs
    }
    assert "num_warps" in launch_kwargs, f"{path.name}: NUM_WARPS is not passed as num_warps="
    assert 'if __name__ == "__main__":' in source
    assert 'DEVICE = "cuda" if torch.cuda.is_available() else "cpu"' in source
