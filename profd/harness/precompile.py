"""Compile the next Triton candidates ahead, in processes that cannot reach the GPU.

A Triton candidate's first call compiles it: 0.6-2.8 s per candidate on an H200 host
(Unsloth's cross-entropy, a 32768-wide block: 65.7 s over 23 candidates of a 117 s
session), CPU work on the critical path while the GPU waits. The tuner knows a round's
candidates before the judge measures the first of them, so each of the others is compiled
meanwhile in a fork of the warm worker that

* is confined like a candidate's child (writes to its scratch dir and that candidate's own
  cache only; no network, no signals outside its group), and moreover refuses ``ioctl``, the
  call every GPU driver goes through: candidate code runs there, beside a measurement, and
  must not be able to touch the device being measured;
* pretends to be on that device: Triton gets the target the baseline child reported
  (``current_target``), ``torch.cuda.is_available()`` answers True so a module that picks its
  code by device picks the GPU's, and the candidate's ``kernel(...)`` is called on meta tensors
  with the shapes, strides and dtypes the baseline's inputs had (``specs_of``);
* makes every Triton launch a compile-only warm-up (and an autotuner compile every config):
  the kernels land in the candidate's private cache under the keys its own child will look up,
  whose first call then loads them instead of compiling.

Whatever does not fit (a wrapper that reads data, allocates on ``cuda`` explicitly, or launches
through a compiled handle) just compiles nothing: the candidate's child compiles it as before.
No verdict depends on this; it only moves work off the critical path.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

# --------------------------------------------------------------------------- in the measuring child


def current_target() -> Optional[dict[str, Any]]:
    """The active Triton target and the device's identity, as a compile-only process needs them."""
    try:
        import torch
        from triton.runtime import driver

        t = driver.active.get_current_target()
        dev = torch.cuda.current_device()
        return {"backend": t.backend, "arch": t.arch, "warp_size": t.warp_size,
                "capability": list(torch.cuda.get_device_capability(dev)), "name": torch.cuda.get_device_name(dev)}
    except Exception:
        return None


def specs_of(values: list[Any]) -> list[dict[str, Any]]:
    """Each input as a spec: a tensor's shape, stride, storage offset and dtype; a plain value as is."""
    import torch

    out: list[dict[str, Any]] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append({"shape": list(v.shape), "stride": list(v.stride()), "offset": int(v.storage_offset()),
                        "dtype": str(v.dtype).removeprefix("torch."), "grad": bool(v.requires_grad)})
        elif v is None or isinstance(v, (bool, int, float, str)):
            out.append({"value": v})
        else:
            out.append({"unsupported": type(v).__name__})
    return out


# --------------------------------------------------------------------------- in the compile-only fork


def _meta_inputs(specs: list[dict[str, Any]]) -> list[Any]:
    import torch

    out: list[Any] = []
    for s in specs:
        if "shape" in s:
            t = torch.empty_strided(s["shape"], s["stride"], dtype=getattr(torch, s["dtype"]), device="meta")
            if s.get("offset"):
                t = t.as_strided(s["shape"], s["stride"], s["offset"])
            out.append(t.requires_grad_(bool(s.get("grad"))) if t.is_floating_point() else t)
        elif "value" in s:
            out.append(s["value"])
        else:
            raise TypeError(f"an input of type {s.get('unsupported')} has no spec")
    return out


