"""The facts about one GPU model that a diagnosis needs (one TOML file per device)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from profd.model import JsonMixin


@dataclass
class DeviceSpec(JsonMixin):
    """Datasheet figures for one GPU model, plus where they came from.

    Throughputs are dense (no sparsity), FLOP/s in TFLOP/s, bandwidth in GB/s
    (10^9 bytes/s), sizes in bytes, clocks in MHz.
    """

    key: str  # file stem, e.g. "h200-sxm"
    name: str  # "NVIDIA H200 SXM 141GB"
    vendor: str  # "NVIDIA" or "AMD"
    architecture: str
    compute_capability: str  # "9.0" or gfx target "gfx942"
    sm_count: int  # SMs (NVIDIA) or CUs (AMD), whole device as software sees it
    warp_size: int
    max_warps_per_sm: int
    registers_per_sm: int  # 32-bit registers
    max_registers_per_thread: int
    shared_mem_per_sm_bytes: int
    max_shared_mem_per_block_bytes: int
    max_threads_per_block: int
    max_blocks_per_sm: int
    l2_bytes: int
    boost_clock_mhz: float
    memory_bytes: int
    memory_bandwidth_gbps: float
    peak_tflops: dict[str, float] = field(default_factory=dict)  # fp64, fp32, tf32, bf16, fp16, fp8
    match: list[str] = field(default_factory=list)  # substrings of reported device names
    # Substrings that veto a match: "NVIDIA H200 NVL" contains "h200" but is a
    # different board (lower clocks and power), so it must not borrow the SXM figures.
    match_exclude: list[str] = field(default_factory=list)
    xcds: int = 1
    cus_per_xcd: Optional[int] = None
    infinity_cache_bytes: int = 0
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Ceilings(JsonMixin):
    """The practical roofline: peak bandwidth and FLOP/s actually reachable.

    ``source`` is "measured" (a device-to-device copy and a large matmul on this
    very device, cached) or "datasheet" (the peak figures of ``DeviceSpec``).
    """

    device: str
    memory_gbps: float
    tflops: dict[str, float]
    source: str
    measured_at: Optional[float] = None
    details: dict[str, float] = field(default_factory=dict)
    # Which figures are measured, which fell back to the datasheet, and under what
    # conditions: a roofline is only as good as the caveats printed next to it.
    notes: list[str] = field(default_factory=list)
