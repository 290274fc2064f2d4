"""2-D transpose of an fp32 matrix: ``out[j, i] = x[i, j]``.

Each program copies one ``BLOCK_M x BLOCK_N`` tile of ``x`` into the
transposed position of ``out``.

Deliberate defect: the tile is a single row, ``BLOCK_M = 1``,
``BLOCK_N = 256``. The loads are fine (256 contiguous elements of one row of
``x``), but in ``out`` those 256 elements are a column: consecutive threads
store 4 bytes each, ``M * 4`` bytes apart, so every warp-wide store touches 32
different 32-byte sectors to write 128 useful bytes. With a square tile Triton
stages the transpose through shared memory and both sides stay coalesced; a
one-row tile leaves nothing to exchange.

What profd should find: a memory-bound kernel with DRAM bandwidth far below
peak, global stores badly uncoalesced (about 32 sectors per store request
where 4 would do, a bytes-per-sector efficiency of about 1/8 on stores, ncu's
uncoalesced-access rule firing on the store), and DRAM write traffic well above
the compulsory ``M*N*4`` bytes from partial-sector writes. The lever: a square
tile, ``BLOCK_M = BLOCK_N = 32`` or 64 (``NUM_WARPS`` 4-8).

Measured on an H200 (triton 3.6, 8192 x 8192): 985 us (0.55 TB/s) as shipped,
465 us for ``x.t().contiguous()``; ``BLOCK_M = BLOCK_N = 32``: 138 us (3.9 TB/s).
"""

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# Tunable knobs.
BLOCK_M = 1
BLOCK_N = 256
NUM_WARPS = 4


@triton.jit
def transpose_kernel(x_ptr, out_ptr, M, N, stride_xm, stride_xn, stride_om, stride_on,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(axis=0)
    pid_n = tl.program_id(axis=1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tile = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn, mask=mask)
    # out has shape (N, M): element (i, j) of the tile goes to out[j, i].
    tl.store(out_ptr + offs_n[None, :] * stride_om + offs_m[:, None] * stride_on, tile, mask=mask)


def kernel(x):
    assert x.dim() == 2
    M, N = x.shape
    out = torch.empty((N, M), device=x.device, dtype=x.dtype)
    # The row-tile count goes on grid axis 0 (limit 2**31 - 1); axis 1 is limited to 65535.
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
    transpose_kernel[grid](
        x, out, M, N, x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, num_warps=NUM_WARPS,
    )
    return out


def reference(x):
    return x.t().contiguous()


def get_inputs(M=8192, N=8192):
    return [torch.randn(M, N, device=DEVICE, dtype=torch.float32)]


# On the CPU (Triton's interpreter) every shape stays tiny.
SHAPES = (
    [dict(M=1024, N=1024), dict(M=1000, N=3000), dict(M=8192, N=8192)]
    if ON_GPU
    else [dict(M=64, N=512), dict(M=37, N=300)]
)
BENCH_SHAPE = dict(M=8192, N=8192) if ON_GPU else dict(M=64, N=512)


def flops(x):
    return 0


def bytes_moved(x):
    return 2 * x.numel() * x.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    inputs = get_inputs(**SHAPES[-1])
    err = (kernel(*inputs) - reference(*inputs)).abs().max().item()
    print(f"transpose {SHAPES[-1]}: max abs error {err:.3e}")
