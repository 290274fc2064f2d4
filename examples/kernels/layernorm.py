"""Row LayerNorm forward with weight and bias: fp16 in and out, statistics in fp32.

One program per row; the whole row is loaded once into registers
(``BLOCK_SIZE = next_power_of_2(N)``), mean and variance are reduced from
registers, and the normalised row is written once. ``eps`` comes from
``get_init_inputs()``, so it is appended to every call.

Deliberate defect: ``NUM_WARPS = 1`` for wide rows. A single warp (32 threads)
holds an 8192-wide row: 256 fp32 values of ``x`` per thread, plus the centred
copy, weight and bias, which is far beyond the 255-register limit, so the
compiler spills to local memory; and each SM runs many one-warp programs that
each have only 32 threads issuing loads.

What profd should find: registers per thread at the limit with non-zero local
memory (spill) traffic, that local traffic showing up in L1/L2 throughput next
to the real global traffic, low achieved DRAM bandwidth for a kernel that
should be memory-bound (about 4 bytes per element moved, a few FLOPs per
element). The lever: ``NUM_WARPS`` 8 or 16 (so each thread holds 16-32
elements); nothing else needs to change.

Measured on an H200 (triton 3.6, 8192 x 8192 fp16): as shipped the kernel uses
255 registers per thread and spills 180 of them; 141 us (1.9 TB/s) vs 120 us for
``F.layer_norm``; ``NUM_WARPS = 8``: 64 registers, no spills, 71 us (3.8 TB/s).
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# Tunable knobs.
NUM_WARPS = 1


@triton.jit
def layernorm_kernel(x_ptr, w_ptr, b_ptr, out_ptr, n_cols, x_row_stride, out_row_stride, eps,
                     BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(axis=0)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols

    x = tl.load(x_ptr + row.to(tl.int64) * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)

    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = xc * rstd * w + b
    tl.store(out_ptr + row.to(tl.int64) * out_row_stride + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def kernel(x, weight, bias, eps):
    assert x.dim() == 2 and x.stride(1) == 1
    n_rows, n_cols = x.shape
    out = torch.empty_like(x)
    block_size = triton.next_power_of_2(n_cols)
    max_fused = 65536 // x.element_size()
    if block_size > max_fused:
        raise ValueError(f"rows wider than {max_fused} elements are not supported by this kernel")
    grid = (n_rows,)
    layernorm_kernel[grid](
        x, weight, bias, out, n_cols, x.stride(0), out.stride(0), eps,
        BLOCK_SIZE=block_size, num_warps=NUM_WARPS,
    )
    return out


def reference(x, weight, bias, eps):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def get_init_inputs():
    return [1e-5]


def get_inputs(M=8192, N=8192):
    x = torch.randn(M, N, device=DEVICE, dtype=torch.float16)
    weight = torch.randn(N, device=DEVICE, dtype=torch.float16)
    bias = torch.randn(N, device=DEVICE, dtype=torch.float16)
    return [x, weight, bias]


# On the CPU (Triton's interpreter) every shape stays tiny.
SHAPES = (
    [dict(M=1024, N=1024), dict(M=1000, N=5000), dict(M=8192, N=8192)]
    if ON_GPU
    else [dict(M=8, N=256), dict(M=5, N=300)]
)
BENCH_SHAPE = dict(M=8192, N=8192) if ON_GPU else dict(M=8, N=256)
PRECISION = "float16"
RTOL = 1e-2


def flops(x, weight, bias, *_):
    # sum, centre, square, sum, scale, weight, bias: about 7 operations per element.
    return 7 * x.numel()


def bytes_moved(x, weight, bias, *_):
    return 2 * x.numel() * x.element_size() + (weight.numel() + bias.numel()) * weight.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    inputs = get_inputs(**SHAPES[-1]) + get_init_inputs()
    err = (kernel(*inputs).float() - reference(*inputs).float()).abs().max().item()
    print(f"layernorm {SHAPES[-1]}: max abs error {err:.3e}")
