"""Where profd keeps its state, config and artifacts (XDG, overridable)."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def state_dir() -> Path:
    """The state directory (SQLite store, artifacts), created user-only (0700).

    ``PROFD_STATE_DIR`` overrides ``$XDG_STATE_HOME/profd``.
    """
    override = os.environ.get("PROFD_STATE_DIR")
    path = Path(override) if override else _xdg("XDG_STATE_HOME", ".local/state") / "profd"
    return ensure_private_dir(path)


def config_path() -> Path:
    """The TOML config file: ``PROFD_CONFIG`` or ``$XDG_CONFIG_HOME/profd/config.toml``."""
    override = os.environ.get("PROFD_CONFIG")
    return Path(override) if override else _xdg("XDG_CONFIG_HOME", ".config") / "profd" / "config.toml"


def artifacts_dir(*parts: str) -> Path:
    """A user-only subdirectory of the state dir for reports, captures and candidates."""
    return ensure_private_dir(state_dir().joinpath("artifacts", *parts))


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a state file user-only (0600) and whole: temp file + rename, so a reader
    (``profd status``, ``profd report``) never sees half of it. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def ensure_private_dir(path: Path) -> Path:
    """mkdir -p with mode 0700: state can hold sources and reports of private code."""
    # Path.mkdir(parents=True) gives the parents it creates the umask's mode (0755), not 0700:
    # create each missing level ourselves (existing ones are left as they are).
    for level in reversed([path, *path.parents]):
        if not level.exists():
            level.mkdir(exist_ok=True, mode=0o700)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError:
        pass
    return path
