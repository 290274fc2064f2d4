"""Executors: where jobs run. A plug-in folder: one module per kind.

``[executor]`` in the config picks one::

    [executor]
    kind = "local"          # "local" (default): every GPU of this machine; "ray": a Ray cluster
    gpus = [0, 1]           # local: the subset of GPUs to use (default: all)
    cpu_slots = 1           # slots on a machine (or Ray cluster) without a GPU
    ray_address = "auto"    # ray: "auto", "ray://head:10001", or "local" (a private instance)
    ray_runtime_env = {}    # ray: passed to ray.init (e.g. {pip = [...]} for the nodes)

``PROFD_EXECUTOR_KIND=ray``, ``PROFD_EXECUTOR_GPUS=0,1`` etc. override the file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from profd.service.executors.base import (Executor, ExecutorError, Handle, JobFn, Slot, SlotBusy, SlotLost,
                                  run_all)

__all__ = ["Executor", "ExecutorConfig", "ExecutorError", "Handle", "JobFn", "Slot", "SlotBusy", "SlotLost",
           "create", "run_all", "slot_config", "KINDS"]

KINDS = ("local", "ray")


@dataclass
class ExecutorConfig:
    """The ``[executor]`` table, checked."""

    kind: str = "local"
    gpus: Optional[list[int]] = None
    cpu_slots: int = 1
    ray_address: str = "auto"
    ray_runtime_env: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> "ExecutorConfig":
        """Parse the raw table (values from the environment arrive as strings); ValueError says what is wrong."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"[executor]: unknown setting(s) {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        c = cls()
        kind = str(table.get("kind", "local")).strip().lower()
        if kind not in KINDS:
            raise ValueError(f"[executor] kind = {kind!r}: use one of {', '.join(KINDS)}.")
        c.kind = kind
        gpus = table.get("gpus")
        if isinstance(gpus, str):  # PROFD_EXECUTOR_GPUS=0,1 (or 0:1)
            gpus = [g for g in gpus.replace(":", ",").split(",") if g.strip()]
        if gpus is not None:
            try:
                c.gpus = [int(g) for g in gpus]
            except (TypeError, ValueError):
                raise ValueError(f"[executor] gpus = {gpus!r}: give a list of GPU indices, e.g. [0, 1].") from None
            if not c.gpus:
                raise ValueError("[executor] gpus = []: give at least one GPU index, or leave it out for all.")
        try:
            c.cpu_slots = int(table.get("cpu_slots", 1))
        except (TypeError, ValueError):
            raise ValueError(f"[executor] cpu_slots = {table.get('cpu_slots')!r}: give a whole number.") from None
        if c.cpu_slots < 1:
            raise ValueError("[executor] cpu_slots must be at least 1.")
        c.ray_address = str(table.get("ray_address", "auto"))
        env = table.get("ray_runtime_env", {})
        if not isinstance(env, Mapping):
            raise ValueError("[executor] ray_runtime_env must be a table.")
        c.ray_runtime_env = dict(env)
        return c


def create(cfg: Any, job_fn: JobFn, *, should_abort: Callable[[], bool] = lambda: False) -> Executor:
    """The executor ``cfg.executor`` asks for (not started). ExecutorError for a wrong table."""
    try:
        ec = ExecutorConfig.from_mapping(getattr(cfg, "executor", {}) or {})
    except ValueError as e:
        raise ExecutorError(str(e)) from None
    warm = bool(cfg.run.warm_worker)
    if ec.kind == "ray":
        from profd.service.executors.ray_backend import RayExecutor

        cpu = ec.cpu_slots if "cpu_slots" in (cfg.executor or {}) else None
        return RayExecutor(job_fn, address=ec.ray_address, cpu_slots=cpu, warm=warm,
                           runtime_env=ec.ray_runtime_env or None, should_abort=should_abort)
    from profd.service.executors.local import LocalExecutor

    return LocalExecutor(job_fn, gpus=ec.gpus, cpu_slots=ec.cpu_slots, warm=warm, should_abort=should_abort,
                         warm_idle_s=float(getattr(cfg.run, "warm_idle_s", 0.0) or 0.0))


def slot_config(cfg: Any, slot: Slot) -> Any:
    """``cfg`` as a job on ``slot`` should see it.

    Hardware counters are collected by the process that runs the pipeline (the
    daemon's host), so a remote slot cannot have them: the profiler would run on
    the wrong machine. Its copy of the config turns them off."""
    if slot.local or not cfg.run.counters:
        return cfg
    out = copy.copy(cfg)
    out.run = copy.copy(cfg.run)
    out.run.counters = False
    return out
