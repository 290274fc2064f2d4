# Wrapper for Liger-Kernel's cross-entropy forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# ---- shims for liger_kernel internals the upstream code imports ----
# shim: cross_entropy.py imports tanh from libdevice when triton >= 3 (not NPU); it is only used
# with softcapping. Triton's CPU interpreter has no libdevice, so a tl-only tanh stands in there.
# @@ include tanh @@


# @@ include infer_device_arch @@


# @@ upstream code @@
# ---- the profd wrapper ----
IGNORE_INDEX = -100
DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(BT=4096, V=128256):
    logits = torch.randn(BT, V, device=DEVICE, dtype=DTYPE)
    target = torch.randint(0, V, (BT,), device=DEVICE)
    target[::16] = IGNORE_INDEX  # some padding, as in a real batch
    return [logits, target]


def kernel(logits, target):
    # Liger computes the gradient in place, into the logits buffer (upstream's design, to save memory);
    # profd refuses kernels that write their inputs, so the wrapper hands it a copy (timed with it).
    return cross_entropy_forward(logits.clone(), target, None, IGNORE_INDEX, 0.0, 0.0, "mean", None, False)[0]


def reference(logits, target):
    acc = torch.promote_types(logits.dtype, torch.float32)
    loss = torch.nn.functional.cross_entropy(logits.to(acc), target, ignore_index=IGNORE_INDEX)
    return loss.to(logits.dtype)


SHAPES = (
    [dict(BT=2048, V=32000), dict(BT=1000, V=50257), dict(BT=4096, V=128256)]
    if ON_GPU
    else [dict(BT=8, V=300), dict(BT=4, V=2500)]
)
BENCH_SHAPE = dict(BT=4096, V=128256) if ON_GPU else dict(BT=8, V=300)
RTOL, ATOL = (2e-2, 2e-2) if ON_GPU else (1e-5, 1e-5)


def flops(logits, target):
    return 4 * logits.numel()  # max, subtract, exp, sum


def bytes_moved(logits, target):
    return logits.numel() * logits.element_size() + target.numel() * target.element_size()


# @@ include main @@
