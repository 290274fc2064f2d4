"""Elementwise vector add, ``out = x + y``, in fp32.

Deliberate defect: the block is tiny. ``BLOCK_SIZE = 64`` elements per program
with ``NUM_WARPS = 4`` (128 threads) means half of every program's threads hold
a duplicate of another thread's element, each thread moves one 4-byte element
(32-bit loads instead of 128-bit vector loads), and N = 2**26 needs a million
programs, so the SMs spend their time launching and retiring tiny blocks instead
of keeping memory requests in flight.

What profd should find: a purely memory-bound kernel (arithmetic intensity
1/12 FLOP/byte) whose achieved DRAM bandwidth is well below the device's peak;
few bytes in flight per SM, 4-byte global accesses, a very large grid of very
small blocks. The lever: raise ``BLOCK_SIZE`` (1024-4096, so each thread moves
8-32 contiguous elements with vector loads); keep ``NUM_WARPS`` at 4-8.

Measured on an H200 (triton 3.6, N = 2**26): 1.26 TB/s as shipped vs 4.26 TB/s
for ``torch.add`` and for ``BLOCK_SIZE = 1024``.
"""

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# Tunable knobs.
BLOCK_SIZE = 64
NUM_WARPS = 4


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, x + y, mask=mask)


def kernel(x, y):
    assert x.shape == y.shape and x.is_contiguous() and y.is_contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK_SIZE),)
    add_kernel[grid](x, y, out, n, BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS)
    return out


def reference(x, y):
    return x + y


def get_inputs(N=1 << 20):
    x = torch.randn(N, device=DEVICE, dtype=torch.float32)
    y = torch.randn(N, device=DEVICE, dtype=torch.float32)
    return [x, y]


# On the CPU (Triton's interpreter) every shape stays tiny.
SHAPES = [dict(N=1 << 20), dict(N=1_000_003), dict(N=1 << 26)] if ON_GPU else [dict(N=4096), dict(N=1000)]
BENCH_SHAPE = dict(N=1 << 26) if ON_GPU else dict(N=4096)


def flops(x, y):
    return x.numel()


def bytes_moved(x, y):
    return 3 * x.numel() * x.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    inputs = get_inputs(**SHAPES[-1])
    err = (kernel(*inputs) - reference(*inputs)).abs().max().item()
    print(f"vector_add {SHAPES[-1]}: max abs error {err:.3e}")
