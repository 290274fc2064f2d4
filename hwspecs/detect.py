"""Live detection of the GPU profd runs on, without the daemon holding a GPU context.

Anything that touches CUDA/HIP (torch's device properties) runs in a child process
(``hwspecs/_probe.py``); NVML is used in-process because it creates no CUDA context.
On a machine without a GPU, ``detect()`` returns backend "cpu" and says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hwspecs import db
from hwspecs.spec import DeviceSpec
from profd.model import DeviceInfo, JsonMixin

PROBE = Path(__file__).with_name("_probe.py")


@dataclass
class DetectedDevice(JsonMixin):
    """What is really there: the device as torch (in a child) or NVML reports it."""

    backend: str  # "cuda", "hip" or "cpu"
    name: str  # as reported: "NVIDIA H200", "AMD Instinct MI300X", "cpu"
    index: int = 0
    source: str = ""  # "torch (child process)", "nvml", "none"
    usable_by_torch: bool = False  # False: a GPU exists but torch here cannot launch on it
    compute_capability: str = ""  # "9.0" or "gfx942"
    arch_name: str = ""  # full HIP arch string, e.g. "gfx942:sramecc+:xnack-"
    sm_count: int = 0
    total_memory_bytes: int = 0
    l2_bytes: int = 0
    uuid: str = ""
    pci_bus_id: str = ""  # NVML format "00000000:3B:00.0" where known
    driver: str = ""
    torch_version: str = ""
    runtime_version: str = ""  # CUDA or HIP version torch was built with
    device_count: int = 0
    spec: Optional[DeviceSpec] = None
    message: str = ""  # why there is no GPU, or how it was found
    warnings: list[str] = field(default_factory=list)

    @property
    def is_gpu(self) -> bool:
        return self.backend in ("cuda", "hip")

    def to_device_info(self) -> DeviceInfo:
        """The ``DeviceInfo`` a Measurement carries."""
        return DeviceInfo(
            name=self.name if self.is_gpu else "cpu (Triton interpreter)",
            backend=self.backend if self.usable_by_torch or not self.is_gpu else "cpu",
            index=self.index,
            compute_capability=self.compute_capability,
            sm_count=self.sm_count,
            total_memory_bytes=self.total_memory_bytes,
            l2_bytes=self.l2_bytes,
            driver=self.driver,
            torch_version=self.torch_version,
        )


def _run_probe(index: int, timeout: float, python: str) -> dict[str, Any]:
    """Run the probe child; never raises, returns {"ok": False, "error": ...} instead."""
    try:
        proc = subprocess.run(
            [python, str(PROBE), str(index)],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"device probe timed out after {timeout:.0f} s"}
    except OSError as exc:
        return {"ok": False, "error": f"could not start {python}: {exc}"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"ok": False, "error": f"probe exited {proc.returncode}: {' | '.join(tail)}"}


def _nvml_info(index: int = 0, uuid: str = "") -> dict[str, Any]:
    """Name, memory, CC and driver from NVML (no CUDA context); {} when unavailable."""
    try:
        import pynvml
    except ImportError:
        return {"error": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return {"error": f"NVML unavailable ({exc})"}
    info: dict[str, Any] = {}
    try:
        def call(fn, *args):
            try:
                return fn(*args)
            except Exception:  # noqa: BLE001 - NotSupported on some boards; keep going
                return None

        info["driver"] = _text(call(pynvml.nvmlSystemGetDriverVersion)) or ""
        info["count"] = call(pynvml.nvmlDeviceGetCount) or 0
        handle = call(pynvml.nvmlDeviceGetHandleByUUID, uuid) if uuid else None
        if handle is None and index < info["count"]:
            handle = call(pynvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            return info
        info["name"] = _text(call(pynvml.nvmlDeviceGetName, handle)) or ""
        mem = call(pynvml.nvmlDeviceGetMemoryInfo, handle)
        info["total_memory"] = int(mem.total) if mem is not None else 0
        cc = call(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
        info["cc"] = f"{cc[0]}.{cc[1]}" if cc else ""
        info["uuid"] = _text(call(pynvml.nvmlDeviceGetUUID, handle)) or ""
        pci = call(pynvml.nvmlDeviceGetPciInfo, handle)
        info["pci_bus_id"] = _text(getattr(pci, "busId", "")) if pci is not None else ""
        return info
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _pci_id(dev: dict[str, Any]) -> str:
    bus, domain, device = dev.get("pci_bus_id"), dev.get("pci_domain_id"), dev.get("pci_device_id")
    if bus is None or domain is None or device is None:
        return ""
    return f"{int(domain):08X}:{int(bus):02X}:{int(device):02X}.0"


def _check_against_spec(det: DetectedDevice) -> None:
    """Warn where the live device disagrees with its database entry (MIG, partitions, variants)."""
    spec = det.spec
    if spec is None:
        if det.is_gpu:
            det.warnings.append(
                f"no database entry matches {det.name!r}: roofline figures are unavailable "
                f"(known: {', '.join(db.keys())}); add a file under hwspecs/devices/")
        return
    if det.sm_count and det.sm_count != spec.sm_count:
        unit = "CUs" if spec.vendor == "AMD" else "SMs"
        det.warnings.append(
            f"device reports {det.sm_count} {unit} but {spec.key} has {spec.sm_count}: "
            "a MIG slice, a compute partition or a different variant; per-device peaks "
            "from the database are too high for it")
    if det.total_memory_bytes and not (
        0.85 * spec.memory_bytes <= det.total_memory_bytes <= 1.05 * spec.memory_bytes
    ):
        det.warnings.append(
            f"device reports {det.total_memory_bytes / 2**30:.1f} GiB but {spec.key} has "
            f"{spec.memory_bytes / 2**30:.0f} GiB: a partition or a different variant?")
    if det.l2_bytes and spec.vendor == "NVIDIA" and det.l2_bytes != spec.l2_bytes:
        det.warnings.append(
            f"device reports L2 {det.l2_bytes / 2**20:.1f} MiB, the database "
            f"{spec.l2_bytes / 2**20:.1f} MiB (the live value is the one to trust)")


def detect(index: int = 0, *, timeout: float = 120.0, python: Optional[str] = None) -> DetectedDevice:
    """Detect GPU ``index`` (torch's numbering) and match it against the database.

    torch runs in a child process (the caller never gets a CUDA/HIP context); NVML
    supplies the driver version and is the fallback when torch cannot see the GPU.
    Never raises: without a GPU the result has backend "cpu" and ``message`` says why.
    """
    probe = _run_probe(index, timeout, python or sys.executable)
    torch_note = ""
    if probe.get("ok") and probe.get("available"):
        dev = probe["device"]
        hip = bool(probe.get("hip_version"))
        gcn = str(dev.get("gcn_arch") or "")
        det = DetectedDevice(
            backend="hip" if hip else "cuda",
            name=str(dev.get("name") or ""),
            index=index,
            source="torch (child process)",
            usable_by_torch=True,
            compute_capability=gcn.split(":")[0] if hip and gcn else f"{dev['major']}.{dev['minor']}",
            arch_name=gcn,
            sm_count=int(dev.get("sm_count") or 0),
            total_memory_bytes=int(dev.get("total_memory") or 0),
            l2_bytes=int(dev.get("l2_bytes") or 0),
            uuid=str(dev.get("uuid") or ""),
            pci_bus_id=_pci_id(dev),
            torch_version=str(probe.get("torch_version") or ""),
            runtime_version=str(probe.get("hip_version") or probe.get("cuda_version") or ""),
            device_count=int(probe.get("count") or 0),
        )
        if not hip:
            uuid = det.uuid if det.uuid.startswith("GPU-") or not det.uuid else f"GPU-{det.uuid}"
            det.uuid = uuid
            nv = _nvml_info(index, uuid)
            det.driver = str(nv.get("driver") or "")
        det.spec = db.match(det.name)
        det.message = f"{det.name} found by torch {det.torch_version} in a child process"
        _check_against_spec(det)
        return det

    if probe.get("ok"):
        build = probe.get("torch_version", "?")
        why = probe.get("error") or "torch.cuda.is_available() is False"
        torch_note = f"{why} (torch {build})"
    else:
        torch_note = str(probe.get("error") or "device probe failed")

    # torch cannot use a GPU here; NVML may still see one (CPU-only torch build,
    # CUDA_VISIBLE_DEVICES="", a driver/runtime mismatch): report it, flagged unusable.
    nv = _nvml_info(index)
    if nv.get("name"):
        det = DetectedDevice(
            backend="cuda",
            name=nv["name"],
            index=index,
            source="nvml",
            usable_by_torch=False,
            compute_capability=nv.get("cc", ""),
            total_memory_bytes=int(nv.get("total_memory") or 0),
            uuid=nv.get("uuid", ""),
            pci_bus_id=nv.get("pci_bus_id", ""),
            driver=nv.get("driver", ""),
            torch_version=str(probe.get("torch_version") or ""),
            device_count=int(nv.get("count") or 0),
            spec=db.match(nv["name"]),
            message=(f"NVML sees {nv['name']} (NVML index {index}) but torch cannot use it: "
                     f"{torch_note}; kernels would run on the CPU interpreter"),
        )
        _check_against_spec(det)
        return det
    nvml_note = nv.get("error") or "NVML lists no GPU"
    return DetectedDevice(
        backend="cpu",
        name="cpu",
        index=index,
        source="none",
        torch_version=str(probe.get("torch_version") or ""),
        message=f"no GPU: {torch_note}; {nvml_note}",
    )
