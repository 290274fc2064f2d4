"""The Ray executor (optional extra ``profd[ray]``): slots on the GPUs of a Ray cluster.

Each slot is a Ray actor that holds one GPU (``num_gpus=1``; ``num_cpus=1`` on a
CPU-only cluster), placed on its node by Ray's own scheduler -- profd schedules
nothing across hosts itself. The job function runs on the daemon's host exactly
as with the local executor; only the harness children run in the actor, so
every result is written into the daemon's store by the daemon. Why an actor and
not one task per measurement: a tuning session compares its baseline and its
candidates, and that is only fair on one physical GPU; an actor keeps its GPU
for its life, separate tasks could be handed different GPUs of the node.

Remote nodes need profd, torch and Triton installed (not the daemon's state
directory): a request travels with the source text of its target and of the
``.py`` files beside it, the actor writes them to a scratch directory, runs the
child there (through a warm worker of its own when it can) and returns the
child's outcome as plain data, with its scratch paths mapped back to the
daemon's paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from profd.service.executors.base import Executor, ExecutorError, JobFn, Slot, SlotLost
from profd.harness.runner import ChildRequest, ChildRun

log = logging.getLogger("profd.service.executors")

#: How much source travels with one request: the target's directory is usually a
#: handful of small kernels; a huge directory should not be copied per measurement.
MAX_FILES_PER_DIR = 200
MAX_BYTES = 8 * 2**20


def bundle(req: ChildRequest) -> dict[str, dict[str, str]]:
    """The sources a remote child needs: {original directory: {file name: text}}.

    The target's directory (its siblings may be imported) and each ``sys_path``
    directory (a tuning candidate imports its original's siblings)."""
    target = Path(req.target)
    dirs = [target.parent] + [Path(p) for p in req.extra.get("sys_path", [])]
    out: dict[str, dict[str, str]] = {}
    total = 0
    for d in dict.fromkeys(dirs):
        files: dict[str, str] = {}
        if d == target.parent:
            files[target.name] = target.read_text()
            total += len(files[target.name])
        try:
            siblings = sorted(d.glob("*.py"))[:MAX_FILES_PER_DIR]
        except OSError:
            siblings = []
        for f in siblings:
            if f.name in files:
                continue
            try:
                if total + f.stat().st_size > MAX_BYTES:
                    break
                files[f.name] = f.read_text()
                total += len(files[f.name])
            except (OSError, UnicodeDecodeError):
                continue
        out[str(d)] = files
    return out


class SlotActor:
    """The remote side of one slot (wrapped with ``ray.remote`` at start-up).

    Runs with ``max_concurrency=2`` so that ``abort`` can arrive while ``run`` waits."""

    def __init__(self, warm: bool = True) -> None:
        self.warm = warm
        self.runner: Any = None
        self._abort = threading.Event()

    def ready(self) -> dict[str, Any]:
        """Start the runner; describe where this actor landed."""
        import ray

        from profd.harness.runner import ColdRunner

        kind = "cold"
        if self.warm:
            from profd.harness.warm import WarmWorker

            w = WarmWorker(should_abort=self._abort.is_set)
            try:
                w.start()
                self.runner, kind = w, "warm"
            except Exception:
                self.runner = None
        if self.runner is None:
            self.runner = ColdRunner(should_abort=self._abort.is_set)
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        name = ""
        if gpu_ids and gpu_ids[0].isdigit():
            from profd.service.executors.local import _nvml_names, _smi_names

            names = _nvml_names() or _smi_names() or []  # NVML sees every GPU of the node
            name = names[int(gpu_ids[0])] if int(gpu_ids[0]) < len(names) else ""
        return {"host": socket.gethostname(), "pid": os.getpid(), "gpu_ids": gpu_ids, "device": name,
                "runner": kind}

    def run(self, req: dict[str, Any], files: dict[str, dict[str, str]], timeout_s: float) -> dict[str, Any]:
        """Write the sources here, run one harness child, return its outcome as plain data."""
        self._abort.clear()
        scratch = Path(tempfile.mkdtemp(prefix="profd-ray-"))
        mapping: dict[str, str] = {}
        try:
            for k, (orig, texts) in enumerate(files.items()):
                d = scratch / f"src{k}"
                d.mkdir()
                for name, text in texts.items():
                    (d / name).write_text(text)
                mapping[str(d)] = orig
            back = {v: k for k, v in mapping.items()}
            target = Path(req["target"])
            req = dict(req, target=str(Path(back[str(target.parent)]) / target.name))
            extra = dict(req.get("extra") or {})
            if extra.get("sys_path"):
                extra["sys_path"] = [back.get(p, p) for p in extra["sys_path"]]
            req["extra"] = extra
            work = scratch / "work"
            work.mkdir()
            run = self.runner.run(ChildRequest(**req), timeout_s=timeout_s, workdir=work)
            out = {"result": run.result, "returncode": run.returncode, "timed_out": run.timed_out,
                   "stdout": run.stdout, "stderr": run.stderr, "phase": run.phase, "wall_s": run.wall_s,
                   "aborted": self._abort.is_set()}
            # Paths in messages and tracebacks should name the user's files, not this scratch copy.
            text = json.dumps(out)
            for remote, orig in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
                text = text.replace(json.dumps(remote)[1:-1], json.dumps(orig)[1:-1])
            return json.loads(text)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def abort(self) -> None:
        """Kill the child in flight (the daemon is stopping, or the job was cancelled)."""
        self._abort.set()
        kill = getattr(self.runner, "kill_current", None)
        if kill is not None:
            kill()

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()


class RayRunner:
    """The daemon side of a slot: a harness Runner whose children run in the slot's actor."""

    def __init__(self, actor: Any, should_abort: Callable[[], bool] = lambda: False) -> None:
        self.actor = actor
        self.should_abort = should_abort
        self.lost = False

    def run(self, req: ChildRequest, *, timeout_s: float = 120.0, workdir: Optional[Path] = None) -> ChildRun:
        """Run ``req`` in the actor; an actor that dies raises SlotLost (not the target's fault)."""
        import ray

        t0 = time.time()
        ref = self.actor.run.remote(dict(req.__dict__), bundle(req), timeout_s)
        aborted_at: Optional[float] = None
        while True:
            ready, _ = ray.wait([ref], timeout=0.1)
            if ready:
                break
            if aborted_at is None and self.should_abort():
                self.abort()
                aborted_at = time.time()
            # The actor enforces timeout_s; this is for a node that stops answering.
            limit = t0 + timeout_s + 120 if aborted_at is None else aborted_at + 20
            if time.time() > limit:
                ray.cancel(ref, force=False)
                self.lost = True
                raise SlotLost(f"the Ray actor did not answer within {time.time() - t0:.0f} s")
        try:
            out = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError) as e:
            self.lost = True  # the executor restarts the actor before the slot's next job
            raise SlotLost(f"the Ray actor was lost: {type(e).__name__}: {str(e)[:300]}") from None
        return ChildRun(out["result"], out["returncode"], out["timed_out"], out["stdout"], out["stderr"],
                        out["phase"], time.time() - t0)

    def abort(self) -> None:
        try:
            self.actor.abort.remote()
        except Exception as e:
            log.debug("abort: %s", e)


