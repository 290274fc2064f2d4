# Wrapper for Liger-Kernel's SwiGLU forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
from contextlib import contextmanager

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# @@ include float_args @@


# ---- shims for liger_kernel internals the upstream code imports ----
# @@ include infer_device_arch @@


# @@ upstream code @@
# ---- the profd wrapper ----
DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(M=4096, N=14336):
    a = torch.randn(M, N, device=DEVICE, dtype=DTYPE)  # gate projection
    b = torch.randn(M, N, device=DEVICE, dtype=DTYPE)  # up projection
    return [a, b]


def kernel(a, b):
    return swiglu_forward(a, b)[2]


def reference(a, b):
    acc = torch.promote_types(a.dtype, torch.float32)
    return torch.nn.functional.silu(a.to(acc)).to(a.dtype) * b


SHAPES = (
    [dict(M=2048, N=11008), dict(M=1000, N=3000), dict(M=4096, N=14336)]
    if ON_GPU
    else [dict(M=4, N=64), dict(M=3, N=100)]
)
BENCH_SHAPE = dict(M=4096, N=14336) if ON_GPU else dict(M=4, N=64)
RTOL, ATOL = (2e-2, 2e-2) if ON_GPU else (1e-5, 1e-5)


def flops(a, b):
    return 5 * a.numel()  # sigmoid (~3), multiply, multiply


def bytes_moved(a, b):
    return 3 * a.numel() * a.element_size()


# @@ include main @@
