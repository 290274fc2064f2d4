"""The LLM advisor's transport: one chat-completion call to an OpenAI-compatible endpoint.

Transport trouble (server down, timeouts, 5xx, 429) becomes :class:`CallFailed` with a
message that says what to do; it never raises anything else. Waits are bounded: at most
``max_retries`` retries per call, each wait at most ``max_retry_wait_s`` (a longer
``Retry-After`` is not honoured: profd gives up on that call instead), each try at most
``timeout_s`` including reading the body, and the body at most ``max_response_bytes``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from advisors.rewriters.llm.config import FALLBACK_KEY_ENV, LLMConfig
from advisors.rewriters.llm.prompt import CHARS_PER_TOKEN
from advisors.rewriters.llm.reply import sanitize_text

try:  # openai >= 3 ships its own httpx fork; older releases use httpx itself
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

import openai

log = logging.getLogger(__name__)

_NO_KEY = "no-key-set"  # local servers ignore the key; the client insists on one


@dataclass
class LLMCall:
    """One chat-completion call (retries included) and what came of it."""

    prompt: str
    response: str = ""
    finish_reason: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    usage_estimated: bool = False  # the server sent no usage: counted from characters
    latency_s: float = 0.0  # wall time of the call, waits between retries included
    attempts: int = 0
    cost_usd: float = 0.0
    response_bytes: int = 0  # bytes of the HTTP body actually read
    error: str = ""
    candidates: int = 0


class CallFailed(Exception):
    """A call that produced no usable reply; ``fatal`` stops the whole propose."""

    def __init__(self, message: str, fatal: bool = True) -> None:
        super().__init__(message)
        self.fatal = fatal


class _TooLarge(Exception):
    def __init__(self, read: int, announced: Optional[int] = None) -> None:
        super().__init__(read)
        self.read = read
        self.announced = announced


class _BodyTimeout(Exception):
    pass


# --------------------------------------------------------------------------- transport


class ChatClient:
    """Bounded chat-completion calls through the ``openai`` client.

    ``client`` may be a ready ``openai.OpenAI``; by default one is built from the config
    with the client's own retries off, because this class retries itself with bounded
    waits. ``redact`` scrubs what is recorded and logged (the advisor's secrets)."""

    def __init__(self, config: LLMConfig, client: Any = None, env: Optional[Mapping[str, str]] = None,
                 redact: Callable[[str], str] = lambda text: text) -> None:
        self.config = config
        self.key, self.key_source = config.resolve_api_key(env)
        if client is not None and hasattr(client, "with_options"):
            # A supplied client keeps its base URL and key, but its own retries would honour
            # Retry-After for up to two minutes per try: this class retries, with bounded waits.
            client = client.with_options(max_retries=0, timeout=config.timeout_s)
        self._client = client
        self.supplied_key: Optional[str] = getattr(client, "api_key", None)
        self.redact = redact

    @property
    def client(self) -> Any:
        """The openai client, built on first use."""
        if self._client is None:
            self._client = openai.OpenAI(base_url=self.config.base_url, api_key=self.key or _NO_KEY,
                                         timeout=self.config.timeout_s, max_retries=0)
        return self._client

    def complete(self, messages: list[dict[str, str]], call: LLMCall) -> tuple[str, str]:
        """Send one chat request with bounded retries; returns (content, finish_reason).

        ``call`` is filled in as it goes (attempts, latency, tokens, cost), also when it fails;
        :class:`CallFailed` says why there is no usable reply."""
        cfg = self.config
        t0 = time.monotonic()
        last = ""
        try:
            for attempt in range(cfg.max_retries + 1):
                call.attempts = attempt + 1
                wait: Optional[float] = None
                try:
                    data, nbytes = self._request(messages)
                    call.response_bytes = nbytes
                    break
                except _TooLarge as e:
                    call.response_bytes = e.read
                    size = f"announced {e.announced} bytes" if e.announced else f"more than {e.read} bytes"
                    raise CallFailed(
                        f"The LLM endpoint {cfg.base_url} sent a reply too large to use ({size}; the limit is "
                        f"max_response_bytes={cfg.max_response_bytes}). profd stopped reading and discarded it. "
                        f"A runaway generation is the usual cause: lower [llm] max_tokens, or raise "
                        f"max_response_bytes if such replies are expected.", fatal=False) from None
                except (openai.APITimeoutError, _BodyTimeout):
                    last = (f"The LLM endpoint {cfg.base_url} did not answer within timeout_s={cfg.timeout_s:g} s "
                            f"(tried {attempt + 1} time(s)). The server may be overloaded, still loading the "
                            f"model, or too slow for this prompt: raise [llm] timeout_s, lower max_tokens or "
                            f"max_prompt_tokens, or use a smaller model. profd went on without LLM candidates.")
                    wait = self._backoff(attempt)
                except openai.APIConnectionError as e:
                    last = (f"Could not reach the LLM endpoint {cfg.base_url} ({_cause(e)}; tried {attempt + 1} "
                            f"time(s)). Is the server running and listening there? Check [llm] base_url in the "
                            f"profd config (an OpenAI-compatible endpoint, usually ending in /v1; "
                            f"`curl {cfg.base_url.rstrip('/')}/models` should answer). profd went on without LLM "
                            f"candidates; the deterministic advisor still works.")
                    wait = self._backoff(attempt)
                except openai.APIStatusError as e:
                    code = e.status_code
                    detail = _server_message(e)
                    if code in (401, 403):
                        where = (f"it is set from {self.key_source}" if self.key else
                                 f"neither {cfg.api_key_env} nor {FALLBACK_KEY_ENV} is set")
                        raise CallFailed(
                            f"The LLM endpoint {cfg.base_url} rejected the credentials (HTTP {code}: {detail}). "
                            f"Put a valid API key in the environment variable {cfg.api_key_env} of the profd "
                            f"process ({where}; [llm] api_key_env names the variable, {FALLBACK_KEY_ENV} is "
                            f"also read). The key never goes in the config file.") from None
                    if code == 404:
                        raise CallFailed(
                            f"The LLM endpoint {cfg.base_url} answered 404 ({detail}). Check [llm] model="
                            f"'{cfg.model}' against what the server serves (GET {cfg.base_url.rstrip('/')}/models) "
                            f"and that base_url includes the API prefix (usually /v1).") from None
                    if code == 429:
                        ra = _retry_after(e)
                        if ra is not None and ra > cfg.max_retry_wait_s:
                            raise CallFailed(
                                f"The LLM endpoint {cfg.base_url} is rate-limiting (HTTP 429) and asked to wait "
                                f"{ra:g} s (Retry-After), more than [llm] max_retry_wait_s={cfg.max_retry_wait_s:g} "
                                f"s, so profd did not wait. Try later, lower the tune budget, or raise "
                                f"max_retry_wait_s.") from None
                        last = (f"The LLM endpoint {cfg.base_url} is rate-limiting (HTTP 429: {detail}) and still "
                                f"was after {attempt + 1} tries. Try later, lower the tune budget, or check the "
                                f"account's rate limits.")
                        wait = ra if ra is not None else self._backoff(attempt)
                    elif code >= 500 or code in (408, 409):
                        last = (f"The LLM endpoint {cfg.base_url} failed with HTTP {code} ({detail}) "
                                f"{attempt + 1} time(s). Check the server's log; profd went on without LLM "
                                f"candidates.")
                        wait = _retry_after(e)
                        if wait is None or wait > cfg.max_retry_wait_s:
                            wait = self._backoff(attempt)
                    else:
                        raise CallFailed(
                            f"The LLM endpoint {cfg.base_url} refused the request (HTTP {code}: {detail}). If it "
                            f"mentions the context length, lower [llm] max_prompt_tokens or max_tokens; otherwise "
                            f"check [llm] model and the server's documentation.") from None
                except openai.OpenAIError as e:
                    raise CallFailed(f"The openai client could not talk to {cfg.base_url}: {type(e).__name__}: "
                                     f"{str(e)[:300]}. Check the [llm] settings.") from None
                if attempt >= cfg.max_retries:
                    raise CallFailed(last)
                log.info("LLM call failed, retrying in %.1f s: %s", wait, self.redact(last.split(". ")[0]))
                time.sleep(min(wait, cfg.max_retry_wait_s))
        finally:
            call.latency_s = time.monotonic() - t0

        content, finish, usage = read_completion(data)
        call.response = self.redact(content)
        call.finish_reason = finish
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(tin, int) and isinstance(tout, int):
            call.tokens_in, call.tokens_out = tin, tout
        else:  # some servers omit usage: estimate rather than report a free call
            call.usage_estimated = True
            call.tokens_in = int(len(call.prompt) / CHARS_PER_TOKEN)
            call.tokens_out = int(len(content) / CHARS_PER_TOKEN)
        call.cost_usd = cfg.cost_usd(call.tokens_in, call.tokens_out)
        if not content.strip():
            raise CallFailed(f"The LLM endpoint {cfg.base_url} sent an empty reply (finish_reason="
                             f"{finish or 'unknown'}).", fatal=False)
        return content, finish

    def _request(self, messages: list[dict[str, str]]) -> tuple[Any, int]:
        """One HTTP try; reads the body in chunks so a huge or trickling reply is cut off."""
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout_s
        with self.client.chat.completions.with_streaming_response.create(
                model=cfg.model, messages=messages, temperature=cfg.temperature, max_tokens=cfg.max_tokens) as resp:
            announced = resp.headers.get("content-length")
            if announced and announced.isdigit() and int(announced) > cfg.max_response_bytes:
                raise _TooLarge(0, int(announced))
            buf = bytearray()
            try:
                for chunk in resp.iter_bytes():
                    buf += chunk
                    if len(buf) > cfg.max_response_bytes:
                        raise _TooLarge(len(buf))
                    if time.monotonic() > deadline:
                        raise _BodyTimeout()
            except _httpx.TimeoutException:
                raise _BodyTimeout() from None
            except _httpx.TransportError as e:
                raise CallFailed(f"The connection to the LLM endpoint {cfg.base_url} broke while reading the "
                                 f"reply ({type(e).__name__}). Check the server's log.", fatal=False) from None
        try:
            return json.loads(bytes(buf)), len(buf)
        except ValueError:
            excerpt = bytes(buf[:200]).decode("utf-8", "replace")
            raise CallFailed(f"The LLM endpoint {cfg.base_url} answered with something that is not JSON "
                             f"(starts with {excerpt!r}). Is base_url an OpenAI-compatible API (usually ending "
                             f"in /v1)?") from None

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, like the openai client, but capped by our own bound.
        return min(0.5 * 2.0 ** attempt, self.config.max_retry_wait_s) * (1 - 0.25 * random.random())


def _cause(e: BaseException) -> str:
    """The innermost cause of a connection error in a few words."""
    inner: Optional[BaseException] = e
    while inner is not None and inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner) if inner is not None and str(inner) else type(e).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text[:200]


def _server_message(e: Any) -> str:
    """The error message the server put in its body, shortened."""
    body = getattr(e, "body", None)
    msg = ""
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = str(err.get("message", "") if isinstance(err, dict) else err)
    msg = msg or str(getattr(e, "message", "") or "")
    msg = " ".join(msg.split())
    return (msg[:300] + "...") if len(msg) > 300 else (msg or "no message")


def _retry_after(e: Any) -> Optional[float]:
    """Seconds from retry-after-ms / Retry-After (a number or an HTTP date), when the server sent one."""
    headers = getattr(getattr(e, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            try:
                value = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                continue
        if value != value or value < 0:
            continue
        return value  # may be inf: then it is simply more than any cap
    return None


def read_completion(data: Any) -> tuple[str, str, dict[str, Any]]:
    """(content, finish_reason, usage) from a chat.completion body, tolerating server quirks."""
    if not isinstance(data, dict):
        raise CallFailed("The LLM endpoint's reply is not a chat.completion object.", fatal=False)
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        err = data.get("error")
        raise CallFailed(f"The LLM endpoint's reply has no choices{f' (error: {err})' if err else ''}.", fatal=False)
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return sanitize_text(str(content or "")), sanitize_text(str(choice.get("finish_reason") or "")), usage

