"""The trusted reference process: the user's original file, and nothing a candidate wrote.

Usage: ``python -m profd.harness.reference ORIGINAL.py [cpu] [wait]``; one JSON request per
line on stdin, one JSON answer per line on stdout. It imports only the user's file
(``reference``, ``get_inputs``, shapes and tolerances come from there), regenerates
each call's inputs from the seed the judge chose, computes the reference and compares
the outputs a candidate child claimed (``torch.load(weights_only=True)``: a hostile
blob cannot run code here) with :func:`profd.harness.verify.compare_strict`. The
candidate never ran in this process and none of its outputs exist while the candidate
runs: the reference is computed after the candidate's child has exited.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


_answers: Any = None  # the protocol's stream: the original stdout, kept from the user's code


def _answer(obj: dict[str, Any]) -> None:
    out = _answers or sys.stdout
    out.write(json.dumps(obj, default=str) + "\n")
    out.flush()


def _private_stdout() -> None:
    """Answers go to a duplicate of stdout; fd 1 becomes stderr. The user's file and what it
    starts print where they like (KernelBench's ``load_inline(verbose=True)`` has ninja print
    "[1/3] ..." on stdout, which the judge read as a broken answer and failed inside itself)."""
    global _answers
    _answers = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)


def shape_of(target: Any, index: Any) -> dict[str, Any]:
    """The shape a plan entry names: an index into the original's SHAPES, or "bench"."""
    if index == "bench":
        return target.bench_shape
    return target.shapes[int(index)]


def check(target: Any, req: dict[str, Any], device: Any, native: dict[str, Any]) -> dict[str, Any]:
    """Compare every claimed output group in ``req['calls']`` with the reference."""
    import torch

    from profd.harness import verify as V
    from profd.model import Status

    worst = (0.0, 0.0)
    for n, call in enumerate(req["calls"]):
        shape = shape_of(target, call["shape"])
        where = f"{call['label']} (shape {shape or 'default'})"
        inputs = V.make_inputs(target, shape, int(call["seed"]), device)
        key = json.dumps(shape, sort_keys=True, default=str)
        if key not in native:
            with torch.no_grad():
                native[key] = [o.dtype if isinstance(o, torch.Tensor) else None
                               for o in V.as_list(target.reference(*V._clone(inputs)))]
        ref = V.reference_outputs(target, inputs)
        claimed = []
        for p in call["outputs"]:
            try:
                val = torch.load(p, map_location=device, weights_only=True)
            except Exception as e:
                return {"ok": False, "status": Status.KERNEL_ERROR.value,
                        "message": f"{where}: its outputs could not be read back ({type(e).__name__}); "
                                   "kernel(...) must return tensors (or a tuple/list of them)"}
            claimed.append(val if isinstance(val, list) else [val])
        for k, out in enumerate(claimed):
            if len(out) != len(ref):
                return {"ok": False, "status": Status.SHAPE_MISMATCH.value,
                        "message": f"{where}: kernel(...) returned {len(out)} outputs, the reference {len(ref)}"}
            for i, (o, r) in enumerate(zip(out, ref)):
                c = V.compare_strict(n + 1, i, o, r, native[key][i], target)
                if c.passed:
                    worst = max(worst, (c.norm_rel_err, c.max_abs_err))
                    continue
                if c.reason.startswith(("dtype", "shape")):
                    return {"ok": False, "status": Status.SHAPE_MISMATCH.value, "message": f"{where}: output {i}: {c.reason}"}
                if c.nonfinite and k == 0 and len(claimed) > 1 and isinstance(claimed[1][i], torch.Tensor) \
                        and isinstance(o, torch.Tensor) and o.shape == claimed[1][i].shape:
                    hit = (~torch.isfinite(o.to(torch.float64))) & (claimed[1][i] == V.SENTINEL)
                    if bool(hit.any()):
                        return {"ok": False, "status": Status.UNWRITTEN.value,
                                "message": f"{where}: output {i}: {int(hit.sum())} of {o.numel()} elements were never "
                                           "written by the kernel (they kept the poison profd filled the freshly "
                                           "allocated output with); check the grid covers every element and the "
                                           "store masks"}
                status = Status.NONFINITE if c.nonfinite else Status.WRONG
                return {"ok": False, "status": status.value,
                        "message": f"{where}: output {i} is wrong: {c.reason}; max abs error {c.max_abs_err:.3g}, "
                                   f"relative (norm) error {c.norm_rel_err:.3g}"}
    return {"ok": True, "status": Status.CORRECT.value, "worst_norm_rel": worst[0], "worst_abs": worst[1],
            "message": f"correct on {len(req['calls'])} checked call(s); worst relative (norm) error "
                       f"{worst[0]:.2e}, max abs error {worst[1]:.2e}"}


