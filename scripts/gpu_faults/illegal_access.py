"""A kernel whose store has no mask and a wild offset: an illegal memory access on a GPU."""
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def bad_store_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(out_ptr + offs + (1 << 36), x)  # far outside the allocation, no mask


def get_inputs(n=4096):
    return [torch.randn(n, device=DEVICE)]


def reference(x):
    return x.clone()


def kernel(x):
    out = torch.empty_like(x)
    bad_store_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)
    return out
