"""The device database, name matching, detection, ceilings and the `profd specs` text."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from hwspecs import db
from hwspecs.ceilings import (
    cache_path,
    ceilings_for,
    datasheet_ceilings,
    measure_ceilings,
    read_cached,
    ridge_point,
    write_cache,
)
from hwspecs.detect import DetectedDevice, detect
from hwspecs.spec import Ceilings, DeviceSpec
from hwspecs.summary import describe, specs_json

DEVICES = Path(__file__).resolve().parents[1] / "hwspecs" / "devices"
REFERENCE_CSV = Path(__file__).resolve().parent / "fixtures" / "reference" / "hwspecs.csv"
MiB, GiB = 1 << 20, 1 << 30
no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/HIP GPU")
has_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")

EXPECTED_KEYS = {"a100-sxm4-80gb", "h100-sxm", "h100-pcie", "h200-sxm", "l40s", "rtx-4090",
                 "b200", "mi250x", "mi300x", "mi325x"}


# --------------------------------------------------------------------------- the files


def test_database_has_every_required_device():
    assert EXPECTED_KEYS <= set(db.keys())


@pytest.mark.parametrize("path", sorted(DEVICES.glob("*.toml")), ids=lambda p: p.stem)
def test_each_file_is_complete_and_cites_sources(path):
    raw = tomllib.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(DeviceSpec)}
    assert set(raw) == fields, f"missing {fields - set(raw)}, extra {set(raw) - fields}"
    spec = db.load_file(path)
    assert spec.key == path.stem
    assert spec.sources and all(len(s) > 10 for s in spec.sources)
    assert spec.match and all(m == m.lower() for m in spec.match)
    # gfx targets are shared by several products: never a match string on their own.
    assert not any(m.startswith("gfx") for m in spec.match)
    assert set(spec.peak_tflops) >= {"fp64", "fp32", "bf16", "fp16"}
    assert spec.max_shared_mem_per_block_bytes <= spec.shared_mem_per_sm_bytes
    assert spec.max_warps_per_sm * spec.warp_size >= spec.max_threads_per_block
    assert spec.peak_tflops["bf16"] > spec.peak_tflops["fp32"] >= spec.peak_tflops["fp64"] / 2
    if spec.xcds > 1:
        assert spec.xcds * spec.cus_per_xcd == spec.sm_count


@pytest.mark.parametrize("key, field, value", [
    ("h200-sxm", "sm_count", 132),
    ("h200-sxm", "l2_bytes", 60 * MiB),
    ("h200-sxm", "memory_bandwidth_gbps", 4800.0),
    ("h200-sxm", "shared_mem_per_sm_bytes", 233472),  # the ncu capture's attribute
    ("h200-sxm", "max_shared_mem_per_block_bytes", 232448),
    ("h100-pcie", "sm_count", 114),
    ("h100-sxm", "sm_count", 132),
    ("h100-sxm", "l2_bytes", 50 * MiB),
    ("a100-sxm4-80gb", "max_shared_mem_per_block_bytes", 166912),
    ("a100-sxm4-80gb", "max_blocks_per_sm", 32),
    ("l40s", "max_blocks_per_sm", 24),
    ("rtx-4090", "max_blocks_per_sm", 24),
    ("rtx-4090", "max_shared_mem_per_block_bytes", 101376),
    ("rtx-4090", "max_warps_per_sm", 48),
    ("b200", "max_shared_mem_per_block_bytes", 232448),
    ("b200", "compute_capability", "10.0"),
    ("h100-sxm", "max_registers_per_thread", 255),
    ("mi300x", "sm_count", 304),
    ("mi300x", "xcds", 8),
    ("mi300x", "cus_per_xcd", 38),
    ("mi300x", "infinity_cache_bytes", 256 * MiB),
    ("mi300x", "compute_capability", "gfx942"),
    ("mi300x", "warp_size", 64),
    ("mi300x", "max_registers_per_thread", 512),
    ("mi300x", "max_shared_mem_per_block_bytes", 64 * 1024),
    ("mi325x", "memory_bandwidth_gbps", 6000.0),
    # MI250X is described per GCD, the device software sees.
    ("mi250x", "sm_count", 110),
    ("mi250x", "l2_bytes", 8 * MiB),
    ("mi250x", "memory_bytes", 64 * GiB),
    ("mi250x", "memory_bandwidth_gbps", 1638.4),
])
def test_specific_values(key, field, value):
    assert getattr(db.get(key), field) == value


def test_mi250x_says_it_is_one_gcd():
    spec = db.get("mi250x")
    assert "GCD" in spec.name
    assert any("GCD" in n and "separate device" in n for n in spec.notes)
    assert spec.peak_tflops["bf16"] == pytest.approx(383 / 2)


def test_precisions_absent_where_unsupported():
    assert "fp8" not in db.get("a100-sxm4-80gb").peak_tflops  # CC 8.0 has no FP8
    assert "tf32" not in db.get("mi250x").peak_tflops
    assert db.get("h100-sxm").peak_tflops["bf16"] == pytest.approx(1978.9 / 2, rel=1e-3)


# Columns of the reference CSV checked against each file (MI250X halved: per GCD).
_CSV_ROWS = {"A100-SXM4-80GB": "a100-sxm4-80gb", "H100-SXM5-80GB": "h100-sxm",
             "H100-PCIe-80GB": "h100-pcie", "H200-SXM-141GB": "h200-sxm", "L40S": "l40s",
             "RTX-4090": "rtx-4090", "B200 (HGX)": "b200", "MI250X": "mi250x",
             "MI300X": "mi300x", "MI325X": "mi325x"}


def test_files_agree_with_the_reference_csv():
    rows = {r["device"]: r for r in csv.DictReader(REFERENCE_CSV.open())}
    for device, key in _CSV_ROWS.items():
        row, spec = rows[device], db.get(key)
        share = 2 if key == "mi250x" else 1
        assert spec.sm_count == int(row["sm_or_cu_count"]) // share, key
        assert spec.memory_bandwidth_gbps == pytest.approx(float(row["dram_bw_tbs"]) * 1000 / share), key
        assert spec.peak_tflops["bf16"] == pytest.approx(float(row["bf16_fp16_tensor_tflops"]) / share, rel=2e-3), key
        assert spec.warp_size == int(row["warp_size"]), key
        assert spec.max_warps_per_sm == int(row["max_warps_per_sm"]), key
        assert spec.registers_per_sm == int(row["regs32_per_sm"]), key
        assert spec.shared_mem_per_sm_bytes == int(row["smem_or_lds_per_sm_kb"]) * 1024, key
        if row["fp8_tensor_tflops"]:
            assert spec.peak_tflops["fp8"] == pytest.approx(float(row["fp8_tensor_tflops"]), rel=2e-3), key


# --------------------------------------------------------------------------- loading


def _write_device(dirpath: Path, key: str, **override) -> Path:
    raw = tomllib.loads((DEVICES / "h200-sxm.toml").read_text())
    raw.update(key=key, **override)
    lines = []
    for k, v in raw.items():
        if k != "peak_tflops":
            lines.append(f"{k} = {json.dumps(v)}")
    lines.append("[peak_tflops]")
    lines += [f"{k} = {v}" for k, v in raw["peak_tflops"].items()]
    path = dirpath / f"{key}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_file_rejects_bad_files(tmp_path):
    good = _write_device(tmp_path, "ok-gpu", match=["ok gpu"])
    assert db.load_file(good).key == "ok-gpu"
    with pytest.raises(db.SpecError, match="sources"):
        db.load_file(_write_device(tmp_path, "nosrc", sources=[]))
    with pytest.raises(db.SpecError, match="integer"):
        db.load_file(_write_device(tmp_path, "badint", sm_count=132.5))
    bad = tmp_path / "typo.toml"
    bad.write_text(good.read_text().replace("key = \"ok-gpu\"", "key = \"typo\"\nsm_cout = 3"))
    with pytest.raises(db.SpecError, match="unknown fields"):
        db.load_file(bad)
    missing = tmp_path / "missing.toml"
    missing.write_text("\n".join(l for l in good.read_text().splitlines()
                                 if not l.startswith(("key", "l2_bytes"))))
    with pytest.raises(db.SpecError, match="l2_bytes"):
        db.load_file(missing)


def test_extra_device_dir_adds_entries(tmp_path, monkeypatch):
    _write_device(tmp_path, "rtx-3090", match=["rtx 3090"], match_exclude=[], sm_count=82)
    monkeypatch.setenv(db.ENV_EXTRA_DIR, str(tmp_path))
    assert db.match("NVIDIA GeForce RTX 3090").sm_count == 82
    assert db.match("NVIDIA H200").key == "h200-sxm"  # shipped entries stay
    monkeypatch.delenv(db.ENV_EXTRA_DIR)
    assert db.match("NVIDIA GeForce RTX 3090") is None


def test_returned_specs_are_copies():
    db.get("h200-sxm").peak_tflops["bf16"] = 1.0
    assert db.get("h200-sxm").peak_tflops["bf16"] == pytest.approx(989.4)


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200-sxm"),
    ("nvidia h200", "h200-sxm"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
    ("NVIDIA L40S", "l40s"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("NVIDIA B200", "b200"),
    ("AMD Instinct MI300X", "mi300x"),
    ("AMD Instinct MI325X", "mi325x"),
    ("AMD Instinct MI250X/MI250", "mi250x"),
    # different products whose names contain a shorter key: no borrowed figures
    ("NVIDIA H200 NVL", None),
    ("NVIDIA GH200 480GB", None),
    ("NVIDIA GB200", None),
    ("NVIDIA A100 80GB PCIe", None),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
    ("NVIDIA L40", None),
    ("NVIDIA H100 NVL", None),
    ("Tesla T4", None),
    ("gfx942", None),
    ("", None),
])
def test_match(name, key):
    spec = db.match(name)
    assert (spec.key if spec else None) == key


@pytest.mark.parametrize("query, key", [
    ("h200", "h200-sxm"), ("H200", "h200-sxm"), ("NVIDIA H200", "h200-sxm"),
    ("h200-sxm", "h200-sxm"), ("MI300X", "mi300x"), ("mi250x", "mi250x"),
    ("rtx4090", "rtx-4090"), ("RTX 4090", "rtx-4090"), ("A100", "a100-sxm4-80gb"),
    ("H100 PCIe", "h100-pcie"), ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("B200", "b200"),
])
def test_lookup(query, key):
    assert db.lookup(query).key == key


@pytest.mark.parametrize("query, message", [("H100", "ambiguous"), ("MI3", "ambiguous"),
                                            ("Voodoo 2", "no device")])
def test_lookup_refuses_ambiguous_or_unknown(query, message):
    with pytest.raises(KeyError, match=message):
        db.lookup(query)


# --------------------------------------------------------------------------- ceilings


def test_ridge_point_arithmetic():
    c = datasheet_ceilings(db.get("h200-sxm"))
    assert ridge_point(c, "bf16") == pytest.approx(989.4e12 / 4800e9)  # 206.1 FLOP/B
    assert ridge_point(c, "fp32") == pytest.approx(66.9e12 / 4800e9)  # 13.9 FLOP/B
    assert ridge_point(datasheet_ceilings(db.get("a100-sxm4-80gb")), "fp8") is None
    mi = datasheet_ceilings(db.get("mi300x"))
    assert ridge_point(mi, "bf16") == pytest.approx(1307.4 / 5.3)


def test_ceilings_fall_back_to_datasheet(tmp_path):
    spec = db.get("h200-sxm")
    c = ceilings_for(spec, tmp_path)
    assert c.source == "datasheet"
    assert c.memory_gbps == 4800.0 and c.tflops == spec.peak_tflops
    assert list(tmp_path.iterdir()) == []  # reading never writes


def _measured(key: str) -> Ceilings:
    return Ceilings(device=key, memory_gbps=4310.5, tflops={"bf16": 702.0, "fp32": 51.0},
                    source="measured", measured_at=1.7e9,
                    details={"bf16_median_ms": 1.57, "fp32_median_ms": 2.69, "copy_bytes": 2**31},
                    notes=["measured on NVIDIA H200"])


def test_ceilings_read_the_cache(tmp_path):
    spec = db.get("h200-sxm")
    path = write_cache(spec.key, tmp_path, _measured(spec.key), device_name="NVIDIA H200")
    assert path == cache_path(spec.key, tmp_path) and path.exists()
    c = ceilings_for(spec, tmp_path)
    assert c.source == "measured"
    assert c.memory_gbps == 4310.5 and c.tflops["bf16"] == 702.0
    assert ridge_point(c, "bf16") == pytest.approx(702.0e12 / 4310.5e9)
    # The cache is per device: another entry does not pick it up.
    assert ceilings_for(db.get("h100-sxm"), tmp_path).source == "datasheet"


def test_corrupt_or_foreign_cache_is_ignored(tmp_path):
    spec = db.get("h200-sxm")
    cache_path(spec.key, tmp_path).write_text("{not json")
    assert ceilings_for(spec, tmp_path).source == "datasheet"
    payload = {"format": 1, "key": "h100-sxm", "ceilings": _measured("h100-sxm").to_dict()}
    cache_path(spec.key, tmp_path).write_text(json.dumps(payload))
    assert read_cached(spec.key, tmp_path) is None


@has_cuda
def test_measuring_without_a_gpu_fails_cleanly(tmp_path):
    spec = db.get("h200-sxm")
    with pytest.raises(RuntimeError, match="no GPU"):
        measure_ceilings(spec, tmp_path, timeout=120)
    c = ceilings_for(spec, tmp_path, measure=True)
    assert c.source == "datasheet"
    assert any("measurement failed" in n for n in c.notes)
    assert not cache_path(spec.key, tmp_path).exists()


# --------------------------------------------------------------------------- detection


@has_cuda
def test_detect_on_a_machine_without_gpu():
    det = detect()
    assert det.backend == "cpu" and not det.is_gpu
    assert det.spec is None
    assert "no GPU" in det.message
    info = det.to_device_info()
    assert info.backend == "cpu" and info.name.startswith("cpu")
    assert DetectedDevice.from_dict(json.loads(det.to_json())) == det


def test_detect_survives_a_broken_child():
    det = detect(python="/nonexistent/python")
    assert det.backend in ("cpu", "cuda")  # NVML may still see a GPU
    assert "could not start" in det.message or det.source == "nvml"


# --------------------------------------------------------------------------- profd specs


def test_describe_datasheet_roofline():
    det = DetectedDevice(backend="cuda", name="NVIDIA H200", source="torch (child process)",
                         usable_by_torch=True, compute_capability="9.0", sm_count=132,
                         total_memory_bytes=150_109_880_320, l2_bytes=60 * MiB,
                         spec=db.match("NVIDIA H200"))
    text = describe(det)
    assert "NVIDIA H200" in text and "h200-sxm" in text
    assert "datasheet" in text and "4800 GB/s" in text
    assert "bf16 206.1 FLOP/byte" in text and "fp32 13.9 FLOP/byte" in text
    data = specs_json(det)
    assert data["ceilings_source"] == "datasheet"
    assert data["ridge_flop_per_byte"]["bf16"] == pytest.approx(206.125)
    assert data["spec"]["key"] == "h200-sxm" and "spec" not in data["detected"]
    json.dumps(data)


def test_describe_measured_marks_datasheet_leftovers():
    spec = db.get("h200-sxm")
    c = _measured(spec.key)
    c.tflops["fp8"] = spec.peak_tflops["fp8"]  # what measure_ceilings keeps from the datasheet
    text = describe(None, c, spec=spec)
    assert "measured on this device" in text
    fp8_line = next(l for l in text.splitlines() if l.strip().startswith("fp8"))
    bf16_line = next(l for l in text.splitlines() if l.strip().startswith("bf16"))
    assert "(datasheet)" in fp8_line and "(datasheet)" not in bf16_line


def test_describe_without_gpu_or_entry():
    det = DetectedDevice(backend="cpu", name="cpu", source="none", message="no GPU: test")
    text = describe(det)
    assert "no GPU: test" in text and "Roofline" not in text
    det = DetectedDevice(backend="cuda", name="Tesla T4", usable_by_torch=True)
    det.spec = db.match(det.name)
    assert "nothing in the database matches Tesla T4" in describe(det)


def test_detection_flags_a_partition():
    from hwspecs.detect import _check_against_spec
    det = DetectedDevice(backend="cuda", name="NVIDIA H100 80GB HBM3", usable_by_torch=True,
                         sm_count=16, total_memory_bytes=10 * GiB, l2_bytes=50 * MiB,
                         spec=db.get("h100-sxm"))
    _check_against_spec(det)
    assert any("16 SMs" in w and "MIG" in w for w in det.warnings)
    assert any("GiB" in w for w in det.warnings)


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@no_cuda
def test_detect_on_gpu():
    det = detect()
    assert det.is_gpu and det.usable_by_torch
    assert det.sm_count == torch.cuda.get_device_properties(0).multi_processor_count
    if det.spec is not None:
        assert not [w for w in det.warnings if "SMs" in w or "CUs" in w], det.warnings


@pytest.mark.gpu
@pytest.mark.slow
@no_cuda
def test_measured_ceilings_are_plausible(tmp_path):
    det = detect()
    if det.spec is None:
        pytest.skip(f"{det.name} is not in the database")
    c = measure_ceilings(det.spec, tmp_path)
    assert c.source == "measured"
    assert 0.3 * det.spec.memory_bandwidth_gbps < c.memory_gbps < 1.1 * det.spec.memory_bandwidth_gbps
    for p in ("bf16", "fp32"):
        assert 0.2 * det.spec.peak_tflops[p] < c.tflops[p] < 1.1 * det.spec.peak_tflops[p]
    assert ceilings_for(det.spec, tmp_path).measured_at == c.measured_at  # served from the cache
