"""The practical roofline of a device: measured ceilings (cached) or datasheet peaks.

Measuring runs ``hwspecs/_bench.py`` in a child process on the GPU: a device-to-device
copy (bytes read + written per second) and large matmuls on random data, median of
several runs each. The result is cached as JSON per database entry, so a daemon
restart does not repeat it; ``ceilings_for()`` reads that cache and otherwise falls back
to the datasheet figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from hwspecs.spec import Ceilings, DeviceSpec

BENCH = Path(__file__).with_name("_bench.py")
CACHE_FORMAT = 1
GiB = 1 << 30
# Matmul sizes: bf16/fp16 8192^3 is ~1.1 TFLOP, long enough to reach steady clocks on
# the fastest parts; fp32/tf32 at 4096^3 keeps a run under ~50 ms on the slowest ones.
MATMUL_SIZES = {"bf16": 8192, "fp16": 8192, "tf32": 4096, "fp32": 4096, "fp64": 4096}


def datasheet_ceilings(spec: DeviceSpec) -> Ceilings:
    """The datasheet peaks of ``spec`` as a ``Ceilings`` (source "datasheet")."""
    return Ceilings(
        device=spec.key,
        memory_gbps=spec.memory_bandwidth_gbps,
        tflops=dict(spec.peak_tflops),
        source="datasheet",
        notes=[f"datasheet peaks of {spec.name}, not measured on this device: "
               "even the best kernels top out below them"],
    )


def ridge_point(ceilings: Ceilings, precision: str) -> Optional[float]:
    """FLOP/byte where the memory and compute ceilings meet for ``precision``, or None."""
    tflops = ceilings.tflops.get(precision)
    if not tflops or not ceilings.memory_gbps:
        return None
    # (TFLOP/s * 1e12) / (GB/s * 1e9)
    return tflops * 1e3 / ceilings.memory_gbps


def cache_path(key: str, cache_dir: Path) -> Path:
    """Where the measured ceilings of database entry (or device slug) ``key`` live."""
    return Path(cache_dir) / f"ceilings-{_slug(key)}.json"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def read_cached(key: str, cache_dir: Path) -> Optional[Ceilings]:
    """The cached measured ceilings for ``key``, or None (absent, unreadable, other key)."""
    path = cache_path(key, cache_dir)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
        return None
    try:
        c = Ceilings.from_dict(data["ceilings"])
    except (KeyError, TypeError, ValueError):
        return None
    if not c.memory_gbps or c.memory_gbps <= 0 or not c.tflops:
        return None
    return c


def write_cache(key: str, cache_dir: Path, ceilings: Ceilings, device_name: str = "") -> Path:
    """Store measured ceilings atomically (a crash mid-write leaves the old file)."""
    path = cache_path(key, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CACHE_FORMAT, "key": key, "device_name": device_name,
               "ceilings": ceilings.to_dict()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)
    return path


def _default_cache_dir() -> Optional[Path]:
    try:
        from profd.paths import state_dir
    except ImportError:
        return None
    return state_dir()


def _ceiling_key(spec: Optional[DeviceSpec], precision: str) -> str:
    """The ceiling a matmul of ``precision`` measures.

    BLAS runs fp64 (and on AMD fp32) matmuls on the tensor/matrix cores where the
    device has them: on an H200 an fp64 matmul reaches ~61 TFLOP/s against the
    33.5 of the FMA pipes, so it measures "fp64_tensor".
    """
    tensor = f"{precision}_tensor"
    return tensor if spec is not None and tensor in spec.peak_tflops else precision


def _plan(spec: Optional[DeviceSpec], index: int, reps: int) -> dict[str, Any]:
    cached = (spec.l2_bytes + spec.infinity_cache_bytes) if spec else 0
    if spec is not None:
        wanted = [p for p in MATMUL_SIZES if p in spec.peak_tflops]
    else:
        wanted = ["bf16", "fp16", "tf32", "fp32"]
    matmuls = []
    for p in wanted:
        n = MATMUL_SIZES[p]
        # Consumer parts do FP64 at 1/64 rate: 4096^3 would take ~0.1 s per run there.
        if p == "fp64" and spec is not None and spec.peak_tflops.get("fp64", 0) < 10:
            n = 2048
        matmuls.append([p, n, _ceiling_key(spec, p)])
    # >= 1 GiB and >= 4x every cache level in the way, so the copy streams from DRAM.
    return {"index": index, "copy_bytes": max(GiB, 4 * cached), "matmuls": matmuls,
            "reps": reps, "copy_reps": 2 * reps}


def measure_ceilings(
    spec: Optional[DeviceSpec],
    cache_dir: Optional[Path] = None,
    *,
    index: int = 0,
    reps: int = 10,
    timeout: float = 600.0,
    python: Optional[str] = None,
) -> Ceilings:
    """Measure memory bandwidth and matmul TFLOP/s on GPU ``index`` (GPU only).

    Runs in a child process; the caller never holds a GPU context. Precisions the
    benchmark does not cover (fp8, ...) keep their datasheet value and are named in
    ``notes``. Writes the cache when ``cache_dir`` is given. Raises ``RuntimeError``
    when there is no GPU or the benchmark fails.
    """
    plan = _plan(spec, index, reps)
    try:
        proc = subprocess.run(
            [python or sys.executable, str(BENCH), json.dumps(plan)],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"ceiling benchmark timed out after {timeout:.0f} s") from exc
    result: Optional[dict[str, Any]] = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    if result is None:
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
        raise RuntimeError(f"ceiling benchmark exited {proc.returncode} without a result: {tail}")
    if not result.get("ok"):
        raise RuntimeError(f"ceiling benchmark failed: {result.get('error')}")

    name = str(result.get("name") or "")
    key = spec.key if spec is not None else _slug(name)
    measured = {k: float(v) for k, v in result.get("tflops", {}).items()}
    notes = list(result.get("notes", []))
    notes.append(f"measured on {name} (GPU {index}, torch {result.get('torch_version', '?')}): "
                 f"copy of {result['details']['copy_bytes'] / GiB:.2f} GiB, "
                 f"matmuls {', '.join(f'{k} {n}^3' for _, n, k in plan['matmuls'])}, "
                 f"median of {reps}+")
    tflops = dict(measured)
    if spec is not None:
        for prec, peak in spec.peak_tflops.items():
            if prec not in measured:
                tflops[prec] = peak
        datasheet_only = sorted(set(spec.peak_tflops) - set(measured))
        if datasheet_only:
            notes.append(f"datasheet values kept for: {', '.join(datasheet_only)}")
        checks = [("memory", float(result["memory_gbps"]), spec.memory_bandwidth_gbps)]
        checks += [(p, v, spec.peak_tflops.get(p, 0.0)) for p, v in measured.items()]
        for what, got, peak in checks:
            if peak and got > 1.1 * peak:
                notes.append(f"{what}: measured {got:.1f} exceeds the datasheet {peak:.1f}; "
                             f"is {spec.key} the right database entry?")
    c = Ceilings(
        device=key,
        memory_gbps=float(result["memory_gbps"]),
        tflops=tflops,
        source="measured",
        measured_at=time.time(),
        details={k: float(v) for k, v in result.get("details", {}).items()},
        notes=notes,
    )
    if cache_dir is not None:
        write_cache(key, Path(cache_dir), c, device_name=name)
    return c


def is_measured(ceilings: Ceilings, precision: str) -> bool:
    """Whether ``precision``'s figure in ``ceilings`` came from the benchmark."""
    return ceilings.source == "measured" and f"{precision}_median_ms" in ceilings.details


def ceilings_for(
    spec: DeviceSpec,
    cache_dir: Optional[Path] = None,
    measure: bool = False,
    *,
    index: int = 0,
) -> Ceilings:
    """The ceilings to use for ``spec``: cached measurement, fresh measurement, or datasheet.

    ``cache_dir`` defaults to profd's state directory. With ``measure=True`` and no
    cache, the benchmark runs now (GPU only); if it fails, the datasheet figures come
    back with a note saying why.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    if cache_dir is not None:
        cached = read_cached(spec.key, cache_dir)
        if cached is not None:
            return cached
    if measure:
        try:
            return measure_ceilings(spec, cache_dir, index=index)
        except RuntimeError as exc:
            fallback = datasheet_ceilings(spec)
            fallback.notes.append(f"measurement failed, datasheet used: {exc}")
            return fallback
    return datasheet_ceilings(spec)

