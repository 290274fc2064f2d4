# Wrapper for FlagGems' log_softmax forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
import logging
import types
from contextlib import nullcontext

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# ---- shims for flag_gems internals the upstream code imports ----
logger = logging.getLogger("flag_gems.ops.log_softmax")  # shim: the module's own logger


def libentry():
    """shim for flag_gems.utils.libentry: FlagGems' launch-overhead cache; identity here."""
    return lambda fn: fn


# shim: flag_gems.runtime.torch_device_fn is torch.cuda on NVIDIA.
torch_device_fn = torch.cuda if ON_GPU else types.SimpleNamespace(device=lambda d: nullcontext())


# @@ upstream code @@
# ---- the profd wrapper ----
# shim: the module flag_gems.utils.triton_lang_extension, imported upstream as `tle`; its
# program_id is taken verbatim above. (A module object, since jit code may reference modules.)
tle = types.ModuleType("tle")
tle.program_id = program_id

DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(M=4096, N=32000):
    return [torch.randn(M, N, device=DEVICE, dtype=DTYPE)]


def kernel(x):
    return log_softmax(x, -1)


def reference(x):
    acc = torch.promote_types(x.dtype, torch.float32)
    return torch.log_softmax(x.to(acc), dim=-1).to(x.dtype)


SHAPES = (
    [dict(M=1024, N=1024), dict(M=1000, N=3000), dict(M=4096, N=32000)]
    if ON_GPU
    else [dict(M=8, N=256), dict(M=16, N=300)]
)
# On the CPU M stays a multiple of BLOCK_M: the kernel's `mask = rows < M and cols < N` is an
# elementwise and when compiled, but the interpreter evaluates Python's `and` (it keeps only the
# column mask), so a partial row tile would read out of bounds there.
BENCH_SHAPE = dict(M=4096, N=32000) if ON_GPU else dict(M=8, N=256)
RTOL, ATOL = (2e-2, 2e-2) if ON_GPU else (1e-5, 1e-5)


def flops(x):
    return 5 * x.numel()


def bytes_moved(x):
    return 2 * x.numel() * x.element_size()


# @@ include main @@
