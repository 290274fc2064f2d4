"""The in-process sweep of bench/tuning_quality.py (one child process per example).

    python bench/_sweep_child.py time SPEC.json OUT.jsonl   # time every item, one JSON line each
    python bench/_sweep_child.py warm SPEC.json             # compile every item once (fills Triton's cache)

SPEC: {"example": name, "original": path, "quick": bool, "warmup_ms": 25, "rep_ms": 100,
       "items": [{"key": ..., "file": ...}, ...], "torch_op": bool}

Timing only, no verification: this is the baseline an autotuner over the same grid would
produce (``triton.testing.do_bench``, median, L2 cleared between runs). Each item's source
is imported as a module from its file; a config that does not compile or does not fit in
the device's resources is recorded with its error and the sweep goes on. A sticky CUDA
error (the context is unusable after it) ends the child with exit code 3; the parent
restarts it on the items that are left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

STICKY = ("illegal memory access", "misaligned address", "unspecified launch failure", "illegal instruction",
          "device-side assert", "CUDA error: an illegal")


def _import(path: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def torch_ops() -> dict[str, Callable[..., Any]]:
    import torch
    import torch.nn.functional as F

    return {
        "vector_add": lambda x, y: x + y,
        "softmax": lambda x: torch.softmax(x, dim=-1),
        "layernorm": lambda x, w, b, eps: F.layer_norm(x, (x.shape[-1],), w, b, eps),
        "matmul": lambda a, b: torch.matmul(a, b),
        "transpose": lambda x: x.t().contiguous(),
        "kernelbench_relu": lambda x: torch.relu(x),
    }


class Example:
    """Inputs at BENCH_SHAPE (drawn once, seeded) and a callable for any variant's module."""

    def __init__(self, original: str, quick: bool) -> None:
        import torch

        self.torch = torch
        self.on_gpu = torch.cuda.is_available() and not quick
        self.dev = torch.device("cuda" if self.on_gpu else "cpu")
        orig = _import(original, "bench_original")
        self.kernelbench = hasattr(orig, "ModelNew") and not hasattr(orig, "kernel")
        torch.manual_seed(0)
        if self.kernelbench:
            self.inputs = [t.to(self.dev) if hasattr(t, "to") else t for t in orig.get_inputs()]
            self.init = list(orig.get_init_inputs()) if hasattr(orig, "get_init_inputs") else []
        else:
            shape = getattr(orig, "BENCH_SHAPE", None) or {}
            self.inputs = list(orig.get_inputs(**shape))
            self.inputs = [t.to(self.dev) if hasattr(t, "to") else t for t in self.inputs]
            if hasattr(orig, "get_init_inputs"):
                self.inputs += list(orig.get_init_inputs())
            self.init = []

    def fn(self, mod: Any) -> Callable[[], Any]:
        inputs = self.inputs
        if self.kernelbench:
            model = mod.ModelNew(*self.init).to(self.dev)
            return lambda: model(*inputs)
        return lambda: mod.kernel(*inputs)

    def sync(self) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize()

    def bench(self, fn: Callable[[], Any], warmup_ms: float, rep_ms: float) -> float:
        if self.on_gpu:
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
        # CPU dry run: the interpreter has no events; wall-clock median of three runs.
        fn()
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return sorted(ts)[1]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def cmd_time(spec: dict[str, Any], out_path: Path) -> int:
    ex = Example(spec["original"], spec["quick"])
    warmup, rep = float(spec.get("warmup_ms", 25)), float(spec.get("rep_ms", 100))
    with open(out_path, "a") as out:
        def emit(rec: dict[str, Any]) -> None:
            out.write(json.dumps(rec) + "\n")
            out.flush()

        if spec.get("torch_op"):
            op = torch_ops()[spec["example"]]
            t0 = time.time()
            try:
                ms = ex.bench(lambda: op(*ex.inputs), warmup, rep)
                emit({"key": "torch", "ms": ms, "error": None, "wall_s": time.time() - t0})
            except Exception as e:
                emit({"key": "torch", "ms": None, "error": _first_line(e), "wall_s": time.time() - t0})
        for i, item in enumerate(spec["items"]):
            t0 = time.time()
            try:
                mod = _import(item["file"], f"bench_cfg_{os.getpid()}_{i}")
                fn = ex.fn(mod)
                ms = ex.bench(fn, warmup, rep)
                emit({"key": item["key"], "ms": ms, "error": None, "wall_s": time.time() - t0})
            except Exception as e:
                err = _first_line(e)
                emit({"key": item["key"], "ms": None, "error": err, "wall_s": time.time() - t0})
                if any(s.lower() in str(e).lower() for s in STICKY):
                    traceback.print_exc()
                    return 3
    return 0


def cmd_warm(spec: dict[str, Any]) -> int:
    """Compile each item once (a call on the timed inputs): fills the on-disk Triton cache."""
    ex, current = None, None
    done = 0
    for i, item in enumerate(spec["items"]):
        try:
            if current != item["example"]:
                # Items come grouped by example: hold one example's inputs at a time.
                ex, current = None, item["example"]
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                ex = Example(item["original"], spec["quick"])
            assert ex is not None
            mod = _import(item["file"], f"bench_warm_{os.getpid()}_{i}")
            ex.fn(mod)()
            ex.sync()
            done += 1
        except Exception as e:
            if any(s.lower() in str(e).lower() for s in STICKY):
                print(f"warm: sticky CUDA error on {item['key']}: {_first_line(e)}", file=sys.stderr)
                return 3
    print(json.dumps({"warmed": done, "items": len(spec["items"])}))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("time", "warm"):
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    if spec.get("quick"):
        os.environ["TRITON_INTERPRET"] = "1"
    if argv[0] == "time":
        return cmd_time(spec, Path(argv[2]))
    return cmd_warm(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