def _nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


class RayExecutor(Executor):
    """One slot per GPU of the Ray cluster (``cpu_slots`` per node on a CPU-only cluster)."""

    name = "ray"

    def __init__(self, job_fn: JobFn, *, address: str = "auto", cpu_slots: Optional[int] = None, warm: bool = True,
                 runtime_env: Optional[dict[str, Any]] = None, start_timeout_s: float = 300.0,
                 should_abort: Callable[[], bool] = lambda: False) -> None:
        """``address``: ``"auto"`` (a cluster started on this host), ``"ray://host:10001"``, or
        ``"local"`` (start a private one); an already initialised Ray in this process is used as is."""
        super().__init__(job_fn, should_abort=should_abort)
        self.address = address
        self.cpu_slots = cpu_slots
        self.warm = warm
        self.runtime_env = runtime_env
        self.start_timeout_s = start_timeout_s
        self._owns_ray = False

    def _discover(self) -> list[Slot]:
        try:
            import ray
        except ImportError:
            raise ExecutorError("[executor] kind = \"ray\" needs Ray: pip install 'profd[ray]' (or pip install "
                               "ray) on this host and on every node of the cluster") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.runtime_env:
                kwargs["runtime_env"] = self.runtime_env
            try:
                ray.init(address=None if self.address in ("", "local") else self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"cannot reach Ray at ray_address = {self.address!r}: {e} -- start a cluster "
                                    "(ray start --head), or set [executor] ray_address (\"ray://head:10001\", or "
                                    "\"local\" for a private one on this host)") from None
            self._owns_ray = True
        nodes = _nodes()
        ips = [n.get("NodeManagerAddress", "?") for n in nodes]
        slots: list[Slot] = []
        for n in nodes:
            ip = n.get("NodeManagerAddress", "?")
            host = ip if ips.count(ip) == 1 else f"{ip}/{n['NodeID'][:8]}"  # several raylets on one host
            for k in range(int(n.get("Resources", {}).get("GPU", 0))):
                slots.append(Slot(id=f"ray:{host}:gpu{k}", device=f"GPU on {host}", kind="gpu", local=False,
                                  extra={"node_id": n["NodeID"]}))
        if not slots:  # a CPU-only cluster: Triton's interpreter on each node
            for n in nodes:
                ip = n.get("NodeManagerAddress", "?")
                host = ip if ips.count(ip) == 1 else f"{ip}/{n['NodeID'][:8]}"
                count = self.cpu_slots or int(n.get("Resources", {}).get("CPU", 1))
                for k in range(max(1, count)):
                    slots.append(Slot(id=f"ray:{host}:cpu{k}", device=f"CPU on {host} (Triton interpreter)",
                                      kind="cpu", local=False, extra={"node_id": n["NodeID"]}))
        return slots

    def _open_runner(self, slot: Slot) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        gpu = slot.kind == "gpu"
        cls = ray.remote(SlotActor)
        actor = cls.options(num_gpus=1 if gpu else 0, num_cpus=0 if gpu else 1, max_concurrency=2,
                            scheduling_strategy=NodeAffinitySchedulingStrategy(slot.extra["node_id"], soft=False),
                            ).remote(self.warm)
        slot.extra["actor"] = actor
        try:
            info = ray.get(actor.ready.remote(), timeout=self.start_timeout_s)
        except Exception as e:
            ray.kill(actor)
            raise RuntimeError(f"the Ray actor for {slot.id} did not start: {type(e).__name__}: {e}") from None
        where = f"{info['host']} pid {info['pid']}"
        if gpu:
            slot.device = f"{info['device'] or 'GPU'} (GPU {','.join(info['gpu_ids'])} on {info['host']})"
        slot.runner_kind = f"ray actor ({info['runner']}, {where})"
        return RayRunner(actor, should_abort=self.slot_abort(slot))

    def _abort_runner(self, slot: Slot) -> None:
        if isinstance(slot.runner, RayRunner):
            slot.runner.abort()

    def _close_runner(self, slot: Slot) -> None:
        import ray

        actor = slot.extra.pop("actor", None)
        if actor is not None:
            try:
                ray.get(actor.close.remote(), timeout=10)
            except Exception:
                pass
            ray.kill(actor)

    def stop(self, timeout_s: float = 30.0) -> None:
        super().stop(timeout_s)
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
