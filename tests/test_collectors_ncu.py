"""The Nsight Compute collector on real H200 captures, broken inputs and the command it runs.

Expected numbers were read by hand from the fixture CSVs in shared/fixtures/ncu/.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collectors import CaptureError, load_capture
from collectors import ncu

try:
    from support import FIXTURES, fixture_file
except ImportError:  # pragma: no cover
    from tests.support import FIXTURES, fixture_file

NCU_DIR = FIXTURES / "ncu"
RAW = NCU_DIR / "h200_vector_add_basic_raw.csv"
DETAILS = NCU_DIR / "h200_matmul_full_details.csv"


def fixture(path: Path) -> Path:
    return fixture_file("ncu", path.name)


@pytest.fixture(scope="module")
def add_raw():
    return ncu.parse_csv(fixture(RAW).read_text(), source_path=str(RAW))


@pytest.fixture(scope="module")
def mm_details():
    return ncu.parse_csv(fixture(DETAILS).read_text(), source_path=str(DETAILS))


# --------------------------------------------------------------------------- raw page


def test_raw_page_vector_add_values(add_raw):
    t = add_raw
    assert t.source == "ncu"
    assert t.kernels() == ["add_kernel"]
    assert len(t.frame) == 1
    assert t.value("duration_ns") == 183_456  # "ns","183,456"
    assert 181_000 <= t.value("duration_ns") <= 184_000
    assert t.value("dram_throughput_pct") == pytest.approx(89.12)  # gpu__dram_throughput
    assert 89 <= t.value("dram_throughput_pct") <= 90
    assert t.value("memory_throughput_pct") == pytest.approx(89.12)
    assert t.value("sm_throughput_pct") == pytest.approx(7.77)
    assert t.value("l2_throughput_pct") == pytest.approx(92.62)
    assert t.value("sm_clock_hz") == pytest.approx(1_429_429_945.05)  # SM clocks unlocked? no: base lock
    assert t.value("dram_clock_hz") == pytest.approx(3_198_819_698.82)
    assert t.value("achieved_occupancy_pct") == pytest.approx(84.01)
    assert t.value("theoretical_occupancy_pct") == 100
    assert t.value("registers_per_thread") == 26
    assert t.value("occupancy_limit_registers") == 16
    assert t.value("occupancy_limit_warps") == 16
    assert t.value("block_size") == 128
    assert t.value("grid_size") == 65_536  # blocks, from "(65536, 1, 1)" / launch__grid_size
    assert t.value("waves_per_sm") == pytest.approx(31.03)
    assert t.value("sm_count") == 132
    assert t.value("shared_mem_per_block_bytes") == 1024  # 0 static + 0 dynamic + 1 KiB driver
    assert t.rules == []  # the raw page carries no rule messages


def test_raw_page_basic_set_has_no_l2_hit_rate(add_raw):
    # The basic set does not collect lts__t_sector_hit_rate.pct, so the 35 % quoted in
    # profilers.md §5.6 is not in this file: the collector must leave it absent, not invent it.
    assert "lts__t_sector_hit_rate.pct" not in add_raw.raw.columns
    assert add_raw.value("l2_hit_rate_pct") is None
    assert add_raw.value("dram_bytes") is None


def test_raw_page_device_and_vendor_values(add_raw):
    t = add_raw
    assert t.device_name == "NVIDIA H200"
    assert t.device_attrs["device_name"] == "NVIDIA H200"
    assert t.device_attrs["device__attribute_l2_cache_size"] == 62_914_560
    assert t.device_attrs["device__attribute_multiprocessor_count"] == 132
    assert t.device_attrs["device__attribute_confidential_computing_mode"] == "No-CC"  # string metric
    assert t.device_attrs["compute_capability"] == "9.0"
    assert t.raw.loc[0, "gpu__time_duration.sum"] == 183_456
    assert t.raw.loc[0, "launch__cluster_scheduling_policy"] == "PolicySpread"
    assert t.raw.loc[0, "Grid Size"] == "(65536, 1, 1)"
    assert t.raw.attrs["units"]["gpu__time_duration.sum"] == "ns"
    assert t.raw.attrs["units"]["dram__cycles_elapsed.avg.per_second"] == "hz"
    assert t.raw.shape == (1, 566)


# --------------------------------------------------------------------------- details page


def test_details_page_matmul_values(mm_details):
    t = mm_details
    assert t.kernels() == ["matmul_kernel"]
    assert len(t.frame) == 2
    assert t.value("duration_ns", 0) == 3_941_120
    assert t.value("duration_ns", 1) == 3_900_192
    assert t.value("l2_hit_rate_pct", 0) == pytest.approx(52.87)
    assert t.value("l2_hit_rate_pct", 1) == pytest.approx(55.08)
    assert t.value("registers_per_thread") == 64
    assert t.value("theoretical_occupancy_pct") == 50
    assert t.value("achieved_occupancy_pct") == pytest.approx(49.39)
    assert t.value("occupancy_limit_registers") == 8  # "Block Limit Registers"
    assert t.value("occupancy_limit_shared_mem") == 9
    assert t.value("occupancy_limit_blocks") == 32  # "Block Limit SM"
    assert t.value("memory_throughput_pct") == pytest.approx(82.76)  # SOL %, not MWA byte/s
    assert t.value("dram_bandwidth_bytes_per_s") == pytest.approx(3_048_310_360_506.66)  # MWA byte/s
    assert t.value("dram_throughput_pct") == pytest.approx(63.35)
    assert t.value("sm_throughput_pct") == pytest.approx(38.39)
    assert t.value("sm_clock_hz") == pytest.approx(1_340_899_382.66)
    assert t.value("warp_cycles_per_issue") == pytest.approx(21.18)
    assert t.value("issue_active_pct") == pytest.approx(37.22)
    assert t.value("ipc") == pytest.approx(1.52)
    assert t.value("grid_size") == 16_384
    assert t.value("block_size") == 128
    assert t.value("shared_mem_per_block_bytes") == 0 + 24_576 + 1_024
    assert t.value("local_spill_requests") == 0
    # Per-reason stalls are not on the details page: absent, not zero.
    assert t.value("stall_long_scoreboard") is None
    assert t.raw.loc[0, "Occupancy/Block Limit Registers"] == 8
    assert t.raw.loc[0, "Launch Statistics/Cluster Scheduling Policy"] == "PolicySpread"
    assert t.device_name == ""  # the Device column holds the index "0", no display name
    assert t.device_attrs["device_index"] == 0
    assert any("Unable to access the following 6 metrics" in w for w in t.warnings)


def test_details_page_rule_messages(mm_details):
    rules = mm_details.rules
    assert len(rules) == 20  # 10 rule rows per launch
    names = {r.rule for r in rules}
    assert {"SOLBottleneck", "SOLFPRoofline", "HighPipeUtilization", "MemoryL2Compression",
            "SharedMemoryConflicts", "IssueSlotUtilization", "CPIStall", "TheoreticalOccupancy",
            "UncoalescedSharedAccess"} == names
    by = {(r.launch, r.rule, r.type): r for r in rules}
    sol = by[(0, "SOLBottleneck", "INF")]
    assert sol.section == "SpeedOfLight"  # rule rows carry the section identifier
    assert sol.estimated_speedup_pct is None and sol.speedup_type == ""
    assert sol.kernel == "matmul_kernel"
    occ = by[(0, "TheoreticalOccupancy", "OPT")]
    assert occ.section == "Occupancy"
    assert occ.estimated_speedup_pct == pytest.approx(17.24) and occ.speedup_type == "global"
    assert "limited by the number of required registers" in occ.message
    smem = by[(1, "SharedMemoryConflicts", "OPT")]
    assert smem.section == "MemoryWorkloadAnalysis_Tables"
    assert smem.estimated_speedup_pct == pytest.approx(10.9)
    assert by[(0, "IssueSlotUtilization", "OPT")].speedup_type == "local"
    assert by[(0, "CPIStall", "OPT")].estimated_speedup_pct == pytest.approx(17.24)
    assert "11.3 cycles" in by[(0, "CPIStall", "OPT")].message
    assert by[(0, "MemoryL2Compression", "OPT")].estimated_speedup_pct == pytest.approx(62.43)


def test_details_page_shared_store_conflicts_from_rule(mm_details):
    t = mm_details
    # "This results in 509052 bank conflicts, which represent 18.82% of the overall 2704585
    # wavefronts for shared stores" (launch 0); 506349 / 2712399 for launch 1.
    assert t.value("smem_bank_conflicts_st", 0) == 509_052
    assert t.value("smem_wavefronts_st", 0) == 2_704_585
    assert t.value("smem_bank_conflicts_st", 1) == 506_349
    assert 100 * t.value("smem_bank_conflicts_st") / t.value("smem_wavefronts_st") == pytest.approx(18.82, abs=0.01)
    # Loads are unknown, so no overall percentage is claimed.
    assert t.value("smem_bank_conflicts_ld") is None
    assert t.value("smem_bank_conflict_pct") is None


# --------------------------------------------------------------------------- units and messy text


def test_unit_scale():
    assert ncu.unit_scale("ns") == (1.0, "ns")
    assert ncu.unit_scale("usecond") == (1e3, "ns")
    assert ncu.unit_scale("us") == (1e3, "ns")
    assert ncu.unit_scale("msecond") == (1e6, "ns")
    assert ncu.unit_scale("ms") == (1e6, "ns")
    assert ncu.unit_scale("Kbyte") == (1e3, "byte")
    assert ncu.unit_scale("Mbyte") == (1e6, "byte")
    assert ncu.unit_scale("Gbyte") == (1e9, "byte")
    assert ncu.unit_scale("byte/second") == (1.0, "byte/s")
    assert ncu.unit_scale("byte/s") == (1.0, "byte/s")
    assert ncu.unit_scale("Gbyte/s") == (1e9, "byte/s")
    assert ncu.unit_scale("Tbyte/s") == (1e12, "byte/s")
    assert ncu.unit_scale("Gbyte/second") == (1e9, "byte/s")
    assert ncu.unit_scale("Ghz") == (1e9, "hz")
    assert ncu.unit_scale("Mhz") == (1e6, "hz")
    assert ncu.unit_scale("hz") == (1.0, "hz")
    assert ncu.unit_scale("cycle/nsecond") == (1e9, "hz")
    assert ncu.unit_scale("Kbyte/block") == (1e3, "byte/block")
    assert ncu.unit_scale("%") == (1.0, "%")
    assert ncu.unit_scale("register/thread") == (1.0, "register/thread")


def test_parse_value():
    assert ncu.parse_value("3,199,487,793.66") == pytest.approx(3_199_487_793.66)
    assert ncu.parse_value("1,980,000") == 1_980_000
    assert ncu.parse_value("183.712000") == pytest.approx(183.712)
    assert ncu.parse_value("(128, 1, 1)") == "(128, 1, 1)"
    assert ncu.parse_value("No-CC") == "No-CC"
    assert ncu.parse_value("") is None and ncu.parse_value("n/a") is None


def _rewrite_raw(text: str, changes: dict[str, tuple[str, str]]) -> str:
    """The raw-page fixture with some metrics re-printed in other units (as `--import` does)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('"ID",'))
    rows = list(csv.reader(lines[start:]))
    header, units, values = rows[0], rows[1], rows[2]
    for name, (unit, value) in changes.items():
        j = header.index(name)
        units[j], values[j] = unit, value
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([header, units, values])
    return "\n".join(lines[:start]) + "\n" + out.getvalue()


