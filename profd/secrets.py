"""Every secret profd knows, and one ``redact`` for everything it stores, logs, mails or sends.

Secrets are registered by value when profd reads them (the LLM key, whatever variable
held it; the mail password), and any environment variable whose *name* looks like a
secret is registered too, so that a value copied under an innocent name is still
recognised. ``redact`` replaces every known value (and bearer tokens) in a text;
``scrub_env`` builds a child's environment with no variable whose name looks secret or
whose value equals a known secret; ``forget_env`` takes a secret out of this process's
own environment once read, so that a process that forks candidates holds none.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Iterable, Mapping, Optional

#: Environment variable names that hold secrets (checked case-insensitively).
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION)", re.I)
#: What a redacted secret becomes.
MASK = "[redacted]"
#: Values shorter than this are not treated as secrets (they would redact ordinary words).
MIN_LEN = 6

_lock = threading.Lock()
_values: set[str] = set()
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")


def register(*values: Optional[str]) -> None:
    """Remember secret values so that ``redact`` removes them everywhere from now on."""
    with _lock:
        for v in values:
            if isinstance(v, str) and len(v.strip()) >= MIN_LEN:
                _values.add(v)
                _values.add(v.strip())


def register_env(env: Optional[Mapping[str, str]] = None) -> None:
    """Register the values of every variable whose name looks like a secret."""
    env = os.environ if env is None else env
    register(*(v for k, v in env.items() if SECRET_NAME.search(k)))


def known() -> list[str]:
    """The registered secrets, longest first (so that a secret containing another is masked whole)."""
    with _lock:
        return sorted(_values, key=len, reverse=True)


def redact(text: Any) -> Any:
    """``text`` with every known secret and bearer token masked; non-strings pass through."""
    if not isinstance(text, str) or not text:
        return text
    for v in known():
        if v in text:
            text = text.replace(v, MASK)
    return _BEARER.sub(r"\1" + MASK, text)


def redact_tree(data: Any) -> Any:
    """``redact`` applied to every string in nested dicts/lists (JSON-like data)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redact_tree(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_tree(v) for v in data]
    return data


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without variables named like secrets or holding a known secret's value."""
    register_env(env)
    secrets = set(known())
    out = {}
    for k, v in env.items():
        if SECRET_NAME.search(k) or v in secrets or v.strip() in secrets:
            continue
        if any(s in v for s in secrets):  # a secret inside a longer value (URL with a token)
            continue
        out[k] = v
    return out


def forget_env(names: Iterable[str] = ()) -> None:
    """Register, then delete from ``os.environ``, the given variables and every variable
    whose name or value is a secret: forked children then cannot read them from
    ``/proc/<pid>/environ`` of this process (its initial environment block is wiped too)."""
    register_env()
    for n in names:
        register(os.environ.get(n))
    secrets = set(known())
    for k in list(os.environ):
        v = os.environ.get(k, "")
        if k in names or SECRET_NAME.search(k) or v in secrets:
            os.environ.pop(k, None)
    _wipe_initial_environ(secrets)


def _wipe_initial_environ(secrets: set[str]) -> None:
    """Overwrite secret values in the process's original environment block.

    ``os.environ.pop`` calls unsetenv, which drops the pointer but leaves the bytes where
    the kernel put them at exec; ``/proc/<pid>/environ`` reads exactly that region. So the
    bytes themselves are overwritten (best effort: Linux, same-process memory only).
    """
    if not secrets:
        return
    try:
        import ctypes

        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # Fields 50 and 51 of stat (1-based) are env_start and env_end; after ")" field 3 is index 0.
        start, end = int(fields[50 - 3]), int(fields[51 - 3])
        if not (0 < start < end) or end - start > (16 << 20):
            return
        buf = (ctypes.c_char * (end - start)).from_address(start)
        raw = bytes(buf)
        for s in secrets:
            b = s.encode()
            i = raw.find(b)
            while i >= 0:
                ctypes.memset(start + i, ord("x"), len(b))
                i = raw.find(b, i + len(b))
    except Exception:
        pass
