"""Row sum, ``out[i] = x[i, :].sum()`` in fp32, as a CUDA kernel built with ``load_inline``.

One block per row: each thread strides over the row accumulating a partial sum,
the partial sums meet in dynamic shared memory (``threads * sizeof(float)`` bytes,
the launch's third argument) and a tree reduction leaves the row's sum in ``buf[0]``.

Deliberate defect: the block is one warp. ``const int threads = 32;`` in the wrapper
gives 32 threads per 8192-wide row; an SM holds at most 32 resident blocks, so at
most 32 warps (half the SM's 64) are resident, and each thread walks 256 elements
with one 4-byte load in flight: far too few bytes in flight to cover DRAM latency.

What profd should find: a memory-bound kernel at a fraction of DRAM bandwidth,
achieved occupancy capped by the blocks-per-SM limit ("block size too small"),
long-scoreboard stalls. The lever: ``threads`` (256-1024) at its line in the
wrapper; the shared buffer and the reduction loop follow it, since both use
``blockDim.x``.

The extension is built on the first call, not at import.
"""

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

row_sum_source = """
__global__ void row_sum_kernel(const float* __restrict__ x, float* __restrict__ out, int cols) {
    extern __shared__ float buf[];
    const float* row = x + (size_t)blockIdx.x * cols;
    float acc = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        acc += row[c];
    }
    buf[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

torch::Tensor row_sum_cuda(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 2 && x.dtype() == torch::kFloat32, "row_sum_cuda: 2-D fp32 CUDA tensor");
    auto xc = x.contiguous();
    int rows = xc.size(0), cols = xc.size(1);
    auto out = torch::empty({rows}, xc.options());
    const int threads = 32;  // a power of two: the tree reduction halves it
    const int blocks = rows;
    row_sum_kernel<<<blocks, threads, threads * sizeof(float)>>>(xc.data_ptr<float>(), out.data_ptr<float>(), cols);
    return out;
}
"""

row_sum_cpp_source = "torch::Tensor row_sum_cuda(torch::Tensor x);"

_module = None


def _ext():
    global _module
    if _module is None:
        from torch.utils.cpp_extension import load_inline

        _module = load_inline(name="profd_example_cuda_reduce", cpp_sources=row_sum_cpp_source,
                              cuda_sources=row_sum_source, functions=["row_sum_cuda"], verbose=False)
    return _module


def kernel(x):
    return _ext().row_sum_cuda(x)


def reference(x):
    return x.sum(dim=1)


def get_inputs(rows=4096, cols=8192):
    return [torch.randn(rows, cols, device=DEVICE, dtype=torch.float32)]


SHAPES = [dict(rows=3, cols=1000), dict(rows=257, cols=4099), dict(rows=16384, cols=8192)]
BENCH_SHAPE = dict(rows=16384, cols=8192)


def flops(x):
    return x.numel()


def bytes_moved(x):
    return (x.numel() + x.shape[0]) * x.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    (x,) = get_inputs(rows=257, cols=4099)
    err = (kernel(x) - reference(x)).abs().max().item()
    print(f"cuda_reduce (257x4099): max abs error {err:.3e}")
