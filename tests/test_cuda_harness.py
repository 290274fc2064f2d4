"""CUDA C++ targets through the real harness: without a GPU (or nvcc) the verdict says so, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "kernels"


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.mark.skipif(_has_cuda(), reason="this checks the machine without a GPU")
@pytest.mark.parametrize("name", ["cuda_reduce.py", "kernelbench_cuda_add.py"])
def test_a_cuda_target_without_a_gpu_gets_a_clear_verdict_and_exit_1(tmp_path: Path, name: str) -> None:
    env = dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PROFD_CONFIG=str(tmp_path / "none.toml"))
    cp = subprocess.run([sys.executable, "-m", "profd.cli", "profile", str(EXAMPLES / name), "--json"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 1, cp.stderr[-2000:]
    v = json.loads(cp.stdout)["measurement"]["verdict"]
    assert v["status"] == "load_error"
    assert "needs a CUDA toolkit and GPU" in v["message"] and name in v["message"]
    assert "Traceback" not in cp.stdout + cp.stderr
