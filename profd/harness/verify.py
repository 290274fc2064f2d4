"""Correctness: kernel vs reference on fresh random inputs, poisoned outputs.

Runs inside the harness child. Every way a kernel can look right without being
right is checked here: unwritten output elements (outputs it allocates through
torch are NaN-poisoned, then re-run with a second poison to tell "never written"
from "computed NaN"), mutated inputs, NaN/Inf, results cached from an earlier
call (every trial draws new inputs), shapes hard-coded to the tested ones (the
timed shape is verified too) and precision loss beyond the dtype's tolerance.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional

import torch
from torch.overrides import TorchFunctionMode

from profd.model import OutputCheck, Status, Verdict, worst_of
from profd.harness.target import Target

#: Functions whose results are uninitialised memory: the kernel's outputs, usually.
_ALLOCATORS = {torch.empty, torch.empty_like, torch.empty_strided, torch.Tensor.new_empty}

#: The second poison: finite, exactly representable in fp16/bf16, unlikely as a result.
SENTINEL = -4320.0


class Poison(TorchFunctionMode):
    """Fill every tensor the kernel allocates with ``torch.empty*`` with a poison value.

    NaN for floating tensors (so unwritten elements fail loudly), the dtype's
    max for integers. This is the allocation hook the verification controls.
    """

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in _ALLOCATORS and isinstance(out, torch.Tensor) and out.numel():
            with torch.no_grad():
                if out.is_floating_point() or out.is_complex():
                    out.fill_(self.value)
                elif out.dtype != torch.bool:
                    out.fill_(torch.iinfo(out.dtype).max)
        return out


def as_list(result: Any) -> list[Any]:
    """A kernel's or reference's result as a list of outputs."""
    if isinstance(result, (list, tuple)):
        return list(result)
    return [result]


def to_device(values: Iterable[Any], device: torch.device) -> list[Any]:
    """Move tensors to the measurement device (KernelBench makes CPU tensors)."""
    return [v.to(device) if isinstance(v, torch.Tensor) and v.device != device else v for v in values]


def make_inputs(target: Target, shape: dict[str, Any], seed: int, device: torch.device) -> list[Any]:
    """Seed torch's RNG and draw one fresh input set.

    On a GPU the file's factory calls run with the GPU as torch's default device, so a
    KernelBench ``get_inputs()`` (CPU tensors by convention) draws on the device: kernelbench_relu's
    256 MB input took ~0.45 s of CPU ``randn`` and copy per set, and a child draws one per pool
    set (nine), 4-5 s of every child (H200, 2026-12-03). Every process that makes inputs (the
    measuring child, the reference, the grid bench) comes here, so all draw the same values. A
    file whose ``get_inputs`` needs CPU tensors (``.numpy()``) still works: it falls back to the
    CPU draw, in every process alike (the same seed fails the same way)."""
    def draw() -> Any:
        torch.manual_seed(seed)
        return target.make_inputs(**shape) if shape else target.make_inputs()

    if device.type != "cpu":
        try:
            with torch.device(device):
                inputs = draw()
        except Exception:
            inputs = draw()
    else:
        inputs = draw()
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    return to_device(inputs, device) + list(target.init_inputs)


def _clone(values: list[Any]) -> list[Any]:
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


def _upcast(values: list[Any]) -> list[Any]:
    return [v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in values]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return bool(torch.equal(a, b))


#: Float64 copies of the inputs larger than this are not made: the reference then runs in
#: its own dtype (still compared in float64), so a 7.5 GB fp32 input does not cost 15 GB
#: of upcast input and as much again for each float64 intermediate (issue #15).
UPCAST_MAX_BYTES = 2 << 30


def tensor_bytes(values: Iterable[Any]) -> int:
    """Bytes held by the tensors among ``values``."""
    return sum(int(v.numel() * v.element_size()) for v in values if isinstance(v, torch.Tensor))


def _upcast_fits(inputs: list[Any]) -> bool:
    """Whether float64 copies of the floating inputs are small enough to make."""
    return 8 * sum(v.numel() for v in inputs if isinstance(v, torch.Tensor) and v.is_floating_point()) \
        <= UPCAST_MAX_BYTES


def _free_bytes(device: torch.device) -> Optional[int]:
    """Free memory on a CUDA device, counting what torch's allocator holds unused."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


#: Verifying one input set holds: the inputs, a copy to detect writes to them, the copy the
#: reference gets, the reference's and the kernel's outputs (about one input each, for the
#: kernels profd sees) and one intermediate of the reference: six inputs' worth.
VERIFY_INPUT_MULTIPLE = 6


