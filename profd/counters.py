"""The counter step of a save: run the harness child under the vendor's profiler.

The child runs in ``counters`` mode: one warmed-up call of ``kernel(...)`` inside
an NVTX range, which the profiler is scoped to, so that input generation, the
reference and compilation never show up in the counters.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from collectors.errors import CaptureError
from profd.harness import ChildRequest, child_command, scrubbed_env
from profd.model import CounterTable
from profd.paths import artifacts_dir


def collect(target: Path, *, backend: str, full_set: bool = False, timeout_s: float = 600.0,
            seed: int = 1234) -> tuple[CounterTable, float]:
    """Counters for ``target``'s own launches; returns (table, seconds the profiler took).

    Raises CaptureError (missing profiler, no permission, crash, no kernels) with
    a message that says how to fix it.
    """
    target = Path(target).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="profd-counters-"))
    os.chmod(scratch, 0o700)
    req = ChildRequest(target=str(target), mode="counters", seed=seed)
    req_path, res_path = scratch / "request.json", scratch / "result.json"
    req_path.write_text(json.dumps(req.__dict__))
    args = child_command(req_path, res_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = artifacts_dir("captures", target.stem)
    t0 = time.time()
    if backend == "cuda":
        from collectors import ncu

        table = ncu.run(args[0], args[1:], out_dir / f"{stamp}", full_set=full_set, timeout_s=timeout_s,
                        env=scrubbed_env(), cwd=scratch, nvtx_range=req.nvtx_range)
    elif backend == "hip":
        from collectors import rocprof

        table = rocprof.run(args[0], args[1:], out_dir / stamp, timeout_s=timeout_s, env=scrubbed_env(),
                            cwd=scratch)
    else:
        raise CaptureError("no GPU: hardware counters need a GPU and its profiler (ncu or rocprofv3). "
                           "Verification and timing still ran.", kind="no-gpu")
    if res_path.exists():
        verdict = json.loads(res_path.read_text()).get("verdict", {})
        if verdict.get("status") not in (None, "correct"):
            table.warnings.append(f"the profiled run reported {verdict.get('status')}: {verdict.get('message')}")
    return table, time.time() - t0