def test_auto_scaled_units_are_converted():
    # ncu --import --csv without --print-units base prints us / Ghz / Gbyte/s / Kbyte/block
    # with six decimals and no separators (profilers.md §0.3).
    text = _rewrite_raw(fixture(RAW).read_text(), {
        "gpu__time_duration.sum": ("usecond", "183.456000"),
        "gpc__cycles_elapsed.avg.per_second": ("Ghz", "1.429430"),
        "launch__shared_mem_per_block_driver": ("Kbyte/block", "1.024000"),
        "dram__cycles_elapsed.avg.per_second": ("cycle/nsecond", "3.198820"),
    })
    t = ncu.parse_csv(text)
    assert t.value("duration_ns") == pytest.approx(183_456)
    assert t.value("sm_clock_hz") == pytest.approx(1.42943e9)
    assert t.value("dram_clock_hz") == pytest.approx(3.19882e9)
    assert t.value("shared_mem_per_block_bytes") == pytest.approx(1024)
    assert t.raw.attrs["units"]["gpu__time_duration.sum"] == "ns"


# Columns cut from a real `ncu --import rep.ncu-rep --csv --page raw` (no --print-units base) of
# an add and a matmul kernel on the H200 (ncu 2025.3.1): auto-scaled units, six decimals, and a
# thousands separator on the unitless request counts. The same report with --print-units base
# gave 44,544 ns, 1,962,239,583.33 hz, 4,063,839,080,459.77 byte/s, 134,224,896 byte.
AUTO_UNITS_EXCERPT = """\
"ID","Kernel Name","Block Size","Grid Size","Device","CC","device__attribute_display_name","gpu__time_duration.sum","gpc__cycles_elapsed.avg.per_second","dram__bytes.sum.per_second","dram__bytes_read.sum","dram__bytes_write.sum","lts__t_sector_hit_rate.pct","launch__shared_mem_per_block_dynamic","launch__shared_mem_per_block_driver","launch__shared_mem_per_block_static","l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum","l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"
"","","","","","","","us","Ghz","Tbyte/s","Mbyte","Mbyte","%","Kbyte/block","Kbyte/block","byte/block","sector",""
"0","add_kernel","(128, 1, 1)","(16384, 1, 1)","0","9.0","NVIDIA H200","44.544000","1.962240","4.063839","134.224896","46.794752","34.104268","0.000000","1.024000","0","4194304.000000","262,144"
"1","mm_kernel","(128, 1, 1)","(32, 32, 1)","0","9.0","NVIDIA H200","48.768000","1.741970","0.347979","16.784384","0.185856","91.712743","24.576000","1.024000","0","16777216.000000","1,048,576"
"""


