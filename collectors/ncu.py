"""Nsight Compute (``ncu``) collector.

Parsing: ``parse_csv`` reads ncu's CSV — ``--page raw`` (one row per launch, metric names as
columns, a units row) or ``--page details`` (one row per section metric or rule message) —
live or ``--import``-ed, in any units, and returns a ``CounterTable`` with profd's canonical
metric names in base units, ncu's own rule messages, the vendor values (``raw``) and the
device attributes.

Running: ``build_command`` / ``run`` profile the harness child under ncu, scoped to the NVTX
push/pop range profd puts around ``kernel(...)``; ``import_report`` reads a ``.ncu-rep``.
Kernel names are ncu's "function" names: a Triton kernel is named after its ``@triton.jit``
function (``add_kernel``), Inductor's after the fused op (``triton_poi_fused_...``).
"""

from __future__ import annotations

import csv
import glob
import io
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from collectors import WRAPS, Collector
from collectors.tool import ToolResult, run_tool
from collectors.errors import CaptureError
from profd import metrics as M
from profd.model import CounterTable, RuleMessage

# --------------------------------------------------------------------------- what to collect

#: The default ``--metrics`` list: enough for every canonical metric profd's rules read, at
#: ~3 replay passes instead of ~38 for ``--set full``. ncu silently drops names a GPU does
#: not have (observed on H200 with ncu 2025.3.1), and ``regex:`` entries pick up the
#: architecture-specific tensor-pipe names (Blackwell renamed them) and every stall reason.
CURATED_METRICS: tuple[str, ...] = (
    # speed of light, time and clocks
    "gpu__time_duration.sum",
    "gpc__cycles_elapsed.max",
    "gpc__cycles_elapsed.avg.per_second",
    "sm__cycles_elapsed.avg.per_second",
    "dram__cycles_elapsed.avg.per_second",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "lts__throughput.avg.pct_of_peak_sustained_elapsed",
    "l1tex__throughput.avg.pct_of_peak_sustained_active",
    # DRAM and caches
    "dram__bytes_read.sum",
    "dram__bytes_write.sum",
    "dram__bytes.sum.per_second",
    "lts__t_sector_hit_rate.pct",
    "l1tex__t_sector_hit_rate.pct",
    # global-memory coalescing
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum",
    "smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.ratio",
    "smsp__sass_average_data_bytes_per_sector_mem_global_op_st.ratio",
    "l1tex__t_requests_pipe_lsu_mem_local_op_ld.sum",
    "l1tex__t_requests_pipe_lsu_mem_local_op_st.sum",
    # shared-memory bank conflicts
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
    # occupancy and launch shape
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm__maximum_warps_per_active_cycle_pct",
    "launch__occupancy_limit_registers",
    "launch__occupancy_limit_shared_mem",
    "launch__occupancy_limit_warps",
    "launch__occupancy_limit_blocks",
    "launch__registers_per_thread",
    "launch__shared_mem_per_block_static",
    "launch__shared_mem_per_block_dynamic",
    "launch__shared_mem_per_block_driver",
    "launch__block_size",
    "launch__grid_size",
    "launch__waves_per_multiprocessor",
    "launch__sm_count",
    # issue, pipes, stalls
    "smsp__average_warp_latency_per_inst_issued.ratio",
    "sm__inst_executed.avg.per_cycle_active",
    "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_elapsed",
    r"regex:^sm__pipe_(tensor|tc)_cycles_active\.avg\.pct_of_peak_sustained_(elapsed|active)$",
    r"regex:^sm__pipe_tensor_op_(hmma|gmma)_cycles_active\.avg\.pct_of_peak_sustained_(elapsed|active)$",
    r"regex:^smsp__average_warps_issue_stalled_[a-z_]+_per_issue_active\.ratio$",
)

#: Sections collected next to the curated metrics. They cost few extra passes and carry the
#: rules profd quotes (SOLBottleneck, TheoreticalOccupancy/AchievedOccupancy, CPIStall,
#: IssueSlotUtilization, SharedMemoryConflicts, HighPipeUtilization). ``--metrics`` and
#: ``--section`` combine (checked on H200, ncu 2025.3.1). SourceCounters is left out: it
#: patches SASS and adds many passes; the sectors/request metrics above cover coalescing.
DEFAULT_SECTIONS: tuple[str, ...] = (
    "SpeedOfLight",
    "LaunchStats",
    "Occupancy",
    "WarpStateStats",
    "SchedulerStats",
    "MemoryWorkloadAnalysis_Tables",
    "ComputeWorkloadAnalysis",
)

CLOCK_CONTROLS = ("none", "base", "reset")

# --------------------------------------------------------------------------- vendor -> canonical

_SOL = "GPU Speed Of Light Throughput"
_MWA = "Memory Workload Analysis"