def memory_shortfall(inputs: list[Any], device: torch.device, shape: dict[str, Any]) -> Optional[str]:
    """A sentence when verifying ``shape`` would clearly not fit in the device's free memory."""
    free = _free_bytes(device)
    if free is None:
        return None
    held = tensor_bytes(inputs)
    need = held * (VERIFY_INPUT_MULTIPLE - 1)  # the inputs themselves are already allocated
    if need <= free:
        return None
    gib = lambda b: b / 2**30  # noqa: E731
    return (f"shape {shape or 'default'} does not fit: its inputs take {gib(held):.1f} GiB and verifying them "
            f"needs about {gib(need):.1f} GiB more (a copy to detect writes to the inputs, the reference's copy, "
            f"the reference's and the kernel's outputs), but only {gib(free):.1f} GiB is free on the GPU. "
            "Declare a smaller shape in SHAPES/BENCH_SHAPE (or get_inputs), or free the GPU's memory.")


def reference_outputs(target: Target, inputs: list[Any]) -> list[Any]:
    """The reference's result in float64 where the reference accepts float64 inputs.

    A reference that insists on its dtype (a module with fp32 weights, a bf16-only
    op) runs in its own dtype; the comparison is still done in float64.
    """
    if not _upcast_fits(inputs):
        with torch.no_grad():
            return as_list(target.reference(*_clone(inputs)))
    try:
        with torch.no_grad():
            out = as_list(target.reference(*_upcast(_clone(inputs))))
        if all(not isinstance(o, torch.Tensor) or o.dtype in (torch.float64, torch.complex128) or not o.is_floating_point()
               for o in out):
            return out
    except Exception:
        pass
    with torch.no_grad():
        return as_list(target.reference(*_clone(inputs)))


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def compare(trial: int, index: int, out: Any, ref: Any, target: Target) -> OutputCheck:
    """Compare one output with its reference; elementwise |o-r| <= atol + rtol*|r|."""
    if not isinstance(ref, torch.Tensor):
        ok = out == ref if not isinstance(out, torch.Tensor) else False
        return OutputCheck(trial, index, [], type(ref).__name__, 0.0 if ok else math.inf, 0.0 if ok else math.inf,
                           0.0 if ok else math.inf, 0.0, 0.0, bool(ok), "" if ok else f"expected {ref!r}, got {out!r}")
    if not isinstance(out, torch.Tensor):
        return OutputCheck(trial, index, list(ref.shape), _dtype_name(ref), math.inf, math.inf, math.inf, 0, 0, False,
                           f"output {index} is {type(out).__name__}, expected a tensor")
    dtype = _dtype_name(out)
    rtol, atol = target.tolerance_for(dtype)
    if tuple(out.shape) != tuple(ref.shape):
        return OutputCheck(trial, index, list(out.shape), dtype, math.inf, math.inf, math.inf, rtol, atol or 0.0, False,
                           f"shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    return _compare_chunked(trial, index, out, ref, dtype, rtol, atol, CHUNK)


def _unwritten(target: Target, inputs: list[Any], first: list[Any], sync: Callable[[], None]) -> Optional[str]:
    """Re-run with a finite poison: elements equal to it were never written."""
    with Poison(SENTINEL):
        second = as_list(target.kernel(*_clone(inputs)))
    sync()
    for i, (a, b) in enumerate(zip(first, second)):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_floating_point()):
            continue
        nan_first = ~torch.isfinite(a)
        hit = nan_first & (b == SENTINEL)
        if hit.any():
            return (f"output {i}: {int(hit.sum())} of {a.numel()} elements were never written by the kernel "
                    "(they kept the poison profd filled the freshly allocated output with); check the grid "
                    "covers every element and the store masks")
    return None


def shape_size(shape: dict[str, Any]) -> float:
    """How big a shape is, for ordering: the product of its numeric values (1 for none)."""
    size = 1.0
    for v in shape.values():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            size *= max(float(v), 1.0)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v):
            size *= math.prod(max(x, 1) for x in v)
    return size