def test_real_auto_scaled_import_is_converted_to_base_units():
    t = ncu.parse_csv(AUTO_UNITS_EXCERPT)
    assert t.kernels() == ["add_kernel", "mm_kernel"]
    assert t.value("duration_ns", 0) == pytest.approx(44_544)
    assert t.value("sm_clock_hz", 0) == pytest.approx(1_962_240_000)
    assert t.value("dram_bandwidth_bytes_per_s", 0) == pytest.approx(4.063839e12)
    assert t.value("dram_bytes_read", 0) == pytest.approx(134_224_896)
    assert t.value("dram_bytes", 0) == pytest.approx(134_224_896 + 46_794_752)
    assert t.value("l2_hit_rate_pct", 1) == pytest.approx(91.712743)
    assert t.value("shared_mem_per_block_bytes", 1) == pytest.approx(24_576 + 1_024)
    assert t.value("global_ld_sectors_per_request", 0) == pytest.approx(16.0)
    assert t.value("grid_size", 1) == 32 * 32  # from the "(32, 32, 1)" column: blocks
    assert t.device_name == "NVIDIA H200"


def test_wrong_unit_family_is_skipped_not_misread():
    text = _rewrite_raw(fixture(RAW).read_text(), {"gpu__time_duration.sum": ("byte", "183,456")})
    t = ncu.parse_csv(text)
    assert t.value("duration_ns") is None
    assert any("gpu__time_duration.sum" in w and "skipped" in w for w in t.warnings)


