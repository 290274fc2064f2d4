"""AMD collector: rocprof (v1), rocprofv2, rocprofv3 and rocprof-compute (ex-Omniperf) output.

``parse(path)`` sniffs the CSV by its header and returns a ``CounterTable`` (one row per
dispatch; one row per kernel for ``--stats`` summaries) with canonical metrics derived from
AMD's counters with the formulas rocprof-compute uses (profilers.md §3.5, §4.2).
``parse_dir`` reads a rocprofv3 output directory. ``build_command`` / ``run`` drive
rocprofv3 (or the legacy ``rocprof``) around the harness child.

AMD specifics handled here: grid sizes count work-items, not workgroups; kernel names carry
``.kd`` suffixes; rocprofv3 counter CSVs are long (one row per dispatch and counter); MI300
counters are summed over XCDs, so GPU-busy cycles are divided by the XCD count; counters from
different passes come from different executions of the program.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from collectors import WRAPS, Collector
from collectors.tool import run_tool
from collectors.errors import CaptureError
from profd.metrics import STALL_REASONS
from profd.model import CounterTable

# --------------------------------------------------------------------------- formats

#: Format key -> (CounterTable.source, what it is). ``sniff`` returns the key.
FORMATS: dict[str, tuple[str, str]] = {
    "v1": ("rocprof-v1", "rocprof v1 kernel trace (`results.csv`) or `rocprof -i` counter CSV"),
    "stats": ("rocprof-v1", "`--stats` per-kernel summary (`results.stats.csv`, `*_kernel_stats.csv`)"),
    "wide": ("rocprofv2", "rocprofv2 / Omniperf / rocprof-compute wide per-dispatch CSV"),
    "v3-counters": ("rocprofv3", "rocprofv3 `*_counter_collection.csv` (long format)"),
    "v3-trace": ("rocprofv3", "rocprofv3 `*_kernel_trace.csv`"),
}
#: Recognised but not kernel counters: why, and what to pass instead.
_NOT_KERNELS = {
    "v3-memcopy": "a rocprofv3 memory-copy trace (host/device transfers, no kernels)",
    "v3-pcsample": "rocprofv3 PC-sampling output (per-instruction samples, no per-kernel counters)",
    "api-trace": "an API trace (HIP/HSA/marker calls on the host, no kernel counters)",
    "api-stats": "API call statistics (host calls, not kernels)",
    "sysinfo": "machine facts (rocprof-compute sysinfo.csv / rocprofv3 agent_info.csv), no kernels",
}

_SUFFIX = re.compile(r"(\s*\[clone \.kd\]|\s*\(\.kd\)|\.kd)$")
_DUP_META = re.compile(r"^(Wave_Size|Correlation_ID|XCC_Index|Kernel_ID|GPU_ID)_\d+$")
_META_COLS = {
    # rocprof v1
    "Index", "KernelName", "gpu-id", "queue-id", "queue-index", "pid", "tid", "grd", "wgr", "lds", "scr",
    "arch_vgpr", "accum_vgpr", "vgpr", "sgpr", "fbar", "wave_size", "sig", "obj",
    "DispatchNs", "BeginNs", "EndNs", "CompleteNs", "DurationNs",
    # rocprofv2 / rocprof-compute
    "Dispatch_ID", "GPU_ID", "Queue_ID", "PID", "TID", "Grid_Size", "Workgroup_Size", "LDS_Per_Workgroup",
    "Scratch_Per_Workitem", "Arch_VGPR", "Accum_VGPR", "SGPR", "Wave_Size", "Kernel_Name",
    "Start_Timestamp", "End_Timestamp", "Correlation_ID", "Kernel_ID", "XCC_Index", "Node", "Queue",
    # rocprofv3
    "Kind", "Agent_Id", "Queue_Id", "Stream_Id", "Process_Id", "Thread_Id", "Dispatch_Id", "Kernel_Id",
    "Correlation_Id", "LDS_Block_Size", "Scratch_Size", "VGPR_Count", "Accum_VGPR_Count", "SGPR_Count",
    "Workgroup_Size_X", "Workgroup_Size_Y", "Workgroup_Size_Z", "Grid_Size_X", "Grid_Size_Y", "Grid_Size_Z",
    "Private_Segment_Size", "Group_Segment_Size", "Guid",
}


def sniff(path: Path) -> Optional[str]:
    """The format key of an AMD profiler CSV (see ``FORMATS`` / ``_NOT_KERNELS``), or None."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, csv.Error):
        return None
    return _format_of(set(h.strip() for h in header), Path(path).name)


def _format_of(cols: set[str], name: str) -> Optional[str]:
    if {"Counter_Name", "Counter_Value"} <= cols:
        return "v3-counters"
    if {"Kind", "Direction"} <= cols:
        return "v3-memcopy"
    if {"Sample_Timestamp", "Instruction"} <= cols:
        return "v3-pcsample"
    if {"Domain", "Function"} <= cols:
        return "api-trace"
    if {"Kind", "Kernel_Name", "Start_Timestamp"} <= cols:
        return "v3-trace"
    if {"Name", "Calls", "TotalDurationNs", "AverageNs"} <= cols:
        api = ("api_stats", "hip_stats", "hsa_stats", "copy_stats", "domain_stats", "marker", "memory_")
        return "api-stats" if any(a in name for a in api) else "stats"
    if {"Index", "KernelName"} <= cols:
        return "v1"
    if {"Dispatch_ID", "Kernel_Name"} <= cols:
        return "wide"
    if {"gpu_arch", "cu_per_gpu"} <= cols or {"Node_Id", "Agent_Type"} <= cols:
        return "sysinfo"
    return None


