"""The executor interface: between the job queue and the work.

An executor owns *slots*, one per GPU it can use (or CPU slots on a
machine without a GPU). A slot runs one job at a time -- a timing job never
shares its GPU with another job -- on a thread of the daemon's process, with its
own harness runner: a warm worker pinned to that GPU (``local``), or a Ray actor
that holds one GPU of a cluster node (``ray``). What a job *does* is the caller's
job function (the daemon's ``profd.service.jobs.run_job``, or one target's nightly pass); it
is the same for every executor, so results always land in the daemon's store.

Usage::

    ex = create(cfg, job_fn)          # profd.service.executors.create
    ex.start()
    for slot in ex.free_slots():
        job = queue.claim(slot=slot.id)
        if job: ex.submit(job, slot)
    ... ex.poll() -> finished handles ...
    ex.stop()
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from profd.harness.runner import pinned_env
from profd.model import Job

log = logging.getLogger("profd.service.executors")

#: What a slot runs: ``job_fn(job, slot)``. It should not raise (``run_job`` never
#: does); an exception is logged and recorded on the handle, and the slot goes on.
JobFn = Callable[[Job, "Slot"], None]


_here = threading.local()


def current_slot() -> Optional["Slot"]:
    """The slot whose thread this is (None elsewhere): e.g. to read *its* GPU's NVML state."""
    return getattr(_here, "slot", None)


class ExecutorError(Exception):
    """The executor cannot start: a wrong ``[executor]`` table, no GPU it was told to use,
    Ray missing or unreachable. The message says what to change."""


class SlotBusy(Exception):
    """submit() was given a slot that is not free (or no slot is free)."""


class SlotLost(Exception):
    """The slot's runner went away mid-job (a Ray node died): not the target's fault.

    Raised by a runner; the job goes back to the queue instead of failing."""


@dataclass(eq=False)  # identity: a slot is a place, not a value
class Slot:
    """One place a job can run: one GPU (or one CPU slot)."""

    id: str  # "local:gpu0", "local:cpu0", "ray:10.0.0.7:gpu1"
    device: str  # human description: "NVIDIA H100 80GB HBM3 (GPU 0)"
    kind: str = "gpu"  # "gpu" or "cpu"
    local: bool = True  # children run on this host (so counters can be collected here)
    env: dict[str, str] = field(default_factory=dict)  # pinned into every child's environment
    nvml_index: Optional[int] = None  # this GPU's NVML index, where known
    state: str = "starting"  # starting -> idle <-> busy; down (unusable) / stopped
    note: str = ""
    runner: Any = None  # the harness.Runner this slot's children go through
    runner_kind: str = ""  # "warm", "cold", "ray actor ..."
    job: Optional[Job] = None
    job_started: float = 0.0
    jobs_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # executor-specific (ray: node id, actor)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    inbox: "queue_mod.Queue[Optional[Handle]]" = field(default_factory=queue_mod.Queue, repr=False)
    thread: Optional[threading.Thread] = field(default=None, repr=False)

    @property
    def has_gpu(self) -> bool:
        return self.kind == "gpu"

    def to_dict(self) -> dict[str, Any]:
        """The slot as ``profd status`` shows it."""
        j = self.job
        return {"id": self.id, "device": self.device, "kind": self.kind, "state": self.state, "note": self.note,
                "runner": self.runner_kind, "jobs_done": self.jobs_done,
                "job": {"id": j.id, "path": j.path, "kind": j.kind.value,
                        "running_s": round(time.time() - self.job_started, 1)} if j is not None else None}


