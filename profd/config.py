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

    [executor]               # optional
    kind = "local"

The schema is typed: every section's settings are the fields of a dataclass
(``WatchConfig``, ``RunConfig``, ``NightlyConfig`` here; ``LLMConfig``,
``MailConfig``, ``ExecutorConfig`` beside the code that uses them), and the file
and the environment (``PROFD_<SECTION>_<KEY>``) are checked by the same rules
(``profd.model.parse_setting``): an unknown key or a value of the wrong type is
refused with one paragraph naming where it came from, the key, the expected type
and an example.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

from profd.model import SettingTypeError, example_value, parse_setting, setting_types
from profd.paths import config_path

_SECRET_KEYS = {"api_key", "key", "password", "token", "secret"}


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
    """The whole configuration; ``llm``, ``mail`` and ``executor`` are their modules' tables, type-checked here."""

    watch: WatchConfig = field(default_factory=WatchConfig)
    run: RunConfig = field(default_factory=RunConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    llm: dict[str, Any] = field(default_factory=dict)
    mail: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)
    advisor_tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # other advisors' tables, by section
    source: str = ""  # where it was read from

    def to_dict(self) -> dict[str, Any]:
        from profd.model import to_jsonable

        return to_jsonable(self)


# --------------------------------------------------------------------------- the schema

_TYPED = ("watch", "run", "nightly")  # sections held as dataclasses on Config
_TABLES = ("llm", "mail", "executor")  # sections held as checked dicts for their modules
SECTIONS = _TYPED + _TABLES

#: Examples where the default says too little (an empty list).
_EXAMPLES = {("watch", "dirs"): ["~/kernels"], ("watch", "ignore"): ["*_old.py"], ("mail", "to"): ["you@example.com"],
             ("mail", "host"): "smtp.example.com", ("mail", "from_addr"): "profd@example.com",
             ("mail", "port"): 587, ("executor", "gpus"): [0, 1]}

#: Range rules, checked after types: (test, what it must be).
_RANGES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("watch", "debounce_ms"): (lambda v: v >= 0, ">= 0"),
    ("watch", "rescan_s"): (lambda v: v > 0, "> 0"),
    ("watch", "patterns"): (lambda v: bool(v), "at least one glob pattern"),
    ("run", "timeout_s"): (lambda v: v > 0, "> 0 (seconds)"),
    ("run", "auto_tune_budget"): (lambda v: v >= 0, ">= 0"),
    ("run", "tune_budget"): (lambda v: v >= 1, ">= 1"),
    ("run", "warm_idle_s"): (lambda v: v >= 0, ">= 0 (0: never)"),
    ("nightly", "at"): (lambda v: re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v) is not None, "a time HH:MM"),
    ("nightly", "budget"): (lambda v: v >= 0, ">= 0"),
}


