"""Device state through NVML (nvidia-ml-py): clocks, temperature, power, throttling, sharing.

NVML creates no CUDA context, so the daemon may call it in-process around every
measurement. Every NVML call is optional: boards and drivers answer NotSupported
for different queries, and a missing value must never cost the measurement.
``snapshot()`` returns None when there is no NVML or no such GPU; it never raises.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

from collectors import OBSERVES, Collector
from profd.model import DeviceState

# Clock-event ("throttle") reason bits from nvml.h; the pynvml constant is used when
# present (nvmlClocksEventReason* in new bindings, nvmlClocksThrottleReason* in old).
_REASONS: list[tuple[str, str, int]] = [
    ("GpuIdle", "gpu_idle", 0x1),
    ("ApplicationsClocksSetting", "applications_clocks_setting", 0x2),
    ("SwPowerCap", "sw_power_cap", 0x4),
    ("HwSlowdown", "hw_slowdown", 0x8),
    ("SyncBoost", "sync_boost", 0x10),
    ("SwThermalSlowdown", "sw_thermal_slowdown", 0x20),
    ("HwThermalSlowdown", "hw_thermal_slowdown", 0x40),
    ("HwPowerBrakeSlowdown", "hw_power_brake_slowdown", 0x80),
    ("DisplayClockSetting", "display_clock_setting", 0x100),
    ("BoardLimit", "board_limit", 0x200),  # only in the old ThrottleReason names
    ("Reliability", "reliability", 0x400),
]

#: Reasons that slow a kernel down against its normal clocks. Idle, application
#: clocks (a deliberate setting, e.g. ncu's clock lock), sync boost and the display
#: setting are not the hardware protecting itself, so they do not taint a timing.
#: board_limit and reliability are decoded but not warned about: how often boards
#: report them at normal boost is unknown to us, and a warning on every run is noise.
SLOWDOWN_REASONS = {
    "sw_power_cap": "power cap",
    "hw_slowdown": "hardware slowdown",
    "sw_thermal_slowdown": "thermal (driver)",
    "hw_thermal_slowdown": "thermal (hardware)",
    "hw_power_brake_slowdown": "external power brake",
}

_NA = 0xFFFFFFFFFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE for unsigned long long fields


def _reason_bits(pynvml: Any) -> list[tuple[str, int]]:
    bits = []
    for suffix, name, fallback in _REASONS:
        value = getattr(pynvml, f"nvmlClocksEventReason{suffix}", None)
        if value is None:
            value = getattr(pynvml, f"nvmlClocksThrottleReason{suffix}", fallback)
        bits.append((name, int(value)))
    return bits


def decode_reasons(mask: int, pynvml: Any = None) -> list[str]:
    """Names of the clock-event reason bits set in ``mask`` (unknown bits as hex)."""
    if pynvml is None:
        try:
            import pynvml as _p
            pynvml = _p
        except ImportError:
            pynvml = object()
    names, known = [], 0
    for name, bit in _reason_bits(pynvml):
        known |= bit
        if mask & bit:
            names.append(name)
    if mask & ~known:
        names.append(f"unknown_0x{mask & ~known:x}")
    return names


def _process_name(pid: int) -> tuple[Optional[str], bool]:
    """(name, visible): NVML reports host PIDs, which a container may not see."""
    try:
        import psutil
    except ImportError:
        return None, True
    try:
        return psutil.Process(pid).name(), True
    except psutil.NoSuchProcess:
        return None, False
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None, True


def snapshot(index: int = 0, *, uuid: Optional[str] = None) -> Optional[DeviceState]:
    """The state of NVML device ``index`` (or the one with ``uuid``) right now, or None.

    NVML numbers devices in PCI order regardless of ``CUDA_VISIBLE_DEVICES``; pass the
    UUID that detection reported to be sure to look at the GPU torch used.
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver, no permission: no state
        return None
    try:
        try:
            handle = (pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid
                      else pynvml.nvmlDeviceGetHandleByIndex(index))
        except Exception:  # noqa: BLE001
            return None
        return _read_state(pynvml, handle)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _read_state(pynvml: Any, handle: Any) -> DeviceState:
    state = DeviceState()

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported and friends
            state.warnings.append(f"NVML {what}: {exc}")
            return None

    sm = call("SM clock", pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)
    mem = call("memory clock", pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM)
    sm_max = call("max SM clock", pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM)
    temp = call("temperature", pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
    power_mw = call("power", pynvml.nvmlDeviceGetPowerUsage, handle)
    state.sm_clock_mhz = float(sm) if sm is not None else None
    state.mem_clock_mhz = float(mem) if mem is not None else None
    state.max_sm_clock_mhz = float(sm_max) if sm_max is not None else None
    state.temperature_c = float(temp) if temp is not None else None
    state.power_w = power_mw / 1000.0 if power_mw is not None else None

    get_reasons = (getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
    if get_reasons is not None:
        mask = call("clock event reasons", get_reasons, handle)
        if mask is not None:
            state.throttle_reasons = decode_reasons(int(mask), pynvml)

    meminfo = call("memory info", pynvml.nvmlDeviceGetMemoryInfo, handle)
    if meminfo is not None:
        state.memory_used_bytes = int(meminfo.used)

    seen: dict[int, dict[str, Any]] = {}
    for kind, fn_name in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                          ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        fn = getattr(pynvml, fn_name, None)
        procs = call(f"{kind} processes", fn, handle) if fn is not None else None
        for p in procs or []:
            pid = int(p.pid)
            used = getattr(p, "usedGpuMemory", None)
            if used is not None and int(used) >= _NA:
                used = None
            if pid in seen:
                continue
            name, visible = _process_name(pid)
            seen[pid] = {"pid": pid, "name": name, "used_memory_bytes": used,
                         "type": kind, "visible": visible}
    state.other_processes = list(seen.values())
    return state


def _slowdowns(state: Optional[DeviceState]) -> list[str]:
    if state is None:
        return []
    found = [r for r in state.throttle_reasons if r in SLOWDOWN_REASONS]
    # An H200 here reported sw_power_cap while its SM clock read the full 1980 MHz:
    # a power cap that is not holding the clock down has not slowed anything, and
    # warning on it would flag nearly every run. Thermal and hardware slowdowns
    # always count.
    if ("sw_power_cap" in found and state.sm_clock_mhz and state.max_sm_clock_mhz
            and state.sm_clock_mhz >= 0.97 * state.max_sm_clock_mhz):
        found.remove("sw_power_cap")
    return found


def _clock_text(state: Optional[DeviceState]) -> str:
    if state is None or state.sm_clock_mhz is None:
        return ""
    if state.max_sm_clock_mhz:
        return f"; SM clock {state.sm_clock_mhz:.0f} of {state.max_sm_clock_mhz:.0f} MHz"
    return f"; SM clock {state.sm_clock_mhz:.0f} MHz"


def assess(
    before: Optional[DeviceState],
    after: Optional[DeviceState],
    own_pids: Iterable[int] = (),
) -> list[str]:
    """Warnings for a measurement taken between two snapshots: throttled, or shared.

    Throttling counts only when the GPU protected itself (power cap, thermal, hardware
    slowdown, power brake); idle or deliberately set application clocks do not, nor
    a power cap reported while the SM clock is at its maximum. A
    process on the GPU whose PID is not in ``own_pids`` (nor this process) is "other".
    """
    warnings: list[str] = []
    pre, post = _slowdowns(before), _slowdowns(after)
    if pre or post:
        reasons = list(dict.fromkeys(pre + post))
        when = "before and after" if pre and post else ("before" if pre else "after")
        labels = ", ".join(f"{SLOWDOWN_REASONS[r]} ({r})" for r in reasons)
        clock = _clock_text(after if post else before)
        warnings.append(f"GPU was throttled {when} the measurement: {labels}{clock}; "
                        "timings may be slower than on a cool, uncapped GPU")

    mine = set(int(p) for p in own_pids) | {os.getpid()}
    others: dict[int, dict[str, Any]] = {}
    for state in (before, after):
        for proc in state.other_processes if state is not None else []:
            pid = int(proc.get("pid", -1))
            if pid not in mine and pid not in others:
                others[pid] = proc
    if others:
        parts = []
        for pid, proc in sorted(others.items()):
            label = proc.get("name") or ("not visible here: another container or PID namespace, "
                                         "possibly profd's own child" if not proc.get("visible", True)
                                         else "name unknown")
            used = proc.get("used_memory_bytes")
            mem = f", {used / 2**30:.1f} GiB" if used else ""
            parts.append(f"pid {pid} ({label}{mem})")
        warnings.append(f"GPU was shared with {len(parts)} other process"
                        f"{'es' if len(parts) > 1 else ''}: {'; '.join(parts)}; "
                        "timings and counters may be disturbed")
    return warnings


def _find() -> Optional[str]:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return None
    return "pynvml"


COLLECTOR = Collector(
    name="nvml", role=OBSERVES, summary="NVIDIA NVML: clocks, temperature, power, throttling and sharing "
                                        "before and after each measurement",
    backends=("cuda",), install="pip install nvidia-ml-py (it needs the NVIDIA driver)",
    find=_find, snapshot=snapshot, assess=assess, order=90,
)
