"""The default executor: one slot per local GPU, each with its own pinned warm worker.

Each slot's children see exactly one GPU: ``CUDA_VISIBLE_DEVICES=<i>`` (NVIDIA)
or ``HIP_VISIBLE_DEVICES=<i>`` (AMD) is put into the environment of its zygote,
of every fork and cold child, and of the profiler it starts. GPUs are counted
without a CUDA context in the daemon: through NVML, else ``nvidia-smi -L``, else
the KFD topology (AMD); a machine with none gets CPU slots (Triton's interpreter).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from profd.service.executors.base import Executor, ExecutorError, JobFn, Slot

log = logging.getLogger("profd.service.executors")


@dataclass
class LocalGpu:
    """One GPU this process may use, and how to pin a child to it."""

    index: int  # as this process numbers it (cuda:<index>, and the `gpus` config)
    token: str  # the value for the pinning variable (an index, or a UUID)
    name: str
    vendor: str = "nvidia"  # "nvidia" or "amd"
    nvml_index: Optional[int] = None

    def env(self) -> dict[str, str]:
        """The environment that pins a child to this GPU."""
        if self.vendor == "amd":
            # Tokens read from ROCR_VISIBLE_DEVICES must filter at the same level, else HIP indexes twice.
            var = "ROCR_VISIBLE_DEVICES" if os.environ.get("ROCR_VISIBLE_DEVICES") and not \
                os.environ.get("HIP_VISIBLE_DEVICES") else "HIP_VISIBLE_DEVICES"
            return {var: self.token}
        env = {"CUDA_VISIBLE_DEVICES": self.token}
        if "CUDA_DEVICE_ORDER" not in os.environ:
            # Tokens we numbered come from NVML, which counts in PCI bus order; CUDA must agree.
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return env


def _tokens(value: Optional[str]) -> Optional[list[str]]:
    """A *_VISIBLE_DEVICES value as a list (None: unset). CUDA stops at the first invalid entry."""
    if value is None:
        return None
    out = []
    for t in value.split(","):
        t = t.strip()
        if not t or t == "-1" or t.startswith("-"):
            break
        out.append(t)
    return out


def _nvml_names() -> Optional[list[str]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            n = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(n.decode() if isinstance(n, bytes) else n)
        return names
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _smi_names() -> Optional[list[str]]:
    """``nvidia-smi -L`` (PCI order, like NVML) where the Python bindings are missing."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.*?)(?: \(UUID: .*\))?$", out, re.M)]
    return names or None


def _kfd_gpus() -> list[str]:
    """AMD GPUs from the KFD topology (nodes with SIMDs; CPU nodes have none)."""
    root = Path("/sys/class/kfd/kfd/topology/nodes")
    names = []
    try:
        nodes = sorted(root.iterdir(), key=lambda p: int(p.name))
    except (OSError, ValueError):
        return []
    for node in nodes:
        try:
            props = dict(line.split(None, 1) for line in (node / "properties").read_text().splitlines() if " " in line)
            if int(props.get("simd_count", "0")) > 0:
                names.append(f"AMD {(node / 'name').read_text().strip() or 'GPU'}")
        except (OSError, ValueError):
            continue
    return names


def local_gpus() -> list[LocalGpu]:
    """The GPUs this process may use, numbered as it would number them; [] without a GPU."""
    cvd = _tokens(os.environ.get("CUDA_VISIBLE_DEVICES"))
    names = _nvml_names()
    if names is None:
        names = _smi_names()
    if names is not None:
        if cvd is None:
            return [LocalGpu(i, str(i), n, "nvidia", i) for i, n in enumerate(names)]
        gpus = []
        pci_order = os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
        for i, t in enumerate(cvd):
            # A plain index maps to NVML's only when CUDA also counts in PCI order.
            nvml = int(t) if t.isdigit() and pci_order and int(t) < len(names) else None
            gpus.append(LocalGpu(i, t, names[nvml] if nvml is not None else f"NVIDIA GPU {t}", "nvidia", nvml))
        return gpus
    if os.path.exists("/dev/kfd"):
        amd = _kfd_gpus()
        hvd = _tokens(os.environ.get("HIP_VISIBLE_DEVICES") or os.environ.get("ROCR_VISIBLE_DEVICES"))
        if hvd is not None:
            return [LocalGpu(i, t, amd[int(t)] if t.isdigit() and int(t) < len(amd) else f"AMD GPU {t}", "amd")
                    for i, t in enumerate(hvd)]
        return [LocalGpu(i, str(i), n, "amd") for i, n in enumerate(amd)]
    return []


