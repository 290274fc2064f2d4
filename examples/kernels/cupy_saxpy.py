"""``out = alpha * x + y`` in fp32 through a CuPy ``RawKernel`` (CuPy is optional).

Deliberate defect: the grid is too small. ``GRID = 32`` blocks of ``BLOCK = 256``
threads walk the arrays in a grid-stride loop: on a 132-SM H100/H200 only 32 SMs have
any work, one 8-warp block each, so three quarters of the chip idles and the busy SMs
cannot keep enough loads in flight to approach DRAM bandwidth.

What profd should find: a memory-bound kernel at a small fraction of DRAM bandwidth,
a grid (32 blocks) smaller than the SM count, low achieved occupancy and SM throughput.
The lever: ``GRID`` (0 here means one block per ``BLOCK`` elements, or >= 4-8 x the SM
count) at its line.

CuPy is imported on the first call: without it, importing this file still works and
``kernel(...)`` raises ImportError naming ``cupy`` (``pip install cupy-cuda12x``).
"""

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

BLOCK = 256
GRID = 32  # 0: one block per BLOCK elements

saxpy_code = r"""
extern "C" __global__
void saxpy(const float* __restrict__ x, const float* __restrict__ y, float* __restrict__ out, float alpha, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = alpha * x[i] + y[i];
    }
}
"""

_kernel = None


def _raw():
    global _kernel
    if _kernel is None:
        import cupy

        _kernel = cupy.RawKernel(saxpy_code, "saxpy")
    return _kernel


def kernel(x, y, alpha):
    import cupy

    saxpy = _raw()
    out = torch.empty_like(x)
    n = x.numel()
    n_blocks = (n + BLOCK - 1) // BLOCK
    grid = min(GRID, n_blocks) if GRID > 0 else n_blocks
    with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
        saxpy((grid,), (BLOCK,), (cupy.from_dlpack(x), cupy.from_dlpack(y), cupy.from_dlpack(out),
                                  cupy.float32(alpha), cupy.int32(n)))
    return out


def reference(x, y, alpha):
    return alpha * x + y


def get_inputs(N=1 << 20):
    return [torch.randn(N, device=DEVICE), torch.randn(N, device=DEVICE)]


def get_init_inputs():
    return [2.5]


SHAPES = [dict(N=1000), dict(N=1 << 20)]
BENCH_SHAPE = dict(N=1 << 26)


def bytes_moved(x, y, alpha):
    return 3 * x.numel() * x.element_size()


if __name__ == "__main__":
    torch.manual_seed(0)
    x, y = get_inputs(N=1000)
    err = (kernel(x, y, 2.5) - reference(x, y, 2.5)).abs().max().item()
    print(f"cupy_saxpy (1000): max abs error {err:.3e}")
