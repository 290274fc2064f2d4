"""Shared-memory tiled matmul, ``C = A @ B`` in fp32, as a CUDA kernel built with ``load_inline``.

Each 16 x 16 block of threads computes one 16 x 16 tile of C: it walks K in steps of
``TILE``, stages a tile of A and a tile of B in shared memory, and accumulates.
The B tile is stored transposed (``Bs[tx][ty]``), so the inner product reads both
tiles along a row (``As[ty][k]``, ``Bs[tx][k]``).

Deliberate defect: the tile is small and unpadded. ``#define TILE 16`` gives each
thread one output and 2 shared loads per FMA, and ``__shared__ float Bs[TILE][TILE]``
(no padding) makes the transposed accesses stride 16 words: the 32 lanes of a warp
(tx = 0..15 for two values of ty) land in 2 of the 32 banks, an 8-way bank conflict on
every store to and every read from ``Bs``.

What profd should find: shared-memory bank conflicts (ncu's shared load/store
wavefronts well above requests, ``l1tex__data_bank_conflicts_pipe_lsu_mem_shared``),
an LSU/MIO-bound kernel far below the fp32 FMA peak, warps stalled on short
scoreboard / MIO throttle. The levers: pad the tile (``Bs[TILE][TILE + 1]`` at its line),
then a bigger ``TILE`` (32; the block follows the define) or register tiling.

Knobs, the way CUDA engineers write them: ``#define TILE 16`` (sizes the block,
the grid and both shared tiles), the ``__shared__`` tile declarations.

The extension is built on the first call (``_ext()``), not at import: on a machine
without nvcc or a GPU, importing the file works and the first ``kernel(...)`` says
what is missing.
"""

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

matmul_cuda_source = r"""
#include <cuda_runtime.h>

#define TILE 16

__global__ void matmul_tiled_kernel(const float* A, const float* B, float* C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty;
    int col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int t = 0; t < K; t += TILE) {
        As[ty][tx] = (row < M && t + tx < K) ? A[row * K + t + tx] : 0.0f;
        Bs[tx][ty] = (t + ty < K && col < N) ? B[(t + ty) * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) {
            acc += As[ty][k] * Bs[tx][k];
        }
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

torch::Tensor matmul_cuda(torch::Tensor A, torch::Tensor B) {
    TORCH_CHECK(A.is_cuda() && B.is_cuda(), "matmul_cuda: inputs must be CUDA tensors");
    TORCH_CHECK(A.dtype() == torch::kFloat32 && B.dtype() == torch::kFloat32, "matmul_cuda: fp32 only");
    auto a = A.contiguous();
    auto b = B.contiguous();
    int M = a.size(0), K = a.size(1), N = b.size(1);
    auto C = torch::empty({M, N}, a.options());
    dim3 block(TILE, TILE);
    dim3 grid((N + TILE - 1) / TILE, (M + TILE - 1) / TILE);
    matmul_tiled_kernel<<<grid, block>>>(a.data_ptr<float>(), b.data_ptr<float>(), C.data_ptr<float>(), M, N, K);
    return C;
}
"""

matmul_cpp_source = "torch::Tensor matmul_cuda(torch::Tensor A, torch::Tensor B);"

_module = None


def _ext():
    """Build (once per process) and return the extension."""
    global _module
    if _module is None:
        from torch.utils.cpp_extension import load_inline

        _module = load_inline(
            name="profd_example_cuda_matmul",
            cpp_sources=matmul_cpp_source,
            cuda_sources=matmul_cuda_source,
            functions=["matmul_cuda"],
            extra_cuda_cflags=["-O3"],
            verbose=False,
        )
    return _module


def kernel(a, b):
    return _ext().matmul_cuda(a, b)


def reference(a, b):
    return a @ b


def get_inputs(M=1024, N=1024, K=1024):
    a = torch.randn(M, K, device=DEVICE, dtype=torch.float32)
    b = torch.randn(K, N, device=DEVICE, dtype=torch.float32)
    return [a, b]


# Odd sizes check the edge masks; the last is the one timed.
SHAPES = [dict(M=127, N=65, K=33), dict(M=512, N=384, K=256), dict(M=4096, N=4096, K=4096)]
BENCH_SHAPE = dict(M=4096, N=4096, K=4096)
RTOL = 1e-4  # fp32 FMA in a different order than cuBLAS


def flops(a, b):
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1]


def bytes_moved(a, b):
    return (a.numel() + b.numel() + a.shape[0] * b.shape[1]) * a.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    a, b = get_inputs(M=512, N=384, K=256)
    err = (kernel(a, b) - reference(a, b)).abs().max().item()
    print(f"cuda_matmul (512x384x256): max abs error {err:.3e}")