def verify(target: Target, device: torch.device, *, trials: int = 3, seed: int = 1234,
           sync: Callable[[], None] = lambda: None, on_phase: Callable[[str], None] = lambda s: None,
           order: str = "declared") -> Verdict:
    """Run kernel and reference on ``trials`` fresh input sets per declared shape.

    ``order="smallest-first"`` checks the cheapest shape first, so a broken kernel is
    rejected before the large shapes run (the first failure ends verification).
    Raises whatever the kernel raises (the child classifies it); returns a Verdict
    for semantic failures.
    """
    shapes = list(target.shapes)
    if target.bench_shape not in shapes:
        shapes.append(target.bench_shape)
    if order == "smallest-first":
        shapes.sort(key=shape_size)  # stable: equal sizes keep their declared order
    checks: list[OutputCheck] = []
    trial = 0
    for shape in shapes:
        # The timed shape is verified once; the declared shapes get every trial.
        n = 1 if shape is target.bench_shape and shape not in target.shapes else trials
        for _ in range(n):
            trial += 1
            # The last trial's tensors go before the next are made: two sets of a 7.5 GB input
            # do not fit beside each other's outputs.
            inputs = snapshot = ref = out = None  # type: ignore[assignment]
            inputs = make_inputs(target, shape, seed + 7919 * trial, device)
            short = memory_shortfall(inputs, device, shape)
            if short:
                return Verdict(Status.OUT_OF_MEMORY, short, trials=trial - 1, shapes=shapes, checks=checks)
            if not any(isinstance(v, torch.Tensor) and v.numel() and bool((v != 0).any()) for v in inputs):
                raise ValueError("get_inputs() returned only zeros or no tensors; profd needs random inputs "
                                 "(zeros hide unwritten outputs and wrong indexing). Use torch.randn/torch.rand.")
            snapshot = _clone(inputs)
            on_phase(f"reference, shape {shape or 'default'}, trial {trial}")
            ref = reference_outputs(target, inputs)
            sync()
            on_phase(f"kernel, shape {shape or 'default'}, trial {trial}")
            with Poison(float("nan")):
                out = as_list(target.kernel(*inputs))
            sync()
            for i, (before, after) in enumerate(zip(snapshot, inputs)):
                if isinstance(before, torch.Tensor) and not _same(before, after):
                    return Verdict(Status.MUTATED_INPUT, f"kernel(...) modified input {i} (shape {tuple(before.shape)}); "
                                   "a kernel must not write to its inputs: allocate the output instead",
                                   trials=trial, shapes=shapes, checks=checks)
            if len(out) != len(ref):
                return Verdict(Status.SHAPE_MISMATCH, f"kernel(...) returned {len(out)} outputs, reference {len(ref)}",
                               trials=trial, shapes=shapes, checks=checks)
            trial_checks = [compare(trial, i, o, r, target) for i, (o, r) in enumerate(zip(out, ref))]
            checks.extend(trial_checks)
            failed = [c for c in trial_checks if not c.passed]
            if failed:
                c = failed[0]
                where = f"shape {shape}" if shape else "the default shape"
                if c.reason.startswith("shape "):
                    return Verdict(Status.SHAPE_MISMATCH, f"output {c.output}: {c.reason} ({where})",
                                   trials=trial, shapes=shapes, checks=checks)
                if c.nonfinite:
                    unwritten = _unwritten(target, inputs, out, sync)
                    status = Status.UNWRITTEN if unwritten else Status.NONFINITE
                    msg = f"{unwritten or f'output {c.output}: {c.reason}'} ({where}, trial {trial})"
                    return Verdict(status, msg, trials=trial, shapes=shapes, checks=checks)
                return Verdict(Status.WRONG, f"output {c.output} is wrong on {where}, trial {trial}: {c.reason}; "
                               f"max abs error {c.max_abs_err:.3g}, relative (norm) error {c.norm_rel_err:.3g}",
                               trials=trial, shapes=shapes, checks=checks)
    worst = worst_of(checks)  # each error its own maximum, as the report's table shows them
    msg = f"correct on {trial} input sets over {len(shapes)} shape(s)"
    if worst is not None:
        msg += f"; worst relative (norm) error {worst.norm_rel_err:.2e}, max abs error {worst.max_abs_err:.2e}"
    return Verdict(Status.CORRECT, msg, trials=trial, shapes=shapes, checks=checks)


# --------------------------------------------------------------------------- the judge's comparison (issue #14)

#: Elements compared at once: verification memory stays a small multiple of one chunk
#: (float64 copies of a chunk), not of the whole output (issue #15: a 7.5 GB output once
#: asked for 56 GiB of float64 temporaries).
CHUNK = 1 << 24