#: Canonical metric -> where to find it, best first. Plain names are raw-page metric names
#: (also what the details page shows under "Command line profiler metrics"); "Section/Label"
#: keys are the details page's display names.
_SOURCES: dict[str, tuple[str, ...]] = {
    "duration_ns": ("gpu__time_duration.sum", f"{_SOL}/Duration"),
    # SOL's "SM Frequency" is gpc__cycles_elapsed.avg.per_second (same value in the CSVs).
    "sm_clock_hz": ("gpc__cycles_elapsed.avg.per_second", f"{_SOL}/SM Frequency",
                    "sm__cycles_elapsed.avg.per_second"),
    "dram_clock_hz": ("dram__cycles_elapsed.avg.per_second", f"{_SOL}/DRAM Frequency"),
    "sm_throughput_pct": ("sm__throughput.avg.pct_of_peak_sustained_elapsed", f"{_SOL}/Compute (SM) Throughput"),
    "memory_throughput_pct": ("gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
                              f"{_SOL}/Memory Throughput"),
    # The stock sets only collect gpu__dram_throughput; dram__throughput is equal when requested.
    "dram_throughput_pct": ("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                            "dram__throughput.avg.pct_of_peak_sustained_elapsed", f"{_SOL}/DRAM Throughput"),
    "l2_throughput_pct": ("lts__throughput.avg.pct_of_peak_sustained_elapsed", f"{_SOL}/L2 Cache Throughput"),
    "l1_throughput_pct": ("l1tex__throughput.avg.pct_of_peak_sustained_active", f"{_SOL}/L1/TEX Cache Throughput"),
    "dram_bytes_read": ("dram__bytes_read.sum",),
    "dram_bytes_write": ("dram__bytes_write.sum",),
    "dram_bytes": ("dram__bytes.sum",),
    # MWA's "Memory Throughput" (byte/s) is dram__bytes.sum.per_second; SOL's is a percent.
    "dram_bandwidth_bytes_per_s": ("dram__bytes.sum.per_second", f"{_MWA}/Memory Throughput"),
    "l2_hit_rate_pct": ("lts__t_sector_hit_rate.pct", f"{_MWA}/L2 Hit Rate"),
    "l1_hit_rate_pct": ("l1tex__t_sector_hit_rate.pct", f"{_MWA}/L1/TEX Hit Rate"),
    "global_ld_bytes_per_sector": ("smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.ratio",),
    "global_st_bytes_per_sector": ("smsp__sass_average_data_bytes_per_sector_mem_global_op_st.ratio",),
    "local_spill_requests": ("derived__local_spilling_requests", f"{_MWA}/Local Memory Spilling Requests"),
    "smem_bank_conflicts_ld": ("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",),
    "smem_bank_conflicts_st": ("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",),
    "smem_wavefronts_ld": ("l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",),
    "smem_wavefronts_st": ("l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",),
    "achieved_occupancy_pct": ("sm__warps_active.avg.pct_of_peak_sustained_active", "Occupancy/Achieved Occupancy"),
    "theoretical_occupancy_pct": ("sm__maximum_warps_per_active_cycle_pct", "Occupancy/Theoretical Occupancy"),
    "occupancy_limit_registers": ("launch__occupancy_limit_registers", "Occupancy/Block Limit Registers"),
    "occupancy_limit_shared_mem": ("launch__occupancy_limit_shared_mem", "Occupancy/Block Limit Shared Mem"),
    "occupancy_limit_warps": ("launch__occupancy_limit_warps", "Occupancy/Block Limit Warps"),
    "occupancy_limit_blocks": ("launch__occupancy_limit_blocks", "Occupancy/Block Limit SM"),
    "registers_per_thread": ("launch__registers_per_thread", "Launch Statistics/Registers Per Thread"),
    "block_size": ("launch__block_size", "Launch Statistics/Block Size"),
    "grid_size": ("launch__grid_size", "Launch Statistics/Grid Size"),
    "waves_per_sm": ("launch__waves_per_multiprocessor", "Launch Statistics/Waves Per SM"),
    "sm_count": ("launch__sm_count", "Launch Statistics/# SMs", "device__attribute_multiprocessor_count"),
    "warp_cycles_per_issue": ("smsp__average_warp_latency_per_inst_issued.ratio",
                              "Warp State Statistics/Warp Cycles Per Issued Instruction"),
    "ipc": ("sm__inst_executed.avg.per_cycle_active", "Compute Workload Analysis/Executed Ipc Active"),
    # "One or More Eligible" is the share of cycles in which a scheduler issued.
    "issue_active_pct": ("smsp__issue_active.avg.pct_of_peak_sustained_active",
                         "Scheduler Statistics/One or More Eligible"),
    "tensor_pipe_pct": ("sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed",
                        "sm__pipe_tc_cycles_active.avg.pct_of_peak_sustained_elapsed",
                        "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
                        "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"),
    "fma_pipe_pct": ("sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_elapsed",
                     "sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active"),
}
for _r in M.STALL_REASONS:
    _SOURCES[f"stall_{_r}"] = (f"smsp__average_warps_issue_stalled_{_r}_per_issue_active.ratio",)

#: Canonical unit -> the base units a source may carry ('' = unitless is always accepted).
_UNIT_FAMILY = {"ns": {"ns"}, "B": {"byte", "byte/block", "byte/sector"}, "B/s": {"byte/s"}, "Hz": {"hz"}, "%": {"%"}}

# Identifying columns of both pages; everything else on the raw page is a metric.
_ID_COLS = ("ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream",
            "Block Size", "Grid Size", "Device", "CC")
_RULE_COLS = ("Rule Name", "Rule Type", "Rule Description", "Estimated Speedup Type", "Estimated Speedup")

# --------------------------------------------------------------------------- units and values

_TIME_NS = {"ns": 1.0, "nsecond": 1.0, "nsec": 1.0, "us": 1e3, "usecond": 1e3, "usec": 1e3,
            "ms": 1e6, "msecond": 1e6, "msec": 1e6, "s": 1e9, "second": 1e9, "sec": 1e9}
_PREFIX = {"": 1.0, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
# Quantities ncu auto-scales with SI prefixes (decimal: 233,472 bytes prints as 233.47 Kbyte).
_SCALABLE = re.compile(r"^([KkMGTP]?)(byte|hz|cycle|inst|sector|request|warp|thread|block|wavefront)$",
                       re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d*)?([eE][+-]?\d+)?$")


def unit_scale(unit: str) -> tuple[float, str]:
    """Factor that turns a value printed in ``unit`` into profd's base unit, and that base unit.

    Times become ns; bytes, Hz and counts lose their SI prefix; rates (``Gbyte/s``,
    ``byte/usecond``, ``cycle/nsecond``) become per second. Unknown units pass through.
    """
    u = unit.strip()
    if not u:
        return 1.0, ""
    if u in _TIME_NS:
        return _TIME_NS[u], "ns"
    num, sep, den = u.partition("/")
    f_num, b_num = _quantity(num)
    if not sep:
        return f_num, b_num
    if den in _TIME_NS:
        base = "hz" if b_num == "cycle" else f"{b_num}/s"
        return f_num * 1e9 / _TIME_NS[den], base
    return f_num, f"{b_num}/{den}"


def _quantity(text: str) -> tuple[float, str]:
    m = _SCALABLE.match(text)
    if not m:
        return 1.0, text
    return _PREFIX[m.group(1)], m.group(2).lower()


def parse_value(text: str) -> Any:
    """An ncu CSV cell as float (thousands separators removed), str, or None when empty."""
    s = (text or "").strip()
    if not s or s.lower() in ("n/a", "nan", "-"):
        return None
    if _NUMBER.match(s) and any(c.isdigit() for c in s):
        return float(s.replace(",", ""))
    return s


def _to_base(value: Any, unit: str) -> tuple[Any, str]:
    factor, base = unit_scale(unit)
    if isinstance(value, float) and factor != 1.0:
        return value * factor, base
    return value, base


# --------------------------------------------------------------------------- CSV parsing

_PERM_MARK = "ERR_NVGPUCTRPERM"
_NO_KERNELS = "No kernels were profiled"
_NOISE = ("==PROF==", "==WARNING==", "==ERROR==")
_SMEM_RULE = re.compile(r"results in (\d+) bank conflicts,\s+which represent [\d.]+% of the overall "
                        r"(\d+) wavefronts for shared (loads|stores)")


def looks_like_ncu(text: str) -> bool:
    """True when ``text`` (the head of a file) is ncu output: a CSV header or ncu's own log lines."""
    return any(line.lstrip("\ufeff").startswith('"ID",') for line in text.splitlines()) or \
        "==PROF==" in text or _PERM_MARK in text


def permission_error(detail: str = "") -> CaptureError:
    """The paragraph for ERR_NVGPUCTRPERM: what it means and the three ways out."""
    return CaptureError(
        "Nsight Compute was not allowed to read the GPU performance counters (ERR_NVGPUCTRPERM): "
        "the NVIDIA driver restricts them to administrators by default. Fix it on the host: add "
        "`options nvidia NVreg_RestrictProfilingToAdminUsers=0` to a file in /etc/modprobe.d/, "
        "rebuild the initramfs if your distribution needs it, and reboot (or reload the nvidia "
        "module); or run profd as root; in a container, start it with `--cap-add=SYS_ADMIN` "
        "(the host setting still applies). Some clouds and shared clusters do not allow either; "
        "there, timing and correctness still work but counters do not. " + detail,
        kind="permission",
    )


def no_kernels_error(detail: str = "", nvtx_range: str = "profd_kernel") -> CaptureError:
    """The paragraph for ncu's "No kernels were profiled"."""
    return CaptureError(
        "Nsight Compute ran but profiled no kernel. profd scopes ncu to the NVTX push/pop range "
        f"`{nvtx_range}` that the harness opens around `kernel(...)`: check that kernel(...) "
        "actually launches a GPU kernel (not only PyTorch CPU code, and not a cached result), that "
        "the range is pushed with torch.cuda.nvtx.range_push/range_pop (ncu's `--nvtx-include "
        "\"name/\"` matches push/pop ranges only, not start/end ranges), and that any kernel-name "
        "filter uses ncu's function names (a Triton kernel is named after its @triton.jit "
        "function, e.g. `add_kernel`). " + detail,
        kind="no_kernels",
    )


def parse_csv(text: str, *, source_path: str = "") -> CounterTable:
    """Parse ncu CSV (``--page raw`` or ``--page details``, detected) into a ``CounterTable``.

    Tolerates what real captures contain: ``==PROF==``/``==WARNING==`` lines and the program's
    own stdout before the header, thousands separators, a units row (raw page) or per-row units
    (details page) in any scale, ragged details rows, NVTX columns, string metrics and several
    launches. Values are converted to base units (ns, bytes, Hz, %, bytes/s). Raises
    ``CaptureError`` for permission errors, "No kernels were profiled" and malformed input.
    """
    where = f" in {source_path}" if source_path else ""
    lines = text.splitlines()
    notes = [ln.strip() for ln in lines if ln.startswith(("==WARNING==", "==ERROR=="))]
    if _PERM_MARK in text:
        raise permission_error(_quote(notes, _PERM_MARK))
    start = next((i for i, ln in enumerate(lines) if ln.lstrip("\ufeff").startswith('"ID",')), None)
    if start is None:
        if _NO_KERNELS in text:
            raise no_kernels_error(_quote(notes, _NO_KERNELS))
        errors = [n for n in notes if n.startswith("==ERROR==")]
        raise CaptureError(
            f"No ncu CSV header row (a line starting with \"ID\",) was found{where}: the output is "
            f"empty, truncated before the header, or not ncu CSV at all"
            + (f" (ncu said: {' '.join(errors)[:600]})" if errors else "")
            + ". Produce it with `ncu --csv --page raw --print-units base ...` or export an existing "
            "report with `ncu --import report.ncu-rep --csv --page raw --print-units base`.",
            kind="malformed", path=source_path or None,
        )
    body = [lines[start].lstrip("\ufeff")] + [ln for ln in lines[start + 1:] if not ln.startswith(_NOISE)]
    try:
        rows = list(csv.reader(io.StringIO("\n".join(body))))
    except csv.Error as exc:
        raise CaptureError(f"The ncu CSV{where} cannot be read as CSV ({exc}); it is probably "
                           f"truncated or corrupted. Re-export it from the .ncu-rep report.",
                           kind="malformed", path=source_path or None) from exc
    header, data = rows[0], [r for r in rows[1:] if r]
    if "ID" not in header or "Kernel Name" not in header:
        raise CaptureError(f"The ncu CSV header{where} lacks the ID / Kernel Name columns; it is not a "
                           f"raw or details page export.", kind="malformed", path=source_path or None)
    unlocked = any("Running with unmodified GPU clocks" in n for n in notes)
    warnings = [n for n in notes if "Running with unmodified GPU clocks" not in n]  # profd's default
    if {"Section Name", "Metric Name", "Metric Value"} <= set(header):
        table = _parse_details(header, data, warnings, where)
    else:
        table = _parse_raw(header, data, warnings, where)
    if unlocked:
        table.device_attrs["clocks_locked"] = False  # ncu ran with --clock-control none
    if table.frame.empty:
        if _NO_KERNELS in text:
            raise no_kernels_error(_quote(notes, _NO_KERNELS))
        raise CaptureError(
            f"The ncu CSV{where} has a header but no complete launch row: the capture is truncated "
            f"or ncu stopped early. Re-run the profile, or re-export the .ncu-rep with `ncu --import "
            f"report.ncu-rep --csv --page raw --print-units base`.",
            kind="malformed", path=source_path or None,
        )
    return table


def _quote(notes: list[str], mark: str) -> str:
    hit = [n for n in notes if mark in n]
    return f"(ncu said: {hit[0][:300]})" if hit else ""


def _parse_raw(header: list[str], data: list[list[str]], warnings: list[str], where: str) -> CounterTable:
    units: list[str] = [""] * len(header)
    id_col = header.index("ID")
    if data and len(data[0]) > id_col and not data[0][id_col].strip():  # the units row
        units = data[0] + [""] * (len(header) - len(data[0]))
        data = data[1:]
    launches: dict[int, dict[str, Any]] = {}
    base_units: dict[str, str] = {}
    for row in data:
        if len(row) < len(header):
            warnings.append(f"dropped a truncated raw-page row{where} ({len(row)} of {len(header)} fields)")
            continue
        launch_id = _launch_id(row[id_col])
        if launch_id is None:
            warnings.append(f"dropped a raw-page row{where} whose ID is {row[id_col]!r}")
            continue
        rec: dict[str, Any] = {}
        for name, unit, cell in zip(header, units, row):
            value, base = _to_base(parse_value(cell), unit) if name not in _ID_COLS else (cell.strip(), "")
            rec[name] = value
            if base:
                base_units[name] = base
        launches[launch_id] = rec
    rules: list[RuleMessage] = []
    return _build(launches, base_units, rules, warnings, page="raw")


def _parse_details(header: list[str], data: list[list[str]], warnings: list[str], where: str) -> CounterTable:
    col = {name: i for i, name in enumerate(header)}
    launches: dict[int, dict[str, Any]] = {}
    base_units: dict[str, str] = {}
    rules: list[RuleMessage] = []
    need = col["Metric Value"] + 1
    for row in data:
        if len(row) < need:
            warnings.append(f"dropped a truncated details-page row{where} ({len(row)} fields)")
            continue
        row = row + [""] * (len(header) - len(row))  # metric rows lack the rule columns (ragged)
        launch_id = _launch_id(row[col["ID"]])
        if launch_id is None:
            continue
        rec = launches.setdefault(launch_id, {c: row[col[c]].strip() for c in _ID_COLS if c in col})
        section, name = row[col["Section Name"]].strip(), row[col["Metric Name"]].strip()
        rule = row[col["Rule Name"]].strip() if "Rule Name" in col else ""
        if rule:
            rules.append(_rule(row, col, launch_id, section, rule))
            continue
        if not name:
            continue
        value, base = _to_base(parse_value(row[col["Metric Value"]]), row[col["Metric Unit"]])
        key = f"{section}/{name}"
        rec[key] = value
        if base:
            base_units[key] = base
        if section == "Command line profiler metrics":
            rec.setdefault(name, value)  # a --metrics entry: the real metric name, as on the raw page
            if base:
                base_units.setdefault(name, base)
    return _build(launches, base_units, rules, warnings, page="details")


def _rule(row: list[str], col: dict[str, int], launch_id: int, section: str, rule: str) -> RuleMessage:
    def cell(name: str) -> str:
        return row[col[name]].strip() if name in col else ""

    speedup = parse_value(cell("Estimated Speedup"))
    rtype = cell("Rule Type").upper()
    rtype = {"WARNING": "WRN", "INFO": "INF", "ERROR": "ERR", "OPTIMIZATION": "OPT"}.get(rtype, rtype)
    return RuleMessage(
        kernel=cell("Kernel Name"), launch=launch_id, rule=rule, section=section, type=rtype,
        message=" ".join(cell("Rule Description").split()),
        estimated_speedup_pct=speedup if isinstance(speedup, float) else None,
        speedup_type=cell("Estimated Speedup Type").lower(),
    )


def _launch_id(cell: str) -> Optional[int]:
    v = parse_value(cell)
    return int(v) if isinstance(v, float) and v.is_integer() else None


def _build(launches: dict[int, dict[str, Any]], base_units: dict[str, str], rules: list[RuleMessage],
           warnings: list[str], *, page: str) -> CounterTable:
    ids = sorted(launches)
    frame_rows, extra_warnings = [], []
    for lid in ids:
        canon, notes = canonical(launches[lid], base_units, [r for r in rules if r.launch == lid])
        frame_rows.append({"kernel": launches[lid].get("Kernel Name", ""), **canon})
        extra_warnings.extend(f"launch {lid}: {n}" for n in notes)
    frame = pd.DataFrame(frame_rows, index=pd.Index(ids, name="launch"))
    if frame.empty:
        frame = pd.DataFrame({"kernel": pd.Series(dtype=object)})
    raw = pd.DataFrame.from_dict({lid: launches[lid] for lid in ids}, orient="index")
    raw.index.name = "launch"
    raw.attrs["units"] = dict(base_units)
    raw.attrs["page"] = page
    first = launches[ids[0]] if ids else {}
    device_attrs = {k: v for k, v in first.items() if k.startswith("device__attribute_")}
    if first.get("CC"):
        device_attrs["compute_capability"] = first["CC"]
    name = first.get("device__attribute_display_name") or ""
    dev = parse_value(first.get("Device", ""))
    if isinstance(dev, float):
        device_attrs["device_index"] = int(dev)
    elif isinstance(dev, str) and not name:
        name = dev  # some ncu versions print the device's display name in the Device column
    if name:
        device_attrs["device_name"] = name
    return CounterTable(source="ncu", frame=frame, device_name=str(name or ""), rules=rules, raw=raw,
                        warnings=list(dict.fromkeys(warnings + extra_warnings)), device_attrs=device_attrs)


def canonical(values: dict[str, Any], base_units: dict[str, str],
              rules: Iterable[RuleMessage] = ()) -> tuple[dict[str, float], list[str]]:
    """Map one launch's vendor values (raw names and/or "Section/Label" keys) to canonical metrics.

    Returns the canonical values (floats, base units) and notes about anything skipped or
    taken from a rule message.
    """
    out: dict[str, float] = {}
    notes: list[str] = []

    def num(key: str) -> Optional[float]:
        v = values.get(key)
        return v if isinstance(v, float) and not math.isnan(v) else None

    for name, keys in _SOURCES.items():
        for key in keys:
            v = num(key)
            if v is None:
                continue
            unit = base_units.get(key, "")
            family = _UNIT_FAMILY.get(M.unit(name))
            if unit and family and unit not in family:
                notes.append(f"{key} is in {unit!r}, expected {M.unit(name)!r} for {name}; skipped")
                continue
            out[name] = v
            break

    # Derived metrics, each only when its inputs were collected.
    if "dram_bytes" not in out and "dram_bytes_read" in out and "dram_bytes_write" in out:
        out["dram_bytes"] = out["dram_bytes_read"] + out["dram_bytes_write"]
    for op in ("ld", "st"):
        sectors = num(f"l1tex__t_sectors_pipe_lsu_mem_global_op_{op}.sum")
        requests = num(f"l1tex__t_requests_pipe_lsu_mem_global_op_{op}.sum")
        if sectors is not None and requests:
            out[f"global_{op}_sectors_per_request"] = sectors / requests
        pct = num(f"smsp__sass_average_data_bytes_per_sector_mem_global_op_{op}.pct")
        if f"global_{op}_bytes_per_sector" not in out and pct is not None:
            out[f"global_{op}_bytes_per_sector"] = pct * 32.0 / 100.0  # % of the 32-byte sector
    if "local_spill_requests" not in out:
        local = [num(f"l1tex__t_requests_pipe_lsu_mem_local_op_{op}.sum") for op in ("ld", "st")]
        if all(v is not None for v in local):
            # Local-memory traffic in compiled Triton/CUDA kernels is register spilling.
            out["local_spill_requests"] = sum(local)  # type: ignore[arg-type]
    _smem_from_rules(out, rules, notes)
    if all(k in out for k in ("smem_bank_conflicts_ld", "smem_bank_conflicts_st",
                              "smem_wavefronts_ld", "smem_wavefronts_st")):
        waves = out["smem_wavefronts_ld"] + out["smem_wavefronts_st"]
        conflicts = out["smem_bank_conflicts_ld"] + out["smem_bank_conflicts_st"]
        if waves > 0:
            out["smem_bank_conflict_pct"] = 100.0 * conflicts / waves
        elif conflicts == 0:
            out["smem_bank_conflict_pct"] = 0.0  # no shared-memory traffic: nothing lost to conflicts
    parts = [num(f"launch__shared_mem_per_block_{p}") for p in ("static", "dynamic", "driver")]
    if parts[0] is None and parts[1] is None:
        parts = [num(f"Launch Statistics/{p} Shared Memory Per Block") for p in ("Static", "Dynamic", "Driver")]
    if parts[0] is not None or parts[1] is not None:
        # The driver's reserved 1 KiB per block counts against the SM's shared memory too.
        out["shared_mem_per_block_bytes"] = sum(p for p in parts if p is not None)
    elif num("launch__shared_mem_per_block") is not None:
        out["shared_mem_per_block_bytes"] = num("launch__shared_mem_per_block")  # type: ignore[assignment]
    for dim, key in (("grid_size", "Grid Size"), ("block_size", "Block Size")):
        if dim not in out:
            n = _dims_product(values.get(key))
            if n is not None:
                out[dim] = n
    return out, notes


def _smem_from_rules(out: dict[str, float], rules: Iterable[RuleMessage], notes: list[str]) -> None:
    """Fill shared-memory conflict counts from ncu's SharedMemoryConflicts text when not measured.

    The details page prints no metric rows for the Memory Workload Analysis tables, but the
    rule quotes the counts ("This results in 509052 bank conflicts, ... of the overall 2704585
    wavefronts for shared stores").
    """
    for r in rules:
        if r.rule != "SharedMemoryConflicts":
            continue
        m = _SMEM_RULE.search(r.message)
        if not m:
            continue
        op = "ld" if m.group(3) == "loads" else "st"
        if f"smem_bank_conflicts_{op}" not in out:
            out[f"smem_bank_conflicts_{op}"] = float(m.group(1))
            out[f"smem_wavefronts_{op}"] = float(m.group(2))
            notes.append(f"smem_bank_conflicts_{op} and smem_wavefronts_{op} read from ncu's "
                         f"SharedMemoryConflicts rule message")


def _dims_product(text: Any) -> Optional[float]:
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)", text.strip())
    return float(int(m.group(1)) * int(m.group(2)) * int(m.group(3))) if m else None


def merge(primary: CounterTable, details: CounterTable) -> CounterTable:
    """Add a details-page table's rule messages and details-only values to a raw-page table.

    Launches are matched by ncu's ID (both pages of one report share them); a canonical metric
    already in ``primary`` wins, and rules of launches ``primary`` lacks are dropped.
    """
    frame = primary.frame.copy()
    for lid in details.frame.index:
        if lid not in frame.index:
            continue
        for name, value in details.frame.loc[lid].items():
            if name == "kernel" or value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if name not in frame.columns:
                frame[name] = float("nan")
            if pd.isna(frame.at[lid, name]):
                frame.at[lid, name] = value
    raw = primary.raw
    if details.raw is not None and raw is not None:
        extra = details.raw[[c for c in details.raw.columns if c not in raw.columns]]
        units = {**details.raw.attrs.get("units", {}), **raw.attrs.get("units", {})}
        raw = raw.join(extra, how="left")
        raw.attrs["units"] = units
        raw.attrs["page"] = "raw+details"
    return CounterTable(
        source=primary.source, frame=frame, device_name=primary.device_name or details.device_name,
        rules=list(primary.rules) + [r for r in details.rules if r.launch in set(frame.index)], raw=raw, artifact=primary.artifact,
        warnings=list(dict.fromkeys(primary.warnings + details.warnings)),
        device_attrs={**details.device_attrs, **primary.device_attrs},
    )


# --------------------------------------------------------------------------- running ncu


def find_ncu() -> Optional[str]:
    """Path of the ncu executable: PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, /opt/nvidia/nsight-compute/*/."""
    found = shutil.which("ncu")
    if found:
        return found
    candidates = []
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(os.path.join(home, "bin", "ncu"))
    # Newest Nsight Compute first: directory names are versions like 2025.3.1.
    candidates += sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"), key=_version_key, reverse=True)
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.name))