def clean_kernel_name(name: Any) -> str:
    """Kernel name without rocprof's code-object suffixes (" [clone .kd]", " (.kd)", ".kd")."""
    return _SUFFIX.sub("", str(name).strip()) if isinstance(name, str) else ""


# --------------------------------------------------------------------------- hardware facts


def _find_sysinfo(path: Path) -> Optional[Path]:
    """A sysinfo.csv / *_agent_info.csv next to ``path`` that belongs to the same capture.

    rocprof-compute writes ``sysinfo.csv`` beside ``pmc_perf.csv``; rocprofv3 writes
    ``<pid>_agent_info.csv`` beside ``<pid>_counter_collection.csv``. A prefixed sibling
    counts only when its prefix also starts the capture's file name.
    """
    best, best_len = None, -1
    for cand in path.parent.glob("*.csv"):
        for suffix in ("sysinfo.csv", "agent_info.csv"):
            if cand.name.endswith(suffix):
                prefix = cand.name[: -len(suffix)]
                if path.name.startswith(prefix) and len(prefix) > best_len:
                    best, best_len = cand, len(prefix)
    return best


def read_sysinfo(path: Path) -> dict[str, Any]:
    """Machine facts from rocprof-compute ``sysinfo.csv`` or rocprofv3 ``*_agent_info.csv``.

    Returns the file's own fields plus normalised ``cu_count``, ``max_waves_per_cu``,
    ``num_xcd`` and ``device_name`` where the file has them.
    """
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types for broken CSV
        raise CaptureError(f"The machine-info file {path} cannot be read as CSV ({exc}). Pass the "
                           f"sysinfo.csv written by rocprof-compute or the *_agent_info.csv written by "
                           f"rocprofv3, or give sm_count/max_waves_per_cu/num_xcd explicitly.",
                           kind="malformed", path=str(path)) from exc
    if df.empty:
        return {}
    if "Agent_Type" in df.columns:
        gpus = df[df["Agent_Type"].astype(str).str.contains("GPU", case=False)]
        row = (gpus if len(gpus) else df).iloc[0]
        info = {k: _py(v) for k, v in row.items()}
        info.update(cu_count=_py(row.get("Cu_Count")), max_waves_per_cu=_py(row.get("Max_Waves_Per_Cu")),
                    num_xcd=_py(row.get("Num_Xcc")),
                    device_name=str(row.get("Product_Name") or row.get("Name") or ""))
        return info
    row = df.iloc[0]
    info = {k: _py(v) for k, v in row.items()}
    info.update(cu_count=_py(row.get("cu_per_gpu")), max_waves_per_cu=_py(row.get("max_waves_per_cu")),
                num_xcd=_py(row.get("num_xcd")), device_name=str(row.get("gpu_model") or row.get("gpu_arch") or ""))
    return info


