# Wrapper for unsloth's cross-entropy forward (see the header for the upstream code's origin).
# Text above the marker goes before the upstream code, text below it after.
import functools
from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from packaging.version import Version  # shim: unsloth_zoo.utils.Version is packaging's

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"

# ---- shims for unsloth internals the upstream code imports ----
# shim: unsloth.kernels.utils binds triton_tanh to libdevice.tanh and triton_cast to tl.cast on
# triton >= 3. tanh is only used with softcapping; the CPU interpreter has no libdevice.
if ON_GPU:
    from triton.language.extra.libdevice import tanh as triton_tanh
    triton_cast = tl.cast
else:
    @triton.jit
    def triton_tanh(x):
        return 2.0 * tl.sigmoid(2.0 * x) - 1.0

    # The interpreter only patches tl's builtins looked up through the module, so a bare
    # reference to tl.cast cannot be called there: a jit function calling tl.cast stands in.
    @triton.jit
    def triton_cast(x, dtype: tl.constexpr):
        return tl.cast(x, dtype)


@functools.cache
def is_hip():
    """shim for unsloth.device_type.is_hip."""
    return bool(getattr(getattr(torch, "version", None), "hip", None))


# @@ include torch_gpu_device @@


# @@ upstream code @@
# ---- the profd wrapper ----
IGNORE_INDEX = -100
DTYPE = torch.bfloat16 if ON_GPU else torch.float32  # the interpreter has no bf16 arithmetic


def get_inputs(B=8, S=2048, V=32000):
    logits = torch.randn(B, S, V, device=DEVICE, dtype=DTYPE)
    labels = torch.randint(0, V, (B, S), device=DEVICE)
    labels[:, ::16] = IGNORE_INDEX  # some padding, as in a real batch
    return [logits, labels]


def kernel(logits, labels):
    return fast_cross_entropy_loss(logits, labels)


def reference(logits, labels):
    acc = torch.promote_types(logits.dtype, torch.float32)
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.to(acc).reshape(-1, V), labels.reshape(-1),
                                             ignore_index=IGNORE_INDEX)


# Vocabularies above 65536 go to unsloth's chunked kernel, which is not part of this target.
SHAPES = (
    [dict(B=4, S=1024, V=32000), dict(B=3, S=333, V=50257), dict(B=8, S=2048, V=32000)]
    if ON_GPU
    else [dict(B=2, S=4, V=300), dict(B=1, S=3, V=2500)]
)
BENCH_SHAPE = dict(B=8, S=2048, V=32000) if ON_GPU else dict(B=2, S=4, V=300)
RTOL, ATOL = (1e-3, 1e-3) if ON_GPU else (1e-5, 1e-5)


def flops(logits, labels):
    return 4 * logits.numel()


def bytes_moved(logits, labels):
    return logits.numel() * logits.element_size() + labels.numel() * labels.element_size()


# @@ include main @@