def not_installed_error(what: str = "profile this kernel") -> CaptureError:
    return CaptureError(
        f"Nsight Compute (ncu) is not installed or not found, so profd cannot {what}. It looked on "
        f"PATH, in $CUDA_HOME/bin, /usr/local/cuda/bin and /opt/nvidia/nsight-compute/*/. Install "
        f"Nsight Compute (it ships with the CUDA toolkit, or as the `nsight-compute` package) and "
        f"put ncu on PATH. To analyse a report made elsewhere, export it on a machine that has ncu "
        f"with `ncu --import report.ncu-rep --csv --page raw --print-units base > raw.csv` (and "
        f"`--page details` for the rule messages) and pass the CSV to profd instead.",
        kind="not_installed",
    )


def build_command(python: str, child_args: list[str], report_path: Path, *,
                  nvtx_range: str = "profd_kernel", metrics: Optional[list[str]] = None,
                  full_set: bool = False, clock_control: str = "none",
                  sections: Optional[Iterable[str]] = DEFAULT_SECTIONS, ncu: str = "ncu",
                  kernel_name: Optional[str] = None, launch_count: Optional[int] = None) -> list[str]:
    """The ncu command line that profiles ``python child_args...`` inside the NVTX range only.

    ``--nvtx --nvtx-include "<range>/"`` keeps ncu to the kernels launched inside the push/pop
    range around ``kernel(...)`` (warm-up, reference and timing launches outside it are not
    replayed). ``--clock-control none`` by default: this workplace does not change GPU clocks,
    and ncu's default (``base``) would lock them, making compute-bound kernels look up to ~1.4x
    slower than in production (profilers.md §5.7). The CSV goes to stdout (raw page, base
    units) and the report to ``report_path`` for later ``--import``.
    """
    if clock_control not in CLOCK_CONTROLS:
        raise ValueError(f"clock_control must be one of {CLOCK_CONTROLS}, not {clock_control!r}")
    cmd = [ncu, "--nvtx", "--nvtx-include", f"{nvtx_range}/", "--target-processes", "all",
           "--export", str(report_path), "--force-overwrite",
           "--csv", "--page", "raw", "--print-units", "base",
           "--clock-control", clock_control]
    if full_set:
        cmd += ["--set", "full"]
        if metrics:
            cmd += ["--metrics", ",".join(metrics)]
    else:
        cmd += ["--metrics", ",".join(metrics or CURATED_METRICS)]
        for section in sections or ():
            cmd += ["--section", section]
    if kernel_name:
        cmd += ["--kernel-name", kernel_name]
    if launch_count:
        cmd += ["--launch-count", str(launch_count)]
    return cmd + [python, *child_args]