def _py(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    item = getattr(v, "item", None)
    return item() if callable(item) else v


def _hw(info: dict[str, Any], sm_count: Optional[int], max_waves_per_cu: Optional[int],
        num_xcd: Optional[int]) -> dict[str, Optional[float]]:
    def pick(explicit: Optional[int], key: str) -> Optional[float]:
        v = explicit if explicit is not None else info.get(key)
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return f if f > 0 else None

    return {"cu": pick(sm_count, "cu_count"), "max_waves": pick(max_waves_per_cu, "max_waves_per_cu"),
            "xcd": pick(num_xcd, "num_xcd")}


# --------------------------------------------------------------------------- parsing


def parse(path: Path, sysinfo: Optional[Path] = None, *, sm_count: Optional[int] = None,
          max_waves_per_cu: Optional[int] = None, num_xcd: Optional[int] = None) -> CounterTable:
    """Parse one AMD profiler CSV (format detected from its header) into a ``CounterTable``.

    ``sysinfo`` (rocprof-compute ``sysinfo.csv`` or rocprofv3 ``*_agent_info.csv``; looked for
    next to ``path`` when not given) supplies the CU count, waves per CU and XCD count that
    utilisation and occupancy need; the keyword arguments override it. Raises ``CaptureError``
    for malformed files and for AMD outputs that hold no kernel counters.
    """
    path = Path(path)
    fmt = _require_format(path)
    info, sysinfo, note = _sysinfo_for(path, sysinfo)
    hw = _hw(info, sm_count, max_waves_per_cu, num_xcd)
    if fmt == "stats":
        table = _parse_stats(path)
    else:
        wide, source, warnings = _read_wide(path, fmt)
        table = _table(wide, source, hw, warnings)
    table.artifact = str(path)
    _attach_device(table, info, sysinfo)
    if note:
        table.warnings.append(note)
    return table


def _sysinfo_for(path: Path, given: Optional[Path]) -> tuple[dict[str, Any], Optional[Path], str]:
    """Machine facts for ``path``: from ``given`` (errors raise) or a sibling file (errors warn)."""
    if given:
        return read_sysinfo(Path(given)), Path(given), ""
    found = _find_sysinfo(path)
    if not found:
        return {}, None, ""
    try:
        return read_sysinfo(found), found, ""
    except CaptureError as exc:
        return {}, None, f"ignored {found.name} beside the capture: {exc}"


def _require_format(path: Path) -> str:
    if not path.is_file():
        raise CaptureError(f"The AMD profiler file {path} does not exist.", kind="malformed", path=str(path))
    fmt = sniff(path)
    if fmt in _NOT_KERNELS:
        raise CaptureError(
            f"{path} is {_NOT_KERNELS[fmt]}, so it holds no per-kernel counters for profd. Pass the "
            f"kernel trace or counter file instead: rocprofv3 `*_kernel_trace.csv` / "
            f"`*_counter_collection.csv` (or its output directory), rocprof `results.csv` or the `-i` "
            f"counter CSV, or rocprof-compute's `pmc_perf.csv`.", kind="unsupported", path=str(path))
    if fmt is None:
        known = "; ".join(desc for _, desc in FORMATS.values())
        raise CaptureError(
            f"{path} does not start with a header profd knows from rocprof, so it is not rocprof "
            f"output or it is truncated or corrupted. Expected one of: {known}. Re-run the profiler "
            f"with CSV output (rocprofv3 needs `--output-format csv`; ROCm 7 defaults to a SQLite "
            f"database, convertible with `rocpd convert -f csv`).", kind="malformed", path=str(path))
    return fmt


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except Exception as exc:  # ParserError, EmptyDataError, UnicodeDecodeError ...
        raise CaptureError(f"{path} looks like {what} but cannot be read as CSV ({exc}); it is probably "
                           f"truncated or corrupted. Re-run the profiler or copy the file again.",
                           kind="malformed", path=str(path)) from exc
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise CaptureError(f"{path} ({what}) has a header but no rows: no kernel was dispatched while "
                           f"profiling, a kernel filter matched nothing, or the file was cut short.",
                           kind="no_kernels", path=str(path))
    return df


def _drop_truncated(df: pd.DataFrame, required: list[str], path: Path, warnings: list[str]) -> pd.DataFrame:
    """Drop rows whose required cells are empty: a file cut mid-row leaves its last row short."""
    present = [c for c in required if c in df.columns]
    bad = df[present].isna().any(axis=1) if present else pd.Series(False, index=df.index)
    if bad.any():
        warnings.append(f"dropped {int(bad.sum())} incomplete row(s) of {path.name} (file truncated?)")
        df = df[~bad]
    if df.empty:
        raise CaptureError(f"{path} has no complete row: it is truncated. Re-run the profiler.",
                           kind="malformed", path=str(path))
    return df


def _read_wide(path: Path, fmt: str) -> tuple[pd.DataFrame, str, list[str]]:
    """One file as a wide frame: one row per dispatch (index = dispatch id), counters as columns."""
    warnings: list[str] = []
    source, what = FORMATS[fmt]
    df = _read_csv(path, what)
    if fmt == "v3-counters":
        df = _drop_truncated(df, ["Dispatch_Id", "Counter_Name", "Counter_Value"], path, warnings)
        df["Counter_Value"] = pd.to_numeric(df["Counter_Value"], errors="coerce")
        meta_cols = [c for c in df.columns if c not in ("Counter_Name", "Counter_Value")]
        meta = df.drop_duplicates("Dispatch_Id")[meta_cols].set_index("Dispatch_Id")
        # One row per (dispatch, counter); several rows for one pair are instances to be summed.
        counters = df.pivot_table(index="Dispatch_Id", columns="Counter_Name", values="Counter_Value",
                                  aggfunc="sum")
        counters.columns = [str(c) for c in counters.columns]
        wide = meta.join(counters)
        wide.attrs["counters"] = list(counters.columns)
    else:
        key = {"v1": "Index", "wide": "Dispatch_ID", "v3-trace": "Dispatch_Id"}[fmt]
        if fmt == "v3-trace" and key not in df.columns:
            key = "Correlation_Id"  # ROCm 6.1/6.2 traces had no Dispatch_Id
        kernel = "KernelName" if fmt == "v1" else "Kernel_Name"
        df = _drop_truncated(df, [key, kernel] + [c for c in df.columns[-1:]], path, warnings)
        if fmt == "v3-trace" and "Kind" in df.columns:
            df = df[df["Kind"].astype(str) == "KERNEL_DISPATCH"]
        wide = df.set_index(key)
        wide.attrs["counters"] = [c for c in wide.columns if c not in _META_COLS and not _DUP_META.match(c)]
        if fmt == "wide":
            source = _wide_source(path, list(df.columns))
    wide.index.name = "dispatch"
    return wide.sort_index(), source, warnings


def _wide_source(path: Path, cols: list[str]) -> str:
    # rocprof-compute merges passes into pmc_perf*.csv (per-channel "[n]" columns, "_1" duplicates);
    # Omniperf also renames rocprof v1 output (it keeps v1's "sig"/"obj"); the rest is rocprofv2.
    if path.name.startswith("pmc_perf") or "_pmc_perf" in path.name or \
            any("[" in c or _DUP_META.match(c) for c in cols):
        return "rocprof-compute"
    return "rocprof-v1" if "sig" in cols else "rocprofv2"


def _parse_stats(path: Path) -> CounterTable:
    df = _read_csv(path, FORMATS["stats"][1])
    warnings: list[str] = []
    df = _drop_truncated(df, ["Name", "AverageNs"], path, warnings)
    frame = pd.DataFrame({
        "kernel": [clean_kernel_name(n) for n in df["Name"]],
        "duration_ns": pd.to_numeric(df["AverageNs"], errors="coerce").astype(float).to_numpy(),
    })
    raw = df.reset_index(drop=True)
    raw.index.name = "row"
    warnings.append("summary statistics (--stats): one row per kernel, duration_ns is the average over "
                    "its calls (see raw Calls/TotalDurationNs), not one launch")
    source = "rocprofv3" if "MinNs" in df.columns else "rocprof-v1"
    return CounterTable(source=source, frame=frame, raw=raw, warnings=warnings)


def _attach_device(table: CounterTable, info: dict[str, Any], sysinfo: Optional[Path]) -> None:
    if info:
        table.device_attrs.update({k: v for k, v in info.items() if v is not None})
        table.device_name = str(info.get("device_name") or "")
        table.warnings.append(f"hardware facts from {sysinfo}")


# --------------------------------------------------------------------------- canonical metrics


def _table(wide: pd.DataFrame, source: str, hw: dict[str, Optional[float]], warnings: list[str]) -> CounterTable:
    frame, notes = derive(wide, hw)
    if source == "rocprof-compute" and {"valu_util_pct", "mfma_util_pct", "achieved_occupancy_pct"} & set(frame.columns):
        notes.append("rocprof-compute merges passes: GRBM_GUI_ACTIVE comes from another run than the "
                     "counter it divides, so utilisation/occupancy ratios carry that run's profiler overhead")
    raw = wide.copy()
    raw.attrs = {"counters": list(wide.attrs.get("counters", []))}
    return CounterTable(source=source, frame=frame, raw=raw, warnings=warnings + notes)


def derive(wide: pd.DataFrame, hw: dict[str, Optional[float]]) -> tuple[pd.DataFrame, list[str]]:
    """Canonical metrics from a wide per-dispatch frame of AMD metadata and counters.

    ``hw`` holds ``cu`` (CUs on the device), ``max_waves`` (per CU) and ``xcd`` (XCD count),
    any of them None when unknown; metrics that need a missing fact are left out and a note
    says so.
    """
    notes: list[str] = []
    cols = set(wide.columns)

    def g(*names: str) -> Optional[pd.Series]:
        for n in names:
            if n in cols:
                return pd.to_numeric(wide[n], errors="coerce").astype(float)
        return None

    def have(*names: str) -> bool:
        return all(n in cols for n in names)

    out = pd.DataFrame(index=wide.index)
    kernel = wide["KernelName"] if "KernelName" in cols else wide.get("Kernel_Name")
    out["kernel"] = [clean_kernel_name(k) for k in kernel] if kernel is not None else ""

    # time
    begin, end = g("BeginNs", "Start_Timestamp"), g("EndNs", "End_Timestamp")
    duration = end - begin if begin is not None and end is not None else g("DurationNs")
    if duration is not None:
        out["duration_ns"] = duration

    # L2 and DRAM (HBM through the L2-fabric interface)
    hit, miss = g("TCC_HIT_sum"), g("TCC_MISS_sum")
    if hit is not None and miss is not None:
        out["l2_hit_rate_pct"] = _ratio(100 * hit, hit + miss)
    elif g("L2CacheHit") is not None:
        out["l2_hit_rate_pct"] = g("L2CacheHit")
    read = write = None
    if have("TCC_EA0_RDREQ_sum", "TCC_EA0_RDREQ_32B_sum", "TCC_BUBBLE_sum"):  # gfx94x/gfx950
        rd, rd32, bub = g("TCC_EA0_RDREQ_sum"), g("TCC_EA0_RDREQ_32B_sum"), g("TCC_BUBBLE_sum")
        read = 128 * bub + 64 * (rd - bub - rd32) + 32 * rd32  # type: ignore[operator]
    elif have("TCC_EA_RDREQ_sum", "TCC_EA_RDREQ_32B_sum"):  # gfx90a
        rd, rd32 = g("TCC_EA_RDREQ_sum"), g("TCC_EA_RDREQ_32B_sum")
        read = 32 * rd32 + 64 * (rd - rd32)  # type: ignore[operator]
    elif g("FETCH_SIZE") is not None:
        read = g("FETCH_SIZE") * 1024  # rocprof's derived FETCH_SIZE is in KB
    elif "TCC_EA0_RDREQ_sum" in cols:
        notes.append("TCC_EA0_RDREQ_sum without TCC_BUBBLE_sum/TCC_EA0_RDREQ_32B_sum: HBM read bytes "
                     "not derived (MI300 128-byte requests are only counted by TCC_BUBBLE)")
    for prefix in ("TCC_EA0_", "TCC_EA_"):
        if write is None and have(f"{prefix}WRREQ_sum", f"{prefix}WRREQ_64B_sum"):
            wr, wr64 = g(f"{prefix}WRREQ_sum"), g(f"{prefix}WRREQ_64B_sum")
            write = 64 * wr64 + 32 * (wr - wr64)  # type: ignore[operator]
    if write is None and g("WRITE_SIZE") is not None:
        write = g("WRITE_SIZE") * 1024
    if read is not None:
        out["dram_bytes_read"] = read
    if write is not None:
        out["dram_bytes_write"] = write
    if read is not None and write is not None:
        out["dram_bytes"] = read + write
        if duration is not None:
            out["dram_bandwidth_bytes_per_s"] = _ratio((read + write) * 1e9, duration)
    total, tcc_rd, tcc_wr = g("TCP_TOTAL_CACHE_ACCESSES_sum"), g("TCP_TCC_READ_REQ_sum"), g("TCP_TCC_WRITE_REQ_sum")
    if total is not None and tcc_rd is not None and tcc_wr is not None:
        # Atomics also go to L2; absent atomic counters mean none were collected, taken as 0.
        atomics = sum(s for s in (g("TCP_TCC_ATOMIC_WITH_RET_REQ_sum"), g("TCP_TCC_ATOMIC_WITHOUT_RET_REQ_sum"))
                      if s is not None)
        out["l1_hit_rate_pct"] = 100 - _ratio(100 * (tcc_rd + tcc_wr + atomics), total)

    # LDS bank conflicts
    conflict, lds_active = g("SQ_LDS_BANK_CONFLICT"), g("SQ_LDS_IDX_ACTIVE")
    if conflict is not None and lds_active is not None:
        pct = _ratio(100 * conflict, lds_active)
        out["smem_bank_conflict_pct"] = pct.where(~((lds_active == 0) & (conflict == 0)), 0.0)
    elif g("LDSBankConflict") is not None:
        # rocprof's derived LDSBankConflict: conflict cycles as % of GPU-busy cycles per CU.
        out["smem_bank_conflict_pct"] = g("LDSBankConflict")

    # Utilisation and occupancy: GRBM_GUI_ACTIVE is summed over XCDs on MI300, so per-XCD
    # busy cycles are GRBM_GUI_ACTIVE / num_xcd (rocprof-compute's $GRBM_GUI_ACTIVE_PER_XCD).
    busy, cu, xcd, max_waves = g("GRBM_GUI_ACTIVE"), hw.get("cu"), hw.get("xcd"), hw.get("max_waves")
    needs_busy = [n for n in ("SQ_ACTIVE_INST_VALU", "SQ_VALU_MFMA_BUSY_CYCLES", "SQ_WAVE_CYCLES",
                              "SQ_ACCUM_PREV_HIRES") if n in cols]
    if busy is not None and needs_busy and cu is None:
        notes.append("CU count unknown (no sysinfo.csv/agent_info.csv, no sm_count): VALU/MFMA "
                     "utilisation and occupancy not derived")
    per_xcd = None
    if busy is not None and cu is not None:
        if xcd is None:
            notes.append("XCD count unknown: assumed 1 (right for MI200 GCDs; pass num_xcd=8 or a "
                         "sysinfo.csv for MI300/MI350)")
        per_xcd = busy / (xcd or 1.0)
    if per_xcd is not None and cu is not None:
        if g("SQ_ACTIVE_INST_VALU") is not None:
            out["valu_util_pct"] = _ratio(100 * g("SQ_ACTIVE_INST_VALU"), per_xcd * cu)
        if g("SQ_VALU_MFMA_BUSY_CYCLES") is not None:
            out["mfma_util_pct"] = _ratio(100 * g("SQ_VALU_MFMA_BUSY_CYCLES"), per_xcd * cu * 4)
    if "valu_util_pct" not in out and g("VALUBusy") is not None:
        out["valu_util_pct"] = g("VALUBusy")
    if "mfma_util_pct" not in out and g("MfmaUtil") is not None:
        out["mfma_util_pct"] = g("MfmaUtil")
    # SQ_ACCUM_PREV_HIRES accumulates whichever SQ_*LEVEL* counter shares its pass; only
    # SQ_LEVEL_WAVES makes it resident waves.
    levels = [c for c in cols if re.match(r"^SQ_\w*LEVEL", c)]
    if per_xcd is not None and cu is not None and max_waves is not None:
        if levels == ["SQ_LEVEL_WAVES"] and g("SQ_ACCUM_PREV_HIRES") is not None:
            out["achieved_occupancy_pct"] = _ratio(100 * g("SQ_ACCUM_PREV_HIRES"), per_xcd * max_waves * cu)
        elif g("SQ_WAVE_CYCLES") is not None:
            # SQ_WAVE_CYCLES counts in quad-cycles, hence 4 x 100.
            out["achieved_occupancy_pct"] = _ratio(400 * g("SQ_WAVE_CYCLES"), per_xcd * cu * max_waves)
    elif per_xcd is not None and max_waves is None and "SQ_WAVE_CYCLES" in cols:
        notes.append("max waves per CU unknown: occupancy not derived (pass max_waves_per_cu or a sysinfo.csv)")
    if "achieved_occupancy_pct" not in out and g("OccupancyPercent") is not None:
        out["achieved_occupancy_pct"] = g("OccupancyPercent")

    # FLOPs, only when every VALU and MFMA op counter is there (a partial sum would mislead)
    valu = [f"SQ_INSTS_VALU_{op}_{t}" for t in ("F16", "F32", "F64") for op in ("ADD", "MUL", "TRANS", "FMA")]
    mops = [f"SQ_INSTS_VALU_MFMA_MOPS_{t}" for t in ("F16", "BF16", "F32", "F64")]
    if have(*valu, *mops):
        lane_ops = sum(g(n) * (2 if "_FMA_" in n else 1) for n in valu)  # type: ignore[misc]
        mfma = sum(g(n) for n in mops + (["SQ_INSTS_VALU_MFMA_MOPS_F8"] if "SQ_INSTS_VALU_MFMA_MOPS_F8" in cols else []))
        out["flops"] = 64 * lane_ops + 512 * mfma  # type: ignore[operator]

    # launch shape and resources (AMD grid sizes count work-items: blocks = grid / workgroup)
    vgpr, agpr = g("arch_vgpr", "Arch_VGPR", "VGPR_Count", "vgpr"), g("accum_vgpr", "Accum_VGPR", "Accum_VGPR_Count")
    if vgpr is not None:
        # CDNA2/3 have one unified VGPR file: accumulation VGPRs count against occupancy too.
        out["registers_per_thread"] = vgpr + (agpr.fillna(0) if agpr is not None else 0)
    lds = g("lds", "LDS_Per_Workgroup", "LDS_Block_Size", "Group_Segment_Size")
    if lds is not None:
        out["shared_mem_per_block_bytes"] = lds
    block, blocks = _launch_shape(wide, g)
    if block is not None:
        out["block_size"] = block
    if blocks is not None:
        out["grid_size"] = blocks
    if cu is not None:
        out["sm_count"] = cu
    return out, notes


def _launch_shape(wide: pd.DataFrame, g: Any) -> tuple[Optional[pd.Series], Optional[pd.Series]]:
    dims = "XYZ"
    if all(f"Workgroup_Size_{d}" in wide.columns and f"Grid_Size_{d}" in wide.columns for d in dims):
        wg = [g(f"Workgroup_Size_{d}") for d in dims]
        grid = [g(f"Grid_Size_{d}") for d in dims]
        block = wg[0] * wg[1] * wg[2]
        blocks = 1.0
        for gd, wd in zip(grid, wg):
            blocks = blocks * _ceil_div(gd, wd)
        return block, blocks  # type: ignore[return-value]
    block, grid = g("wgr", "Workgroup_Size"), g("grd", "Grid_Size")
    if block is None:
        return None, None
    return block, (_ceil_div(grid, block) if grid is not None else None)


def _ceil_div(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a / b.where(b > 0)).apply(lambda v: float(math.ceil(v)) if v == v else v)


def _ratio(num: pd.Series, den: Any) -> pd.Series:
    """num/den with 0 or missing denominators as NaN (absent), never inf."""
    den = den.where(den != 0) if isinstance(den, pd.Series) else (den if den else float("nan"))
    return (num / den).astype(float)


# --------------------------------------------------------------------------- rocprofv3 directories


def parse_dir(outdir: Path, sysinfo: Optional[Path] = None, *, sm_count: Optional[int] = None,
              max_waves_per_cu: Optional[int] = None, num_xcd: Optional[int] = None) -> CounterTable:
    """Parse a profiler output directory: rocprofv3 (``<host>/<pid>_*.csv``, ``pmc_N/`` passes),
    a rocprof-compute workload folder (``pmc_perf.csv``) or a legacy rocprof ``results.csv``.

    Counter files of one pass are joined with the kernel trace of the same process (for
    timestamps when the counter file lacks them); passes in separate ``pmc_N``/``pass_N``
    folders are merged by dispatch id — they are separate executions of the program.
    """
    outdir = Path(outdir)
    counters = sorted(outdir.rglob("*_counter_collection.csv"))
    traces = sorted(outdir.rglob("*_kernel_trace.csv"))
    if not counters and not traces:
        for name in ("pmc_perf.csv", "results.csv"):
            hits = sorted(outdir.rglob(name))
            if hits:
                return parse(hits[0], sysinfo, sm_count=sm_count, max_waves_per_cu=max_waves_per_cu,
                             num_xcd=num_xcd)
        raise CaptureError(
            f"No profiler output was found under {outdir}: no rocprofv3 *_counter_collection.csv or "
            f"*_kernel_trace.csv, no rocprof-compute pmc_perf.csv, no rocprof results.csv. rocprofv3 "
            f"writes CSV only with `--output-format csv` (ROCm 7 defaults to a SQLite database), and "
            f"writes nothing when the program launched no kernel.", kind="no_kernels", path=str(outdir))
    primary = counters or traces
    warnings: list[str] = []
    groups: dict[Path, list[pd.DataFrame]] = {}
    sources: set[str] = set()
    for f in primary:
        fmt = "v3-counters" if f in counters else "v3-trace"
        wide, source, w = _read_wide(f, fmt)
        warnings += w
        sources.add(source)
        trace = f.with_name(f.name.replace("_counter_collection.csv", "_kernel_trace.csv"))
        if fmt == "v3-counters" and trace.exists() and not {"Start_Timestamp", "End_Timestamp"} <= set(wide.columns):
            tw, _, w = _read_wide(trace, "v3-trace")
            warnings += w
            wide = wide.join(tw[["Start_Timestamp", "End_Timestamp"]], how="left")
        groups.setdefault(f.parent, []).append(wide)
    frames = [pd.concat(g) if len(g) > 1 else g[0] for g in groups.values()]
    merged = frames[0]
    for other in frames[1:]:
        merged = merged.combine_first(other)  # next pass: same dispatch ids, new counter columns
    if len(frames) > 1:
        warnings.append(f"counters from {len(frames)} passes (separate executions) merged by dispatch id")
    merged.attrs["counters"] = [c for c in merged.columns if c not in _META_COLS and not _DUP_META.match(c)]
    if sysinfo is None:
        agents = sorted(outdir.rglob("*_agent_info.csv"))
        sysinfo = agents[0] if agents else None
    info = read_sysinfo(sysinfo) if sysinfo else {}
    table = _table(merged.sort_index(), "rocprofv3", _hw(info, sm_count, max_waves_per_cu, num_xcd), warnings)
    table.artifact = str(outdir)
    _attach_device(table, info, sysinfo)
    return table


# --------------------------------------------------------------------------- running rocprof

#: Default counters: what derive() needs, valid on gfx90a/gfx94x/gfx950 (FETCH_SIZE and
#: WRITE_SIZE are rocprof's per-architecture derived byte counts).
DEFAULT_COUNTERS: tuple[str, ...] = (
    "GRBM_GUI_ACTIVE", "SQ_WAVES", "SQ_WAVE_CYCLES", "SQ_BUSY_CU_CYCLES", "SQ_ACTIVE_INST_VALU",
    "SQ_VALU_MFMA_BUSY_CYCLES", "SQ_LDS_BANK_CONFLICT", "SQ_LDS_IDX_ACTIVE",
    "TCC_HIT_sum", "TCC_MISS_sum",
    "TCP_TOTAL_CACHE_ACCESSES_sum", "TCP_TCC_READ_REQ_sum", "TCP_TCC_WRITE_REQ_sum",
    "FETCH_SIZE", "WRITE_SIZE",
)

#: Hardware counters per block in one pass on gfx90a/gfx94x (rocprof-compute perfmon_config).
BLOCK_LIMITS = {"SQ": 8, "SQC": 8, "TA": 2, "TD": 2, "TCP": 4, "TCC": 4, "CPC": 2, "CPF": 2, "SPI": 6, "GRBM": 2}


def _block(counter: str) -> Optional[str]:
    head = counter.split("_", 1)[0]
    return head if head in BLOCK_LIMITS else None


def split_passes(counters: Iterable[str], max_per_pass: int = 6) -> list[list[str]]:
    """Pack counters into passes (one application run each) within the hardware limits.

    First fit, in the given order (keep a ratio's counters next to each other so they land in
    the same pass): at most ``max_per_pass`` per pass and at most ``BLOCK_LIMITS`` per block.
    Derived metrics (``FETCH_SIZE``, ``LDSBankConflict``...) expand to several hardware
    counters of unknown blocks, so each gets a pass of its own.
    """
    passes: list[list[str]] = []
    for c in dict.fromkeys(counters):
        block = _block(c)
        if block is None:
            passes.append([c])
            continue
        for p in passes:
            if len(p) < max_per_pass and all(_block(x) is not None for x in p) and \
                    sum(_block(x) == block for x in p) < BLOCK_LIMITS[block]:
                p.append(c)
                break
        else:
            passes.append([c])
    return passes


def write_input_file(path: Path, counters: Iterable[str] = DEFAULT_COUNTERS, *,
                     kernel: Optional[str] = None, max_per_pass: int = 6) -> list[list[str]]:
    """Write a rocprof ``-i`` text input: one ``pmc:`` line per pass; returns the passes."""
    passes = split_passes(counters, max_per_pass)
    lines = [f"pmc: {' '.join(p)}" for p in passes]
    if kernel:
        lines.append(f"kernel: {kernel}")
    Path(path).write_text("\n".join(lines) + "\n")
    return passes


def find_rocprof(tool: str = "rocprofv3") -> Optional[str]:
    """Path of ``rocprofv3`` (or legacy ``rocprof``): PATH, $ROCM_PATH/bin, /opt/rocm/bin."""
    found = shutil.which(tool)
    if found:
        return found
    for home in (os.environ.get("ROCM_PATH"), "/opt/rocm"):
        cand = os.path.join(home, "bin", tool) if home else ""
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def build_command(python: str, child_args: list[str], outdir: Path, *,
                  counters: Optional[Iterable[str]] = None, input_file: Optional[Path] = None,
                  tool: str = "rocprofv3", rocprof: Optional[str] = None,
                  kernel_regex: Optional[str] = None) -> list[str]:
    """The rocprofv3 (default) or legacy rocprof command line around ``python child_args...``.

    rocprofv3: ``rocprofv3 --kernel-trace --output-format csv -d outdir (--pmc C... | -i input)
    -- python ...``; pass ``input_file`` when the counters need several passes.
    Legacy: ``rocprof -i input.txt -o outdir/results.csv --timestamp on python ...`` (it
    always takes its counters from the input file). AMD has no NVTX-range scoping: every
    dispatch of the child is profiled unless ``kernel_regex`` narrows it.
    """
    exe = rocprof or tool
    if tool == "rocprofv3":
        cmd = [exe, "--kernel-trace", "--output-format", "csv", "-d", str(outdir)]
        if input_file is not None:
            cmd += ["-i", str(input_file)]
        elif counters:
            cmd += ["--pmc", *counters]
        if kernel_regex:
            cmd += ["--kernel-include-regex", kernel_regex]
        return cmd + ["--", python, *child_args]
    if tool == "rocprof":
        if input_file is None:
            raise ValueError("legacy rocprof takes its counters from an input file (input_file=...)")
        return [exe, "-i", str(input_file), "-o", str(Path(outdir) / "results.csv"), "--timestamp", "on",
                python, *child_args]
    raise ValueError(f"tool must be 'rocprofv3' or 'rocprof', not {tool!r}")


def run(python: str, child_args: list[str], outdir: Path, *, counters: Optional[Iterable[str]] = None,
        tool: str = "rocprofv3", timeout_s: float = 1200.0, env: Optional[dict[str, str]] = None,
        cwd: Optional[Path] = None, rocprof: Optional[str] = None, kernel_regex: Optional[str] = None,
        sm_count: Optional[int] = None, max_waves_per_cu: Optional[int] = None,
        num_xcd: Optional[int] = None) -> CounterTable:
    """Profile the harness child with rocprofv3 (or legacy rocprof) and return its counters.

    Counters that do not fit one pass go through an input file (one application run per
    pass). Raises ``CaptureError`` when the profiler is missing, times out, fails or writes
    nothing.
    """
    exe = rocprof or find_rocprof(tool)
    if not exe or not (os.path.isfile(exe) or shutil.which(exe)):
        raise CaptureError(
            f"{tool} is not installed or not found (looked on PATH, in $ROCM_PATH/bin and "
            f"/opt/rocm/bin), so profd cannot collect AMD counters. Install ROCm's rocprofiler-sdk "
            f"(it provides rocprofv3; the legacy rocprof was deprecated in ROCm 6.4 and later "
            f"removed) and put it on PATH, or profile elsewhere with `rocprofv3 --kernel-trace --pmc "
            f"... --output-format csv -d out -- <program>` and pass the output to profd.",
            kind="not_installed")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    wanted = list(counters or DEFAULT_COUNTERS)
    passes = split_passes(wanted)
    input_file = None
    if tool == "rocprof" or len(passes) > 1:
        input_file = outdir / "profd_counters.txt"
        write_input_file(input_file, wanted)
    cmd = build_command(python, child_args, outdir, counters=wanted, input_file=input_file, tool=tool,
                        rocprof=exe, kernel_regex=kernel_regex)
    res = run_tool(cmd, timeout_s=timeout_s, env=env, cwd=cwd)
    if res.timed_out:
        raise CaptureError(
            f"{tool} did not finish within {timeout_s:.0f} s and was stopped together with the program. "
            f"Each counter pass re-runs the whole program ({len(passes)} passes here): profile fewer "
            f"counters or smaller inputs, or raise the timeout.", kind="timeout", path=str(outdir))
    try:
        if tool == "rocprofv3":
            table = parse_dir(outdir, sm_count=sm_count, max_waves_per_cu=max_waves_per_cu, num_xcd=num_xcd)
        else:
            table = parse(outdir / "results.csv", sm_count=sm_count, max_waves_per_cu=max_waves_per_cu,
                          num_xcd=num_xcd)
    except CaptureError as exc:
        if res.returncode != 0:
            raise CaptureError(f"{tool} (or the program it profiled) failed with exit status "
                               f"{res.returncode} and left no usable output. The end of its output: "
                               f"{res.tail(1200)}", kind="crash", path=str(outdir)) from exc
        raise
    if res.returncode != 0:
        table.warnings.append(f"{tool} / the profiled program exited with status {res.returncode}")
    return table


# --------------------------------------------------------------------------- registration

#: Canonical metric -> the counters ``derive`` computes it from (trace columns need none).
_COUNTERS_OF: dict[str, tuple[str, ...]] = {
    "l2_hit_rate_pct": ("TCC_HIT_sum", "TCC_MISS_sum"),
    "dram_bytes_read": ("FETCH_SIZE",),
    "dram_bytes_write": ("WRITE_SIZE",),
    "dram_bytes": ("FETCH_SIZE", "WRITE_SIZE"),
    "dram_bandwidth_bytes_per_s": ("FETCH_SIZE", "WRITE_SIZE"),
    "l1_hit_rate_pct": ("TCP_TOTAL_CACHE_ACCESSES_sum", "TCP_TCC_READ_REQ_sum", "TCP_TCC_WRITE_REQ_sum"),
    "smem_bank_conflict_pct": ("SQ_LDS_BANK_CONFLICT", "SQ_LDS_IDX_ACTIVE"),
    "valu_util_pct": ("GRBM_GUI_ACTIVE", "SQ_ACTIVE_INST_VALU"),
    "mfma_util_pct": ("GRBM_GUI_ACTIVE", "SQ_VALU_MFMA_BUSY_CYCLES"),
    "achieved_occupancy_pct": ("GRBM_GUI_ACTIVE", "SQ_WAVES", "SQ_WAVE_CYCLES"),
    "sm_throughput_pct": ("GRBM_GUI_ACTIVE", "SQ_BUSY_CU_CYCLES"),
}
#: From the kernel trace (dispatch records), no counter needed.
_FROM_TRACE = frozenset({"duration_ns", "registers_per_thread", "shared_mem_per_block_bytes", "block_size",
                         "grid_size", "sm_count"})
#: Canonical metrics AMD's counters do not give profd (NVIDIA-only concepts or no counter derived yet).
UNAVAILABLE = frozenset({
    "sm_clock_hz", "dram_clock_hz", "memory_throughput_pct", "dram_throughput_pct", "l2_throughput_pct",
    "l1_throughput_pct", "global_ld_bytes_per_sector", "global_st_bytes_per_sector", "global_ld_sectors_per_request",
    "global_st_sectors_per_request", "local_spill_requests", "smem_bank_conflicts_ld", "smem_bank_conflicts_st",
    "smem_wavefronts_ld", "smem_wavefronts_st", "theoretical_occupancy_pct", "occupancy_limit_registers",
    "occupancy_limit_shared_mem", "occupancy_limit_warps", "occupancy_limit_blocks", "waves_per_sm",
    "warp_cycles_per_issue", "ipc", "issue_active_pct", "tensor_pipe_pct", "fma_pipe_pct",
}) | frozenset(f"stall_{r}" for r in STALL_REASONS)


def counters_for(metrics: Iterable[str]) -> list[str]:
    """The counters (``--pmc``) that yield the canonical ``metrics``: a subset of ``DEFAULT_COUNTERS``."""
    metrics = list(metrics)
    if not metrics:
        return list(DEFAULT_COUNTERS)
    want = {c for m in metrics for c in _COUNTERS_OF.get(m, ())}
    return [c for c in DEFAULT_COUNTERS if c in want] or list(DEFAULT_COUNTERS)


def _reads(path: Path, head: Optional[str]) -> bool:
    return path.is_dir() or (head is not None and sniff(path) is not None)


def _load(path: Path, **kw: Any) -> CounterTable:
    return parse_dir(path, **kw) if path.is_dir() else parse(path, **kw)


def _run(req: Any) -> CounterTable:
    return run(req.python, req.child_args, Path(req.out_dir), timeout_s=req.timeout_s, env=req.env, cwd=req.cwd,
               counters=counters_for(req.metrics) if req.metrics and not req.full_set else None)


COLLECTOR = Collector(
    name="rocprof", role=WRAPS, summary="AMD rocprofv3 / rocprof: kernel trace and hardware counters",
    backends=("hip",),
    formats=("rocprof v1: kernel trace `results.csv`, counter CSV from `rocprof -i input.txt`, `results.stats.csv`",
             "rocprofv2 / Omniperf / rocprof-compute: wide per-dispatch CSV (`pmc_perf.csv`, `SQ_*.csv`, "
             "`timestamps.csv`)",
             "rocprofv3: `*_kernel_trace.csv`, `*_counter_collection.csv`, `*_kernel_stats.csv`, or its output "
             "directory"),
    install="install ROCm's rocprofiler-sdk (rocprofv3) and put it on PATH",
    find=find_rocprof, reads=_reads, load=_load, run=_run, counters_for=counters_for, unavailable=UNAVAILABLE,
    measures=frozenset(_COUNTERS_OF) | _FROM_TRACE | {"flops"},
    order=20,
)
