"""Matrix multiply ``C = A @ B``: bf16 inputs and output on the GPU, fp32 accumulation.

On the CPU (Triton's interpreter, for tests) the dtype is fp16 instead: the
interpreter mishandles bf16 ``tl.dot`` (errors of order 1e10).

Deliberate defect: small tiles and plain row-major program order.
``BLOCK_M = BLOCK_N = 64``, ``BLOCK_K = 32`` with ``NUM_WARPS = 4`` and
``NUM_STAGES = 2`` gives each program little reuse per byte loaded (64x64 tiles
re-read A and B N/64 and M/64 times) and a shallow pipeline; and the program id
is mapped to tiles row-major (``pid_m = pid // num_pid_n``), so the programs in
flight at one time sweep a whole row of C tiles: they all read different
column panels of B and the L2 cache holds little of what the next wave needs.
``GROUP_M`` is accepted as a constexpr but the kernel has no grouping logic at
all; the classic fix inserts the grouped ("swizzled") order of the Triton
matmul tutorial.

What profd should find: a compute-bound shape (arithmetic intensity ~2700
FLOP/byte at 8192^3) running far below the tensor-core peak; tensor pipes
under-used, high L2 -> SM traffic relative to the compulsory bytes and a
modest L2 hit rate, warps stalled waiting on global/shared loads. Levers:
larger tiles (``BLOCK_M``/``BLOCK_N`` 128-256, ``BLOCK_K`` 64), deeper
pipelining (``NUM_STAGES`` 3-4), ``NUM_WARPS`` 8 for the larger tiles, and
grouped program order (add the grouping code, then ``GROUP_M`` = 8).

Measured on an H200 (triton 3.6, 8192^3 bf16): 291 TFLOP/s as shipped vs 695 for
``torch.matmul`` (42%); 128x128x64 tiles, 8 warps, 3 stages: 516; 128x256x64:
594 (both still without grouped order).
"""

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
DTYPE = torch.bfloat16 if ON_GPU else torch.float16

# Tunable knobs.
BLOCK_M = 64
BLOCK_N = 64
BLOCK_K = 32
GROUP_M = 1
NUM_WARPS = 4
NUM_STAGES = 2


@triton.jit
def matmul_kernel(
    a_ptr, b_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Plain row-major order over the tiles of C.
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_remaining = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_remaining), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_remaining) & (offs_n[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    c = acc.to(c_ptr.dtype.element_ty)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, c, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def kernel(a, b):
    assert a.dim() == 2 and b.dim() == 2 and a.shape[1] == b.shape[0], "incompatible shapes"
    M, K = a.shape
    _, N = b.shape
    c = torch.empty((M, N), device=a.device, dtype=a.dtype)
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    matmul_kernel[grid](
        a, b, c, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    return c


def reference(a, b):
    return torch.matmul(a, b)


def get_inputs(M=8192, N=8192, K=8192):
    a = torch.randn(M, K, device=DEVICE, dtype=DTYPE)
    b = torch.randn(K, N, device=DEVICE, dtype=DTYPE)
    return [a, b]


# On the CPU (Triton's interpreter) every shape stays tiny; the ragged ones
# exercise the M, N and K masks.
SHAPES = (
    [dict(M=512, N=512, K=512), dict(M=1000, N=1032, K=1000), dict(M=8192, N=8192, K=8192)]
    if ON_GPU
    else [dict(M=64, N=64, K=64), dict(M=80, N=48, K=72), dict(M=96, N=160, K=40)]
)
BENCH_SHAPE = dict(M=8192, N=8192, K=8192) if ON_GPU else dict(M=64, N=64, K=64)
PRECISION = "bfloat16" if ON_GPU else "float16"
RTOL = 1e-2


def flops(a, b):
    M, K = a.shape
    N = b.shape[1]
    return 2 * M * N * K


def bytes_moved(a, b):
    M, K = a.shape
    N = b.shape[1]
    return a.element_size() * (M * K + K * N + M * N)


if __name__ == "__main__":
    torch.manual_seed(0)
    inputs = get_inputs(**SHAPES[-1])
    out = kernel(*inputs).float()
    ref = reference(*[t.float() for t in inputs])
    err = (out - ref).abs().max().item()
    rel = err / ref.abs().max().item()
    print(f"matmul {SHAPES[-1]} {DTYPE}: max abs error {err:.3e} (relative to max |C|: {rel:.2e})")
