"""profd's configuration: TOML file, then ``PROFD_*`` environment overrides.

Secrets are never read from the file: the LLM key and the mail password come
from environment variables (or a 0600 password file) whose *names* the file may
give. Example::

    [watch]
    dirs = ["~/kernels"]
    patterns = ["*.py"]
    debounce_ms = 400
    rescan_s = 30
    polling = false          # true for network file systems

    [run]
    timeout_s = 120
    counters = true          # collect ncu/rocprof counters after the verdict
    full_set = false
    auto_tune_budget = 0     # candidates tried automatically per save (0: off)
    tune_budget = 24
    warm_worker = true
    warm_idle_s = 0          # >0: free the warm worker (~0.5 GB) after that long idle

    [nightly]
    at = "02:00"
    budget = 48

    [llm]                    # optional; without it the deterministic advisor still works
    base_url = "http://127.0.0.1:8000/v1"
    model = "qwen2.5-coder"
    api_key_env = "PROFD_LLM_API_KEY"

    [mail]                   # optional
    host = "smtp.example.com"
    to = ["team@example.com"]
    password_env = "PROFD_SMTP_PASSWORD"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from profd.paths import config_path

_SECRET_KEYS = {"api_key", "password", "token", "secret"}


class ConfigError(Exception):
    """The config file is unreadable or wrong; the message says how to fix it."""


@dataclass
class WatchConfig:
    dirs: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=lambda: ["*.py"])
    ignore: list[str] = field(default_factory=list)
    debounce_ms: int = 400
    rescan_s: float = 30.0
    polling: bool = False


@dataclass
class RunConfig:
    timeout_s: float = 120.0
    counters: bool = True
    full_set: bool = False
    auto_tune_budget: int = 0
    tune_budget: int = 24
    warm_worker: bool = True
    warm_idle_s: float = 0.0  # release the warm worker's memory after this long idle (0: never)
    force_cpu: bool = False


@dataclass
class NightlyConfig:
    at: str = "02:00"
    budget: int = 48


@dataclass
class Config:
    """The whole configuration; ``llm`` and ``mail`` stay raw tables for their modules."""

    watch: WatchConfig = field(default_factory=WatchConfig)
    run: RunConfig = field(default_factory=RunConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    llm: dict[str, Any] = field(default_factory=dict)
    mail: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # where it was read from

    def to_dict(self) -> dict[str, Any]:
        from profd.model import to_jsonable

        return to_jsonable(self)


def _coerce(current: Any, raw: str) -> Any:
    """An environment string in the type of the field it overrides."""
    if isinstance(current, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, list):
        return [p for p in raw.split(os.pathsep) if p]
    return raw


def _apply(section: Any, table: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if not hasattr(section, key):
            raise ConfigError(f"{where}: unknown setting '{key}'. Known: {', '.join(vars(section))}.")
        setattr(section, key, value)


def load(path: Optional[Path] = None, env: Optional[dict[str, str]] = None) -> Config:
    """Read the config file (absent is fine: defaults) and apply ``PROFD_*`` overrides.

    Overrides are ``PROFD_<SECTION>_<KEY>``, e.g. ``PROFD_WATCH_DIRS=a:b``,
    ``PROFD_RUN_COUNTERS=0``, ``PROFD_LLM_BASE_URL=...``.
    """
    env = dict(os.environ if env is None else env)
    path = Path(path) if path else config_path()
    cfg = Config(source=str(path) if path.exists() else "defaults")
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e}). Fix the file or move it away to use the defaults.") from None
        for name in ("watch", "run", "nightly"):
            _apply(getattr(cfg, name), data.get(name, {}), f"{path} [{name}]")
        for name in ("llm", "mail", "executor"):
            table = dict(data.get(name, {}))
            leaked = sorted(k for k in table if k.lower() in _SECRET_KEYS)
            if leaked:
                raise ConfigError(
                    f"{path} [{name}] holds a secret ({', '.join(leaked)}). Secrets never go in the config file: "
                    f"remove it and put the value in an environment variable (name it with e.g. "
                    f"'{'api_key_env' if name == 'llm' else 'password_env'}'), or a 0600 file ('password_file').")
            setattr(cfg, name, table)
        unknown = set(data) - {"watch", "run", "nightly", "llm", "mail", "executor"}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}.")
    for key, raw in env.items():
        if not key.startswith("PROFD_"):
            continue
        parts = key[len("PROFD_"):].lower().split("_", 1)
        if len(parts) != 2:
            continue
        section, name = parts
        if section in ("watch", "run", "nightly"):
            obj = getattr(cfg, section)
            if hasattr(obj, name):
                try:
                    setattr(obj, name, _coerce(getattr(obj, name), raw))
                except ValueError:
                    raise ConfigError(f"{key}={raw!r}: expected a {type(getattr(obj, name)).__name__}.") from None
        elif section in ("llm", "mail", "executor") and (name in _SECRET_KEYS or name in ("key", "pass")):
            # A secret set as a PROFD_* override: the environment is to blame, not the config file.
            if key in ("PROFD_LLM_API_KEY", "PROFD_SMTP_PASSWORD"):
                continue  # the default secret variables themselves, read where they are used
            raise ConfigError(
                f"the environment variable {key} looks like a secret passed as a [{section}] setting, which profd "
                f"never reads that way (so it is ignored, and the value would go nowhere). Put the "
                f"{'key' if section == 'llm' else 'password'} in {'PROFD_LLM_API_KEY' if section == 'llm' else 'PROFD_SMTP_PASSWORD'}"
                f" (or the variable your config names with {'api_key_env' if section == 'llm' else 'password_env'}) "
                f"and unset {key}.")
        elif section in ("llm", "mail", "executor"):
            getattr(cfg, section)[name] = raw
    cfg.watch.dirs = [str(Path(d).expanduser()) for d in cfg.watch.dirs]
    return cfg
