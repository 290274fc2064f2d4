"""The AMD collector on real rocprof v1 / rocprofv2 / rocprofv3 / rocprof-compute files.

Every expected number was computed by hand from the files in shared/rocprof/ (the formulas
are rocprof-compute's, profilers.md §3.5 and §4.2).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collectors import CaptureError, load_capture
from collectors import rocprof

try:
    from support import FIXTURES, fixture_file
except ImportError:  # pragma: no cover
    from tests.support import FIXTURES, fixture_file

AMD = FIXTURES / "rocprof"


def f(name: str) -> Path:
    return fixture_file("rocprof", name)


# --------------------------------------------------------------------------- rocprof v1


def test_v1_kernel_trace_results_csv():
    t = rocprof.parse(f("v1_mi250x_laplacian_results.csv"))
    assert t.source == "rocprof-v1"
    assert len(t.frame) == 1004
    assert t.frame["kernel"].iloc[0] == "test_function_kernel"
    assert t.value("duration_ns", 0) == 1_087_688  # EndNs - BeginNs = DurationNs
    assert t.value("duration_ns", 1) == 2001401023684049 - 2001401021036510
    assert (t.frame["duration_ns"] == t.raw["DurationNs"].astype(float)).all()
    assert t.frame["kernel"].iloc[2] == "__amd_rocclr_fillBufferAligned"  # ".kd" stripped
    assert t.value("grid_size", 0) == 134_217_728 / 256  # grd counts work-items
    assert t.value("block_size", 0) == 256
    assert t.value("registers_per_thread", 1) == 24
    assert t.value("shared_mem_per_block_bytes", 0) == 0
    assert (t.frame["kernel"] == "laplacian_kernel").sum() == 1001
    assert t.value("dram_bytes") is None  # a trace has no counters


def test_v1_counter_csv_data_movement():
    t = rocprof.parse(f("v1_mi250x_laplacian_data_movement_pmc.csv"))
    assert len(t.frame) == 1004
    row = 1  # laplacian_kernel: FETCH_SIZE 1979347.875 KB, WRITE_SIZE 1043147.625 KB
    assert t.frame["kernel"].iloc[row] == "laplacian_kernel"
    assert t.value("dram_bytes_read", row) == 1979347.875 * 1024
    assert t.value("dram_bytes_write", row) == 1043147.625 * 1024
    assert t.value("dram_bytes", row) == (1979347.875 + 1043147.625) * 1024
    # vL1D hit = 100 - 100*(TCP_TCC_READ_REQ + TCP_TCC_WRITE_REQ)/TCP_TOTAL_CACHE_ACCESSES
    assert t.value("l1_hit_rate_pct", row) == pytest.approx(100 - 100 * (83752868 + 16646400) / 265822200)
    assert t.value("duration_ns", row) is None  # -i counter runs carry no timestamps
    assert t.raw["TCP_TOTAL_CACHE_ACCESSES_sum"].iloc[row] == 265822200
    assert "FETCH_SIZE" in t.raw.attrs["counters"]


def test_v1_counter_csv_bank_conflicts():
    t = rocprof.parse(f("v1_mi250x_stencil_bankconflicts_pmc.csv"))
    assert len(t.frame) == 1024
    lds = t.frame[t.frame["kernel"] == "compute_fd_xy_lds_kernel"]
    assert len(lds) == 100
    assert (lds["smem_bank_conflict_pct"] == 0).all()  # LDSBankConflict 0.0 in every row
    assert (lds["shared_mem_per_block_bytes"] == 3072).all()
    vec = t.frame[t.frame["kernel"] == "compute_fd_xyz_lds_window_vec_kernel"].iloc[0]
    assert vec["registers_per_thread"] == 64 + 128  # arch_vgpr + accum_vgpr (unified VGPR file)
    assert vec["shared_mem_per_block_bytes"] == 16384
    assert vec["block_size"] == 512 and vec["grid_size"] == 524288 / 512
    assert t.raw.loc[t.frame.index[t.frame["kernel"] == "compute_fd_xyz_lds_window_vec_kernel"][0], "LDSInsts"] == 748


def test_v1_stats_summaries():
    t = rocprof.parse(f("v1_mi250x_laplacian_results.stats.csv"))
    assert list(t.frame["kernel"]) == ["laplacian_kernel", "test_function_kernel", "check_kernel",
                                       "__amd_rocclr_fillBufferAligned"]
    assert t.value("duration_ns", 0) == 2_643_734  # AverageNs, not TotalDurationNs
    assert t.raw["Calls"].iloc[0] == 1001
    assert any("summary" in w and "average" in w for w in t.warnings)
    s = rocprof.parse(f("v1_mi250x_stencil_results.stats.csv"))
    assert len(s.frame) == 13 and s.value("duration_ns", 0) == 3_740_674


def test_v1_omniperf_mi200_occupancy_needs_cu_count():
    path = f("v1_mi200_omniperf_SQ_LEVEL_WAVES.csv")
    bare = rocprof.parse(path)
    assert bare.source == "rocprof-v1"  # Omniperf-renamed v1 output keeps sig/obj
    assert bare.value("achieved_occupancy_pct") is None
    assert any("CU count unknown" in w for w in bare.warnings)
    assert bare.value("duration_ns", 0) == 1411551767656192 - 1411551767635712
    # MI210-class GCD: 104 CUs, 32 waves/CU, one XCD.
    t = rocprof.parse(path, sm_count=104, max_waves_per_cu=32, num_xcd=1)
    # 100 * SQ_ACCUM_PREV_HIRES / GRBM_GUI_ACTIVE / (32 * 104)
    assert t.value("achieved_occupancy_pct", 0) == pytest.approx(100 * 44799316 / 27964 / (32 * 104))
    assert t.value("sm_count") == 104


# --------------------------------------------------------------------------- rocprofv2 / rocprof-compute


def test_v2_mi300x_pmc_perf_memory_metrics():
    t = rocprof.parse(f("v2_mi300x_omniperf_pmc_perf.csv"))  # sysinfo.csv found beside it
    assert t.source == "rocprof-compute"
    assert len(t.frame) == 3
    assert t.frame["kernel"].iloc[0] == "vecCopy(double*, double*, double*, int, int)"  # " (.kd)" stripped
    assert [t.value("duration_ns", i) for i in range(3)] == [16160, 13680, 14160]
    assert all(13_700 - 50 <= t.value("duration_ns", i) <= 16_200 for i in range(3))
    # L2 hit = 100*TCC_HIT_sum/(TCC_HIT_sum+TCC_MISS_sum) = 66160/(66160+131309)
    assert t.value("l2_hit_rate_pct", 0) == pytest.approx(100 * 66160 / (66160 + 131309))
    assert all(t.value("l2_hit_rate_pct", i) == pytest.approx(33.3, abs=0.3) for i in range(3))
    # HBM read = 128*TCC_BUBBLE + 64*(TCC_EA0_RDREQ - BUBBLE - RDREQ_32B) + 32*RDREQ_32B
    assert t.value("dram_bytes_read", 0) == 128 * 65536 + 64 * (65767 - 65536 - 0) + 0
    read_gbps = [t.value("dram_bytes_read", i) / t.value("duration_ns", i) for i in range(3)]
    assert read_gbps == pytest.approx([520.01, 614.28, 593.41], abs=0.01)
    assert all(520 <= v <= 614.3 for v in read_gbps)
    # HBM write = 64*TCC_EA0_WRREQ_64B + 32*(WRREQ - WRREQ_64B) = 64*131072
    assert t.value("dram_bytes_write", 0) == 64 * 131072
    assert t.value("dram_bandwidth_bytes_per_s", 0) == pytest.approx((8403392 + 8388608) / 16160 * 1e9)
    assert t.value("smem_bank_conflict_pct", 0) == 0  # SQ_LDS_BANK_CONFLICT = SQ_LDS_IDX_ACTIVE = 0
    assert t.value("mfma_util_pct", 0) == 0
    assert t.value("flops", 0) == 0  # a copy does no arithmetic
    assert t.raw.loc[0, "TCC_HIT[0]"] >= 0  # per-channel columns are kept


def test_v2_mi300x_uses_sysinfo_for_cus_and_xcds():
    t = rocprof.parse(f("v2_mi300x_omniperf_pmc_perf.csv"))
    assert t.device_name == "MI300X_A1"
    assert t.device_attrs["gpu_arch"] == "gfx942"
    assert t.value("sm_count") == 304
    # VALU util = 100*SQ_ACTIVE_INST_VALU / (GRBM_GUI_ACTIVE/num_xcd * CUs)
    assert t.value("valu_util_pct", 0) == pytest.approx(100 * 98304 / (2562960 / 8 * 304))
    assert any("merges passes" in w for w in t.warnings)
    forced = rocprof.parse(f("v2_mi300x_omniperf_pmc_perf.csv"), sm_count=152, num_xcd=4)
    assert forced.value("valu_util_pct", 0) == pytest.approx(100 * 98304 / (2562960 / 4 * 152))


def test_v2_sq_level_waves_occupancy():
    t = rocprof.parse(f("v2_mi300x_omniperf_SQ_LEVEL_WAVES.csv"))
    assert t.source == "rocprofv2"
    # 100 * SQ_ACCUM_PREV_HIRES / (GRBM_GUI_ACTIVE/8) / (32 waves * 304 CUs)
    assert t.value("achieved_occupancy_pct", 0) == pytest.approx(100 * 155796620 / (496419 / 8) / (32 * 304))
    assert t.value("achieved_occupancy_pct", 1) == pytest.approx(100 * 133745984 / (455818 / 8) / (32 * 304))
    assert t.value("registers_per_thread") == 4 + 4
    assert t.value("grid_size") == 1048576 / 256


def test_v3_mi350_rocprof_compute_pmc_perf_0():
    t = rocprof.parse(f("v3_mi350_rocprofcompute_pmc_perf_0.csv"))
    assert t.source == "rocprof-compute"
    assert [t.value("duration_ns", i) for i in range(3)] == [
        1248227257293723 - 1248227257271964, 1248227257979016 - 1248227257962097,
        1248227258567914 - 1248227258551114]
    assert t.device_name == "MI350" and t.value("sm_count") == 128
    # Blocks from work-items agree with the hardware's own count of dispatched workgroups.
    assert (t.frame["grid_size"] == t.raw["SPI_CS0_NUM_THREADGROUPS"].astype(float)).all()
    assert t.value("grid_size") == 4096
    assert t.value("valu_util_pct") is None  # no GRBM_GUI_ACTIVE in this pass
    assert t.value("smem_bank_conflict_pct") is None  # SQ_LDS_BANK_CONFLICT without SQ_LDS_IDX_ACTIVE


# --------------------------------------------------------------------------- rocprofv3


def test_v3_counter_collection_long_format_is_pivoted():
    t = rocprof.parse(f("v3_docs_counter_collection.csv"))
    assert t.source == "rocprofv3"
    assert list(t.frame.index) == [1, 2, 3, 4]
    assert list(t.frame["kernel"]) == [
        "void addition_kernel<float>(float*, float const*, float const*, int, int)",
        "subtract_kernel(float*, float const*, float const*, int, int)",
        "multiply_kernel(float*, float const*, float const*, int, int)",
        "divide_kernel(float*, float const*, float const*, int, int)"]
    assert (t.raw["SQ_WAVES"] == 16384.0).all()
    assert t.raw.attrs["counters"] == ["SQ_WAVES"]
    assert t.value("duration_ns", 0) == 3200098838483232 - 3200098838431081
    assert t.value("grid_size", 0) == 1048576 / 64
    assert t.value("registers_per_thread", 3) == 12


def test_v3_kernel_trace():
    t = rocprof.parse(f("v3_docs_kernel_trace.csv"))
    assert t.source == "rocprofv3"
    assert list(t.frame.index) == [1, 2, 3, 4, 5, 6, 11, 12, 13]  # sorted by dispatch id
    assert t.value("duration_ns", 0) == 1550151853042437 - 1550151853029637
    # Grid 1024 x 1024 work-items in 64 x 1 x 1 workgroups: 16 x 1024 blocks.
    assert t.value("grid_size", 0) == 16 * 1024
    assert t.value("block_size", 0) == 64
    divide = t.frame.loc[4]
    assert divide["kernel"].startswith("divide_kernel") and divide["registers_per_thread"] == 12 + 4


def test_v3_mi300a_kernel_trace():
    t = rocprof.parse(f("v3_mi300a_rocprofcompute_kernel_trace.csv"))
    assert [t.value("duration_ns", i) for i in range(3)] == [8292, 5528, 5488]
    assert t.value("grid_size") == 1048576 / 256
    assert t.kernels() == ["vecCopy(double*, double*, double*, int, int)"]


def test_parse_dir_rocprofv3_layout(tmp_path):
    host = tmp_path / "node01"
    host.mkdir()
    shutil.copy(f("v3_docs_counter_collection.csv"), host / "15606_counter_collection.csv")
    shutil.copy(f("v3_docs_kernel_trace.csv"), host / "15606_kernel_trace.csv")
    t = rocprof.parse_dir(tmp_path)
    assert t.source == "rocprofv3" and len(t.frame) == 4 and t.artifact == str(tmp_path)
    assert load_capture(tmp_path).value("duration_ns", 0) == 52151
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptureError) as ei:
        rocprof.parse_dir(empty)
    assert "--output-format csv" in str(ei.value)


# --------------------------------------------------------------------------- not kernels, broken files


@pytest.mark.parametrize("name, words", [
    ("v3_docs_hip_api_stats.csv", "API call statistics"),
    ("v3_docs_memory_copy_trace.csv", "memory-copy trace"),
    ("v3_docs_pc_sampling_host_trap.csv", "PC-sampling"),
    ("v2_mi300x_omniperf_sysinfo.csv", "machine facts"),
])
def test_outputs_without_kernel_counters_are_refused_with_a_reason(name, words):
    with pytest.raises(CaptureError) as ei:
        rocprof.parse(f(name))
    assert ei.value.kind == "unsupported"
    assert words in str(ei.value) and name in str(ei.value) and "_kernel_trace.csv" in str(ei.value)


def test_garbage_and_header_only_and_truncated(tmp_path):
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("this,is,not\nrocprof,output,at all\n")
    with pytest.raises(CaptureError) as ei:
        rocprof.parse(garbage)
    assert ei.value.kind == "malformed" and "garbage.csv" in str(ei.value)
    assert "--output-format csv" in str(ei.value)

    header_only = tmp_path / "header_counter_collection.csv"
    header_only.write_text(f("v3_docs_counter_collection.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(CaptureError) as ei:
        rocprof.parse(header_only)
    assert "no rows" in str(ei.value) and "header_counter_collection.csv" in str(ei.value)

    # Cut in the middle of the last dispatch: the incomplete row is dropped, the rest kept.
    text = f("v1_mi250x_laplacian_results.csv").read_text()
    last = text.rstrip("\n").rfind("\n")
    cut = tmp_path / "results.csv"
    cut.write_text(text[: last + 40])
    t = rocprof.parse(cut)
    assert len(t.frame) == 1003 and any("incomplete" in w for w in t.warnings)

    # Cut inside the header: nothing to recognise.
    stub = tmp_path / "stub.csv"
    stub.write_text(text[:30])
    with pytest.raises(CaptureError):
        rocprof.parse(stub)


def test_load_capture_dispatches_amd_files():
    assert load_capture(f("v1_mi250x_laplacian_results.csv")).source == "rocprof-v1"
    assert load_capture(f("v3_docs_kernel_trace.csv")).source == "rocprofv3"
    t = load_capture(f("v2_mi300x_omniperf_SQ_LEVEL_WAVES.csv"), sm_count=304, max_waves_per_cu=32, num_xcd=8)
    assert t.value("achieved_occupancy_pct", 0) == pytest.approx(25.809, abs=0.01)


def test_sniff_formats():
    assert rocprof.sniff(f("v1_mi250x_laplacian_results.csv")) == "v1"
    assert rocprof.sniff(f("v1_mi250x_laplacian_results.stats.csv")) == "stats"
    assert rocprof.sniff(f("v2_mi300x_omniperf_pmc_perf.csv")) == "wide"
    assert rocprof.sniff(f("v3_docs_counter_collection.csv")) == "v3-counters"
    assert rocprof.sniff(f("v3_docs_kernel_trace.csv")) == "v3-trace"
    assert rocprof.sniff(f("v1_rocprof_input_example.txt")) is None


def test_clean_kernel_name():
    assert rocprof.clean_kernel_name("vecCopy(double*, int) [clone .kd]") == "vecCopy(double*, int)"
    assert rocprof.clean_kernel_name("vecCopy(double*, int) (.kd)") == "vecCopy(double*, int)"
    assert rocprof.clean_kernel_name("__amd_rocclr_fillBufferAligned.kd") == "__amd_rocclr_fillBufferAligned"
    assert rocprof.clean_kernel_name("add_kernel") == "add_kernel"


# --------------------------------------------------------------------------- commands and passes


def test_split_passes_respects_block_limits():
    passes = rocprof.split_passes(rocprof.DEFAULT_COUNTERS)
    assert sorted(c for p in passes for c in p) == sorted(rocprof.DEFAULT_COUNTERS)
    for p in passes:
        assert len(p) <= 6
        for block, limit in rocprof.BLOCK_LIMITS.items():
            assert sum(c.split("_", 1)[0] == block for c in p) <= limit
    assert ["FETCH_SIZE"] in passes and ["WRITE_SIZE"] in passes  # derived: a pass each
    tcc = [f"TCC_{n}_sum" for n in ("HIT", "MISS", "REQ", "READ", "WRITE")]
    assert rocprof.split_passes(tcc) == [tcc[:4], tcc[4:]]  # TCC allows 4 per pass


def test_write_input_file(tmp_path):
    path = tmp_path / "input.txt"
    passes = rocprof.write_input_file(path, ["SQ_WAVES", "GRBM_GUI_ACTIVE", "FETCH_SIZE"], kernel="laplacian_kernel")
    assert passes == [["SQ_WAVES", "GRBM_GUI_ACTIVE"], ["FETCH_SIZE"]]
    assert path.read_text() == "pmc: SQ_WAVES GRBM_GUI_ACTIVE\npmc: FETCH_SIZE\nkernel: laplacian_kernel\n"


def test_build_command_rocprofv3_and_legacy(tmp_path):
    cmd = rocprof.build_command("python3", ["-m", "profd.harness.child", "k.py"], tmp_path,
                                counters=["SQ_WAVES", "GRBM_GUI_ACTIVE"])
    assert cmd[0] == "rocprofv3"
    assert "--kernel-trace" in cmd and cmd[cmd.index("--output-format") + 1] == "csv"
    assert cmd[cmd.index("-d") + 1] == str(tmp_path)
    assert cmd[cmd.index("--pmc") + 1: cmd.index("--")] == ["SQ_WAVES", "GRBM_GUI_ACTIVE"]
    assert cmd[cmd.index("--") + 1:] == ["python3", "-m", "profd.harness.child", "k.py"]
    multi = rocprof.build_command("python3", ["k.py"], tmp_path, input_file=tmp_path / "in.txt",
                                  kernel_regex="add_kernel")
    assert multi[multi.index("-i") + 1] == str(tmp_path / "in.txt") and "--pmc" not in multi
    assert multi[multi.index("--kernel-include-regex") + 1] == "add_kernel"
    legacy = rocprof.build_command("python3", ["k.py"], tmp_path, input_file=tmp_path / "in.txt", tool="rocprof")
    assert legacy == ["rocprof", "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "results.csv"),
                      "--timestamp", "on", "python3", "k.py"]
    with pytest.raises(ValueError):
        rocprof.build_command("python3", [], tmp_path, tool="rocprof")  # legacy needs an input file


def test_run_without_rocprofv3_raises_not_installed(tmp_path):
    if rocprof.find_rocprof("rocprofv3"):
        pytest.skip("rocprofv3 is installed here")
    with pytest.raises(CaptureError) as ei:
        rocprof.run("python3", ["-c", "pass"], tmp_path / "out")
    assert ei.value.kind == "not_installed"
    assert "rocprofv3" in str(ei.value) and "--output-format csv" in str(ei.value)
    with pytest.raises(CaptureError):
        rocprof.run("python3", ["-c", "pass"], tmp_path / "out", rocprof=str(tmp_path / "nope"))