def report_file(report_path: Path) -> Path:
    """Where ncu writes ``--export report_path``: it appends ``.ncu-rep`` unless already there."""
    p = Path(report_path)
    return p if p.suffix == ".ncu-rep" else p.with_name(p.name + ".ncu-rep")


def run(python: str, child_args: list[str], report_path: Path, *, nvtx_range: str = "profd_kernel",
        metrics: Optional[list[str]] = None, full_set: bool = False, clock_control: str = "none",
        sections: Optional[Iterable[str]] = DEFAULT_SECTIONS, timeout_s: float = 1200.0,
        env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None, ncu: Optional[str] = None,
        kernel_name: Optional[str] = None, launch_count: Optional[int] = None) -> CounterTable:
    """Profile the harness child under ncu and return its counters, rules and report path.

    After the profiling run, a second, cheap pass (``ncu --import ... --page details``, no
    re-profiling) reads ncu's rule messages, which the raw page does not carry. Raises
    ``CaptureError`` when ncu is missing, counters are not permitted, no kernel was profiled,
    the run timed out or crashed.
    """
    exe = ncu or find_ncu()
    if not exe or not (os.path.isfile(exe) and os.access(exe, os.X_OK) or shutil.which(exe)):
        raise not_installed_error()
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_file(report_path).unlink(missing_ok=True)  # a stale report must not pass for this run's
    cmd = build_command(python, child_args, report_path, nvtx_range=nvtx_range, metrics=metrics,
                        full_set=full_set, clock_control=clock_control, sections=sections, ncu=exe,
                        kernel_name=kernel_name, launch_count=launch_count)
    res = run_tool(cmd, timeout_s=timeout_s, env=env, cwd=cwd)
    _check_run(res, timeout_s, report_path, nvtx_range)
    rep = report_file(report_path)
    if looks_like_ncu(res.stdout) and '"ID",' in res.stdout:
        table = parse_csv(res.stdout, source_path="ncu stdout")
    elif rep.exists():
        table = _import(exe, rep, "raw")
    else:
        raise CaptureError(
            f"ncu exited with status {res.returncode} but printed no CSV and wrote no report at "
            f"{rep}. Its output ended with: {res.tail(800)}", kind="crash", path=str(rep))
    if res.returncode != 0:
        table.warnings.append(f"ncu / the profiled program exited with status {res.returncode}")
    if rep.exists():
        table = _with_details(exe, rep, table)
        table.artifact = str(rep)
    return table


