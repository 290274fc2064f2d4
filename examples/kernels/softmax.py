"""Row softmax of a 2-D fp32 tensor, numerically stable (the row max is subtracted).

One program per row. The row is walked in ``BLOCK_SIZE`` chunks, three times:
a max pass, a sum-of-exponentials pass, and a normalise-and-write pass.

Deliberate defect: three passes over global memory in small chunks. Every
element of the input is loaded three times (and ``exp`` is computed twice), in
chunks of ``BLOCK_SIZE = 128`` fp32 elements, one 4-byte element per thread with
``NUM_WARPS = 4``, so each program has very little memory traffic in flight and
a long serial chain of dependent loop iterations (3 x 64 of them for an
8192-wide row).

What profd should find: a memory-bound kernel far below the device's DRAM
bandwidth, with global load traffic (L1/L2 load bytes) about three times the
compulsory ``M*N*4`` bytes (the re-reads mostly hit L2, so DRAM bytes may look
close to ideal while L2 throughput is the hot unit), 4-byte accesses and low
memory-level parallelism. Levers: raise ``BLOCK_SIZE`` (1024 up to the row
width) with ``NUM_WARPS`` 8-16 so each pass is one or a few wide iterations;
the real fix is structural: keep the row in registers (one read) when it fits,
or an online softmax (running max and rescaled sum in one pass, then the write
pass: two reads instead of three).

Measured on an H200 (triton 3.6, 4096 x 8192): 162 us (1.66 TB/s of compulsory
traffic) as shipped, 144 us for ``torch.softmax``; ``BLOCK_SIZE = 1024,
NUM_WARPS = 8``: 103 us; ``BLOCK_SIZE = 8192, NUM_WARPS = 16``: 81 us (3.3 TB/s).
"""

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# Tunable knobs.
BLOCK_SIZE = 128
NUM_WARPS = 4
NUM_STAGES = 2


@triton.jit
def softmax_kernel(x_ptr, out_ptr, n_cols, x_row_stride, out_row_stride, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(axis=0)
    x_row = x_ptr + row.to(tl.int64) * x_row_stride
    out_row = out_ptr + row.to(tl.int64) * out_row_stride
    cols = tl.arange(0, BLOCK_SIZE)

    # Pass 1: the row maximum.
    row_max = tl.full([BLOCK_SIZE], float("-inf"), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + cols
        x = tl.load(x_row + offs, mask=offs < n_cols, other=float("-inf"))
        row_max = tl.maximum(row_max, x)
    m = tl.max(row_max, axis=0)

    # Pass 2: the sum of exponentials (the row is read again).
    acc = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + cols
        x = tl.load(x_row + offs, mask=offs < n_cols, other=float("-inf"))
        acc += tl.exp(x - m)
    denom = tl.sum(acc, axis=0)

    # Pass 3: normalise and write (the row is read a third time).
    for start in range(0, n_cols, BLOCK_SIZE):
        offs = start + cols
        mask = offs < n_cols
        x = tl.load(x_row + offs, mask=mask, other=float("-inf"))
        tl.store(out_row + offs, tl.exp(x - m) / denom, mask=mask)


def kernel(x):
    assert x.dim() == 2 and x.stride(1) == 1
    n_rows, n_cols = x.shape
    out = torch.empty_like(x)
    grid = (n_rows,)
    softmax_kernel[grid](
        x, out, n_cols, x.stride(0), out.stride(0),
        BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return out


def reference(x):
    return torch.softmax(x, dim=-1)


def get_inputs(M=4096, N=8192):
    return [torch.randn(M, N, device=DEVICE, dtype=torch.float32)]


# On the CPU (Triton's interpreter) every shape stays tiny.
SHAPES = (
    [dict(M=1024, N=1024), dict(M=1000, N=3000), dict(M=4096, N=8192)]
    if ON_GPU
    else [dict(M=8, N=256), dict(M=5, N=300)]
)
BENCH_SHAPE = dict(M=4096, N=8192) if ON_GPU else dict(M=8, N=256)


def flops(x):
    # max, subtract, exp, sum, divide: about 5 operations per element.
    return 5 * x.numel()


def bytes_moved(x):
    # The compulsory traffic: read the input once, write the output once.
    return 2 * x.numel() * x.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    inputs = get_inputs(**SHAPES[-1])
    err = (kernel(*inputs) - reference(*inputs)).abs().max().item()
    print(f"softmax {SHAPES[-1]}: max abs error {err:.3e}")