class LocalExecutor(Executor):
    """One slot per local GPU (or ``cpu_slots`` CPU slots without one)."""

    name = "local"

    def __init__(self, job_fn: JobFn, *, gpus: Optional[list[int]] = None, cpu_slots: int = 1, warm: bool = True,
                 warm_idle_s: float = 0.0, should_abort: Callable[[], bool] = lambda: False, devices: Optional[list[LocalGpu]] = None) -> None:
        """``gpus``: the subset of GPU indices to use (default all); ``cpu_slots``: slots on a
        machine without a GPU; ``warm``: a warm worker per slot; ``devices``: the GPUs to
        use instead of detecting them (a machine description, e.g. from a test)."""
        super().__init__(job_fn, should_abort=should_abort)
        self.gpus = list(gpus) if gpus is not None else None
        self.cpu_slots = max(1, int(cpu_slots))
        self.warm = warm
        self.warm_idle_s = warm_idle_s
        self.devices = devices

    def _discover(self) -> list[Slot]:
        found = self.devices if self.devices is not None else local_gpus()
        if not found:
            note = f"gpus = {self.gpus} ignored: no GPU found" if self.gpus else ""
            return [Slot(id=f"local:cpu{k}", device="CPU (Triton interpreter)", kind="cpu", note=note)
                    for k in range(self.cpu_slots)]
        if self.gpus is not None:
            missing = [i for i in self.gpus if not 0 <= i < len(found)]
            if missing:
                raise ExecutorError(f"[executor] gpus = {self.gpus}: no GPU {missing} here; this process sees "
                                 f"{len(found)} GPU(s) (0..{len(found) - 1})")
            found = [found[i] for i in dict.fromkeys(self.gpus)]
        return [Slot(id=f"local:gpu{g.index}", device=f"{g.name} (GPU {g.index})", kind="gpu", env=g.env(),
                     nvml_index=g.nvml_index) for g in found]

    def _open_runner(self, slot: Slot) -> Any:
        from profd.harness.devicelock import LockedRunner, device_key

        # Every child of this slot holds its device's lock: a `profd tune` in another
        # process takes turns with the daemon instead of timing on a busy GPU.
        cpu_index = int(slot.id.rsplit("cpu", 1)[1]) if slot.kind == "cpu" else 0
        return LockedRunner(self._open_inner_runner(slot), device_key(slot.env, cpu_index),
                            what=f"profd daemon (pid {os.getpid()}, slot {slot.id})",
                            should_abort=self.slot_abort(slot))

    def _open_inner_runner(self, slot: Slot) -> Any:
        from profd.harness.runner import ColdRunner

        if self.warm:
            from profd.harness.warm import WarmWorker

            # Started on the slot's thread, but the zygote's env is given explicitly: it outlives calls.
            w = WarmWorker(should_abort=self.slot_abort(slot), env_overrides=slot.env,
                           idle_close_s=self.warm_idle_s)
            try:
                w.start()
                slot.runner_kind = "warm"
                return w
            except Exception as e:
                slot.note = f"warm worker unavailable ({e}); each job starts a fresh process"
        slot.runner_kind = "cold"
        return ColdRunner(should_abort=self.slot_abort(slot))

    def _abort_runner(self, slot: Slot) -> None:
        kill = getattr(slot.runner, "kill_current", None)
        if kill is not None:
            kill()

    def _close_runner(self, slot: Slot) -> None:
        close = getattr(slot.runner, "close", None)
        if close is not None:
            close()
