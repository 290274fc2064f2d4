"""The counter step of a save: run the harness child under the vendor's profiler.

The child runs in ``counters`` mode: one warmed-up call of ``kernel(...)`` inside
an NVTX range, which the profiler is scoped to, so that input generation, the
reference and compilation never show up in the counters. Which profiler runs is the
registry's answer for the device's backend (``collectors.for_backend``); what it collects is
built from the metrics the diagnosis rules declare (``advisors.diagnosis.collection_metrics``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import collectors
from collectors.errors import CaptureError
from profd.harness.runner import (ChildRequest, child_command, prepare_scratch, read_result, remove_scratch,
                                  scrubbed_env)
from profd.model import CounterTable
from profd.paths import artifacts_dir


def capture_counters(target: Path, *, backend: str, full_set: bool = False, timeout_s: float = 600.0,
                     seed: int = 1234, metrics: Optional[Sequence[str]] = None) -> tuple[CounterTable, float]:
    """Counters for ``target``'s own launches; returns (table, seconds the profiler took).

    ``metrics`` are the canonical metrics wanted (default: what the rules and the report read).
    Raises CaptureError (missing profiler, no permission, crash, no kernels) with
    a message that says how to fix it.
    """
    collector = collectors.for_backend(backend)
    if collector is None:
        raise CaptureError("no GPU: hardware counters need a GPU and its profiler (ncu or rocprofv3). "
                           "Verification and timing still ran.", kind="no-gpu")
    if metrics is None:
        from advisors.diagnosis import collection_metrics

        metrics = collection_metrics()
    target = Path(target).resolve()
    req = ChildRequest(target=str(target), mode="counters", seed=seed)
    scratch, req_path, res_path = prepare_scratch(req, prefix="profd-counters-")
    try:
        args = child_command(req_path, res_path)
        out_dir = artifacts_dir("captures", target.stem) / time.strftime("%Y%m%d-%H%M%S")
        t0 = time.time()
        assert collector.run is not None
        table = collector.run(collectors.RunRequest(
            python=args[0], child_args=args[1:], out_dir=out_dir, timeout_s=timeout_s, env=scrubbed_env(),
            cwd=scratch, nvtx_range=req.nvtx_range, full_set=full_set, metrics=list(metrics)))
        answer = read_result(res_path)
        if answer is not None:
            verdict = answer.get("verdict", {})
            if verdict.get("status") not in (None, "correct"):
                table.warnings.append(f"the profiled run reported {verdict.get('status')}: {verdict.get('message')}")
        return table, time.time() - t0
    finally:
        remove_scratch(scratch)