def _check_run(res: ToolResult, timeout_s: float, report_path: Path, nvtx_range: str) -> None:
    text = res.text
    if res.timed_out:
        raise CaptureError(
            f"ncu did not finish within {timeout_s:.0f} s and was stopped (with the program it was "
            f"profiling). ncu replays each profiled kernel once per pass (~3-10 with the curated "
            f"metrics, ~38 with --set full), saving and restoring device memory each time: profile "
            f"fewer launches inside the {nvtx_range} range, use smaller inputs, or raise the timeout.",
            kind="timeout", path=str(report_path))
    if _PERM_MARK in text:
        raise permission_error()
    if res.returncode != 0 and '"ID",' not in res.stdout and not report_file(report_path).exists():
        # Checked before "no kernels": a program that died before its kernel also profiles none.
        raise CaptureError(
            f"ncu (or the program it profiled) failed with exit status {res.returncode} before any "
            f"kernel was profiled. The end of its output: {res.tail(1200)}",
            kind="crash", path=str(report_path))
    if _NO_KERNELS in text and '"ID",' not in res.stdout:
        raise no_kernels_error(nvtx_range=nvtx_range)


def _import(exe: str, rep: Path, page: str) -> CounterTable:
    res = run_tool([exe, "--import", str(rep), "--csv", "--page", page, "--print-units", "base"],
                   timeout_s=600)
    if res.returncode != 0 or '"ID",' not in res.stdout:
        if _NO_KERNELS in res.text or (res.returncode == 0 and not res.stdout.strip()):
            raise no_kernels_error(f"(the report {rep} holds no kernel results)")
        raise CaptureError(
            f"`ncu --import {rep} --csv --page {page}` failed (exit status {res.returncode}): "
            f"{res.tail(800)}. The report may be truncated or from a newer Nsight Compute than the "
            f"installed one; open it in the Nsight Compute UI or re-profile.",
            kind="malformed", path=str(rep))
    return parse_csv(res.stdout, source_path=str(rep))


