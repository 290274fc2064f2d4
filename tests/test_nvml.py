"""NVML device state: decoding, the no-GPU path, and the throttled/shared warnings."""

from __future__ import annotations

import os

import pytest
import torch

from collectors.nvml import assess, decode_reasons, snapshot
from profd.model import DeviceState


def _nvml_works() -> bool:
    try:
        import pynvml
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # noqa: BLE001
        return False


NVML = _nvml_works()


@pytest.mark.skipif(NVML, reason="checks the no-NVML path")
def test_snapshot_without_nvml_is_none():
    assert snapshot() is None
    assert snapshot(3, uuid="GPU-00000000-0000-0000-0000-000000000000") is None


def test_snapshot_of_a_missing_device_is_none():
    assert snapshot(4096) is None


def test_decode_reasons():
    # Bit values from nvml.h: SwPowerCap 0x4, HwThermalSlowdown 0x40, GpuIdle 0x1.
    assert decode_reasons(0) == []
    assert decode_reasons(0x1) == ["gpu_idle"]
    assert decode_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert decode_reasons(0x8 | 0x80) == ["hw_slowdown", "hw_power_brake_slowdown"]
    assert decode_reasons(0x1 << 20) == ["unknown_0x100000"]
    # Without the bindings the fallback table gives the same answer.
    assert decode_reasons(0x2 | 0x20, pynvml=object()) == ["applications_clocks_setting",
                                                            "sw_thermal_slowdown"]


def _state(reasons=(), procs=(), sm=1980.0):
    return DeviceState(sm_clock_mhz=sm, max_sm_clock_mhz=1980.0, temperature_c=60.0,
                       power_w=400.0, throttle_reasons=list(reasons),
                       other_processes=[dict(p) for p in procs])


def test_assess_clean_run_says_nothing():
    assert assess(_state(), _state(), own_pids=[]) == []
    assert assess(None, None, own_pids=[]) == []


@pytest.mark.parametrize("reasons", [["gpu_idle"], ["applications_clocks_setting"],
                                     ["gpu_idle", "applications_clocks_setting"],
                                     ["sync_boost"], ["display_clock_setting"]])
def test_assess_ignores_deliberate_or_idle_states(reasons):
    assert assess(_state(reasons), _state(reasons), own_pids=[]) == []


def test_assess_flags_power_cap_after_the_run():
    warnings = assess(_state(), _state(["sw_power_cap"], sm=1410.0), own_pids=[])
    assert len(warnings) == 1
    assert "throttled after" in warnings[0] and "power cap" in warnings[0]
    assert "1410 of 1980 MHz" in warnings[0]


def test_assess_ignores_a_power_cap_that_holds_no_clock_down():
    # Seen on an H200: sw_power_cap set while the SM clock read 1980 of 1980 MHz.
    assert assess(None, _state(["sw_power_cap"], sm=1980.0), own_pids=[]) == []
    # Without a clock reading the reason alone decides.
    capped = _state(["sw_power_cap"])
    capped.sm_clock_mhz = None
    assert len(assess(None, capped, own_pids=[])) == 1
    # Thermal slowdown counts even at full clock.
    assert len(assess(None, _state(["hw_thermal_slowdown"], sm=1980.0), own_pids=[])) == 1


def test_assess_flags_thermal_before_and_after():
    before = _state(["hw_thermal_slowdown", "gpu_idle"])
    after = _state(["sw_thermal_slowdown"])
    (warning,) = assess(before, after, own_pids=[])
    assert "before and after" in warning
    assert "hw_thermal_slowdown" in warning and "sw_thermal_slowdown" in warning
    assert "gpu_idle" not in warning


def test_assess_flags_other_processes_only():
    me, child, stranger = os.getpid(), 424242, 515151
    procs = [{"pid": child, "name": "python3", "used_memory_bytes": 2 * 2**30, "visible": True},
             {"pid": stranger, "name": "trainer", "used_memory_bytes": 30 * 2**30, "visible": True}]
    (warning,) = assess(_state(procs=procs), _state(procs=procs[:1]), own_pids=[child])
    assert "1 other process" in warning and "pid 515151 (trainer, 30.0 GiB)" in warning
    assert "424242" not in warning
    assert assess(_state(procs=procs[:1]), None, own_pids=[child]) == []
    assert assess(_state(procs=[{"pid": me, "name": "profd"}]), None) == []


def test_assess_hedges_on_invisible_pids():
    procs = [{"pid": 99, "name": None, "used_memory_bytes": None, "visible": False}]
    (warning,) = assess(None, _state(procs=procs), own_pids=[])
    assert "pid 99" in warning and "PID namespace" in warning


def test_assess_reports_both_problems():
    procs = [{"pid": 7, "name": "x", "visible": True}]
    warnings = assess(_state(["hw_slowdown"]), _state(procs=procs), own_pids=[])
    assert len(warnings) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and NVML), reason="needs an NVIDIA GPU")
def test_snapshot_on_gpu():
    state = snapshot(0)
    assert state is not None
    assert state.sm_clock_mhz and state.max_sm_clock_mhz and state.sm_clock_mhz <= state.max_sm_clock_mhz
    assert state.memory_used_bytes is not None and state.memory_used_bytes >= 0
    assert all(not r.startswith("unknown") for r in state.throttle_reasons)
