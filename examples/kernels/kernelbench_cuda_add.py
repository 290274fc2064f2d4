"""KernelBench-format elementwise add: ``Model`` is ``a + b``, ``ModelNew`` a ``load_inline`` CUDA kernel.

Written the way KernelBench level-1 solutions are: the CUDA source in a module-level
string, a one-line C++ declaration, and ``load_inline(...)`` at module level.

Deliberate defect: one-warp blocks. ``const int block_size = 32;`` launches
``(size + 31) / 32`` blocks of 32 threads; an SM holds at most 32 resident blocks
(H100/H200), so no more than 1024 of its 2048 thread slots are ever used, and each
thread moves one 4-byte element per array.

What profd should find: a memory-bound kernel well below DRAM bandwidth, achieved
occupancy capped at 50% by the blocks-per-SM limit ("block size too small" in ncu's
launch statistics / occupancy sections), few bytes in flight. The lever:
``block_size`` (256) at its line in ``elementwise_add_source``; ``num_blocks`` is
computed from it and follows.

Like KernelBench's own files, this one builds at import: on a machine without nvcc or a
GPU the import fails (profd shows the missing toolchain as the verdict).
"""

import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class Model(nn.Module):
    """Adds two tensors."""

    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        return a + b


elementwise_add_source = """
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void elementwise_add_kernel(const float* a, const float* b, float* out, int size) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < size) {
        out[idx] = a[idx] + b[idx];
    }
}

torch::Tensor elementwise_add_cuda(torch::Tensor a, torch::Tensor b) {
    auto size = a.numel();
    auto out = torch::zeros_like(a);

    const int block_size = 32;
    const int num_blocks = (size + block_size - 1) / block_size;

    elementwise_add_kernel<<<num_blocks, block_size>>>(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), size);

    return out;
}
"""

elementwise_add_cpp_source = (
    "torch::Tensor elementwise_add_cuda(torch::Tensor a, torch::Tensor b);"
)

# Compile the inline CUDA code for elementwise addition
elementwise_add = load_inline(
    name="elementwise_add",
    cpp_sources=elementwise_add_cpp_source,
    cuda_sources=elementwise_add_source,
    functions=["elementwise_add_cuda"],
    verbose=False,
    extra_cflags=[""],
    extra_ldflags=[""],
)


class ModelNew(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.elementwise_add = elementwise_add

    def forward(self, a, b):
        return self.elementwise_add.elementwise_add_cuda(a.contiguous(), b.contiguous())


size = 1 << 26


def get_inputs():
    a = torch.randn(size)
    b = torch.randn(size)
    return [a, b]


def get_init_inputs():
    return []


def flops(a, b):
    return a.numel()


def bytes_moved(a, b):
    return 3 * a.numel() * a.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    a, b = [t.to(DEVICE) for t in get_inputs()]
    err = (ModelNew()(a, b) - Model()(a, b)).abs().max().item()
    print(f"kernelbench_cuda_add ({size}): max abs error {err:.3e}")