def _with_details(exe: str, rep: Path, table: CounterTable) -> CounterTable:
    try:
        details = _import(exe, rep, "details")
    except CaptureError as exc:
        # The counters are good without the rules; say what is missing instead of failing.
        table.warnings.append(f"ncu rule messages unavailable: {exc}")
        return table
    return merge(table, details)


def import_report(path: Path, *, ncu: Optional[str] = None) -> CounterTable:
    """Read a ``.ncu-rep`` a user brings: raw page for counters, details page for rules.

    Runs ``ncu --import path --csv --page raw --print-units base`` and the same with
    ``--page details``; raises ``CaptureError`` (saying how to export CSV elsewhere) when ncu
    is not installed here.
    """
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"The ncu report {path} does not exist.", kind="malformed", path=str(path))
    exe = ncu or find_ncu()
    if not exe:
        raise not_installed_error(f"read the report {path}")
    table = _with_details(exe, path, _import(exe, path, "raw"))
    table.artifact = str(path)
    return table


# --------------------------------------------------------------------------- registration

#: Canonical metrics computed from several raw counters (``canonical``), and those counters.
_DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "dram_bytes": ("dram__bytes_read.sum", "dram__bytes_write.sum"),
    "global_ld_sectors_per_request": ("l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
                                      "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"),
    "global_st_sectors_per_request": ("l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
                                      "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum"),
    "local_spill_requests": ("l1tex__t_requests_pipe_lsu_mem_local_op_ld.sum",
                             "l1tex__t_requests_pipe_lsu_mem_local_op_st.sum"),
    "smem_bank_conflict_pct": ("l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
                               "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
                               "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
                               "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum"),
    "shared_mem_per_block_bytes": ("launch__shared_mem_per_block_static", "launch__shared_mem_per_block_dynamic",
                                   "launch__shared_mem_per_block_driver"),
    # Architecture-specific names (Blackwell renamed them): the curated list asks by regex.
    "tensor_pipe_pct": tuple(m for m in CURATED_METRICS if m.startswith("regex:^sm__pipe_tensor")
                             or m.startswith("regex:^sm__pipe_(tensor|tc)")),
}
_STALLS = tuple(m for m in CURATED_METRICS if "issue_stalled" in m)
#: Always collected: every report shows time and clocks, whatever the rules ask.
_ALWAYS = ("gpu__time_duration.sum", "gpc__cycles_elapsed.max", "gpc__cycles_elapsed.avg.per_second")


