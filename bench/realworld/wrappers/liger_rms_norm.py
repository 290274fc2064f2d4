# Wrapper for Liger-Kernel's RMSNorm forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
from contextlib import contextmanager

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# @@ include float_args @@

# ---- shims for liger_kernel internals the upstream code imports ----
# shim: rms_norm.py imports rsqrt from libdevice when triton >= 3 (not NPU). Triton's CPU
# interpreter has no libdevice, so there tl.math.rsqrt (the same function) stands in.
# @@ include liger_rsqrt @@


# @@ upstream code @@
# ---- the profd wrapper ----
EPS = 1e-6
DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(M=8192, N=4096):
    x = torch.randn(M, N, device=DEVICE, dtype=DTYPE)
    w = 1.0 + 0.1 * torch.randn(N, device=DEVICE, dtype=DTYPE)
    return [x, w]


def kernel(x, w):
    # Llama casting (Liger's default): rstd in fp32, the weight multiply in the input dtype.
    return rms_norm_forward(x, w, EPS, 0.0, "llama", None)[0]


def reference(x, w):
    # HF LlamaRMSNorm; dtype-agnostic (at least fp32 inside, float64 stays float64).
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)
    return w * y.to(x.dtype)


SHAPES = (
    [dict(M=4096, N=2048), dict(M=1000, N=3000), dict(M=8192, N=4096)]
    if ON_GPU
    else [dict(M=8, N=64), dict(M=5, N=100)]
)
BENCH_SHAPE = dict(M=8192, N=4096) if ON_GPU else dict(M=8, N=64)
RTOL, ATOL = (2e-2, 2e-2) if ON_GPU else (1e-4, 1e-4)


def flops(x, w):
    return 4 * x.numel()  # square, sum, scale, weight


def bytes_moved(x, w):
    return 2 * x.numel() * x.element_size() + w.numel() * w.element_size()


# @@ include main @@
