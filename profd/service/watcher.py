"""Watching kernel directories the way editors really save files.

vim writes in place or renames a backup, VS Code and atomic savers write a temp
file and move it over the target, JetBrains writes ``file.___jb_tmp___`` then
renames. So: react to close-after-write, to moves *onto* a watched file, to
creations and modifications; wait until a file has been quiet for the debounce
period; then hash its content and act only if it changed. Editor temp files and
profd's own state are ignored. A periodic rescan catches anything the observer
missed; when inotify runs out of watches/instances, or on network file systems
(config), a polling observer is used instead.

Event handlers only record "this path was touched": they can never raise into
watchdog's thread, so the observer cannot die of a bad event.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("profd.service.watcher")

#: Names editors use for swap, backup and temp files (never kernels).
_TEMP_SUFFIXES = (".swp", ".swo", ".swx", ".swpx", "~", ".tmp", ".temp", ".bak", ".orig", ".rej", ".part",
                  ".crdownload", "___jb_tmp___", "___jb_old___", ".kate-swp", ".pyc")
_TEMP_NAMES = {"4913"}  # vim's write-permission probe file


def is_editor_temp(name: str) -> bool:
    """Swap/backup/temp files of vim, emacs, JetBrains, VS Code, kate, gedit, ..."""
    return (name.startswith(".") or name.startswith("#") or name in _TEMP_NAMES
            or name.endswith(_TEMP_SUFFIXES) or ".goutputstream" in name or name.endswith(".profd-candidate.py"))


def file_digest(path: Path) -> Optional[str]:
    """SHA-256 of a file's bytes, or None when it vanished or cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class _Handler(FileSystemEventHandler):
    def __init__(self, touch: Callable[[str], None]) -> None:
        self.touch = touch

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory or event.event_type in ("opened", "closed_no_write", "deleted"):
                return
            # A move onto a watched file is how atomic savers (and vim's backup mode) save.
            path = getattr(event, "dest_path", "") or event.src_path
            if event.event_type == "moved" and not getattr(event, "dest_path", ""):
                return
            self.touch(os.fsdecode(path))
        except Exception:  # never let one event kill the observer thread
            log.exception("watch handler failed on %r", event)


class Watcher:
    """Debounced, hash-checked change detection over a set of directories."""

    def __init__(self, dirs: Iterable[str | Path], on_change: Callable[[Path, str], None], *,
                 patterns: Iterable[str] = ("*.py",), ignore: Iterable[str] = (), debounce_s: float = 0.4,
                 rescan_s: float = 30.0, polling: bool = False, exclude: Iterable[str | Path] = (),
                 known_digest: Callable[[Path], Optional[str]] = lambda p: None) -> None:
        self.dirs = [Path(d).expanduser().resolve() for d in dirs]
        self.on_change = on_change
        self.patterns = list(patterns)
        self.ignore = list(ignore)
        self.debounce_s = debounce_s
        self.rescan_s = rescan_s
        self.want_polling = polling
        self.exclude = [Path(e).resolve() for e in exclude]
        self.known_digest = known_digest
        self.mode = "stopped"
        self.fallback_reason = ""
        self._digests: dict[Path, str] = {}
        self._deadlines: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: Optional[Observer] = None  # type: ignore[valid-type]
        self._thread: Optional[threading.Thread] = None
        self.events_seen = 0
        self.last_tick = time.monotonic()

    # ------------------------------------------------------------------ filters

    def wanted(self, path: Path) -> bool:
        """Is this a kernel file we watch (not a temp file, not profd's own state)?"""
        name = path.name
        if is_editor_temp(name) or "__pycache__" in path.parts:
            return False
        if not any(fnmatch.fnmatch(name, p) for p in self.patterns):
            return False
        if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(str(path), p) for p in self.ignore):
            return False
        for ex in self.exclude:
            if path == ex or ex in path.parents:
                return False
        return any(d == path.parent or d in path.parents for d in self.dirs)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start observing (inotify, or polling as configured or as a fallback) and the debouncer."""
        for d in self.dirs:
            if not d.is_dir():
                raise FileNotFoundError(f"watched directory {d} does not exist; create it or fix [watch] dirs")
        self._observer = self._start_observer()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="profd-debounce", daemon=True)
        self._thread.start()

    def _start_observer(self) -> Observer:  # type: ignore[valid-type]
        if not self.want_polling:
            obs = None
            try:
                obs = Observer()  # watchdog opens its inotify instance here: EMFILE at the limit
                for d in self.dirs:
                    obs.schedule(_Handler(self.touch), str(d), recursive=True)
                obs.start()
                self.mode = "inotify"
                return obs
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                    raise
                self.fallback_reason = (
                    f"inotify limit reached ({os.strerror(e.errno or 0)}); polling instead. Raise "
                    "fs.inotify.max_user_watches / max_user_instances (sysctl) to get instant events back.")
                log.warning(self.fallback_reason)
                try:
                    if obs is not None:
                        obs.stop()
                except Exception:
                    pass
        obs = PollingObserver(timeout=1.0)
        for d in self.dirs:
            obs.schedule(_Handler(self.touch), str(d), recursive=True)
        obs.start()
        self.mode = "polling"
        return obs

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.mode = "stopped"

    def healthy(self) -> bool:
        """The observer and the debouncer are both alive and ticking."""
        return (self._observer is not None and self._observer.is_alive() and self._thread is not None
                and self._thread.is_alive() and time.monotonic() - self.last_tick < 10.0)

    # ------------------------------------------------------------------ events

    def touch(self, raw: str) -> None:
        """Record a touched path: (re)start its quiet period."""
        path = Path(raw)
        if not self.wanted(path):
            return
        self.events_seen += 1
        with self._lock:
            self._deadlines[path] = time.monotonic() + self.debounce_s

    def _loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_s
        while not self._stop.wait(0.05):
            self.last_tick = time.monotonic()
            now = time.monotonic()
            with self._lock:
                due = [p for p, t in self._deadlines.items() if t <= now]
                for p in due:
                    del self._deadlines[p]
            for p in due:
                self._settle(p)
            if self.rescan_s and now >= next_rescan:
                next_rescan = now + self.rescan_s
                self.rescan()

    def _settle(self, path: Path) -> None:
        try:
            digest = file_digest(path)
            if digest is None:  # deleted or renamed away since: nothing to run
                return
            last = self._digests.get(path)
            if last is None:
                last = self.known_digest(path)
            if digest == last:
                return
            try:
                self.on_change(path, digest)
            except Exception as e:
                # Not recorded as seen: the next event or rescan retries it (a full disk must not lose a save).
                log.warning("could not queue %s (%s: %s); retrying on its next change or the next rescan",
                            path.name, type(e).__name__, e)
                return
            self._digests[path] = digest
        except Exception:
            log.exception("handling a change of %s failed", path)

    def rescan(self) -> list[Path]:
        """Walk the watched trees and settle every file whose content changed unseen."""
        found = []
        for d in self.dirs:
            for root, dirnames, files in os.walk(d):
                dirnames[:] = [n for n in dirnames if not n.startswith(".") and n != "__pycache__"]
                for f in files:
                    p = Path(root) / f
                    if self.wanted(p):
                        found.append(p)
                        with self._lock:
                            pending = p in self._deadlines
                        if not pending:
                            self._settle(p)
        return found
