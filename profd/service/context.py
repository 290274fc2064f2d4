"""What a job handler is given: one slot's view of the daemon, as a typed value.

The daemon builds a :class:`JobContext` for each job it hands to a slot (the slot's
runner, GPU, Store connection and queue; the config as that slot should see it), and
the handler for the job's kind (``profd.service.jobs.HANDLERS``) gets it with the job.
Handlers in ``profd.flow`` import this module only for type checking, so the flow stages
never depend on the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from profd.config import Config
    from profd.model import Job
    from profd.service.jobqueue import JobQueue
    from profd.store import Store


def _no_event(kind: str, text: str, **data: Any) -> None:
    return None


@dataclass(frozen=True)
class JobContext:
    """One job's view of the daemon: where it runs and how it reports."""

    config: "Config"  # as this slot sees it (profd.service.executors.slot_config)
    store: "Store"  # the slot's own connection
    queue: "JobQueue"  # the slot's own connection
    runner: Any  # the slot's profd.harness.runner.Runner (a warm harness process, cold children, a Ray actor)
    slot_id: str = "local"
    has_gpu: bool = False  # the slot's, not this host's: a Ray slot's GPU is on another machine
    gpu_index: Optional[int] = None  # the slot's NVML index, for profile()'s device state
    #: The job should end now: the daemon stops or this slot's job was cancelled.
    stop_requested: Callable[[], bool] = lambda: False
    #: The whole daemon stops (rather than this one job being cancelled).
    daemon_stopping: Callable[[], bool] = lambda: False
    say: Callable[[str], None] = lambda text: None
    #: ``event(kind, text, **data)``: a structured line (``profd watch --json``).
    event: Callable[..., None] = _no_event
    #: The slot's last profile of each target (path -> ProfileResult), kept across jobs: the TUNE
    #: job a save queues starts from that save's verdict and report when the file is unchanged,
    #: instead of measuring it again and re-running the counter pass (ncu: seconds to a minute).
    recent_profiles: dict[str, Any] = field(default_factory=dict)

    def should_yield(self, job: "Job") -> bool:
        """Stop now, or step aside: a more urgent job (a save) waits and no slot is free for it."""
        return self.stop_requested() or self.queue.urgent_waiting(job.priority)
