# Wrapper for unsloth's SwiGLU forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
from contextlib import nullcontext

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"


# ---- shims for unsloth internals the upstream code imports ----
# @@ include torch_gpu_device @@


# @@ upstream code @@
# ---- the profd wrapper ----
DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(B=4, S=2048, H=14336):
    e = torch.randn(B, S, H, device=DEVICE, dtype=DTYPE)  # gate projection
    g = torch.randn(B, S, H, device=DEVICE, dtype=DTYPE)  # up projection
    return [e, g]


def kernel(e, g):
    return swiglu_fg_kernel(e, g)


def reference(e, g):
    acc = torch.promote_types(e.dtype, torch.float32)
    return torch.nn.functional.silu(e.to(acc)).to(e.dtype) * g


SHAPES = (
    [dict(B=1, S=2048, H=11008), dict(B=3, S=333, H=3000), dict(B=4, S=2048, H=14336)]
    if ON_GPU
    else [dict(B=1, S=4, H=64), dict(B=2, S=3, H=100)]
)
BENCH_SHAPE = dict(B=4, S=2048, H=14336) if ON_GPU else dict(B=1, S=4, H=64)
RTOL, ATOL = (2e-2, 2e-2) if ON_GPU else (1e-5, 1e-5)


def flops(e, g):
    return 5 * e.numel()


def bytes_moved(e, g):
    return 3 * e.numel() * e.element_size()


# @@ include main @@
