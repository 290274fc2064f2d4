"""A spin that holds every SM of the GPU for a set time, launched before a timing bracket opens.

Why: a timed call must not include the Python launch overhead of the user's wrapper (Liger's
layer norm spends ~70 us on the host before its 40 us kernel starts; timed from an idle device
that host time sat inside every bracket, added its own noise and squeezed a real 1.28x to
about 1.1x). The usual cure, a GPU sleep queued before the start event while the host
launches, is a hole when the sleep runs on one thread (``torch.cuda._sleep``): a kernel that
puts its work on a side stream gets the rest of the GPU during the sleep and looks free.
This spin is launched with as many 1024-thread blocks as fit on every SM at once, so no block
of any other kernel can start anywhere until it ends: work on another stream waits for the
bracket to open and runs inside it, where the device-wide synchronisation sees it.

The kernel is a few lines of PTX (``%globaltimer``, nanoseconds), loaded through the CUDA
driver API with ctypes: no compiler, no cache directory, a few milliseconds per process. It
must be loaded in the trusted part of a child, after CUDA is up and before the candidate's
code is imported (:func:`prepare`); anything that keeps it from loading (no libcuda, ROCm, a
driver that refuses the PTX) makes :func:`available` False and the caller times from an idle
device instead.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Optional

#: %globaltimer counts nanoseconds on every NVIDIA GPU since sm_30; PTX 6.0 / sm_60 JIT-compiles
#: for any newer architecture the driver knows.
PTX = b"""
.version 6.0
.target sm_60
.address_size 64

.visible .entry profd_spin(
    .param .u64 profd_spin_ns
)
{
    .reg .pred %p<2>;
    .reg .b64 %rd<5>;

    ld.param.u64 %rd1, [profd_spin_ns];
    mov.u64 %rd2, %globaltimer;
$L__spin:
    mov.u64 %rd3, %globaltimer;
    sub.s64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p1, %rd4, %rd1;
    @%p1 bra $L__spin;
    ret;
}
\x00"""

THREADS = 1024


@dataclass
class _Spin:
    lib: ctypes.CDLL
    func: ctypes.c_void_p
    blocks: int


_state: Optional[_Spin] = None
_error: str = "not prepared"


def prepare() -> bool:
    """Load the spin kernel into the current CUDA context (call once, after CUDA is initialised).

    Returns whether it is available; :func:`why_not` says why not."""
    global _state, _error
    if _state is not None:
        return True
    try:
        import torch

        if not torch.cuda.is_available() or getattr(torch.version, "hip", None):
            _error = "no CUDA device (or ROCm)"
            return False
        torch.cuda.current_stream()  # the primary context is current on this thread
        lib = ctypes.CDLL("libcuda.so.1")
        module, func = ctypes.c_void_p(), ctypes.c_void_p()
        _check(lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(PTX)), "cuModuleLoadData")
        _check(lib.cuModuleGetFunction(ctypes.byref(func), module, b"profd_spin"), "cuModuleGetFunction")
        per_sm = ctypes.c_int(0)
        _check(lib.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(per_sm), func, THREADS, ctypes.c_size_t(0)),
               "cuOccupancyMaxActiveBlocksPerMultiprocessor")
        sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        if per_sm.value < 1 or sms < 1:
            _error = f"occupancy query gave {per_sm.value} blocks per SM on {sms} SMs"
            return False
        _state = _Spin(lib, func, per_sm.value * sms)
        return True
    except Exception as e:  # no driver library, PTX refused: time from an idle device instead
        _error = f"{type(e).__name__}: {e}"
        return False


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{what} returned CUDA error {rc}")


def available() -> bool:
    """Whether :func:`launch` holds every SM (``prepare`` succeeded in this process)."""
    return _state is not None


def why_not() -> str:
    """Why the spin is unavailable (empty when it is)."""
    return "" if _state is not None else _error


def blocks() -> int:
    """How many blocks one spin launches (every SM's full occupancy); 0 when unavailable."""
    return _state.blocks if _state is not None else 0


def launch(ns: int, stream: int) -> None:
    """Queue a spin of ``ns`` nanoseconds on CUDA stream handle ``stream`` (``torch.cuda.Stream.cuda_stream``)."""
    s = _state
    if s is None:
        raise RuntimeError(f"the GPU spin is not loaded: {_error}")
    arg = ctypes.c_uint64(int(ns))
    params = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.pointer(arg), ctypes.c_void_p))
    _check(s.lib.cuLaunchKernel(s.func, s.blocks, 1, 1, THREADS, 1, 1, 0, ctypes.c_void_p(stream), params, None),
           "cuLaunchKernel")
