"""KernelBench-format ReLU: ``Model`` is the PyTorch reference, ``ModelNew`` launches Triton.

The Triton kernel is a grid-stride loop: a fixed number of programs each walk
the flattened tensor in ``BLOCK_SIZE`` chunks, ``NUM_PROGRAMS * BLOCK_SIZE``
elements apart.

Deliberate defect: the grid is too small to fill the GPU. ``NUM_PROGRAMS = 32``
programs of ``NUM_WARPS = 4`` warps: on a 132-SM H100 (or H200) at most 32 SMs
have any work, each with a single 4-warp block, so about three quarters of the
chip idles and the busy SMs cannot keep enough loads in flight to approach
DRAM bandwidth.

What profd should find: a memory-bound kernel at a small fraction of DRAM
bandwidth, launch grid (32 blocks) smaller than the number of SMs (ncu's
launch-statistics / "grid too small" rule), very low achieved occupancy and SM
throughput. The lever: ``NUM_PROGRAMS`` of at least several blocks per SM
(e.g. 4-8 x the SM count), or one program per block of elements
(``NUM_PROGRAMS = 0`` here means ``cdiv(n, BLOCK_SIZE)``, the plain grid).

Measured on an H200 (triton 3.6, 4096 x 16384 fp32): 1028 us (0.52 TB/s) as
shipped vs 131 us for ``torch.relu`` and for ``NUM_PROGRAMS = 0`` (4.1 TB/s).

KernelBench conventions: ``get_inputs()`` returns CPU tensors (the harness
moves them to the device), ``get_init_inputs()`` returns the constructor
arguments (none here).
"""

import torch
import torch.nn as nn
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# Tunable knobs.
BLOCK_SIZE = 1024
NUM_PROGRAMS = 32  # 0: one program per BLOCK_SIZE elements
NUM_WARPS = 4

# KernelBench problem size (tiny on the CPU, where Triton runs in its interpreter).
batch_size = 4096 if ON_GPU else 8
dim = 16384 if ON_GPU else 5000


class Model(nn.Module):
    """Applies ReLU to the input."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@triton.jit
def relu_kernel(x_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    step = tl.num_programs(axis=0) * BLOCK_SIZE
    cols = tl.arange(0, BLOCK_SIZE)
    for start in range(pid * BLOCK_SIZE, n_elements, step):
        offsets = start + cols
        mask = offsets < n_elements
        x = tl.load(x_ptr + offsets, mask=mask)
        tl.store(out_ptr + offsets, tl.maximum(x, 0.0), mask=mask)


class ModelNew(nn.Module):
    """ReLU through a Triton grid-stride kernel."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        n = x.numel()
        n_blocks = triton.cdiv(n, BLOCK_SIZE)
        grid = (min(NUM_PROGRAMS, n_blocks) if NUM_PROGRAMS > 0 else n_blocks,)
        relu_kernel[grid](x, out, n, BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS)
        return out


def get_inputs():
    x = torch.randn(batch_size, dim)
    return [x]


def get_init_inputs():
    return []


def flops(x):
    return x.numel()


def bytes_moved(x):
    return 2 * x.numel() * x.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    (x,) = get_inputs()
    x = x.to(DEVICE)
    model = Model(*get_init_inputs()).to(DEVICE)
    model_new = ModelNew(*get_init_inputs()).to(DEVICE)
    err = (model_new(x) - model(x)).abs().max().item()
    print(f"kernelbench_relu ({batch_size}x{dim}): max abs error {err:.3e}")
