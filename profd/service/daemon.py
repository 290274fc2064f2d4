"""The daemon: watch, queue, work, report -- in the foreground or under systemd.

``profd watch DIR`` and ``profd daemon`` both run ``Daemon.run``; they differ only
in how they talk (human lines vs journald-prefixed log lines). The daemon process
holds no GPU context: every measurement runs in a child (forked from the warm
worker, or started cold), and the GPU is only ever looked at through NVML.

Jobs run on an executor (``profd.service.executors``): one slot per GPU, each slot a thread
with its own runner and Store connection. The main loop only hands queued jobs to
free slots (``JobQueue.claim(slot=slot.id)``) and keeps ``daemon.json`` current.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from profd import config as config_mod
from profd.gpu import gpu_summary
from profd.config import Config
from profd.service.executors import Executor, Slot, slot_config
from profd.service.jobqueue import JobQueue
from profd.model import Job, JobKind, JobState
from profd.paths import state_dir, write_private
from profd.store import Store
from profd.service.context import JobContext
from profd.service.systemd import acquire_lock, sd_notify
from profd.service.watcher import Watcher

log = logging.getLogger("profd")


# --------------------------------------------------------------------------- the daemon


@dataclass
class DaemonState:
    """What ``profd status`` shows; written to ``daemon.json`` about once a second."""

    pid: int
    started_at: float
    mode: str  # "foreground" or "service"
    watched: list[str]
    watcher: str = "stopped"
    watcher_note: str = ""
    gpu: str = ""
    current_job: Optional[dict[str, Any]] = None
    heartbeat: float = 0.0
    jobs_done: int = 0
    config_source: str = ""
    warm_worker: bool = False
    notes: list[str] = field(default_factory=list)
    executor: str = ""  # "local" or "ray"
    workers: list[dict[str, Any]] = field(default_factory=list)  # one per slot: device, state, job


class SlotQueue(JobQueue):
    """A slot's queue connection. A save pre-empts a long job only when no slot is
    free for it: with a free slot the daemon hands the save there within 0.1 s."""

    def __init__(self, store: Store, executor: Executor) -> None:
        super().__init__(store)
        self.executor = executor

    def urgent_waiting(self, than_priority: int) -> bool:
        return super().urgent_waiting(than_priority) and not self.executor.free_slots()


class Daemon:
    """Watch directories, queue saves, run one job per slot (GPU) at a time, report each step."""

    def __init__(self, cfg: Config, *, service: bool = False, out: TextIO = sys.stdout,
                 config_file: Optional[Path] = None, once: bool = False, json_events: bool = False) -> None:
        self.cfg = cfg
        self.service = service
        self.json_events = json_events  # `profd watch --json`: one JSON object per line on ``out``
        self.out = out
        self.config_file = config_file
        self.once = once  # exit when the queue is empty (tests, one-shot runs)
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.executor: Optional[Executor] = None
        self.has_gpu = False
        self._slot_queues: dict[str, SlotQueue] = {}  # slot id -> that slot's queue (and Store connection)
        self._say_lock = threading.Lock()
        self.store_path: Optional[Path] = None
        self.watcher: Optional[Watcher] = None
        self.state_dir = state_dir()
        self.state = DaemonState(pid=os.getpid(), started_at=time.time(), mode="service" if service else "foreground",
                                 watched=list(cfg.watch.dirs), config_source=cfg.source)
        self.last_loop = time.monotonic()
        self._outbox_thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        """A human line in the foreground; an info log line under systemd; a JSON "message" line with --json."""
        self.event("message", text)

    def event(self, kind: str, text: str, **data: Any) -> None:
        """Report one event: with ``json_events`` a JSON line ``{"event": kind, "text": ..., **data}``;
        otherwise ``text`` as a human line (foreground) or log lines (service)."""
        with self._say_lock:  # slots are threads: keep each message's lines together
            if self.json_events:
                print(json.dumps({"event": kind, "at": round(time.time(), 3), "text": text.rstrip(), **data},
                                 default=str), file=self.out, flush=True)
            elif self.service:
                for line in text.rstrip().splitlines():
                    log.info(line)
            else:
                print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ lifecycle

    def _signals(self) -> None:
        def on_term(signum: int, frame: Any) -> None:
            self.stop_requested.set()
            # Abandon the measurements in flight (every slot); their jobs go back to the queue.
            if self.executor is not None:
                self.executor.cancel_all()

        self._old_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, lambda s, f: self.reload_requested.set())

    def _restore_signals(self) -> None:
        # Daemon.run can be called in a process that goes on (tests, an embedding program).
        for sig, handler in getattr(self, "_old_handlers", {}).items():
            signal.signal(sig, handler)

    def _start_watcher(self, store: Store) -> None:
        if not self.cfg.watch.dirs:
            self.state.watcher = "none"
            return

        queue = JobQueue(Store(store.path))  # the watcher thread gets its own connection

        def on_change(path: Path, digest: str) -> None:
            job, created = queue.enqueue(path, JobKind.PROFILE, digest)
            if created:
                self.event("saved", f"saved: {path.name} -> job {job.id} queued", path=str(path), job=job.id,
                           content_hash=digest)

        w = self.cfg.watch
        self.watcher = Watcher(w.dirs, on_change, patterns=w.patterns, ignore=w.ignore,
                               debounce_s=w.debounce_ms / 1000.0, rescan_s=w.rescan_s, polling=w.polling,
                               exclude=[self.state_dir], known_digest=store.last_digest)
        self.watcher.start()
        self.state.watcher = self.watcher.mode
        self.state.watcher_note = self.watcher.fallback_reason
        # Files saved while profd was not running (or never profiled) are picked up now.
        self.watcher.rescan()

    def _reload(self, store: Store) -> None:
        self.reload_requested.clear()
        try:
            new = config_mod.load(self.config_file)
        except config_mod.ConfigError as e:
            log.error("config reload failed, keeping the old one: %s", e)
            return
        if not new.watch.dirs:
            new.watch.dirs = self.cfg.watch.dirs  # dirs given on the command line stay
        old_watch = self.cfg.watch
        self.cfg = new
        self.state.config_source = new.source
        if new.watch != old_watch and self.watcher is not None:
            self.watcher.stop()
            self._start_watcher(store)
            self.state.watched = list(new.watch.dirs)
        self.say(f"config reloaded from {new.source}")

    def write_state(self) -> None:
        self.state.heartbeat = time.time()
        workers = self.executor.describe() if self.executor is not None else []
        self.state.workers = workers
        # The first running job, as before there were slots (older readers of daemon.json).
        self.state.current_job = next((w["job"] for w in workers if w["job"]), None)
        self.state.warm_worker = any(
            getattr(s.runner, "alive", lambda: False)() or "warm" in s.runner_kind
            for s in (self.executor.slots() if self.executor is not None else []) if s.runner is not None)
        try:
            write_private(self.state_dir / "daemon.json", json.dumps(self.state.__dict__))
        except OSError as e:  # a full or read-only state dir: status goes stale, the daemon goes on
            if not getattr(self, "_state_write_failed", False):
                log.warning("cannot write %s (%s); `profd status` shows stale data until there is room again",
                            self.state_dir / "daemon.json", e)
            self._state_write_failed = True
        else:
            self._state_write_failed = False

    def healthy(self) -> bool:
        """For systemd's watchdog: the loop turns (jobs run on slot threads, never in it) and the watcher lives."""
        loop_ok = time.monotonic() - self.last_loop < 10.0
        watch_ok = self.watcher is None or self.watcher.healthy()
        return loop_ok and watch_ok

    def _keepalive(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return
        period = max(int(usec) / 1e6 / 2, 0.5)

        def beat() -> None:
            while not self.stop_requested.wait(period):
                if self.healthy():
                    sd_notify("WATCHDOG=1")
                else:
                    log.error("unhealthy: not sending the watchdog keep-alive")

        threading.Thread(target=beat, name="profd-watchdog", daemon=True).start()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or, with ``once``, until the queue is empty)."""
        lock = acquire_lock(self.state_dir)
        try:
            return self._run()
        finally:
            os.close(lock)

    def _run(self) -> int:
        self._signals()
        try:
            return self._serve()
        finally:
            self._restore_signals()

    def _context(self, slot: Slot) -> JobContext:
        """The slot's view of the daemon for one job: its runner, GPU, connection and config (as now, after reloads)."""
        queue = self._slot_queues.get(slot.id)
        if queue is None:
            assert self.executor is not None and self.store_path is not None
            queue = SlotQueue(Store(self.store_path), self.executor)
            self._slot_queues[slot.id] = queue
        # With several slots, say where: two jobs' lines interleave.
        multi = self.executor is not None and len(self.executor.slots()) > 1
        tag = f"[{slot.id}] " if multi else ""

        def say(text: str) -> None:
            self.say(tag + text)

        def event(kind: str, text: str, **data: Any) -> None:
            self.event(kind, tag + text, slot=slot.id, **data)

        return JobContext(config=slot_config(self.cfg, slot), store=queue.store, queue=queue, runner=slot.runner,
                          slot_id=slot.id, has_gpu=slot.has_gpu, gpu_index=slot.nvml_index,
                          stop_requested=lambda: self.stop_requested.is_set() or slot.cancel.is_set(),
                          daemon_stopping=self.stop_requested.is_set, say=say, event=event,
                          recent_profiles=slot.extra.setdefault("recent_profiles", {}))

    def _run_job(self, job: Job, slot: Slot) -> None:
        """The executor's job function: ``run_job`` on the slot's own thread and connection."""
        from profd.service.jobs import run_job

        run_job(self._context(slot), job)

    def _serve(self) -> int:
        from profd.service import executors

        store = Store()
        self.store_path = store.path
        queue = JobQueue(store)
        for job in queue.recover():
            self.say(f"re-queued job {job.id} ({Path(job.path).name}): it was running when profd stopped")
        has_gpu, gpu_line = gpu_summary()
        self.has_gpu = has_gpu
        self.state.gpu = gpu_line
        self.say(f"profd {'daemon' if self.service else 'watch'}: {gpu_line}")
        try:
            self.executor = executors.create(self.cfg, self._run_job, should_abort=self.stop_requested.is_set)
            self.executor.start()
        except executors.ExecutorError as e:
            self.say(f"error: cannot start the {self.cfg.executor.get('kind', 'local')} executor: {e}")
            self.executor = None
            store.close()
            return 2
        self.state.executor = self.executor.name
        slots = self.executor.slots()
        self.say(f"executor {self.executor.name}: {len(slots)} slot(s): "
                 + ", ".join(f"{s.id} ({s.device})" for s in slots))
        try:
            try:
                self._start_watcher(store)
            except FileNotFoundError as e:
                self.say(f"error: {e}")
                return 2
            if self.watcher is not None:
                self.say(f"watching {', '.join(self.cfg.watch.dirs)} ({self.watcher.mode}"
                         f"{'; ' + self.watcher.fallback_reason if self.watcher.fallback_reason else ''})")
            self.write_state()
            sd_notify(f"READY=1\nSTATUS=watching {len(self.cfg.watch.dirs)} dir(s); {gpu_line}; "
                      f"{len(slots)} slot(s)\nMAINPID={os.getpid()}")
            self._keepalive()
            code = self._loop(queue)
        finally:
            sd_notify("STOPPING=1")
            if self.watcher is not None:
                self.watcher.stop()
            # Abandons what still runs: each job function requeues its job before its slot ends.
            self.executor.stop()
            for h in self.executor.poll():
                self.state.jobs_done += 1
            for q in self._slot_queues.values():
                q.store.close()
            self._slot_queues.clear()
            self.state.watcher = "stopped"
            self.write_state()
            store.close()
        self.say("profd stopped")
        return code

    def _retry_outbox(self) -> None:
        """Resend kept mail whose backoff has passed, on a thread: a dead SMTP server costs a
        timeout, which must not stall the loop (nor the watchdog's keep-alives)."""
        if not self.cfg.mail or (self._outbox_thread is not None and self._outbox_thread.is_alive()):
            return
        from profd.report.mail import outbox_due

        try:
            due = outbox_due()
        except OSError:
            return
        if not due:
            return

        def work() -> None:
            from profd.flow.nightly import retry_mail

            try:
                line = retry_mail(self.cfg, due_only=True)
            except Exception as e:  # never let mail trouble reach the daemon
                line = f"outbox retry failed inside profd: {type(e).__name__}: {e}"
            if line:
                self.say(line)

        self._outbox_thread = threading.Thread(target=work, name="profd-outbox", daemon=True)
        self._outbox_thread.start()

    def _loop(self, queue: JobQueue) -> int:
        """Hand queued jobs to free slots until stopped (or, with ``once``, until all is done)."""
        ex = self.executor
        assert ex is not None
        last_state = last_outbox = 0.0
        notes_seen: set[tuple[str, str]] = set()
        while not self.stop_requested.is_set():
            self.last_loop = time.monotonic()
            if self.reload_requested.is_set():
                self._reload(queue.store)
            if time.monotonic() - last_outbox > 1.0:
                last_outbox = time.monotonic()
                self._retry_outbox()
            changed = False
            for slot in ex.free_slots():
                # claim() is one transaction: the job is this slot's, recorded in jobs.worker (the slot id).
                job = queue.claim(slot=slot.id)
                if job is None:
                    break
                ex.submit(job, slot)
                changed = True
            for h in ex.poll():
                self.state.jobs_done += 1
                changed = True
                if h.error:  # run_job never raises; this is the slot machinery's own trouble
                    self.say(f"job {h.job.id} on {h.slot.id} ended abnormally: {h.error}")
                    now = queue.get(h.job.id)
                    if now is not None and now.state == JobState.RUNNING:
                        queue.requeue(h.job, f"its slot failed: {h.error}")
            for s in ex.slots():
                if s.note and (s.id, s.note) not in notes_seen:
                    notes_seen.add((s.id, s.note))
                    self.say(f"{s.id}: {s.note}")
            if not ex.usable():
                self.say("error: every slot is down; queued jobs stay queued for the next start")
                return 3
            if self.once and not ex.busy() and not queue.pending():
                break
            if changed or time.time() - last_state > 1.0:
                self.write_state()
                last_state = time.time()
            self.stop_requested.wait(0.1)
        return 0