def test_details_units_msecond_and_kbyte():
    text = fixture(DETAILS).read_text()
    text = text.replace('"Duration","ns","3,941,120"', '"Duration","msecond","3.94"')
    text = text.replace('"Dynamic Shared Memory Per Block","byte/block","24,576"',
                        '"Dynamic Shared Memory Per Block","Kbyte/block","24.58"')
    t = ncu.parse_csv(text)
    assert t.value("duration_ns", 0) == pytest.approx(3_940_000)
    assert t.value("shared_mem_per_block_bytes", 0) == pytest.approx(24_580 + 1_024)
    assert t.value("duration_ns", 1) == 3_900_192  # untouched launch


def test_prof_lines_after_header_and_crlf_are_ignored():
    text = fixture(RAW).read_text()
    lines = text.splitlines()
    lines.insert(3, "==PROF== Report: /tmp/r.ncu-rep")
    t = ncu.parse_csv("\r\n".join(lines))
    assert t.value("duration_ns") == 183_456


def test_details_truncated_mid_row_keeps_complete_rows():
    text = fixture(DETAILS).read_text()
    cut = text.index('"1","636","python3.12","127.0.0.1","matmul_kernel","1","7","(128, 1, 1)","(16384, 1, 1)","0","9.0","Memory Workload Analysis","Mem Busy"')
    t = ncu.parse_csv(text[: cut + 60])
    assert len(t.frame) == 2
    assert t.value("duration_ns", 1) == 3_900_192  # launch 1's rows before the cut survive
    assert t.value("l2_hit_rate_pct", 1) is None  # the rows after it do not
    assert any("truncated" in w for w in t.warnings)


