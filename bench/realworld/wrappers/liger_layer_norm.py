# Wrapper for Liger-Kernel's LayerNorm forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# @@ include float_args @@

# ---- shims for liger_kernel internals the upstream code imports ----
# shim: layer_norm.py imports rsqrt from libdevice when triton >= 3 (not NPU). Triton's CPU
# interpreter has no libdevice, so there tl.math.rsqrt (the same function) stands in.
# @@ include liger_rsqrt @@


# @@ upstream code @@
# ---- the profd wrapper ----
EPS = 1e-5
DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(M=4096, N=8192):
    x = torch.randn(M, N, device=DEVICE, dtype=DTYPE)
    w = 1.0 + 0.1 * torch.randn(N, device=DEVICE, dtype=DTYPE)
    b = 0.1 * torch.randn(N, device=DEVICE, dtype=DTYPE)
    return [x, w, b]


def kernel(x, w, b):
    return layer_norm_forward(x, w, b, EPS)[0]


def reference(x, w, b):
    acc = torch.promote_types(x.dtype, torch.float32)
    y = torch.nn.functional.layer_norm(x.to(acc), (x.shape[-1],), w.to(acc), b.to(acc), EPS)
    return y.to(x.dtype)


SHAPES = (
    [dict(M=4096, N=4096), dict(M=1000, N=3000), dict(M=4096, N=8192)]
    if ON_GPU
    else [dict(M=8, N=64), dict(M=5, N=100)]
)
BENCH_SHAPE = dict(M=4096, N=8192) if ON_GPU else dict(M=8, N=64)
RTOL, ATOL = (2e-2, 2e-2) if ON_GPU else (1e-4, 1e-4)


def flops(x, w, b):
    return 7 * x.numel()  # mean, centre, square, sum, scale, weight, bias


def bytes_moved(x, w, b):
    return 2 * x.numel() * x.element_size() + 2 * w.numel() * w.element_size()


# @@ include main @@