def _schema_class(section: str) -> type:
    """The dataclass whose fields are ``section``'s settings (imported only when the section is used)."""
    if section in _TYPED:
        return {"watch": WatchConfig, "run": RunConfig, "nightly": NightlyConfig}[section]
    if section == "llm":
        from advisors.rewriters.llm.config import LLMConfig

        return LLMConfig
    if section == "mail":
        from profd.report.mail import MailConfig

        return MailConfig
    from profd.service.executors import ExecutorConfig

    return ExecutorConfig


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _env_text(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


class _Origin:
    """Where a value came from, for the one paragraph an error is."""

    def __init__(self, path: Optional[Path], env_var: str = "") -> None:
        self.path, self.env_var = path, env_var

    def name(self, section: str, key: str) -> str:
        return f"environment variable {self.env_var}" if self.env_var else f"{self.path} [{section}] {key}"

    def shown(self, section: str, key: str, raw: Any) -> str:
        return f"{self.env_var}={raw!r}" if self.env_var else f"{self.path} [{section}] {key} = {_toml(raw)}"

    def example(self, key: str, value: Any) -> str:
        return f"{self.env_var}={_env_text(value)}" if self.env_var else f"{key} = {_toml(value)}"

    def fix(self) -> str:
        return (f"Fix or unset {self.env_var}." if self.env_var
                else "Fix the line in the file, or delete it to use the default.")


def _unknown(section: str, key: str, known: list[str], origin: _Origin) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    where = f"environment variable {origin.env_var}" if origin.env_var else f"{origin.path} [{section}]"
    return ConfigError(f"{where}: unknown setting '{key}'.{hint} Known [{section}] settings: {', '.join(known)}. "
                       + ("Rename or unset the variable." if origin.env_var else "Rename or remove it."))


def _secret(section: str, keys: list[str], origin: _Origin) -> ConfigError:
    where = f"environment variable {origin.env_var}" if origin.env_var else f"{origin.path} [{section}]"
    return ConfigError(
        f"{where} holds a secret ({', '.join(keys)}). Secrets never go in the config file: "
        f"remove it and put the value in an environment variable (name it with e.g. "
        f"'{'api_key_env' if section == 'llm' else 'password_env'}'), or a 0600 file ('password_file').")


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def check_setting(section: str, key: str, raw: Any, origin: _Origin) -> Any:
    """One setting checked against the schema: its value in the field's type, or a ConfigError."""
    cls = _schema_class(section)
    types = setting_types(cls)
    if key not in types:
        raise _unknown(section, key, sorted(types), origin)
    defaults = {f.name: _default(f) for f in fields(cls)}  # type: ignore[arg-type]
    example = _EXAMPLES.get((section, key), example_value(types[key], defaults.get(key)))
    try:
        value = parse_setting(types[key], raw, from_env=bool(origin.env_var))
    except SettingTypeError as e:
        raise ConfigError(f"{origin.shown(section, key, raw)}: expected {e.expected}, e.g. "
                          f"{origin.example(key, example)}. {origin.fix()}") from None
    rule = _RANGES.get((section, key))
    if rule is not None and not rule[0](value):
        raise ConfigError(f"{origin.shown(section, key, raw)}: must be {rule[1]}, e.g. "
                          f"{origin.example(key, example)}. {origin.fix()}")
    return value


def _set(cfg: Config, section: str, key: str, value: Any) -> None:
    if section in _TYPED:
        setattr(getattr(cfg, section), key, value)
    else:
        getattr(cfg, section)[key] = value


def _advisor_options(names: set[str]) -> dict[str, list[str]]:
    """The option names of advisors (advisors/rewriters/, each declaring its table) that read one of
    ``names``; imported only when the file has a section beyond profd's own, since discovering the
    advisors imports them (the LLM one imports openai)."""
    if not names:
        return {}
    from advisors.rewriters import all_advisors

    return {s.section: sorted(s.options) for s in all_advisors() if s.section in names and s.section not in SECTIONS}


def _apply_file(cfg: Config, data: dict[str, Any], path: Path) -> None:
    extra = _advisor_options(set(data) - set(SECTIONS))
    origin = _Origin(path)
    for section, known in extra.items():
        table = data[section]
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must be a table ([{section}] followed by key = value lines).")
        for key in table:
            if key not in known:
                raise _unknown(section, key, known, origin)
        cfg.advisor_tables[section] = dict(table)
    unknown = sorted(set(data) - set(SECTIONS) - set(extra))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(f'[{u}]' for u in unknown)}. Known sections: "
                          f"{', '.join(f'[{s}]' for s in SECTIONS)}. Rename or remove them.")
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must be a table ([{section}] followed by key = value lines), "
                              f"not {_toml(table)}.")
        leaked = sorted(k for k in table if k.lower() in _SECRET_KEYS)
        if leaked:
            raise _secret(section, leaked, origin)
        for key, raw in table.items():
            _set(cfg, section, key, check_setting(section, key, raw, origin))


def _apply_env(cfg: Config, env: dict[str, str]) -> None:
    # Variables that a setting names as a secret's source are not settings (PROFD_LLM_API_KEY is one).
    named = {str(v) for t in (cfg.llm, cfg.mail) for k, v in t.items() if k.endswith("_env")}
    named |= {"PROFD_LLM_API_KEY", "PROFD_SMTP_PASSWORD"}
    for var in sorted(env):
        if not var.startswith("PROFD_") or var in named:
            continue
        section, _, key = var[len("PROFD_"):].lower().partition("_")
        if section not in SECTIONS or not key:
            continue  # PROFD_STATE_DIR, PROFD_CONFIG, PROFD_SANDBOX, ...: not config settings
        if key in _SECRET_KEYS or key == "pass":
            if var in ("PROFD_LLM_API_KEY", "PROFD_SMTP_PASSWORD"):
                continue  # the default secret variables themselves, read where they are used
            # A secret set as a PROFD_* override: the environment is to blame, not the config file.
            raise ConfigError(
                f"the environment variable {var} looks like a secret passed as a [{section}] setting, which profd "
                f"never reads that way (so it is ignored, and the value would go nowhere). Put the "
                f"{'key' if section == 'llm' else 'password'} in "
                f"{'PROFD_LLM_API_KEY' if section == 'llm' else 'PROFD_SMTP_PASSWORD'} (or the variable your config "
                f"names with {'api_key_env' if section == 'llm' else 'password_env'}) and unset {var}.")
        _set(cfg, section, key, check_setting(section, key, env[var], _Origin(None, var)))


def load(path: Optional[Path] = None, env: Optional[dict[str, str]] = None) -> Config:
    """Read the config file (absent is fine: defaults) and apply ``PROFD_*`` overrides.

    Overrides are ``PROFD_<SECTION>_<KEY>``, e.g. ``PROFD_WATCH_DIRS=a:b``,
    ``PROFD_RUN_COUNTERS=0``, ``PROFD_LLM_BASE_URL=...``. Raises ``ConfigError`` (one
    paragraph: where, which key, the expected type, an example) for anything the schema refuses.
    """
    env = dict(os.environ if env is None else env)
    path = Path(path) if path else config_path()
    cfg = Config(source=str(path) if path.exists() else "defaults")
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e}). Fix the file or move it away to use the defaults.") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e}). Make it readable, or point "
                              "PROFD_CONFIG at another file.") from None
        _apply_file(cfg, data, path)
    _apply_env(cfg, env)
    cfg.watch.dirs = [str(Path(d).expanduser()) for d in cfg.watch.dirs]
    return cfg