def counters_for(metrics: Sequence[str]) -> list[str]:
    """The ``--metrics`` list that yields the canonical ``metrics`` (the curated list when empty).

    Always a subset of ``CURATED_METRICS`` in its order, so the list stays one that ncu is known
    to accept; a canonical metric with no raw source here is left out (see ``UNAVAILABLE``).
    """
    if not metrics:
        return list(CURATED_METRICS)
    want: set[str] = set(_ALWAYS)
    for m in metrics:
        if m.startswith("stall_"):
            want.update(_STALLS)
        want.update(_DERIVED_FROM.get(m, ()))
        want.update(k for k in _SOURCES.get(m, ()) if k in CURATED_METRICS)
    return [m for m in CURATED_METRICS if m in want]


#: Canonical metrics Nsight Compute has no counter for (AMD-only quantities, or only the
#: target's own flops()/bytes_moved() know them).
UNAVAILABLE = frozenset({"valu_util_pct", "mfma_util_pct", "flops"})


def _reads(path: Path, head: Optional[str]) -> bool:
    return path.suffix == ".ncu-rep" or (head is not None and looks_like_ncu(head))


def _load(path: Path, **_: Any) -> CounterTable:
    if path.suffix == ".ncu-rep":
        return import_report(path)
    table = parse_csv(path.read_text(encoding="utf-8", errors="replace"), source_path=str(path))
    table.artifact = str(path)
    return table


def _run(req: Any) -> CounterTable:
    return run(req.python, req.child_args, Path(req.out_dir), full_set=req.full_set, timeout_s=req.timeout_s,
               env=req.env, cwd=req.cwd, nvtx_range=req.nvtx_range,
               metrics=counters_for(req.metrics) if req.metrics and not req.full_set else None)


COLLECTOR = Collector(
    name="ncu", role=WRAPS, summary="NVIDIA Nsight Compute: hardware counters and rule messages of kernel(...)",
    backends=("cuda",),
    formats=("Nsight Compute CSV: `ncu --csv --page raw` or `--page details` (live output or "
             "`ncu --import r.ncu-rep --csv ...`)",
             "Nsight Compute report: `.ncu-rep` (needs ncu installed to export it)"),
    install="install Nsight Compute (part of the CUDA toolkit) and put ncu on PATH",
    find=find_ncu, reads=_reads, load=_load, run=_run, counters_for=counters_for, unavailable=UNAVAILABLE, order=10,
    measures=frozenset(_SOURCES) | frozenset(_DERIVED_FROM),
)