def compare_strict(trial: int, index: int, out: Any, ref: Any, expected_dtype: Optional[torch.dtype],
                   target: Target, chunk: int = CHUNK) -> OutputCheck:
    """Compare one claimed output with the reference, chunk by chunk.

    Stricter than :func:`compare`: the output's dtype and shape must equal the
    reference's (``expected_dtype``: what the reference returns on the native inputs),
    and the tolerance comes from the *reference's* dtype, so returning fp16 for an fp32
    reference neither passes nor buys a looser tolerance.
    """
    if not isinstance(ref, torch.Tensor) or not isinstance(out, torch.Tensor):
        return compare(trial, index, out, ref, target)
    want = expected_dtype or ref.dtype
    dname = _dtype_name(torch.empty(0, dtype=want))
    rtol, atol = target.tolerance_for(dname)
    if out.dtype != want:
        return OutputCheck(trial, index, list(out.shape), _dtype_name(out), math.inf, math.inf, math.inf, rtol,
                           atol or 0.0, False, f"dtype {_dtype_name(out)} differs from the reference's {dname}")
    if tuple(out.shape) != tuple(ref.shape):
        return OutputCheck(trial, index, list(out.shape), dname, math.inf, math.inf, math.inf, rtol, atol or 0.0,
                           False, f"shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    return _compare_chunked(trial, index, out, ref, dname, rtol, atol, chunk)


def _compare_chunked(trial: int, index: int, out: torch.Tensor, ref: torch.Tensor, dname: str, rtol: float,
                     atol: Optional[float], chunk: int) -> OutputCheck:
    """Elementwise |o-r| <= atol + rtol*|r| in float64, ``chunk`` elements at a time.

    Memory stays a few float64 chunks whatever the output's size (issue #15: a 7.5 GB
    output once asked for 56 GiB: boolean indexing of a 4-D tensor made int64 indices)."""
    cplx = out.is_complex() or ref.is_complex()
    up = torch.complex128 if cplx else torch.float64
    o_flat, r_flat = out.detach().reshape(-1), ref.detach().reshape(-1)
    n = o_flat.numel()
    # Pass 1: the reference's RMS over finite elements (for the absolute floor).
    sq, cnt = 0.0, 0
    for s in range(0, n, chunk):
        r = r_flat[s:s + chunk].to(up)
        f = torch.isfinite(r)
        sq += float((torch.abs(r[f]) ** 2).sum())
        cnt += int(f.sum())
    rms = math.sqrt(sq / cnt) if cnt else 0.0
    abs_floor = atol if atol is not None else rtol * max(rms, 1e-30)
    n_bad = n_nonfinite = 0
    max_abs = max_rel = dsq = 0.0
    first: Optional[int] = None
    for s in range(0, n, chunk):
        o = o_flat[s:s + chunk].to(out.device).to(up)
        r = r_flat[s:s + chunk].to(o.device, up)
        rf = torch.isfinite(r)
        of = torch.isfinite(o)
        bad_nf = (~of) & rf
        ok_special = (torch.isnan(o) & torch.isnan(r)) | (torch.isinf(o) & torch.isinf(r) & (o == r))
        diff = torch.where(rf & of, torch.abs(o - r), torch.zeros(1, dtype=torch.float64, device=o.device))
        ar = torch.abs(torch.where(rf, r, torch.zeros(1, dtype=up, device=o.device)))
        outside = (diff > abs_floor + rtol * ar) | bad_nf | (~rf & ~ok_special)
        nb = int(outside.sum())
        if nb and first is None:
            first = s + int(torch.nonzero(outside)[0])
        n_bad += nb
        n_nonfinite += int(bad_nf.sum())
        if diff.numel():
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / (ar + abs_floor)).max()))
        dsq += float((diff ** 2).sum())
    ref_norm = math.sqrt(sq)
    norm_rel = math.sqrt(dsq) / ref_norm if ref_norm else max_abs
    reason = ""
    if n_nonfinite:
        reason = f"{n_nonfinite} of {n} elements are NaN/Inf where the reference is finite"
    elif n_bad and first is not None:
        pos = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), tuple(out.shape))) if out.dim() else ()
        reason = (f"{n_bad} of {n} elements outside tolerance (rtol {rtol:g}, atol {abs_floor:.3g}); first at index "
                  f"{pos}: got {float(o_flat[first].real):.6g}, expected {float(r_flat[first].real):.6g}")
    return OutputCheck(trial, index, list(out.shape), dname, max_abs, max_rel, norm_rel, rtol, abs_floor,
                       passed=not n_bad, reason=reason, mismatched=n_bad, nonfinite=n_nonfinite)
