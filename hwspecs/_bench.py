"""Child-process micro-benchmark of a GPU's practical ceilings; prints one JSON line.

Run as ``python _bench.py '<json plan>'`` by ``hwspecs.ceilings.measure_ceilings``;
never imported by the daemon (it creates a CUDA/HIP context). Self-contained: only
torch is needed in the child.

Plan keys: index, copy_bytes, matmuls ([[precision, n, ceiling_key], ...]), reps,
copy_reps, cooldown_s. ``ceiling_key`` names the ceiling a matmul measures: an fp64
matmul runs on the FP64 tensor cores where there are some, so it measures
"fp64_tensor", not the FMA-pipe "fp64".
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def _timed(torch, fn, reps: int, warmup: int = 3) -> list[float]:
    """Per-call device time in ms (CUDA/HIP events), sorted."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)


def _spread_pct(times: list[float]) -> float:
    med = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) >= 4 else [times[0], med, times[-1]]
    return 100.0 * (q[2] - q[0]) / med if med else 0.0


def _nvml_reasons(uuid: str):
    """A callable returning the active clock-event reason mask, or None without NVML.

    NVML is optional here; it tells whether a ceiling was measured under a power or
    thermal cap, which explains a figure well below the datasheet.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        get = (getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
               or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)
        get(handle)
        return lambda: int(get(handle))
    except Exception:  # noqa: BLE001 - no NVML (AMD, containers): just no annotation
        return None


# nvml.h bits that mean the GPU slowed itself down (power cap, thermal, hw slowdown).
_SLOWDOWN_BITS = {0x4: "power cap", 0x8: "hw slowdown", 0x20: "thermal (sw)",
                  0x40: "thermal (hw)", 0x80: "power brake"}


def run(plan: dict) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"ok": False, "error": f"no GPU visible to torch {torch.__version__}"}
    index = int(plan.get("index", 0))
    torch.cuda.set_device(index)
    dev = torch.device("cuda", index)
    props = torch.cuda.get_device_properties(index)
    hip = bool(getattr(torch.version, "hip", None))
    reps = int(plan.get("reps", 10))
    out: dict = {"ok": True, "name": props.name, "tflops": {}, "details": {}, "notes": []}
    details, notes = out["details"], out["notes"]
    gen = torch.Generator(device=dev)
    gen.manual_seed(1234)
    uuid = str(getattr(props, "uuid", "") or "")
    reasons = _nvml_reasons(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}") if not hip else None

    slowed: dict[str, list[str]] = {}  # slowdown reason -> what was measured under it

    def note_slowdown(what: str) -> None:
        mask = reasons() if reasons is not None else 0
        for bit, name in _SLOWDOWN_BITS.items():
            if mask & bit:
                slowed.setdefault(name, []).append(what)

    # ---- memory: device-to-device copy of a buffer far larger than the caches
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    nbytes = max(int(plan.get("copy_bytes", 1 << 30)), 4 * l2, 1 << 30)
    free, _total = torch.cuda.mem_get_info(index)
    if 2 * nbytes > 0.7 * free:  # source + destination must fit with room to spare
        nbytes = int(0.35 * free) // (1 << 20) * (1 << 20)
        notes.append(f"copy buffer shrunk to {nbytes / 2**30:.2f} GiB to fit free memory")
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=dev).uniform_(-1.0, 1.0, generator=gen)
    dst = torch.empty_like(src)
    times = _timed(torch, lambda: dst.copy_(src), int(plan.get("copy_reps", 20)))
    note_slowdown("memory copy")
    med = statistics.median(times)
    # A copy reads every byte once and writes it once.
    out["memory_gbps"] = 2 * n * 4 / (med * 1e-3) / 1e9
    details.update(copy_bytes=float(n * 4), copy_median_ms=med,
                   copy_spread_pct=_spread_pct(times), copy_reps=float(len(times)))
    if not torch.equal(dst[:1024], src[:1024]):
        return {"ok": False, "error": "copy benchmark produced wrong data"}
    del src, dst
    torch.cuda.empty_cache()

    # ---- compute: large matmuls on random data (zeros would let the hardware idle)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
              "tf32": torch.float32, "fp64": torch.float64}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    cooldown = float(plan.get("cooldown_s", 1.0))
    try:
        for precision, size, key in plan.get("matmuls", []):
            if precision not in dtypes:
                notes.append(f"{key}: not measured (no plain matmul benchmark)")
                continue
            if precision == "tf32" and (hip or props.major < 8):
                notes.append("tf32: not measured (TF32 matmul not available through torch here)")
                continue
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            size = int(size)
            a = torch.randn(size, size, dtype=dtypes[precision], device=dev, generator=gen)
            b = torch.randn(size, size, dtype=dtypes[precision], device=dev, generator=gen)
            c = torch.empty(size, size, dtype=dtypes[precision], device=dev)
            # Under a power cap the first ~100 ms run faster than what follows, and
            # the order of the precisions would decide who gets the burst: rest the
            # GPU, then ramp the clocks for a fixed time before timing each one.
            time.sleep(cooldown)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.2:
                torch.matmul(a, b, out=c)
                torch.cuda.synchronize()
            times = _timed(torch, lambda: torch.matmul(a, b, out=c), reps)
            note_slowdown(f"{key} matmul")
            if not bool(torch.isfinite(c).all()):
                notes.append(f"{key}: matmul produced non-finite values, discarded")
                continue
            flop = 2.0 * size**3
            out["tflops"][key] = flop / (statistics.median(times) * 1e-3) / 1e12
            details[f"{key}_n"] = float(size)
            details[f"{key}_median_ms"] = statistics.median(times)
            details[f"{key}_best_tflops"] = flop / (times[0] * 1e-3) / 1e12
            details[f"{key}_spread_pct"] = _spread_pct(times)
            del a, b, c
            torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    for name, what in slowed.items():
        notes.append(f"NVML reported {name} right after: {', '.join(what)} "
                     "(sustained ceilings, below what a short burst reaches)")
    out["torch_version"] = torch.__version__
    return out


def main(argv: list[str]) -> int:
    plan = json.loads(argv[1]) if len(argv) > 1 else {}
    try:
        result = run(plan)
    except Exception as exc:  # noqa: BLE001 - the parent decides what a failure means
        result = {"ok": False, "error": repr(exc)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
