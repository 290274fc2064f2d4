"""What running under systemd takes: sd_notify, journald-prefixed logging, one daemon per state dir."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any


def sd_notify(message: str) -> bool:
    """Send a datagram to systemd's notify socket (no-op outside systemd)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


class JournalFormatter(logging.Formatter):
    """``<N>message``: journald reads the syslog priority from the prefix."""

    LEVELS = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        prio = self.LEVELS.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal() -> bool:
    """Is stderr connected to journald? systemd says so in ``JOURNAL_STREAM`` (device:inode of that stream)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(service: bool, verbose: bool = False) -> None:
    """Log lines on stderr: journald's ``<N>`` priority prefixes when stderr is the journal, else plain.

    ``service`` (``profd daemon``) alone does not add prefixes: run by hand on a terminal it
    would print ``<6>`` before every line."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class AlreadyRunning(Exception):
    pass


def acquire_lock(directory: Path) -> Any:
    """One daemon per state directory: an exclusive flock held for the process's life."""
    path = directory / "daemon.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            other = os.read(fd, 64).decode().strip()
        finally:
            os.close(fd)
        raise AlreadyRunning(
            f"another profd daemon (pid {other or '?'}) already uses the state directory {directory}. Stop it "
            "(systemctl --user stop profd, or kill that pid), or give this one its own PROFD_STATE_DIR.") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
