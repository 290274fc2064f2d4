"""What ``profd specs`` prints: the detected device, its database entry and its roofline."""

from __future__ import annotations

from typing import Any, Optional

from hwspecs.ceilings import datasheet_ceilings, is_measured, ridge_point
from hwspecs.detect import DetectedDevice
from hwspecs.spec import Ceilings, DeviceSpec

_ORDER = ("fp64", "fp64_tensor", "fp32", "fp32_tensor", "tf32", "bf16", "fp16", "fp8", "fp4")
RIDGE_PRECISIONS = ("bf16", "fp32")


def _precisions(c: Ceilings) -> list[str]:
    known = [p for p in _ORDER if p in c.tflops]
    return known + sorted(set(c.tflops) - set(known))


def _resolve(
    detected: Optional[DetectedDevice], ceilings: Optional[Ceilings], spec: Optional[DeviceSpec]
) -> tuple[Optional[DeviceSpec], Optional[Ceilings]]:
    spec = spec or (detected.spec if detected is not None else None)
    if ceilings is None and spec is not None:
        ceilings = datasheet_ceilings(spec)
    return spec, ceilings


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def describe(
    detected: Optional[DetectedDevice],
    ceilings: Optional[Ceilings] = None,
    *,
    spec: Optional[DeviceSpec] = None,
) -> str:
    """Human text for ``profd specs``: detection, database entry, roofline, caveats.

    ``spec`` overrides the detected match (``--device NAME``); without ``ceilings`` the
    datasheet figures of the entry are shown and labelled as such.
    """
    spec, ceilings = _resolve(detected, ceilings, spec)
    lines: list[str] = []
    if detected is not None:
        lines.append("Device")
        if detected.is_gpu:
            unit = "CUs" if detected.backend == "hip" else "SMs"
            arch = f"CC {detected.compute_capability}" if detected.backend == "cuda" \
                else detected.arch_name or detected.compute_capability
            lines.append(f"  detected   {detected.name} ({detected.backend}, GPU {detected.index}"
                         f"{f' of {detected.device_count}' if detected.device_count else ''}) "
                         f"via {detected.source}")
            facts = [arch] if arch.strip() not in ("", "CC") else []
            if detected.sm_count:
                facts.append(f"{detected.sm_count} {unit}")
            if detected.l2_bytes:
                facts.append(f"L2 {_mib(detected.l2_bytes)}")
            if detected.total_memory_bytes:
                facts.append(f"memory {_gib(detected.total_memory_bytes)}")
            lines.append(f"  reports    {', '.join(facts) or 'nothing more'}")
            stack = [f"driver {detected.driver}" if detected.driver else "",
                     f"torch {detected.torch_version}" if detected.torch_version else "",
                     f"{'HIP' if detected.backend == 'hip' else 'CUDA'} {detected.runtime_version}"
                     if detected.runtime_version else ""]
            if any(stack):
                lines.append(f"  software   {', '.join(s for s in stack if s)}")
            if not detected.usable_by_torch:
                lines.append(f"  NOTE       {detected.message}")
        else:
            lines.append(f"  none       {detected.message}")
    lines.append("Database entry")
    if spec is None:
        name = detected.name if detected is not None and detected.is_gpu else "this machine"
        lines.append(f"  none       nothing in the database matches {name}")
    else:
        unit = "CUs" if spec.vendor == "AMD" else "SMs"
        xcd = f" ({spec.xcds} XCDs x {spec.cus_per_xcd})" if spec.xcds > 1 else ""
        lines.append(f"  {spec.key:<10} {spec.name}, {spec.architecture}, {spec.compute_capability}")
        lines.append(f"  {'':<10} {spec.sm_count} {unit}{xcd}, boost {spec.boost_clock_mhz:.0f} MHz, "
                     f"L2 {_mib(spec.l2_bytes)}, {_gib(spec.memory_bytes)} at "
                     f"{spec.memory_bandwidth_gbps:.0f} GB/s")
        lines.append(f"  {'':<10} sources: {len(spec.sources)}, e.g. {spec.sources[0][:90]}")
    if ceilings is not None:
        measured = ceilings.source == "measured"
        when = ""
        if measured and ceilings.measured_at:
            import time
            when = time.strftime(" on %Y-%m-%d %H:%M", time.localtime(ceilings.measured_at))
        label = f"measured on this device{when}" if measured else "datasheet, not measured here"
        lines.append(f"Roofline ({label})")
        lines.append(f"  {'memory':<12} {ceilings.memory_gbps:8.0f} GB/s")
        lines.append(f"  {'precision':<12} {'TFLOP/s':>8}  {'ridge FLOP/byte':>15}")
        for p in _precisions(ceilings):
            ridge = ridge_point(ceilings, p)
            tag = "" if not measured or is_measured(ceilings, p) else "  (datasheet)"
            lines.append(f"  {p:<12} {ceilings.tflops[p]:8.1f}  "
                         f"{(f'{ridge:.1f}' if ridge else '-'):>15}{tag}")
        ridges = [f"{p} {ridge_point(ceilings, p):.1f} FLOP/byte"
                  for p in RIDGE_PRECISIONS if ridge_point(ceilings, p)]
        if ridges:
            lines.append(f"  ridge point: {', '.join(ridges)} (kernels below it are memory-bound)")
    notes = list(ceilings.notes if ceilings is not None else [])
    notes += list(spec.notes if spec is not None else [])
    if notes:
        lines.append("Notes")
        lines += [f"  - {n}" for n in notes]
    warnings = list(detected.warnings) if detected is not None else []
    if warnings:
        lines.append("Warnings")
        lines += [f"  ! {w}" for w in warnings]
    return "\n".join(lines)


def specs_json(
    detected: Optional[DetectedDevice],
    ceilings: Optional[Ceilings] = None,
    *,
    spec: Optional[DeviceSpec] = None,
) -> dict[str, Any]:
    """The ``--json`` form of ``describe``: plain data, nothing formatted."""
    spec, ceilings = _resolve(detected, ceilings, spec)
    det = detected.to_dict() if detected is not None else None
    if det is not None:
        det.pop("spec", None)  # given once, below
    ridge = {}
    if ceilings is not None:
        ridge = {p: ridge_point(ceilings, p) for p in _precisions(ceilings)}
    return {
        "detected": det,
        "spec": spec.to_dict() if spec is not None else None,
        "ceilings": ceilings.to_dict() if ceilings is not None else None,
        "ceilings_source": ceilings.source if ceilings is not None else None,
        "ridge_flop_per_byte": ridge,
    }