# --------------------------------------------------------------------------- errors

PERM_TEXT = """==PROF== Connected to process 4242 (/usr/bin/python3.12)
==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters on the target device 0. For instructions on enabling permissions and to get more information see https://developer.nvidia.com/ERR_NVGPUCTRPERM
==PROF== Disconnected from process 4242
==WARNING== No kernels were profiled.
"""

# Real output of ncu 2025.3.1 with an --nvtx-include range that the program never pushes.
NO_KERNELS_TEXT = """==WARNING== Note: Running with unmodified GPU clocks. If not controlled otherwise, profiling results may be inconsistent.
==PROF== Connected to process 765 (/usr/bin/python3.12)
program stdout line
done
==PROF== Disconnected from process 765
==WARNING== No kernels were profiled.
==WARNING== Note that specified NVTX include expressions match only push/pop ranges.
==WARNING== Refer https://docs.nvidia.com/nsight-compute/NsightComputeCli/index.html#nvtx-filtering for NVTX Filtering usage.
"""


def test_permission_error_explains_the_fix():
    with pytest.raises(CaptureError) as ei:
        ncu.parse_csv(PERM_TEXT)
    e = ei.value
    assert e.kind == "permission"
    msg = str(e)
    assert "ERR_NVGPUCTRPERM" in msg
    assert "NVreg_RestrictProfilingToAdminUsers=0" in msg
    assert "reboot" in msg and "root" in msg and "--cap-add=SYS_ADMIN" in msg
    assert "\n" not in msg  # one paragraph


def test_no_kernels_error_points_at_the_nvtx_range():
    with pytest.raises(CaptureError) as ei:
        ncu.parse_csv(NO_KERNELS_TEXT)
    assert ei.value.kind == "no_kernels"
    assert "profd_kernel" in str(ei.value) and "push/pop" in str(ei.value)
    assert "@triton.jit" in str(ei.value)


@pytest.mark.parametrize("text", ["", "hello world\nthis is not ncu\n", "a,b,c\n1,2,3\n"])
def test_garbage_is_a_malformed_capture(text):
    with pytest.raises(CaptureError) as ei:
        ncu.parse_csv(text, source_path="capture.csv")
    assert ei.value.kind == "malformed"
    assert "capture.csv" in str(ei.value) and '"ID"' in str(ei.value)
    assert "--print-units base" in str(ei.value)  # says how to produce a good one