@dataclass(eq=False)
class Handle:
    """A submitted job: where it runs and, once done, how it ended."""

    job: Job
    slot: Slot
    submitted_at: float = field(default_factory=time.time)
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    error: str = ""  # the job function raised (profd's own bug)

    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def wall_s(self) -> Optional[float]:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class Executor:
    """Slots, each a thread with its own runner; subclasses say what the slots are.

    Subclasses implement ``_discover`` (the slots), ``_open_runner`` (called on the
    slot's own thread, which has the slot's environment pinned), ``_abort_runner``
    (kill the measurement in flight, from any thread) and ``_close_runner``.
    """

    name = "base"

    def __init__(self, job_fn: JobFn, *, should_abort: Callable[[], bool] = lambda: False) -> None:
        self.job_fn = job_fn
        # Polled by the runners while a child runs: the daemon is stopping.
        self.should_abort = should_abort
        self._slots: list[Slot] = []
        self._done: "queue_mod.Queue[Handle]" = queue_mod.Queue()
        self._lock = threading.Lock()
        self._started = False

    # ------------------------------------------------------------------ subclass hooks

    def _discover(self) -> list[Slot]:
        raise NotImplementedError

    def _open_runner(self, slot: Slot) -> Any:
        raise NotImplementedError

    def _abort_runner(self, slot: Slot) -> None:
        """Kill the child in flight now (runners also poll ``slot_abort``)."""

    def _close_runner(self, slot: Slot) -> None:
        """Release what ``_open_runner`` made."""

    # ------------------------------------------------------------------ the contract

    def start(self) -> None:
        """Find the slots and start one thread per slot (each opens its runner itself)."""
        if self._started:
            return
        try:
            self._slots = self._discover()
        except ExecutorError:
            raise
        except Exception as e:
            raise ExecutorError(f"the {self.name} executor did not start: {e}") from e
        if not self._slots:
            raise ExecutorError(f"the {self.name} executor found nowhere to run jobs")
        self._started = True
        for slot in self._slots:
            slot.thread = threading.Thread(target=self._slot_main, args=(slot,), name=f"profd-{slot.id}",
                                           daemon=True)
            slot.thread.start()

    def wait_ready(self, timeout_s: float = 180.0) -> bool:
        """Block until no slot is still starting (runners up or given up); True if any is usable."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and any(s.state == "starting" for s in self._slots):
            time.sleep(0.05)
        return any(s.state in ("idle", "busy") for s in self._slots)

    def slots(self) -> list[Slot]:
        """Every slot, usable or not."""
        return list(self._slots)

    def free_slots(self) -> list[Slot]:
        """Slots ready for a job now."""
        return [s for s in self._slots if s.state == "idle" and s.job is None]

    def busy(self) -> bool:
        """Is any job running (or handed to a slot and about to)?"""
        return any(s.job is not None for s in self._slots)

    def usable(self) -> bool:
        """False once every slot is down: nothing would ever run."""
        return any(s.state != "down" for s in self._slots)

    def submit(self, job: Job, slot: Optional[Slot] = None) -> Handle:
        """Hand ``job`` to ``slot`` (default: the first free one); returns at once.

        Raises SlotBusy when that slot (or every slot) is taken: a slot never runs
        two jobs at once. Completion is seen through ``poll()`` or ``Handle.done()``.
        """
        with self._lock:
            if slot is None:
                free = self.free_slots()
                if not free:
                    raise SlotBusy("no free slot")
                slot = free[0]
            if slot.state != "idle" or slot.job is not None:
                raise SlotBusy(f"slot {slot.id} is {slot.state}")
            slot.cancel.clear()
            slot.job, slot.job_started, slot.state = job, time.time(), "busy"
            handle = Handle(job=job, slot=slot)
            slot.inbox.put(handle)
            return handle

    def poll(self) -> list[Handle]:
        """Handles finished since the last call (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue_mod.Empty:
                return out

    def cancel(self, job: Job | int) -> bool:
        """Abandon a running job: its measurement is killed and the job function sees
        ``slot_abort`` turn true (``run_job`` then requeues it). False if not running."""
        job_id = job if isinstance(job, int) else job.id
        for slot in self._slots:
            if slot.job is not None and slot.job.id == job_id:
                self._cancel_slot(slot)
                return True
        return False

    def cancel_all(self) -> None:
        """Abandon every running job (SIGTERM). Safe to call from a signal handler."""
        for slot in self._slots:
            if slot.job is not None:
                self._cancel_slot(slot)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Abandon running jobs, let their job functions requeue them, end the slot threads."""
        self.cancel_all()
        for slot in self._slots:
            slot.inbox.put(None)
        end = time.monotonic() + timeout_s
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, end - time.monotonic()))
                if slot.thread.is_alive():
                    log.warning("slot %s did not stop within %.0f s", slot.id, timeout_s)
        self._started = False

    def describe(self) -> list[dict[str, Any]]:
        """One dict per slot, for ``profd status`` and daemon.json."""
        return [s.to_dict() for s in self._slots]

    def slot_abort(self, slot: Slot) -> Callable[[], bool]:
        """The abort test for ``slot``'s runner: the daemon stops, or this slot's job is cancelled."""
        return lambda: self.should_abort() or slot.cancel.is_set()

    # ------------------------------------------------------------------ internals

    def _cancel_slot(self, slot: Slot) -> None:
        slot.cancel.set()
        try:
            self._abort_runner(slot)
        except Exception as e:  # the abort is best effort; the runner also polls slot.cancel
            log.debug("abort of %s: %s", slot.id, e)

    def _reopen(self, slot: Slot) -> None:
        """The runner went away (a lost Ray node): start a new one, or mark the slot down."""
        try:
            self._close_runner(slot)
        except Exception:
            pass
        try:
            slot.runner = self._open_runner(slot)
        except Exception as e:
            slot.state, slot.note = "down", f"runner lost and not restarted: {type(e).__name__}: {e}"
            log.error("slot %s: %s", slot.id, slot.note)

    def _slot_main(self, slot: Slot) -> None:
        _here.slot = slot
        # Every child this thread starts (warm fork, cold child, profiler) sees only this slot's GPU.
        with pinned_env(slot.env):
            try:
                slot.runner = self._open_runner(slot)
                slot.state = "idle"
            except Exception as e:
                slot.state, slot.note = "down", f"{type(e).__name__}: {e}"
                log.error("slot %s unusable: %s", slot.id, slot.note)
            while True:
                handle = slot.inbox.get()
                if handle is None:
                    break
                handle.started_at = time.time()
                try:
                    if slot.state == "down":
                        raise SlotLost(f"slot {slot.id} is down: {slot.note}")
                    self.job_fn(handle.job, slot)
                except BaseException as e:  # the job function's own bug: keep the slot alive
                    handle.error = f"{type(e).__name__}: {e}"
                    log.exception("job %s on %s raised", handle.job.id, slot.id)
                finally:
                    if getattr(slot.runner, "lost", False):
                        self._reopen(slot)
                    handle.finished_at = time.time()
                    slot.jobs_done += 1
                    with self._lock:
                        slot.job = None
                        if slot.state == "busy":
                            slot.state = "idle"
                    self._done.put(handle)
            try:
                self._close_runner(slot)
            except Exception as e:
                log.debug("closing %s: %s", slot.id, e)
            slot.state = "stopped"


def run_all(ex: Executor, jobs: Iterable[Job], *, on_start: Callable[[Handle], None] = lambda h: None,
            on_done: Callable[[Handle], None] = lambda h: None, should_stop: Callable[[], bool] = lambda: False,
            poll_s: float = 0.05) -> list[Handle]:
    """Run ``jobs`` (in order, each on the next free slot) on a started executor; wait for all.

    For work that is not in the persisted queue (``profd nightly --inline``). Jobs
    not started when every slot is down, or ``should_stop`` turns true, are skipped.
    """
    todo = list(jobs)
    running: list[Handle] = []
    finished: list[Handle] = []
    while todo or running:
        if not should_stop() and ex.usable():
            for slot in ex.free_slots():
                if not todo:
                    break
                h = ex.submit(todo.pop(0), slot)
                running.append(h)
                on_start(h)
        else:
            todo = []
        for h in ex.poll():
            if h in running:
                running.remove(h)
            finished.append(h)
            on_done(h)
        time.sleep(poll_s)
    return finished
