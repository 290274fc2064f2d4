"""A kernel that spins forever on the GPU: it waits for a flag nothing ever sets."""
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def spin_kernel(flag_ptr, out_ptr):
    v = tl.load(flag_ptr)
    while v == 0:
        v = tl.load(flag_ptr, volatile=True)
    tl.store(out_ptr, v)


def get_inputs(n=16):
    return [torch.randn(n, device=DEVICE)]


def reference(x):
    return x * 2


def kernel(x):
    flag = torch.zeros(1, device=x.device, dtype=torch.int32)
    out = torch.empty(1, device=x.device, dtype=torch.int32)
    spin_kernel[(1,)](flag, out)
    return x * 2