def test_header_only_and_truncated_raw_are_errors():
    text = fixture(RAW).read_text()
    lines = text.splitlines()
    header_only = "\n".join(lines[:3])  # ==PROF== lines + header
    with pytest.raises(CaptureError) as ei:
        ncu.parse_csv(header_only)
    assert ei.value.kind == "malformed" and "truncated" in str(ei.value)
    units_and_half_row = "\n".join(lines[:4]) + "\n" + lines[4][: len(lines[4]) // 2]
    with pytest.raises(CaptureError) as ei:
        ncu.parse_csv(units_and_half_row)
    assert "truncated" in str(ei.value)
    cut_in_header = lines[0] + "\n" + lines[2][:500]
    with pytest.raises(CaptureError):
        ncu.parse_csv(cut_in_header)


# --------------------------------------------------------------------------- merging raw + details


def test_merge_adds_rules_and_fills_only_missing_metrics(add_raw, mm_details):
    # Mechanics only (the two fixtures are different kernels that both have ID 0): the raw
    # table keeps its own values, gains the details' rules and the metrics it lacked.
    merged = ncu.merge(add_raw, mm_details)
    assert merged.value("duration_ns") == 183_456
    assert merged.value("l2_hit_rate_pct") == pytest.approx(52.87)
    assert [r.launch for r in merged.rules] == [0] * 10
    assert "Occupancy/Block Limit Registers" in merged.raw.columns
    assert merged.raw.loc[0, "gpu__time_duration.sum"] == 183_456


# --------------------------------------------------------------------------- the command line


def test_build_command_scopes_to_nvtx_range_and_never_locks_clocks():
    cmd = ncu.build_command("/usr/bin/python3", ["-m", "profd.harness.child", "--target", "k.py"], Path("/tmp/r"))
    assert cmd[0] == "ncu"
    i = cmd.index("--nvtx-include")
    assert "--nvtx" in cmd and cmd[i + 1] == "profd_kernel/"  # trailing slash: a push/pop range
    assert cmd[cmd.index("--clock-control") + 1] == "none" and cmd.count("--clock-control") == 1
    assert cmd[cmd.index("--target-processes") + 1] == "all"
    assert cmd[cmd.index("--export") + 1] == "/tmp/r" and "--force-overwrite" in cmd
    assert cmd[cmd.index("--page") + 1] == "raw" and cmd[cmd.index("--print-units") + 1] == "base"
    assert "--csv" in cmd
    metrics = cmd[cmd.index("--metrics") + 1].split(",")
    assert metrics == list(ncu.CURATED_METRICS)
    assert "gpu__time_duration.sum" in metrics and "lts__t_sector_hit_rate.pct" in metrics
    assert any("smsp__average_warps_issue_stalled_" in m for m in metrics)
    assert "--set" not in cmd
    sections = [cmd[j + 1] for j, a in enumerate(cmd) if a == "--section"]
    assert sections == list(ncu.DEFAULT_SECTIONS)
    assert cmd[cmd.index("/usr/bin/python3"):] == ["/usr/bin/python3", "-m", "profd.harness.child", "--target", "k.py"]


def test_build_command_full_set_and_options():
    cmd = ncu.build_command("py", ["child.py"], Path("out/rep.ncu-rep"), full_set=True, nvtx_range="mine",
                            ncu="/opt/ncu", kernel_name="regex:add_kernel", launch_count=2)
    assert cmd[0] == "/opt/ncu"
    assert cmd[cmd.index("--set") + 1] == "full" and "--metrics" not in cmd
    assert cmd[cmd.index("--nvtx-include") + 1] == "mine/"
    assert cmd[cmd.index("--clock-control") + 1] == "none"  # full sets do not lock clocks either
    assert cmd[cmd.index("--kernel-name") + 1] == "regex:add_kernel"
    assert cmd[cmd.index("--launch-count") + 1] == "2"
    assert cmd[-2:] == ["py", "child.py"]
    custom = ncu.build_command("py", [], Path("r"), metrics=["gpu__time_duration.sum"], sections=())
    assert custom[custom.index("--metrics") + 1] == "gpu__time_duration.sum" and "--section" not in custom
    with pytest.raises(ValueError):
        ncu.build_command("py", [], Path("r"), clock_control="locked")


def test_report_file_suffix():
    assert ncu.report_file(Path("/x/rep")) == Path("/x/rep.ncu-rep")
    assert ncu.report_file(Path("/x/rep.ncu-rep")) == Path("/x/rep.ncu-rep")


# --------------------------------------------------------------------------- running


def test_run_without_ncu_raises_not_installed(tmp_path):
    with pytest.raises(CaptureError) as ei:
        ncu.run(sys.executable, ["-c", "pass"], tmp_path / "r", ncu=str(tmp_path / "no-such-ncu"))
    assert ei.value.kind == "not_installed"
    assert "--import" in str(ei.value) and "--page raw" in str(ei.value)


def test_import_report_without_ncu(tmp_path):
    if ncu.find_ncu():
        pytest.skip("ncu is installed here")
    rep = tmp_path / "user.ncu-rep"
    rep.write_bytes(b"\x00\x01not really a report")
    with pytest.raises(CaptureError) as ei:
        ncu.import_report(rep)
    assert ei.value.kind == "not_installed"
    assert "ncu --import report.ncu-rep --csv --page raw --print-units base" in str(ei.value)


def _stand_in(tmp_path: Path, body: str) -> str:
    """An executable that plays a failing ncu: exercises profd's process handling, not counters."""
    exe = tmp_path / "ncu"
    exe.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_run_maps_permission_output_to_permission_error(tmp_path):
    exe = _stand_in(tmp_path, f"""\
        cat <<'EOF'
        {PERM_TEXT.splitlines()[1]}
        EOF
        exit 1
        """)
    with pytest.raises(CaptureError) as ei:
        ncu.run(sys.executable, ["-c", "pass"], tmp_path / "r", ncu=exe, timeout_s=30)
    assert ei.value.kind == "permission"


def test_run_reports_crash_with_status_and_output(tmp_path):
    exe = _stand_in(tmp_path, """\
        echo "Traceback: RuntimeError: CUDA error: an illegal memory access" >&2
        exit 3
        """)
    with pytest.raises(CaptureError) as ei:
        ncu.run(sys.executable, ["-c", "pass"], tmp_path / "r", ncu=exe, timeout_s=30)
    assert ei.value.kind == "crash"
    assert "3" in str(ei.value) and "illegal memory access" in str(ei.value)


def test_run_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    exe = _stand_in(tmp_path, f"""\
        sleep 60 &
        echo $! > {pidfile}
        wait
        """)
    t0 = time.monotonic()
    with pytest.raises(CaptureError) as ei:
        ncu.run(sys.executable, ["-c", "pass"], tmp_path / "r", ncu=exe, timeout_s=1.5)
    assert ei.value.kind == "timeout"
    assert time.monotonic() - t0 < 20
    pid = int(pidfile.read_text())
    for _ in range(50):  # the grandchild must be gone (killed with its group), not orphaned
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"grandchild {pid} survived the timeout")


