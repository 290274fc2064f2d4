"""The harness child: loads user code, verifies, times, and reports as JSON.

Usage: ``python -m profd.harness.child REQUEST.json RESULT.json``. Everything that runs
user code happens in this process, so that a crash, a hang, an illegal memory
access or a full GPU takes down this child and never the daemon. The result is
written atomically; the phase the child is in is written beside it, so that the
parent can say where a hang happened.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

NVTX_RANGE = "profd_kernel"


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class BackendMismatch(RuntimeError):
    """A warm-worker fork whose Triton mode does not match the device (exit code 17)."""


class Child:
    """One request: set up the backend, run the phases, classify failures."""

    def __init__(self, request: dict[str, Any], result_path: Path) -> None:
        self.req = request
        self.result_path = result_path
        self.phase_path = result_path.with_suffix(".phase")
        self.target_path = Path(request["target"])

    def phase(self, text: str) -> None:
        try:
            self.phase_path.write_text(text)
        except OSError:
            pass

    def setup_backend(self) -> Any:
        """Choose GPU or the Triton interpreter before any user code imports Triton."""
        import torch

        use_gpu = torch.cuda.is_available() and not self.req.get("force_cpu")
        if use_gpu and os.environ.get("TRITON_INTERPRET") == "1" and "triton" in sys.modules:
            # Forked from a warm worker that decided "no GPU": Triton is already in interpreter
            # mode and cannot switch. Say so instead of timing the interpreter on a GPU box.
            raise BackendMismatch("this process sees a GPU but Triton was imported in interpreter mode")
        if not use_gpu:
            # Triton reads this when a kernel is decorated, i.e. when the target is imported.
            os.environ["TRITON_INTERPRET"] = "1"
        return torch

    def device_info(self, torch: Any) -> Any:
        from profd.model import DeviceInfo

        try:
            import triton

            tv = triton.__version__
        except Exception:
            tv = ""
        if os.environ.get("TRITON_INTERPRET") == "1":
            return DeviceInfo(name="cpu (Triton interpreter)", backend="cpu", torch_version=torch.__version__,
                              triton_version=tv)
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        backend = "hip" if getattr(torch.version, "hip", None) else "cuda"
        cc = getattr(p, "gcnArchName", "") if backend == "hip" else f"{p.major}.{p.minor}"
        return DeviceInfo(name=p.name, backend=backend, index=torch.cuda.current_device(), compute_capability=cc,
                          sm_count=p.multi_processor_count, total_memory_bytes=p.total_memory,
                          l2_bytes=getattr(p, "L2_cache_size", 0), driver=str(torch.version.cuda or torch.version.hip),
                          torch_version=torch.__version__, triton_version=tv)

    def run(self) -> dict[str, Any]:
        from profd.model import Measurement, Status, Verdict

        t_start = time.time()
        self.phase("starting")
        torch = self.setup_backend()
        if os.environ.get("TRITON_INTERPRET") != "1":
            # Bring the GPU up (driver, device files, primary context) before the sandbox:
            # CUDA's initialisation touches files the sandbox would refuse, and once the
            # context exists it needs nothing the sandbox forbids. (Under the sandbox first,
            # torch.cuda.is_available() came back False on an H100 VM.)
            torch.zeros(1, device="cuda")
            from profd.harness import gpu_spin

            gpu_spin.prepare()  # the timing's spin, loaded before user code runs (else: a one-thread sleep)
        # Sandbox (issue #9): before any user code is imported, this process (and all it
        # starts) may write only its scratch dir, the temp dir, compiler caches and /dev;
        # the user's sources and profd's store become read-only. See profd/harness/sandbox.py.
        from profd.harness.sandbox import sandbox_child

        _, sandbox_warnings = sandbox_child(self.target_path, self.result_path,
                                            self.req.get("extra", {}).get("sys_path", []),
                                            under_profiler=self.req.get("mode") == "counters")
        from profd.harness import verify as V
        from profd.harness.target import TargetLoadError, content_hash, load_target

        m = Measurement(target=str(self.target_path), content_hash="", verdict=Verdict(Status.INTERNAL),
                        started_at=t_start)
        m.warnings += sandbox_warnings  # "sandbox unavailable: ..." when Landlock is missing
        try:
            m.content_hash = content_hash(self.target_path)
        except OSError:
            pass
        m.device = self.device_info(torch)
        on_gpu = m.device.backend != "cpu"
        device = torch.device("cuda") if on_gpu else torch.device("cpu")
        sync = torch.cuda.synchronize if on_gpu else (lambda: None)

        self.phase("loading the target")
        # A candidate lives in profd's scratch space; let it import its original's siblings.
        for extra in reversed(self.req.get("extra", {}).get("sys_path", [])):
            sys.path.insert(0, extra)
        # CUDA C++ targets: no toolkit or GPU is a verdict; else builds are cached by source hash.
        from profd.harness.cuda_build import prepare_child

        cuda_verdict, self.build_hook = prepare_child(self.target_path)
        if cuda_verdict:
            m.verdict = Verdict(Status.LOAD_ERROR, cuda_verdict)
            return self.finish(m)
        try:
            target = load_target(self.target_path)
        except TargetLoadError as e:
            m.verdict = Verdict(Status.LOAD_ERROR, str(e), line=e.line, traceback=e.tb)
            return self.finish(m)

        try:
            if self.req.get("mode") == "counters":
                self.counters(target, device, sync, torch)
                m.verdict = Verdict(Status.CORRECT, "counters pass only: correctness is checked by the measure pass")
                return self.finish(m)
            m.verdict = V.verify(target, device, trials=int(self.req.get("trials", 3)),
                                 seed=int(self.req.get("seed", 1234)), sync=sync, on_phase=self.phase,
                                 order=str(self.req.get("shapes", "declared")))
            if m.verdict.correct and self.req.get("time", True):
                m.timing = self.time(target, device, on_gpu, torch)
                if self.req.get("time_shapes") == "all":
                    m.shape_timings = self.time_every_shape(target, device, on_gpu, torch, m.timing)
                m.launches = getattr(self, "launches", [])
        except BaseException as e:  # user code: classify anything it raises
            if isinstance(e, KeyboardInterrupt):
                raise
            m.verdict = classify(e, self.target_path, self.phase_path)
            if m.verdict.status == Status.ILLEGAL_ACCESS:
                # The CUDA context is unusable now: report and leave without touching it again.
                self.finish(m)
                os._exit(0)
        m.wall_s = time.time() - t_start
        return self.finish(m)

    def time_every_shape(self, target: Any, device: Any, on_gpu: bool, torch: Any, bench: Any) -> list[Any]:
        """One Timing per declared shape (the bench shape's is reused, not timed twice)."""
        out = []
        for shape in target.shapes:
            out.append(bench if shape == target.bench_shape else self.time(target, device, on_gpu, torch, shape))
        if target.bench_shape not in target.shapes:
            out.append(bench)
        return out

    def time(self, target: Any, device: Any, on_gpu: bool, torch: Any, shape: Any = None) -> Any:
        from profd.harness import timing as T
        from profd.harness import verify as V

        shape = target.bench_shape if shape is None else shape
        self.phase(f"timing, shape {shape or 'default'}")
        inputs = V.make_inputs(target, shape, int(self.req.get("seed", 1234)), device)
        flops = float(target.flops(*inputs)) if target.flops else None
        nbytes = float(target.bytes_moved(*inputs)) if target.bytes_moved else None
        fn = lambda: target.kernel(*inputs)  # noqa: E731
        # Issue 17: one call with Triton's launches recorded (values the knobs really had); untimed.
        # The bench shape's only: the tuner reads a knob's current value from these, and a helper
        # that picks warps by row size gives other shapes other values (Liger's layer norm took the
        # last declared shape's 8 warps for the bench shape's 2, and never proposed 8, the best).
        if shape == target.bench_shape:
            from profd.harness.launches import capture

            self.launches = capture(fn)
        if on_gpu:
            t = T.time_gpu(fn, flops=flops, nbytes=nbytes, rep_ms=float(self.req.get("rep_ms", 250.0)))
        else:
            t = T.time_cpu(fn, flops=flops, nbytes=nbytes)
        t.shape = shape
        return t

    def counters(self, target: Any, device: Any, sync: Any, torch: Any) -> None:
        """One warmed-up call of kernel(...) inside an NVTX range, for ncu to scope to."""
        from profd.harness import verify as V

        self.phase("counters: preparing inputs")
        inputs = V.make_inputs(target, target.bench_shape, int(self.req.get("seed", 1234)), device)
        target.kernel(*inputs)  # compile and warm up outside the range
        sync()
        self.phase("counters: profiled call")
        nvtx = torch.cuda.nvtx if device.type == "cuda" else None
        if nvtx is not None:
            nvtx.range_push(self.req.get("nvtx_range", NVTX_RANGE))
        target.kernel(*inputs)
        sync()
        if nvtx is not None:
            nvtx.range_pop()

    def finish(self, m: Any) -> dict[str, Any]:
        hook = getattr(self, "build_hook", None)
        if hook is not None and hook.records:
            m.builds = hook.summary()
        data = m.to_dict()
        _write(self.result_path, data)
        return data


_ILLEGAL = ("illegal memory access", "misaligned address", "illegal instruction", "device-side assert",
            "unspecified launch failure", "cudaErrorIllegalAddress", "hipErrorIllegalAddress")


def classify(e: BaseException, path: Path, phase_path: Path) -> Any:
    """Turn an exception from user code into a Verdict that names the cause and line."""
    from profd.model import Status, Verdict
    from profd.harness.target import _user_line

    tb = traceback.format_exc()
    line = _user_line(e.__traceback__, path)
    text = f"{type(e).__name__}: {e}"
    try:
        phase = phase_path.read_text()
    except OSError:
        phase = ""
    in_ref = phase.startswith("reference")
    where = f" ({path.name}:{line})" if line else ""
    low = str(e).lower()
    if type(e).__name__ == "OutOfMemoryError" or "out of memory" in low:
        return Verdict(Status.OUT_OF_MEMORY, f"ran out of GPU memory during {phase or 'the run'}{where}: {e}. "
                       "Use a smaller BENCH_SHAPE, free memory held by other processes (see `profd status`), "
                       "or check the kernel's own allocations.", line=line, traceback=tb)
    if any(s.lower() in low for s in _ILLEGAL):
        return Verdict(Status.ILLEGAL_ACCESS, f"illegal memory access on the GPU during {phase or 'the run'}{where}: "
                       f"{str(e).strip().splitlines()[0]}. A load or store went out of bounds: check the masks "
                       "(offsets < n) and the grid size. Run `compute-sanitizer python your_file.py` to find the "
                       "exact access.", line=line, traceback=tb)
    compile_line = _triton_compile_line(e)
    if compile_line is not None:
        line = compile_line
        where = f" ({path.name}:{line})"
    if in_ref:
        return Verdict(Status.REFERENCE_ERROR, f"reference(...) raised during {phase}{where}: {text}. "
                       "The reference must run on the inputs get_inputs() makes.", line=line, traceback=tb)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return Verdict(Status.KERNEL_ERROR, f"{type(e).__name__} in {phase or 'the run'}{where}: {first}",
                   line=line, traceback=tb)


def _triton_compile_line(e: BaseException) -> Optional[int]:
    """Triton's CompilationError carries the offending line of the jitted function."""
    if type(e).__name__ not in ("CompilationError", "CompileTimeAssertionFailure", "UnsupportedLanguageConstruct"):
        return None
    node = getattr(e, "node", None)
    src = getattr(e, "src", None)
    lineno = getattr(node, "lineno", None)
    fn = getattr(src, "fn", None) if src is not None else None
    start = getattr(fn, "starting_line_number", None) if fn is not None else None
    if lineno is not None and start is not None:
        return int(start) + int(lineno) - 1
    return None


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m profd.harness.child REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    try:
        Child(request, Path(argv[1])).run()
    except BackendMismatch as e:
        print(f"profd child: {e}", file=sys.stderr)
        return MISMATCH_EXIT
    return 0


#: Exit status of a fork whose warm worker picked the wrong Triton mode: run it cold instead.
MISMATCH_EXIT = 17


if __name__ == "__main__":
    sys.exit(main())