class _Driver:
    """Triton's view of the GPU the baseline ran on, without opening it."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: Any = None) -> int:
        return 0

    def get_active_torch_device(self) -> Any:
        import torch

        return torch.device("meta")


def _pretend(target: dict[str, Any]) -> None:
    """Make Triton and torch.cuda's queries answer as on the baseline's GPU (no driver call)."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    driver.set_active(_Driver(GPUTarget(target["backend"], target["arch"], target["warp_size"])))
    cap = tuple(target.get("capability") or (target["arch"] // 10, target["arch"] % 10))
    name = str(target.get("name") or "")
    torch.cuda.is_available = lambda: True  # type: ignore[assignment]
    torch.cuda.device_count = lambda: 1  # type: ignore[assignment]
    torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
    torch.cuda.get_device_capability = lambda device=None: cap  # type: ignore[assignment]
    torch.cuda.get_device_name = lambda device=None: name  # type: ignore[assignment]
    # FlagGems launches inside `with torch_device_fn.device(inp.device):` (torch.cuda.device on
    # NVIDIA), which refuses a meta tensor's device and would ask the driver for a real one: every
    # FlagGems candidate compiled nothing ahead and paid its compile in its child (2.5 s per loser,
    # H200). One device here, so selecting it is a no-op.
    torch.cuda.device = _OneDevice  # type: ignore[assignment, misc]
    torch.cuda.set_device = lambda device: None  # type: ignore[assignment]


#: What a meta tensor's integer value reads as in the compile-only process, one pass each. Triton
#: keys an integer argument by whether it is 1, whether it divides by 16, and its width, not by its
#: value: 16 lands on the key of any count the real run passes that divides by 16, 17 on the rest.
META_INTS = (16, 17)
META_FLOAT = 1.0


def _meta_reads() -> dict[str, int]:
    """Let a wrapper read a value off a meta tensor (``.item()``, ``bool``, ``int``, ``float``).

    Liger's cross-entropy counts its targets (``target_mask.sum().item()``) and asserts on their
    range before it launches; on meta tensors that raised, and none of its candidates compiled
    ahead (0 of 25 on an H200, 2026-12-03: 0.6 s of compile in each candidate's child). An integer
    read answers the returned state's ``"int"`` (the caller sets it per pass, :data:`META_INTS`), a
    condition ``True``; ``"reads"`` counts them. A wrong guess at worst compiles a variant the
    candidate's own child does not look up, which then compiles as before."""
    import torch

    state = {"int": META_INTS[0], "reads": 0}

    def reader(name: str, value: Callable[[Any], Any]) -> None:
        orig = getattr(torch.Tensor, name)

        def read(self: Any, *a: Any, **k: Any) -> Any:
            if getattr(self, "is_meta", False):
                state["reads"] += 1
                return value(self)
            return orig(self, *a, **k)

        setattr(torch.Tensor, name, read)

    def number(t: Any) -> Any:
        if t.dtype == torch.bool:
            return True
        return META_FLOAT if (t.dtype.is_floating_point or t.dtype.is_complex) else state["int"]

    reader("item", number)
    reader("__bool__", lambda t: True)
    reader("__int__", lambda t: state["int"])
    reader("__index__", lambda t: state["int"])
    reader("__float__", lambda t: META_FLOAT)
    return state


class _OneDevice:
    """``torch.cuda.device(...)`` in a process that pretends to have one GPU: selects nothing."""

    def __init__(self, device: Any = None) -> None:
        self.idx = 0

    def __enter__(self) -> "_OneDevice":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


def _compile_only(counter: dict[str, int]) -> None:
    """Every Triton launch of this process compiles and returns; an autotuner compiles every config."""
    from triton.runtime import jit

    orig_run = jit.JITFunction.run

    def run(self: Any, *a: Any, **k: Any) -> Any:
        k["warmup"] = True
        counter["launches"] += 1
        return orig_run(self, *a, **k)

    jit.JITFunction.run = run  # type: ignore[method-assign]
    orig_compile = jit.JITFunction._do_compile

    def do_compile(self: Any, *a: Any, **k: Any) -> Any:
        counter["compiles"] += 1
        return orig_compile(self, *a, **k)

    jit.JITFunction._do_compile = do_compile  # type: ignore[method-assign]
    try:
        from triton.runtime.autotuner import Autotuner
    except Exception:
        return

    def tune_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.nargs = dict(zip(self.arg_names, args))
        ret = None
        for config in self.configs:
            try:
                ret = self.fn.run(*args, **kwargs, **config.all_kwargs())
            except Exception:
                pass  # a config that does not compile: the autotuner skips it in the real run too
        self.nargs = None
        return ret

    Autotuner.run = tune_run  # type: ignore[method-assign]


def run(req: dict[str, Any]) -> dict[str, Any]:
    """Everything the compile-only fork does; the result it writes to its scratch dir."""
    from profd.harness import sandbox as S

    out: dict[str, Any] = {"compiled": 0, "shapes": {}}
    try:
        # Below the measuring child: it runs beside a measurement whose host side (a sync-serialised
        # loop) is part of what profd's own clock checks.
        os.nice(10)
    except OSError:
        pass
    S.sandbox_child(req["candidate"], Path.cwd() / "x", [req["original"], *req.get("sys_path", [])], candidate=True)
    confined = S.confine_candidate(gpu=False)
    if confined["GPU"].startswith("unavailable"):
        # Without the filter candidate code could open the GPU beside a measurement: compile nothing.
        out["refused"] = f"no ioctl filter here ({confined['GPU']})"
        return out
    counter = {"launches": 0, "compiles": 0}
    _pretend(req["target"])
    reads = _meta_reads()
    _compile_only(counter)
    from profd.harness.target import import_file

    for extra in reversed(req.get("sys_path", [])):
        sys.path.insert(0, extra)
    module = import_file(Path(req["candidate"]))
    kernel = getattr(module, "kernel", None)
    if not callable(kernel):
        out["refused"] = "no kernel(...) to call (KernelBench's ModelNew is compiled in its own child)"
        return out
    for name, specs in req["inputs"].items():
        t0 = time.perf_counter()
        before = counter["compiles"]
        try:
            reads["reads"] = 0
            for value in META_INTS:  # a second pass only where the wrapper read a value
                reads["int"] = value
                kernel(*_meta_inputs(specs))
                if not reads["reads"]:
                    break
            out["shapes"][name] = {"compiles": counter["compiles"] - before, "seconds": round(time.perf_counter() - t0, 3)}
        except Exception as e:  # its own child meets the same thing and reports it
            out["shapes"][name] = {"compiles": counter["compiles"] - before, "error": f"{type(e).__name__}: {e}"[:300]}
    out["compiled"] = counter["compiles"]
    return out


def main(argv: list[str]) -> int:
    """``python -m profd.harness.precompile REQUEST.json`` (or a fork of the warm worker): writes result.json."""
    req = json.loads(Path(argv[0]).read_text())
    try:
        res = run(req)
    except BaseException as e:  # noqa: BLE001 - a candidate's import can raise anything
        res = {"error": f"{type(e).__name__}: {e}"[:500]}
    tmp = Path("result.json.tmp")
    tmp.write_text(json.dumps(res, default=str))
    os.replace(tmp, "result.json")
    return 0


# --------------------------------------------------------------------------- in the judge


class Precompiler:
    """Compile-only forks of the warm worker, ``slots`` at a time, one per upcoming candidate."""

    def __init__(self, warm: Any, request_for: Callable[[Path], Optional[dict[str, Any]]],
                 env_for: Callable[[Path], dict[str, str]], slots: int) -> None:
        self.warm = warm
        self.request_for, self.env_for = request_for, env_for
        self.pool = ThreadPoolExecutor(max_workers=max(1, slots), thread_name_prefix="profd-precompile")
        self.jobs: dict[Path, Future] = {}
        self.lock = threading.Lock()
        self.closed = False

    def queue(self, files: list[Path]) -> None:
        """Candidates the judge will measure soon, in order (each compiled once). A new round
        supersedes the last: its candidates not started yet are dropped (after a kept candidate
        the tuner proposes from the new best, and the old round's would compile first)."""
        with self.lock:
            wanted = {Path(f) for f in files}
            for f, job in list(self.jobs.items()):
                if f not in wanted and job.cancel():
                    del self.jobs[f]
            for f in files:
                f = Path(f)
                if f not in self.jobs and not self.closed:
                    self.jobs[f] = self.pool.submit(self._compile, f)

    def _compile(self, f: Path) -> dict[str, Any]:
        req = self.request_for(f)
        if req is None:
            return {"refused": "no baseline specs"}
        scratch = Path(tempfile.mkdtemp(prefix="profd-precompile-"))
        os.chmod(scratch, 0o700)
        t0 = time.time()
        try:
            (scratch / "request.json").write_text(json.dumps(req))
            pid = self.warm.fork_module("precompile", scratch, scratch / "request.json", self.env_for(f))
            if pid is None:
                return {"refused": "the warm worker could not fork"}
            exit_file = scratch / "exit.json"
            while not exit_file.exists() and time.time() - t0 < 120 and self.warm.alive() and not self.closed:
                time.sleep(0.01)
            if not exit_file.exists():
                try:
                    os.killpg(pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
                return {"error": "did not finish"}
            try:
                res = json.loads((scratch / "result.json").read_text())
            except (OSError, ValueError):
                res = {"error": "no result (rc " + exit_file.read_text().strip() + ")"}
            res["seconds"] = round(time.time() - t0, 3)
            return res
        finally:
            from profd.harness.runner import remove_scratch

            remove_scratch(scratch)

    def settle(self, f: Path) -> None:
        """Before ``f``'s own child starts: a compile of ``f`` not started yet is dropped (the child
        compiles what it needs, and the slot goes to the next candidate). One under way is not
        waited for: it compiles every declared shape, where the child's first call needs one, and
        on an H200 waiting for those cost a softmax tune 17 s over four candidates."""
        job = self.jobs.get(Path(f))
        if job is not None:
            job.cancel()

    def outcome(self, f: Path) -> Optional[dict[str, Any]]:
        """What compiling ``f`` ahead did, if it has finished (None: not queued or still running)."""
        job = self.jobs.get(Path(f))
        if job is None or not job.done():
            return None
        try:
            return job.result()
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}

    def summary(self) -> dict[str, int]:
        """Counts for the session's report and the throughput bench."""
        done = [self.outcome(f) for f in list(self.jobs)]
        return {"queued": len(self.jobs), "finished": sum(1 for d in done if d is not None),
                "compiled": sum(1 for d in done if d and d.get("compiled")),
                "kernels": sum(int(d.get("compiled") or 0) for d in done if d)}

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)


def wanted(on_gpu: bool) -> bool:
    """Compile ahead only where a first call compiles (a GPU: Triton's interpreter compiles
    nothing). ``PROFD_PRECOMPILE=0`` turns it off; ``=1`` on everywhere (tests of the mechanism)."""
    flag = os.environ.get("PROFD_PRECOMPILE", "")
    if flag in ("0", "1"):
        return flag == "1"
    return on_gpu


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