# --------------------------------------------------------------------------- load_capture


def test_load_capture_sniffs_ncu_csv_pages():
    t = load_capture(fixture(RAW))
    assert t.source == "ncu" and t.kernels() == ["add_kernel"] and t.artifact == str(RAW)
    d = load_capture(fixture(DETAILS))
    assert len(d.frame) == 2 and len(d.rules) == 20


def test_load_capture_rejects_unknown_and_binary(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("just some notes\n")
    with pytest.raises(CaptureError) as ei:
        load_capture(junk)
    assert ei.value.kind == "unsupported"
    assert "Nsight Compute CSV" in str(ei.value) and "rocprofv3" in str(ei.value)
    blob = tmp_path / "results.db"
    blob.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    with pytest.raises(CaptureError) as ei:
        load_capture(blob)
    assert "rocpd convert" in str(ei.value)
    with pytest.raises(CaptureError):
        load_capture(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- on a GPU

GPU_PROGRAM = '''
import torch, triton, triton.language as tl

@triton.jit
def add_kernel(x, y, o, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(o + offs, tl.load(x + offs, mask=m) + tl.load(y + offs, mask=m), mask=m)

n = 1 << 22
x, y = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
o = torch.empty_like(x)
def launch():
    add_kernel[(triton.cdiv(n, 1024),)](x, y, o, n, BLOCK=1024)
launch(); torch.cuda.synchronize()          # compile + warm-up: outside the range
torch.cuda.nvtx.range_push("profd_kernel")
launch()
torch.cuda.nvtx.range_pop()
torch.cuda.synchronize()
launch(); torch.cuda.synchronize()          # after the range: not profiled
'''


def _gpu_ready() -> bool:
    if not ncu.find_ncu():
        return False
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.slow
def test_run_on_a_real_gpu(tmp_path):
    if not _gpu_ready():
        pytest.skip("needs a CUDA GPU and Nsight Compute (ncu)")
    prog = tmp_path / "prog.py"
    prog.write_text(GPU_PROGRAM)
    t = ncu.run(sys.executable, [str(prog)], tmp_path / "report", timeout_s=300)
    assert t.kernels() == ["add_kernel"] and len(t.frame) == 1  # only the launch inside the range
    assert Path(t.artifact).is_file() and t.artifact.endswith(".ncu-rep")
    assert 0 < t.value("duration_ns") < 1e7
    # ncu flushes the caches before each pass, so x and y come from DRAM; o may stay in L2.
    assert t.value("dram_bytes_read") > 2 * 4 * (1 << 22) * 0.9
    assert 0 < t.value("l2_hit_rate_pct") < 100
    assert t.value("global_ld_sectors_per_request") > 0
    assert t.value("stall_long_scoreboard") is not None
    assert t.value("block_size") == 128 and t.value("grid_size") == (1 << 22) // 1024
    assert t.device_name.startswith("NVIDIA")
    assert any(r.rule == "SOLBottleneck" for r in t.rules)  # rules from the --import details pass
    again = ncu.import_report(Path(t.artifact))
    assert again.value("duration_ns") == t.value("duration_ns")
    assert len(again.rules) == len(t.rules)
