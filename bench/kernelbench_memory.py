"""Verification memory on a KernelBench level-1 problem at its full upstream size.

KernelBench's ``level1/36_RMSNorm_.py`` (x: 112 x 64 x 512 x 512 fp32, 7.5 GB) once ran out of
memory on a 141 GB H200 inside profd's verification, which made float64 copies and masks of whole
outputs. This script takes the upstream problem file as it is (``--problem``: read from a checkout
of KernelBench, never stored in this repository), appends a ``ModelNew`` written here (a Triton
RMSNorm over the feature dimension), runs ``profd profile`` on it from the CLI as a user would,
and samples the GPU's used memory with ``nvidia-smi`` every 0.2 s meanwhile. It records the
verdict, the peak memory above the idle level, and that peak as a multiple of one input.

    python bench/kernelbench_memory.py --problem KernelBench/level1/36_RMSNorm_.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODEL_NEW = '''

# ---- profd wrapper (not upstream): the implementation under test -------------------------------
import triton
import triton.language as tl


@triton.jit
def _rms_norm_dim1(x_ptr, out_ptr, F, S, eps, BLOCK_S: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    s = pid * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = s < S
    base = b * F * S
    acc = tl.zeros([BLOCK_S], dtype=tl.float32)
    for f in range(0, F):
        x = tl.load(x_ptr + base + f * S + s, mask=mask, other=0.0).to(tl.float32)
        acc += x * x
    rms = tl.sqrt(acc / F + eps)
    for f in range(0, F):
        x = tl.load(x_ptr + base + f * S + s, mask=mask, other=0.0)
        tl.store(out_ptr + base + f * S + s, x / rms, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        B, F = x.shape[0], x.shape[1]
        S = x.numel() // (B * F)
        out = torch.empty_like(x)
        BLOCK_S = 1024
        _rms_norm_dim1[(triton.cdiv(S, BLOCK_S), B)](x, out, F, S, self.eps, BLOCK_S=BLOCK_S, num_warps=4)
        return out
'''


def used_mib() -> float:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=10).stdout.split()
    return float(out[0]) if out else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", required=True, help="KernelBench problem file (upstream, unmodified)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=400)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kbmem-") as d:
        target = Path(d) / Path(args.problem).name
        target.write_text(Path(args.problem).read_text() + MODEL_NEW)
        env = dict(os.environ, PROFD_STATE_DIR=str(Path(d) / "state"), PROFD_CONFIG=str(Path(d) / "none.toml"),
                   PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        idle = used_mib()
        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], used_mib())
                except Exception:  # noqa: BLE001 - a missed sample is not a result
                    pass
                time.sleep(0.2)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.time()
        cp = subprocess.run([sys.executable, "-m", "profd.cli", "profile", str(target), "--json"], env=env,
                            capture_output=True, text=True, timeout=args.timeout)
        wall = time.time() - t0
        stop.set()
        th.join()
    try:
        m = json.loads(cp.stdout)
    except json.JSONDecodeError:
        m = {"raw": cp.stdout[-3000:]}
    meas = m.get("measurement", m)
    verdict = meas.get("verdict", {}) if isinstance(meas, dict) else {}
    input_gib = 112 * 64 * 512 * 512 * 4 / 2**30
    rec = {"problem": str(args.problem), "rc": cp.returncode, "wall_s": round(wall, 1),
           "verdict": verdict.get("status"), "message": (verdict.get("message") or "")[:600],
           "idle_mib": idle, "peak_mib": peak[0], "peak_above_idle_gib": round((peak[0] - idle) / 1024, 2),
           "input_gib": round(input_gib, 2), "peak_over_input": round((peak[0] - idle) / 1024 / input_gib, 2),
           "timing": (meas.get("timing") or {}) if isinstance(meas, dict) else {},
           "stderr_tail": cp.stderr[-1500:]}
    (out / "kernelbench_memory.json").write_text(json.dumps(rec, indent=1, default=str))
    print(json.dumps({k: rec[k] for k in ("verdict", "rc", "wall_s", "peak_above_idle_gib", "input_gib",
                                          "peak_over_input")}))
    return 0 if cp.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
