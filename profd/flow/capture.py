"""The counter step of a save: run the harness child under the vendor's profiler.

The child runs in ``counters`` mode: one warmed-up call of ``kernel(...)`` inside
an NVTX range, which the profiler is scoped to, so that input generation, the
reference and compilation never show up in the counters.
"""

from __future__ import annotations

import time
from pathlib import Path

from collectors.errors import CaptureError
from profd.harness.runner import (ChildRequest, child_command, prepare_scratch, read_result, remove_scratch,
                           scrubbed_env)
from profd.model import CounterTable
from profd.paths import artifacts_dir


def collect(target: Path, *, backend: str, full_set: bool = False, timeout_s: float = 600.0,
            seed: int = 1234) -> tuple[CounterTable, float]:
    """Counters for ``target``'s own launches; returns (table, seconds the profiler took).

    Raises CaptureError (missing profiler, no permission, crash, no kernels) with
    a message that says how to fix it.
    """
    target = Path(target).resolve()
    req = ChildRequest(target=str(target), mode="counters", seed=seed)
    scratch, req_path, res_path = prepare_scratch(req, prefix="profd-counters-")
    try:
        return _collect(target, backend, req, scratch, req_path, res_path, full_set, timeout_s)
    finally:
        remove_scratch(scratch)


def _collect(target: Path, backend: str, req: ChildRequest, scratch: Path, req_path: Path, res_path: Path,
             full_set: bool, timeout_s: float) -> tuple[CounterTable, float]:
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
    answer = read_result(res_path)
    if answer is not None:
        verdict = answer.get("verdict", {})
        if verdict.get("status") not in (None, "correct"):
            table.warnings.append(f"the profiled run reported {verdict.get('status')}: {verdict.get('message')}")
    return table, time.time() - t0