def main(argv: list[str]) -> int:
    _private_stdout()
    original = Path(argv[0])
    force_cpu = "cpu" in argv[1:]
    # "wait": started early (while profd measures the baseline), this process imports what it
    # needs, then waits for a line on stdin before it touches the GPU's memory.
    wait = "wait" in argv[1:]
    from profd.harness.child import Child

    helper = Child({"force_cpu": force_cpu, "target": str(original)}, Path("unused"))
    torch = helper.setup_backend()
    on_gpu = os.environ.get("TRITON_INTERPRET") != "1"
    if on_gpu:
        torch.zeros(1, device="cuda")
    from profd.harness.sandbox import sandbox_child

    sandbox_child(original, Path.cwd() / "x")
    from profd.harness.target import TargetLoadError, load_target

    # A CUDA original builds at import (KernelBench's module-level load_inline): through profd's
    # build cache, where profile() has just built it, rather than a fresh build of its own.
    from profd.harness.cuda_build import prepare_child

    cuda_verdict, _hook = prepare_child(original)
    if cuda_verdict:
        _answer({"ready": False, "message": cuda_verdict})
        return 1
    try:
        target = load_target(original)
    except TargetLoadError as e:
        _answer({"ready": False, "message": str(e)})
        return 1
    device = torch.device("cuda" if on_gpu else "cpu")
    if wait:
        sys.stdin.readline()
    from profd.harness.verify import shape_size

    # Smallest shape first: a broken candidate fails (or crashes) on the cheapest one.
    order = sorted(range(len(target.shapes)), key=lambda i: shape_size(target.shapes[i]))
    # How big one call's outputs can honestly be: the judge caps what a candidate may send at a
    # multiple of this (a fixed cap refused the originals of real kernels at their GPU sizes).
    from profd.harness.verify import make_inputs, tensor_bytes

    biggest = bench_bytes = 0
    shape_bytes: list[int] = []  # per declared shape: the screen verifies only the cheap ones
    for k, shape in enumerate([*target.shapes, target.bench_shape]):
        size = 0
        try:
            ins = make_inputs(target, shape, 0, device)
            size = tensor_bytes(ins)
            biggest = max(biggest, size)
            if k == len(target.shapes):
                bench_bytes = size
            del ins
        except Exception:  # the reference check will say what is wrong with the inputs
            pass
        if k < len(target.shapes):
            shape_bytes.append(size)
    if on_gpu:
        torch.cuda.empty_cache()
    _answer({"ready": True, "shapes": len(target.shapes), "order": order, "max_input_bytes": biggest,
             "bench_input_bytes": bench_bytes, "shape_bytes": shape_bytes, "on_gpu": on_gpu, "bench_in_shapes": target.bench_shape in target.shapes})
    native: dict[str, Any] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            _answer(check(target, req, device, native))
        except Exception as e:  # the user's reference raised: that is the original's fault, say so
            _answer({"ok": False, "status": "reference_error",
                     "message": f"the reference raised {type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
