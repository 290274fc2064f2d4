"""Is there a GPU? Asked without creating a CUDA context in this process.

The daemon and the warm worker's zygote must never initialise CUDA (the zygote
forks children that will). NVML answers on most machines; where it does not
(seen on an H100 VM whose NVML probe failed while CUDA worked), a short-lived
subprocess asks torch, and the answer is cached for the life of this process.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

_PROBE = ("import torch, sys; ok = torch.cuda.is_available(); "
          "print((torch.cuda.device_count() if ok else 0), (torch.cuda.get_device_name(0) if ok else ''), sep='|')")


def _nvml() -> tuple[int, str]:
    import pynvml

    pynvml.nvmlInit()
    try:
        n = pynvml.nvmlDeviceGetCount()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)) if n else ""
        return n, name.decode() if isinstance(name, bytes) else name
    finally:
        pynvml.nvmlShutdown()


#: Set by a parent that already probed (the warm worker's zygote inherits it): "count|name".
ENV = "PROFD_GPU_PROBE"


@functools.lru_cache(maxsize=1)
def probe() -> tuple[int, str, str]:
    """(GPU count, first GPU's name, how it was found); count 0 when there is none."""
    told = os.environ.get(ENV, "")
    if told:
        count, _, name = told.partition("|")
        if count.isdigit():
            return int(count), name, "the parent process"
    try:
        n, name = _nvml()
        if n:
            return n, name, "NVML"
    except Exception:
        pass
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
        count, _, name = out.stdout.strip().rpartition("\n")[-1].partition("|")
        if out.returncode == 0 and count.strip().isdigit() and int(count) > 0:
            return int(count), name, "torch (subprocess)"
    except (OSError, subprocess.TimeoutExpired):
        pass
    if os.path.exists("/dev/kfd"):
        return 1, "AMD GPU", "/dev/kfd"
    return 0, "", "none"


def gpu_present() -> bool:
    """True when this machine has a GPU profd can use."""
    return probe()[0] > 0


def gpu_summary() -> tuple[bool, str]:
    """Is there a GPU (asked without a CUDA context in this process)? And a line about it."""
    n, name, how = probe()
    if n:
        return True, f"{n} GPU(s), first: {name} (found via {how})"
    return False, ("no GPU found: kernels run in Triton's CPU interpreter, so verdicts are real but timings are "
                   "not representative and hardware counters are skipped")
