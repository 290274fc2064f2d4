"""The ``[llm]`` config table of the LLM advisor, checked by profd's one settings schema.

Kept apart from the advisor (``advisors/rewriters/llm/advisor.py``) so that reading the config
does not import the ``openai`` client. The field types are the schema: ``profd.config``
checks the file and ``PROFD_LLM_*`` against them, and :meth:`LLMConfig.from_mapping`
applies the same rules (``profd.model.parse_setting``) to a table given directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from profd.model import SettingTypeError, parse_setting, setting_types

#: Environment variables searched for the key, after ``LLMConfig.api_key_env``.
FALLBACK_KEY_ENV = "OPENAI_API_KEY"
_SECRET_KEYS = {"api_key", "key", "password", "token", "secret"}


class LLMConfigError(ValueError):
    """The ``[llm]`` table is wrong; the message says which key and how to fix it."""


@dataclass
class LLMConfig:
    """Settings of the ``[llm]`` config table (the key itself is never part of it)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "qwen2.5-coder"
    api_key_env: str = "PROFD_LLM_API_KEY"
    timeout_s: float = 120.0  # per try, connect + waiting + reading the whole body
    max_retries: int = 2  # retries per call on connection errors, timeouts, 408/409/429/5xx
    max_retry_wait_s: float = 10.0  # longest single wait between tries (Retry-After included)
    temperature: float = 0.2
    max_tokens: int = 4096
    price_in_per_mtok: float = 0.0  # USD per million prompt tokens, for the cost estimate
    price_out_per_mtok: float = 0.0
    candidates_per_call: int = 1
    max_prompt_tokens: int = 12000  # budget for the prompt we send (estimated from characters)
    max_response_bytes: int = 2_000_000  # a reply body larger than this is discarded unread
    enabled: bool = True

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> "LLMConfig":
        """Build from the TOML ``[llm]`` table; strings (env overrides) are parsed by the settings rules.

        Raises :class:`LLMConfigError` for secrets in the table, unknown keys and
        out-of-range values.
        """
        known = {f.name: f for f in fields(cls)}
        leaked = sorted(k for k in table if k.lower() in _SECRET_KEYS)
        if leaked:
            raise LLMConfigError(
                f"[llm] holds a secret ({', '.join(leaked)}). The key never goes in the config file: "
                f"put it in an environment variable and name that variable with api_key_env "
                f"(default PROFD_LLM_API_KEY).")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise LLMConfigError(f"[llm]: unknown setting(s) {', '.join(unknown)}. Known: {', '.join(known)}.")
        types = setting_types(cls)
        kwargs: dict[str, Any] = {}
        for key, raw in table.items():
            try:  # strings are accepted as the environment gives them
                kwargs[key] = parse_setting(types[key], raw, from_env=isinstance(raw, str))
            except SettingTypeError as e:
                raise LLMConfigError(f"[llm] {key} = {raw!r}: expected {e.expected}, e.g. "
                                     f"{key} = {getattr(cls(), key)!r}.") from None
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`LLMConfigError` for values the advisor cannot work with."""
        problems = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append(f"base_url={self.base_url!r} must start with http:// or https://")
        if not self.model:
            problems.append("model must name the served model")
        if self.timeout_s <= 0:
            problems.append("timeout_s must be > 0")
        if self.max_retries < 0:
            problems.append("max_retries must be >= 0")
        if self.max_retry_wait_s < 0:
            problems.append("max_retry_wait_s must be >= 0")
        if self.max_tokens < 1 or self.max_prompt_tokens < 1 or self.max_response_bytes < 1024:
            problems.append("max_tokens and max_prompt_tokens must be >= 1, max_response_bytes >= 1024")
        if self.candidates_per_call < 1:
            problems.append("candidates_per_call must be >= 1")
        if self.price_in_per_mtok < 0 or self.price_out_per_mtok < 0:
            problems.append("prices must be >= 0")
        if problems:
            raise LLMConfigError("[llm]: " + "; ".join(problems) + ".")

    def resolve_api_key(self, env: Optional[Mapping[str, str]] = None) -> tuple[Optional[str], str]:
        """(key or None, name of the variable it came from or "")."""
        env = os.environ if env is None else env
        for name in (self.api_key_env, FALLBACK_KEY_ENV):
            if name and env.get(name):
                return env[name], name
        return None, ""

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        """Estimated price of one call."""
        return (tokens_in * self.price_in_per_mtok + tokens_out * self.price_out_per_mtok) / 1e6
