"""Place a kernel on the roofline of its device.

The roofline says what the kernel could do at best: with arithmetic intensity ``I`` (FLOP per
byte of device memory traffic) it cannot beat ``min(peak FLOP/s, I x peak bandwidth)``. Where
``I`` is below the ridge point (``peak FLOP/s / peak bandwidth``) the memory ceiling applies,
above it the compute ceiling. How far below its ceiling a kernel sits tells what kind of
problem it has:

* near the ceiling (memory- or compute-bound): little to gain without moving less data or doing
  less work;
* far below both ceilings (latency-bound): neither unit is busy, the kernel waits (too little in
  flight, too few warps, dependent chains);
* very short (launch-bound): fixed launch and ramp costs dominate.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from hwspecs.spec import Ceilings
from profd.model import CounterTable, Roofline

#: Below this many seconds a launch is dominated by fixed costs (launch, ramp-up, drain).
LAUNCH_BOUND_S = 10e-6
#: Below this percent of both ceilings the kernel is latency-bound, not bandwidth/compute-bound.
LATENCY_BOUND_PCT = 30.0

_PRECISION_ALIASES = {
    "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
    "float64": "fp64", "double": "fp64", "tf32": "tf32", "float8": "fp8", "fp8e4m3": "fp8", "fp8e5m2": "fp8",
    "int8": "int8",
}


def peak_tflops(ceilings: Optional[Ceilings], precision: str) -> Optional[float]:
    """The compute ceiling for ``precision`` (``bf16``, ``fp32``, ...), or None when unknown."""
    if ceilings is None or not ceilings.tflops:
        return None
    p = _PRECISION_ALIASES.get(precision.lower(), precision.lower())
    table = {k.lower(): v for k, v in ceilings.tflops.items()}
    for key in (p, "fp16" if p == "bf16" else "", "bf16" if p == "fp16" else ""):
        if key and table.get(key):
            return float(table[key])
    return None


def place(
    flops: Optional[float],
    bytes: Optional[float],
    time_s: float,
    ceilings: Optional[Ceilings],
    precision: str = "bf16",
) -> Roofline:
    """Place one kernel run on the roofline.

    ``flops`` and ``bytes`` are per call (either may be None when unknown), ``time_s`` the time
    of one call. The classification uses the ceiling that applies at the kernel's intensity;
    without an intensity it falls back to whichever of bandwidth or FLOP/s is known.
    """
    peak_tf = peak_tflops(ceilings, precision)
    peak_bw = float(ceilings.memory_gbps) if ceilings is not None and ceilings.memory_gbps else None
    achieved_tf = flops / time_s / 1e12 if flops is not None and time_s > 0 else None
    achieved_bw = bytes / time_s / 1e9 if bytes is not None and time_s > 0 else None
    intensity = flops / bytes if flops is not None and bytes else None
    ridge = peak_tf * 1e12 / (peak_bw * 1e9) if peak_tf and peak_bw else None

    mem_pct = 100.0 * achieved_bw / peak_bw if achieved_bw is not None and peak_bw else None
    cmp_pct = 100.0 * achieved_tf / peak_tf if achieved_tf is not None and peak_tf else None

    side: Optional[str] = None  # which ceiling applies
    if intensity is not None and ridge is not None:
        side = "memory" if intensity < ridge else "compute"
    elif mem_pct is not None and cmp_pct is None:
        side = "memory"
    elif cmp_pct is not None and mem_pct is None:
        side = "compute"
    elif mem_pct is not None and cmp_pct is not None:
        side = "memory" if mem_pct >= cmp_pct else "compute"
    pct = mem_pct if side == "memory" else cmp_pct if side == "compute" else None

    if 0 < time_s < LAUNCH_BOUND_S:
        bound = "launch-bound"
    elif pct is None:
        bound = "unknown"
    elif max(p for p in (mem_pct, cmp_pct) if p is not None) < LATENCY_BOUND_PCT:
        bound = "latency-bound"
    else:
        bound = f"{side}-bound"

    return Roofline(
        device=ceilings.device if ceilings is not None else "",
        flops=flops,
        bytes=bytes,
        time_s=time_s,
        intensity=intensity,
        ridge=ridge,
        achieved_tflops=achieved_tf,
        achieved_gbps=achieved_bw,
        peak_tflops=peak_tf,
        peak_gbps=peak_bw,
        pct_of_ceiling=pct,
        bound=bound,
        precision=precision,
        ceilings_source=ceilings.source if ceilings is not None else "",
    )


def _num(row: Mapping[str, Any], key: str) -> Optional[float]:
    v = row.get(key)
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def counter_bytes(row: Mapping[str, Any]) -> Optional[float]:
    """Device-memory bytes of one launch from the counters (read + write, or bandwidth x time)."""
    total = _num(row, "dram_bytes")
    if total is None:
        r, w = _num(row, "dram_bytes_read"), _num(row, "dram_bytes_write")
        if r is not None or w is not None:
            total = (r or 0.0) + (w or 0.0)
    if total is None:
        bw, t = _num(row, "dram_bandwidth_bytes_per_s"), _num(row, "duration_ns")
        if bw is not None and t:
            total = bw * t * 1e-9
    return total


def from_counters(
    row: Mapping[str, Any],
    ceilings: Optional[Ceilings],
    precision: str = "bf16",
    *,
    flops: Optional[float] = None,
    bytes: Optional[float] = None,
    time_s: Optional[float] = None,
) -> Roofline:
    """Place a profiled launch on the roofline from its counters.

    ``row`` maps canonical metric names to values (one launch). The target's own ``flops()`` /
    ``bytes_moved()`` win when given; otherwise the profiler's FLOP count (``flops``) and DRAM
    bytes are used. Where the profiler measured its speed-of-light percentages, they decide the
    class (``refine_with_counters``): a percent of a datasheet peak is a weaker witness than the
    units' own busy counters.
    """
    t = time_s if time_s is not None else ((_num(row, "duration_ns") or 0.0) * 1e-9)
    f = flops if flops is not None else _num(row, "flops")
    b = bytes if bytes is not None else counter_bytes(row)
    roof = place(f, b, t, ceilings, precision)
    refine_with_counters(roof, row)
    return roof


#: Compute units whose busy percentage counts as "compute" in the speed-of-light class.
_COMPUTE_SOL = ("sm_throughput_pct", "tensor_pipe_pct", "mfma_util_pct", "valu_util_pct")


def refine_with_counters(roof: Roofline, row: Mapping[str, Any]) -> bool:
    """Let the profiler's speed-of-light percentages decide ``roof.bound``; True when they did.

    A timed placement compares achieved FLOP/s with a datasheet peak, which clocks, the precision
    actually used (tf32 or not) and the peak's own optimism all distort: a matmul at 271 of 989
    TFLOP/s sits under 30% of the peak and would read "latency-bound" while its tensor pipes are
    busy. The busiest memory unit and the busiest compute unit, each against its own peak, say
    which one is the limit. ``pct_of_ceiling`` stays the roofline's: a unit's percent of its own
    peak is not a share of the roofline ceiling, and the report shows those separately.
    """
    mem = _num(row, "memory_throughput_pct")
    if mem is None:
        mem = _num(row, "dram_throughput_pct")
    compute = [v for v in (_num(row, k) for k in _COMPUTE_SOL) if v is not None]
    if mem is None and not compute:
        return False
    mem_pct, cmp_pct = mem or 0.0, max(compute, default=0.0)
    if max(mem_pct, cmp_pct) < LATENCY_BOUND_PCT:
        roof.bound = "launch-bound" if 0 < roof.time_s < LAUNCH_BOUND_S else "latency-bound"
    else:
        roof.bound = "memory-bound" if mem_pct >= cmp_pct else "compute-bound"
    return True


def why_not_placed(*, representative: bool, has_work_counts: bool, has_ceilings: bool, has_counters: bool = False,
                   device: str = "") -> str:
    """Why a kernel has no roofline placement, as one sentence that says what to do.

    ``representative``: the time came from a GPU (not Triton's CPU interpreter); ``has_work_counts``:
    the target's ``flops()`` or ``bytes_moved()`` gave a number; ``has_ceilings``: profd knows this
    device's peaks; ``has_counters``: a profiler capture exists (its FLOP and byte counts would do).
    """
    if not representative:
        return ("not placed: the kernel ran in Triton's CPU interpreter, which has no device ceilings and no GPU "
                "time to place it with; run profd on a GPU for the roofline")
    if not has_ceilings:
        who = device or "this device"
        return (f"not placed: {who} is not in profd's device database, so its memory and compute ceilings are "
                "unknown; add a file under hwspecs/devices/ (then `profd specs --measure` measures them)")
    if not has_work_counts and not has_counters:
        return ("not placed: the target defines neither flops() nor bytes_moved() and no profiler counters were "
                "collected; define them (or profile with counters) to place it")
    return "not placed: no FLOP or byte figures for this kernel"


def main_roofline(table: CounterTable, ceilings: Optional[Ceilings], precision: str = "bf16") -> Optional[Roofline]:
    """The roofline placement of the kernel with the largest share of the profiled time."""
    from advisors.context import kernel_rows

    rows = kernel_rows(table)
    if not rows:
        return None
    main = max(rows, key=lambda r: r.total_ns or 0.0)
    return from_counters(main.metrics, ceilings, precision)
