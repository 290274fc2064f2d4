"""Kernel targets written in the styles real projects use (written for profd's tests, not copied).

Each source is a complete profd target (``get_inputs``/``reference``/``kernel``) whose launcher
looks like one of: a Liger-Kernel-style ``calculate_settings`` helper, the Triton tutorial's
fused softmax (``kernel.warmup(...)`` and a compiled handle), the tutorial's autotuned matmul
(``configs=get_autotune_config()``, ``lambda META`` grid), a tuple-assignment matmul launcher,
a FlagGems-style autotune comprehension with ``@triton.heuristics``, and an elementwise kernel
that leaves ``num_warps``/``num_stages`` to Triton. ``run_in_interpreter`` runs sources in a
child process under ``TRITON_INTERPRET=1`` and reports correctness and the recorded launches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(source: str, needle: str, nth: int = 1) -> int:
    """The line of the ``nth`` line that starts with ``needle`` (after indentation)."""
    hits = [i for i, line in enumerate(source.splitlines(), 1) if line.lstrip().startswith(needle)]
    return hits[nth - 1]


LIGER_RMSNORM = src('''
    import torch
    import triton
    import triton.language as tl

    MAX_FUSED_SIZE = 65536


    def calculate_settings(n):
        BLOCK_SIZE = triton.next_power_of_2(n)
        if BLOCK_SIZE > MAX_FUSED_SIZE:
            raise RuntimeError(f"cannot launch a row of {n} elements: BLOCK_SIZE > {MAX_FUSED_SIZE}")
        num_warps = 4
        if BLOCK_SIZE >= 32768:
            num_warps = 32
        elif BLOCK_SIZE >= 8192:
            num_warps = 16
        elif BLOCK_SIZE >= 2048:
            num_warps = 8
        return BLOCK_SIZE, num_warps


    @triton.jit
    def _rms_norm_forward_kernel(Y_ptr, Y_row_stride, X_ptr, X_row_stride, W_ptr, n_cols, eps,
                                 BLOCK_SIZE: tl.constexpr):
        row_idx = tl.program_id(0)
        col_offsets = tl.arange(0, BLOCK_SIZE)
        mask = col_offsets < n_cols
        x = tl.load(X_ptr + row_idx * X_row_stride + col_offsets, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W_ptr + col_offsets, mask=mask, other=0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        tl.store(Y_ptr + row_idx * Y_row_stride + col_offsets, x * rstd * w, mask=mask)


    def rms_norm_forward(X, W, eps):
        shape = X.shape
        X = X.view(-1, shape[-1])
        n_rows, n_cols = X.shape
        BLOCK_SIZE, num_warps = calculate_settings(n_cols)
        Y = torch.empty_like(X)
        _rms_norm_forward_kernel[(n_rows,)](Y, Y.stride(0), X, X.stride(0), W, n_cols, eps,
                                            BLOCK_SIZE=BLOCK_SIZE, num_warps=num_warps)
        return Y.view(*shape)


    def get_inputs():
        return [torch.randn(8, 3000), torch.randn(3000)]


    def reference(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


    def kernel(x, w):
        return rms_norm_forward(x, w, 1e-6)
''')

TUTORIAL_SOFTMAX = src('''
    import torch
    import triton
    import triton.language as tl

    NUM_SM = 4
    SIZE_SMEM = 228 * 1024


    @triton.jit
    def softmax_kernel(output_ptr, input_ptr, input_row_stride, output_row_stride, n_rows, n_cols,
                       BLOCK_SIZE: tl.constexpr, num_stages: tl.constexpr):
        row_start = tl.program_id(0)
        row_step = tl.num_programs(0)
        for row_idx in tl.range(row_start, n_rows, row_step, num_stages=num_stages):
            row_start_ptr = input_ptr + row_idx * input_row_stride
            col_offsets = tl.arange(0, BLOCK_SIZE)
            mask = col_offsets < n_cols
            row = tl.load(row_start_ptr + col_offsets, mask=mask, other=-float("inf"))
            row_minus_max = row - tl.max(row, axis=0)
            numerator = tl.exp(row_minus_max)
            softmax_output = numerator / tl.sum(numerator, axis=0)
            tl.store(output_ptr + row_idx * output_row_stride + col_offsets, softmax_output, mask=mask)


    def softmax(x):
        n_rows, n_cols = x.shape
        BLOCK_SIZE = triton.next_power_of_2(n_cols)
        num_warps = 8
        num_stages = 4 if SIZE_SMEM > 200000 else 2
        y = torch.empty_like(x)
        kernel = softmax_kernel.warmup(y, x, x.stride(0), y.stride(0), n_rows, n_cols, BLOCK_SIZE=BLOCK_SIZE,
                                       num_stages=num_stages, num_warps=num_warps, grid=(1, ))
        num_programs = min(NUM_SM, n_rows)
        if kernel is None:  # the interpreter compiles nothing ahead of time
            softmax_kernel[(num_programs, 1, 1)](y, x, x.stride(0), y.stride(0), n_rows, n_cols,
                                                 BLOCK_SIZE=BLOCK_SIZE, num_stages=num_stages,
                                                 num_warps=num_warps)
        else:
            kernel._init_handles()
            kernel[(num_programs, 1, 1)](y, x, x.stride(0), y.stride(0), n_rows, n_cols, BLOCK_SIZE, num_stages)
        return y


    def get_inputs():
        return [torch.randn(10, 200)]


    def reference(x):
        return torch.softmax(x, dim=-1)


    def kernel(x):
        return softmax(x)
''')

TUTORIAL_MATMUL = src('''
    import torch
    import triton
    import triton.language as tl


    def get_autotune_config():
        return [
            triton.Config({"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 16, "GROUP_SIZE_M": 4},
                          num_stages=3, num_warps=4),
            triton.Config({"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 4},
                          num_stages=4, num_warps=2),
        ]


    @triton.autotune(configs=get_autotune_config(), key=["M", "N", "K"])
    @triton.jit
    def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                      BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
                      GROUP_SIZE_M: tl.constexpr):
        pid = tl.program_id(axis=0)
        num_pid_m = tl.cdiv(M, BLOCK_SIZE_M)
        num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
        num_pid_in_group = GROUP_SIZE_M * num_pid_n
        group_id = pid // num_pid_in_group
        first_pid_m = group_id * GROUP_SIZE_M
        group_size_m = min(num_pid_m - first_pid_m, GROUP_SIZE_M)
        pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
        pid_n = (pid % num_pid_in_group) // group_size_m
        offs_am = (pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
        offs_bn = (pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
        offs_k = tl.arange(0, BLOCK_SIZE_K)
        a_ptrs = a_ptr + (offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak)
        b_ptrs = b_ptr + (offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn)
        accumulator = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
            a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BLOCK_SIZE_K, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_SIZE_K, other=0.0)
            accumulator = tl.dot(a, b, accumulator)
            a_ptrs += BLOCK_SIZE_K * stride_ak
            b_ptrs += BLOCK_SIZE_K * stride_bk
        offs_cm = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
        offs_cn = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
        c_ptrs = c_ptr + stride_cm * offs_cm[:, None] + stride_cn * offs_cn[None, :]
        tl.store(c_ptrs, accumulator, mask=(offs_cm[:, None] < M) & (offs_cn[None, :] < N))


    def matmul(a, b):
        M, K = a.shape
        K, N = b.shape
        c = torch.empty((M, N), device=a.device, dtype=torch.float32)
        grid = lambda META: (triton.cdiv(M, META["BLOCK_SIZE_M"]) * triton.cdiv(N, META["BLOCK_SIZE_N"]), )
        matmul_kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                            c.stride(0), c.stride(1))
        return c


    def get_inputs():
        return [torch.randn(64, 48), torch.randn(48, 80)]


    def reference(a, b):
        return a @ b


    def kernel(a, b):
        return matmul(a, b)
''')

TUPLE_MATMUL = src('''
    import torch
    import triton
    import triton.language as tl


    @triton.jit
    def mm_kernel(a, b, c, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            x = tl.load(a + rm[:, None] * K + (k0 + rk)[None, :],
                        mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0.0)
            y = tl.load(b + (k0 + rk)[:, None] * N + rn[None, :],
                        mask=((k0 + rk)[:, None] < K) & (rn[None, :] < N), other=0.0)
            acc += tl.dot(x, y)
        tl.store(c + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


    def kernel(a, b):
        M, K = a.shape
        N = b.shape[1]
        c = torch.empty((M, N), dtype=torch.float32)
        BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 16
        grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
        mm_kernel[grid](a, b, c, M, N, K, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4,
                        num_stages=2)
        return c


    def get_inputs():
        return [torch.randn(64, 32), torch.randn(32, 64)]


    def reference(a, b):
        return a @ b
''')

FLAGGEMS_SOFTMAX = src('''
    import torch
    import triton
    import triton.language as tl


    def heur_block_n(args):
        return triton.next_power_of_2(args["N"])


    def heur_num_warps(args):
        if args["N"] <= 1024:
            return 4
        elif args["N"] <= 2048:
            return 8
        return 16


    @triton.autotune(configs=[triton.Config({"BLOCK_M": m}, num_warps=4) for m in (1, 2)], key=["M", "N"])
    @triton.heuristics(values={"BLOCK_N": heur_block_n})
    @triton.jit
    def softmax_kernel_inner(output_ptr, input_ptr, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        pid_m = tl.program_id(0)
        m_offsets = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        n_offsets = tl.arange(0, BLOCK_N)
        offset = m_offsets[:, None] * N + n_offsets[None, :]
        mask = (m_offsets[:, None] < M) & (n_offsets[None, :] < N)
        inp = tl.load(input_ptr + offset, mask=mask, other=-float("inf"))
        row_max = tl.max(inp, axis=1)
        e = tl.exp(inp - row_max[:, None])
        tl.store(output_ptr + offset, e / tl.sum(e, axis=1)[:, None], mask=mask)


    def softmax(x):
        M, N = x.shape
        out = torch.empty_like(x)
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), 1, 1)
        softmax_kernel_inner[grid](out, x, M, N)
        return out


    def get_inputs():
        return [torch.randn(6, 100)]


    def reference(x):
        return torch.softmax(x, dim=-1)


    def kernel(x):
        return softmax(x)
''')

DEFAULT_WARPS_ADD = src('''
    import torch
    import triton
    import triton.language as tl


    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
        pid = tl.program_id(axis=0)
        offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        mask = offsets < n_elements
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + tl.load(y_ptr + offsets, mask=mask),
                 mask=mask)


    def add(x, y, block_size):
        out = torch.empty_like(x)
        n = out.numel()
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_SIZE"]), )
        add_kernel[grid](x, y, out, n, BLOCK_SIZE=block_size)
        return out


    def get_inputs():
        return [torch.randn(3000), torch.randn(3000)]


    def reference(x, y):
        return x + y


    def kernel(x, y):
        return add(x, y, 256)
''')

ALL = {"liger_rmsnorm": LIGER_RMSNORM, "tutorial_softmax": TUTORIAL_SOFTMAX, "tutorial_matmul": TUTORIAL_MATMUL,
       "tuple_matmul": TUPLE_MATMUL, "flaggems_softmax": FLAGGEMS_SOFTMAX, "default_warps_add": DEFAULT_WARPS_ADD}

_RUNNER = r"""
import importlib.util, json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
import triton.runtime.autotuner as at
# The interpreter has no device timer: let the autotuner rank configs in list order, so that the
# config a rewrite puts first is the one that runs.
at.Autotuner._bench = lambda self, *a, config, **k: [float(self.configs.index(config) + 1)] * 3
from profd.harness.launches import capture
out = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.manual_seed(0)
        inputs = mod.get_inputs()
        result = {}
        launches = capture(lambda: result.setdefault("y", mod.kernel(*inputs)))
        ref = mod.reference(*inputs)
        y = result["y"]
        out[name] = {"ok": bool(torch.allclose(y.float(), ref.float(), atol=1e-3, rtol=1e-3)),
                     "max_err": float((y.float() - ref.float()).abs().max()),
                     "launches": [l.to_dict() for l in launches]}
    except Exception as e:
        out[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "launches": []}
print("RESULT" + json.dumps(out))
"""


def run_in_interpreter(sources: dict[str, str], tmp: Path) -> dict[str, Any]:
    """Run each source's ``kernel`` against its ``reference`` in one interpreter child process."""
    paths = {}
    for name, text in sources.items():
        p = tmp / f"{name}.py"
        p.write_text(text)
        paths[name] = str(p)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(paths)], capture_output=True, text=True,
                          env=env, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("RESULT"):])
