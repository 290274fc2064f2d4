"""The one error type every collector raises when a capture cannot be turned into counters.

A ``CaptureError`` message is a single paragraph meant for the person at the keyboard:
what went wrong, with which file or command, and what to do about it. Callers show it
as is (``profd explain``, ``profd doctor``, the per-save report), so it never carries a
Python traceback and never says only "no data".
"""

from __future__ import annotations

from typing import Optional


class CaptureError(Exception):
    """A profiler run or a profiler output file that yields no usable counters.

    ``kind`` lets callers branch without parsing the text: ``not_installed``,
    ``permission``, ``no_kernels``, ``malformed``, ``unsupported``, ``crash`` or
    ``timeout``. ``path`` is the file or report involved, when there is one.
    """

    def __init__(self, message: str, *, kind: str = "malformed", path: Optional[str] = None):
        super().__init__(" ".join(message.split()))  # one paragraph, whatever the source layout
        self.kind = kind
        self.path = path

    @property
    def message(self) -> str:
        return str(self)
