"""The result channel between a candidate child and profd: a pipe profd opened.

A candidate child never writes a result *file* that profd then trusts: it writes
frames into a pipe whose read end only the parent holds. Frames are ``kind`` (one
byte), ``length`` (8 bytes, big-endian) and the payload. Kinds: ``M`` a small JSON
marker (the parent stamps its own clock on arrival: that is how it times the timing
phase), ``O`` a ``torch.save`` blob of one call's outputs (stored by the parent in a
directory the child cannot write), ``R`` the final JSON report. Everything in a frame
is a *claim*: outputs are compared with the reference elsewhere, timings are checked
against the parent's clock. Sizes are capped; a child that floods the pipe is cut off.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

_HEAD = struct.Struct(">cQ")
#: Largest JSON frame (report or marker).
MAX_JSON = 4 << 20


def send(fd: int, kind: bytes, payload: Any) -> None:
    """Write one frame (blocking until the parent has read enough of it). ``payload``: bytes or
    any buffer (a ``BytesIO.getbuffer()``): it is written as it is, not copied behind the header
    (a 256 MB output copied twice on its way out cost ~0.1 s per blob)."""
    view = memoryview(payload).cast("B")
    for part in (memoryview(_HEAD.pack(kind, view.nbytes)), view):
        while part:
            n = os.write(fd, part)
            part = part[n:]


def send_json(fd: int, kind: bytes, obj: Any) -> None:
    send(fd, kind, json.dumps(obj, default=str).encode())


def unread(fd: int) -> int:
    """Bytes written to the pipe (either end's descriptor) that the parent has not read yet."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def wait_drained(fd: int, timeout_s: float = 10.0) -> bool:
    """Wait until the parent has read everything sent so far (False after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while unread(fd) > 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


def send_marker(fd: int, obj: dict[str, Any], timeout_s: float = 10.0) -> None:
    """Send a clock marker and return only once the parent has stamped it.

    The parent stamps a marker when it reads the marker's header. A send returns when the bytes
    are in the pipe, and the parent may still be busy with the frame before (a 256 MB output):
    on an H200 the start marker of the timing phase was read after the phase, the bracket came
    to 0.04 ms around 4 ms of timed calls, and the user's original was refused as forged. So the
    sender waits for the pipe to drain before the marker (the parent is then waiting on the next
    header) and after it (the parent has read it, hence stamped it)."""
    wait_drained(fd, timeout_s)
    send_json(fd, b"M", obj)
    wait_drained(fd, timeout_s)


@dataclass
class Received:
    """What the parent read from one child."""

    markers: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    report: Optional[dict[str, Any]] = None
    overflow: str = ""
    garbage: str = ""
    nbytes: int = 0


#: The pipe's buffer, asked of the kernel once the read end is open (Linux' default is 64 KiB:
#: a 256 MB output crossed it in 4096 round trips between the two processes).
PIPE_BYTES = 1 << 20


def widen(fd: int) -> None:
    """Ask for a larger pipe buffer (Linux ``F_SETPIPE_SZ``); silently kept as is elsewhere or when
    refused (``/proc/sys/fs/pipe-max-size``)."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass


class Reader(threading.Thread):
    """Reads frames from the pipe's read end into ``dest`` (a parent-only directory)."""

    def __init__(self, fd: int, dest: Path, cap_bytes: int) -> None:
        super().__init__(daemon=True, name="profd-channel")
        self.fd, self.dest, self.cap = fd, dest, cap_bytes
        self.got = Received()

    def _read(self, n: int) -> Optional[bytes]:
        # Into one buffer of the frame's size: growing and copying a 256 MB blob held up the next
        # frame by tens of ms.
        buf = bytearray(n)
        view = memoryview(buf)
        f = io.FileIO(self.fd, "rb", closefd=False)
        got = 0
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                return None
            got += k
        return buf  # type: ignore[return-value]

    def _drain(self) -> None:
        while os.read(self.fd, 1 << 20):
            pass

    def run(self) -> None:
        widen(self.fd)
        # Blobs go to disk from a second thread: a 256 MB write here kept the next frame (the
        # timing phase's start marker) unread for tens of ms, and profd's clock bracket shrank
        # below the timings it was checking (the original refused as forged, H200).
        import queue

        pending: "queue.Queue[Optional[tuple[Path, bytes]]]" = queue.Queue()

        def write_out() -> None:
            while True:
                item = pending.get()
                if item is None:
                    return
                try:
                    item[0].write_bytes(item[1])
                except OSError as e:
                    self.got.garbage = self.got.garbage or f"storing an output failed: {e}"

        writer = threading.Thread(target=write_out, daemon=True, name="profd-channel-writer")
        writer.start()
        try:
            self._frames(pending)
        finally:
            pending.put(None)
            writer.join()

    def _frames(self, pending: Any) -> None:
        try:
            while True:
                head = self._read(_HEAD.size)
                if head is None:
                    return
                kind, n = _HEAD.unpack(head)
                now = time.monotonic()
                self.got.nbytes += n
                if self.got.nbytes > self.cap or (kind != b"O" and n > MAX_JSON):
                    self.got.overflow = (f"the candidate sent more than {self.cap >> 20} MiB of outputs"
                                         if kind == b"O" else f"a {n}-byte report frame (limit {MAX_JSON})")
                    self._drain()
                    return
                payload = self._read(n)
                if payload is None:
                    return
                if kind == b"O":
                    p = self.dest / f"out-{len(self.got.outputs)}.pt"
                    pending.put((p, payload))
                    self.got.outputs.append(p)
                    continue
                try:
                    obj = json.loads(payload)
                except ValueError:
                    self.got.garbage = "a frame that is not JSON"
                    continue
                if kind == b"M" and isinstance(obj, dict):
                    self.got.markers.append((now, obj))
                elif kind == b"R" and isinstance(obj, dict):
                    if self.got.report is not None:
                        self.got.garbage = "two reports"
                    self.got.report = obj
                else:
                    self.got.garbage = f"an unknown frame kind {kind!r}"
        except OSError as e:
            self.got.garbage = f"reading the channel failed: {e}"
        finally:
            try:
                os.close(self.fd)
            except OSError:
                pass


class FifoReader(Reader):
    """A Reader on a FIFO (the warm worker's forks): opens it, blocking until the child does.

    ``release()`` unblocks a reader whose child died before opening its end."""

    def __init__(self, path: Path, dest: Path, cap_bytes: int) -> None:
        super().__init__(-1, dest, cap_bytes)
        self.path = Path(path)

    def run(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            super().run()
        finally:
            try:
                os.close(self.fd)
            except OSError:
                pass

    def release(self) -> None:
        """Open and close the write end once (no-op when the child already did): the reader sees EOF."""
        deadline = time.monotonic() + 2.0
        while self.is_alive() and self.fd < 0 and time.monotonic() < deadline:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:  # ENXIO: the reader thread has not opened its end yet
                time.sleep(0.01)
