"""The LLM advisor: asks any OpenAI-compatible chat endpoint for targeted rewrites.

The advisor builds one prompt from what the tune loop knows (current best source,
report, findings with evidence and levers, device figures, earlier candidates and
their measured outcomes), sends it with the ``openai`` client, and turns the
fenced code blocks of the reply into :class:`~profd.model.Candidate` values.

It is deliberately distrustful of what comes back:

* only complete target files count (a snippet without ``def kernel`` is skipped);
* the source must parse;
* the trusted half of the file (``reference``, ``get_inputs``, shapes, tolerances,
  ``Model`` for KernelBench, and every module-level name those depend on) must be
  unchanged, so a candidate cannot make itself "correct" by editing the reference
  or "fast" by shrinking the problem (:func:`contract_violations`);
* duplicates of anything already measured are dropped.

Transport trouble (server down, timeouts, 5xx, 429) never raises into the daemon:
``propose`` returns ``[]`` and ``last_errors`` says what happened and what to do.
Waits are bounded: at most ``max_retries`` retries per call, each wait at most
``max_retry_wait_s`` (a longer ``Retry-After`` is not honoured: profd gives up on
that call instead), each try at most ``timeout_s`` including reading the body,
and the body at most ``max_response_bytes``.

The API key comes from the environment only (``api_key_env``, default
``PROFD_LLM_API_KEY``, then ``OPENAI_API_KEY``) and is scrubbed from every prompt,
response, error message and log line this module produces.
"""

from __future__ import annotations

import ast
import email.utils
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from advisors.base import TuneContext, source_digest, unified_diff
from advisors.contract import PROTECTED_ROOTS, contract_violations, entry_point  # noqa: F401 (re-exported)
from advisors.rewriters.llm_config import FALLBACK_KEY_ENV, LLMConfig, LLMConfigError  # noqa: F401 (re-exported)
from profd.model import Candidate

try:  # openai >= 3 ships its own httpx fork; older releases use httpx itself
    import httpx2 as _httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

import openai

log = logging.getLogger(__name__)

# Rough characters per token for budgeting; code tokenizes at ~3-4 chars/token.
_CHARS_PER_TOKEN = 3.5
_NO_KEY = "no-key-set"  # local servers ignore the key; the client insists on one


# --------------------------------------------------------------------------- records


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


class _CallFailed(Exception):
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


# --------------------------------------------------------------------------- advisor


class LLMAdvisor:
    """An :class:`advisors.base.Advisor` backed by an OpenAI-compatible chat endpoint.

    ``client`` may be a ready ``openai.OpenAI``; by default one is built from the
    config with the client's own retries off, because this class retries itself
    with bounded waits. After each ``propose``, ``last_errors`` lists why calls or
    candidates were dropped and ``last_calls`` the calls with their token counts.
    """

    def __init__(self, config: LLMConfig, client: Any = None, env: Optional[Mapping[str, str]] = None) -> None:
        self.config = config
        self.name = f"llm:{config.model}"
        self._key, self._key_source = config.resolve_api_key(env)
        if client is not None and hasattr(client, "with_options"):
            # A supplied client keeps its base URL and key, but its own retries would honour
            # Retry-After for up to two minutes per try: this class retries, with bounded waits.
            client = client.with_options(max_retries=0, timeout=config.timeout_s)
        self._client = client
        supplied_key = getattr(client, "api_key", None)
        self._secrets = [k for k in (self._key, supplied_key) if isinstance(k, str) and len(k) >= 4]
        # profd (the tune loop) registers these with its redactor and, since the process forks
        # candidates, takes the key's variable out of its environment once read. Advisors do not
        # import the daemon's modules: they declare, profd acts.
        self.secrets = list(self._secrets)
        self.secret_env = [self._key_source] if env is None and self._key_source else []
        self.redactor: Any = lambda text: text
        self.last_errors: list[str] = []
        self.last_calls: list[LLMCall] = []
        self.total_tokens_in = 0
        self.total_tokens_out = 0
        self.total_cost_usd = 0.0

    @property
    def client(self) -> Any:
        """The openai client, built on first use."""
        if self._client is None:
            self._client = openai.OpenAI(base_url=self.config.base_url, api_key=self._key or _NO_KEY,
                                         timeout=self.config.timeout_s, max_retries=0)
        return self._client

    # ------------------------------------------------------------------ propose

    def propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        """Up to ``n`` new, contract-respecting candidates; ``[]`` (never an exception) on failure."""
        self.last_errors = []
        self.last_calls = []
        if n <= 0:
            return []
        if not self.config.enabled:
            self._error("The LLM advisor is off ([llm] enabled = false): no LLM candidates.")
            return []
        try:
            return self._propose(ctx, n)
        except Exception as e:  # the daemon must survive anything this advisor does
            self._error(f"The LLM advisor failed unexpectedly ({type(e).__name__}: {e}). "
                        f"profd went on without LLM candidates; please report this with the daemon log.")
            return []

    def _propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        seen = set(ctx.tried_sources())
        out: list[Candidate] = []
        per_call = max(1, self.config.candidates_per_call)
        for call_no in range(math.ceil(n / per_call)):
            want = min(per_call, n - len(out))
            if want <= 0:
                break
            messages = [{**msg, "content": self._redact(msg["content"])}
                        for msg in build_messages(ctx, want, self.config, pending=out)]
            call = LLMCall(prompt=self._redact(render_messages(messages)))
            self.last_calls.append(call)
            try:
                content, finish = self._call(messages, call)
            except _CallFailed as e:
                call.error = self._error(str(e))
                if e.fatal:
                    break
                continue
            parsed, reasons = parse_reply(content, ctx.original_source, seen, want, finish_reason=finish)
            for r in reasons:
                self._error(f"call {call_no + 1}: {r}")
            call.candidates = len(parsed)
            share = max(1, len(parsed))  # split the call's cost so sums over candidates stay right
            for i, p in enumerate(parsed):
                first = i == 0  # the remainder of the split goes to the first, so sums are exact
                digest = source_digest(p.source)
                seen.add(digest)
                out.append(Candidate(
                    id=f"llm-{digest}",
                    source=p.source,
                    advisor=self.name,
                    rationale=p.rationale,
                    diff=unified_diff(ctx.original_source, p.source, path=os.path.basename(ctx.path) or "kernel.py"),
                    params={"model": self.config.model, "call": call_no + 1, "block": p.block,
                            "finish_reason": finish, "attempts": call.attempts,
                            "call_tokens_in": call.tokens_in, "call_tokens_out": call.tokens_out,
                            "usage_estimated": call.usage_estimated, "candidates_in_call": len(parsed)},
                    prompt=call.prompt,
                    response=call.response,
                    tokens_in=call.tokens_in // share + (call.tokens_in % share if first else 0),
                    tokens_out=call.tokens_out // share + (call.tokens_out % share if first else 0),
                    latency_s=call.latency_s,
                    cost_usd=call.cost_usd / share,
                ))
        return out[:n]

    # ------------------------------------------------------------------ transport

    def _call(self, messages: list[dict[str, str]], call: LLMCall) -> tuple[str, str]:
        """Send one chat request with bounded retries; returns (content, finish_reason)."""
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
                    raise _CallFailed(
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
                        where = (f"it is set from {self._key_source}" if self._key else
                                 f"neither {cfg.api_key_env} nor {FALLBACK_KEY_ENV} is set")
                        raise _CallFailed(
                            f"The LLM endpoint {cfg.base_url} rejected the credentials (HTTP {code}: {detail}). "
                            f"Put a valid API key in the environment variable {cfg.api_key_env} of the profd "
                            f"process ({where}; [llm] api_key_env names the variable, {FALLBACK_KEY_ENV} is "
                            f"also read). The key never goes in the config file.") from None
                    if code == 404:
                        raise _CallFailed(
                            f"The LLM endpoint {cfg.base_url} answered 404 ({detail}). Check [llm] model="
                            f"'{cfg.model}' against what the server serves (GET {cfg.base_url.rstrip('/')}/models) "
                            f"and that base_url includes the API prefix (usually /v1).") from None
                    if code == 429:
                        ra = _retry_after(e)
                        if ra is not None and ra > cfg.max_retry_wait_s:
                            raise _CallFailed(
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
                        raise _CallFailed(
                            f"The LLM endpoint {cfg.base_url} refused the request (HTTP {code}: {detail}). If it "
                            f"mentions the context length, lower [llm] max_prompt_tokens or max_tokens; otherwise "
                            f"check [llm] model and the server's documentation.") from None
                except openai.OpenAIError as e:
                    raise _CallFailed(f"The openai client could not talk to {cfg.base_url}: {type(e).__name__}: "
                                      f"{str(e)[:300]}. Check the [llm] settings.") from None
                if attempt >= cfg.max_retries:
                    raise _CallFailed(last)
                log.info("LLM call failed, retrying in %.1f s: %s", wait, self._redact(last.split(". ")[0]))
                time.sleep(min(wait, cfg.max_retry_wait_s))
        finally:
            call.latency_s = time.monotonic() - t0

        content, finish, usage = _read_completion(data)
        call.response = self._redact(content)
        call.finish_reason = finish
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(tin, int) and isinstance(tout, int):
            call.tokens_in, call.tokens_out = tin, tout
        else:  # some servers omit usage: estimate rather than report a free call
            call.usage_estimated = True
            call.tokens_in = int(len(call.prompt) / _CHARS_PER_TOKEN)
            call.tokens_out = int(len(content) / _CHARS_PER_TOKEN)
        call.cost_usd = cfg.cost_usd(call.tokens_in, call.tokens_out)
        self.total_tokens_in += call.tokens_in
        self.total_tokens_out += call.tokens_out
        self.total_cost_usd += call.cost_usd
        if not content.strip():
            raise _CallFailed(f"The LLM endpoint {cfg.base_url} sent an empty reply (finish_reason="
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
                raise _CallFailed(f"The connection to the LLM endpoint {cfg.base_url} broke while reading the "
                                  f"reply ({type(e).__name__}). Check the server's log.", fatal=False) from None
        try:
            return json.loads(bytes(buf)), len(buf)
        except ValueError:
            excerpt = bytes(buf[:200]).decode("utf-8", "replace")
            raise _CallFailed(f"The LLM endpoint {cfg.base_url} answered with something that is not JSON "
                              f"(starts with {excerpt!r}). Is base_url an OpenAI-compatible API (usually ending "
                              f"in /v1)?") from None

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter, like the openai client, but capped by our own bound.
        return min(0.5 * 2.0 ** attempt, self.config.max_retry_wait_s) * (1 - 0.25 * random.random())

    # ------------------------------------------------------------------ secrets

    def _redact(self, text: str) -> str:
        """Remove the API key, every secret profd knows, and bearer tokens from text we record, log or send."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        text = self.redactor(text)
        return re.sub(r"(?i)(bearer\s+)[^\s\"']+", r"\1[redacted]", text)

    def _error(self, message: str) -> str:
        message = self._redact(message)
        self.last_errors.append(message)
        log.warning("%s", message)
        return message


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


def _read_completion(data: Any) -> tuple[str, str, dict[str, Any]]:
    """(content, finish_reason, usage) from a chat.completion body, tolerating server quirks."""
    if not isinstance(data, dict):
        raise _CallFailed("The LLM endpoint's reply is not a chat.completion object.", fatal=False)
    choices = data.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        err = data.get("error")
        raise _CallFailed(f"The LLM endpoint's reply has no choices{f' (error: {err})' if err else ''}.", fatal=False)
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return sanitize_text(str(content or "")), sanitize_text(str(choice.get("finish_reason") or "")), usage


#: Marks the place of text a reply carried that is not valid Unicode (a lone surrogate).
INVALID_TEXT = "\ufffd"


def sanitize_text(text: str) -> str:
    """``text`` with lone surrogates (valid JSON escapes, invalid Unicode) replaced by U+FFFD.

    Such text cannot be encoded as UTF-8: stored as is, it crashed the SQLite insert."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        fixed = "".join(INVALID_TEXT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
        n = sum(1 for ch in text if 0xD800 <= ord(ch) <= 0xDFFF)
        log.warning("the LLM reply held %d invalid character(s) (lone surrogates); replaced by U+FFFD", n)
        return fixed


# --------------------------------------------------------------------------- prompt


_SYSTEM = """\
You are an expert GPU kernel performance engineer. You rewrite Triton kernels so that they run faster \
on the given device while computing the same results (within floating-point tolerance).

The target file is a Python module with a fixed contract:
{contract}
- The file must stay a complete, importable Python module.

For each candidate make ONE targeted change that addresses the findings (for example block/tile sizes, \
num_warps, num_stages, vector width, program order / swizzling, masking, loop structure). Do not repeat \
an earlier attempt, and learn from the measured outcomes of earlier candidates.

Answer format, for each candidate:
Rationale: <one line: what you changed and why it should be faster>
```python
<the complete file, every line of it>
```
Write no other code blocks."""

_CONTRACT_PROFD = """\
- `reference`, `get_inputs` (and `get_init_inputs`, `SHAPES`, `BENCH_SHAPE`, `RTOL`/`ATOL`/`TOLERANCE`, \
`PRECISION`, `flops`, `bytes_moved` where present, and the module-level names they use) are the trusted \
harness: copy them unchanged. Never add tolerances.
- Only `kernel` and the Triton code it launches (@triton.jit functions, launch parameters, tuning \
constants) may change; `kernel` must keep its name and arguments."""

_CONTRACT_KB = """\
- `Model`, `get_inputs`, `get_init_inputs` (and the module-level names they use, such as problem sizes) are \
the trusted harness: copy them unchanged.
- Only `ModelNew` and the Triton code it launches (@triton.jit functions, launch parameters, tuning \
constants) may change; `ModelNew` must keep its name and constructor/forward signatures."""


def build_messages(ctx: TuneContext, want: int, config: LLMConfig,
                   pending: Optional[list[Candidate]] = None) -> list[dict[str, str]]:
    """The chat messages for one call asking for ``want`` candidates, within the prompt budget.

    The source, the task and the device figures always go in; findings, history and
    the report share what is left of ``config.max_prompt_tokens``, in that order of
    priority, each truncated at item boundaries with a note saying what was left out.
    """
    kb = entry_point(ctx.original_source) == "ModelNew"
    system = _SYSTEM.format(contract=_CONTRACT_KB if kb else _CONTRACT_PROFD)
    fname = os.path.basename(ctx.path) or "kernel.py"
    head = [f"## Task\nPropose {want} candidate rewrite{'s' if want > 1 else ''} of `{fname}` "
            f"(the current best source, at the end). Each candidate: one `Rationale:` line, then the complete "
            f"file in a ```python block."]
    if ctx.best_median_ms is not None:
        which = "the user's original" if ctx.best_source == ctx.original_source else "a candidate kept earlier"
        head.append(f"Current best: {ctx.best_median_ms:.4g} ms median per call of "
                    f"`{'ModelNew' if kb else 'kernel'}` ({which}).")
    device = _device_text(ctx.device_spec)
    if device:
        head.append("## Device\n" + device)
    knobs = _knobs_text(ctx.knobs)
    if knobs:
        head.append("## Tunable knobs found in the source\n" + knobs)
    tail = f"## Current best source (`{fname}`)\n```python\n{ctx.best_source.rstrip()}\n```"
    fixed = len(system) + sum(len(h) + 2 for h in head) + len(tail)
    left = max(0, int(config.max_prompt_tokens * _CHARS_PER_TOKEN) - fixed)

    findings_items = [_finding_text(i + 1, f) for i, f in enumerate(ctx.findings)]
    findings, used = _fit(findings_items, int(left * 0.4), "finding")
    left -= used
    history_items = [_attempt_text(a, ctx.original_source) for a in reversed(ctx.history)]  # newest first: they matter most
    pending_items = [f"- (proposed in this round, not measured yet) {c.rationale}\n  change:\n{_short_diff(c.diff, 6)}"
                     for c in (pending or [])]
    history, used = _fit(pending_items + history_items, int(left * 0.7), "earlier candidate")
    left -= used
    report = ctx.report.strip()
    if len(report) > left:
        cut = report[:max(0, left - 80)]
        cut = cut[:cut.rfind("\n")] if "\n" in cut else cut
        report = (cut + f"\n[... report truncated: {len(ctx.report) - len(cut)} characters left out]").strip()

    parts = list(head)
    if findings:
        parts.append("## Findings of the diagnosis (ranked by estimated gain)\n" + findings)
    if history:
        parts.append("## Earlier candidates and their measured outcomes (newest first)\n" + history)
    if report:
        parts.append("## Profiling report of the original\n" + report)
    parts.append(tail)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def render_messages(messages: list[dict[str, str]]) -> str:
    """The messages as one readable text, as recorded on a Candidate."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def _fit(items: list[str], budget: int, noun: str) -> tuple[str, int]:
    """As many whole items as fit in ``budget`` characters, plus a note on the rest."""
    kept: list[str] = []
    used = 0
    for item in items:
        if used + len(item) + 1 > budget:
            break
        kept.append(item)
        used += len(item) + 1
    if len(kept) < len(items):
        note = f"[{len(items) - len(kept)} more {noun}(s) left out to fit the prompt budget]"
        kept.append(note)
        used += len(note) + 1
    return "\n".join(kept), used


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _finding_text(rank: int, f: Any) -> str:
    sev = getattr(getattr(f, "severity", ""), "value", getattr(f, "severity", ""))
    lines = [f"{rank}. [{sev}] {f.title} (rule {f.rule}"
             + (f", kernel {f.kernel}" if getattr(f, "kernel", "") else "")
             + (f", est. gain {f.estimated_gain_pct:.0f}%" if getattr(f, "estimated_gain_pct", 0) else "") + ")",
             f"   {f.summary}"]
    for e in getattr(f, "evidence", []) or []:
        thr = f" (threshold {e.comparison} {_fmt(e.threshold)})" if e.threshold is not None else ""
        gloss = f": {e.meaning}" if e.meaning else ""
        lines.append(f"   evidence: {e.metric} = {_fmt(e.value)}{(' ' + e.unit) if e.unit else ''}{thr}{gloss}")
    for lv in getattr(f, "levers", []) or []:
        where = f" at line {lv.line}" if lv.line else ""
        cur = f" (now {lv.current}{where})" if lv.current else where
        sug = f", suggested {lv.suggested}" if lv.suggested else ""
        lines.append(f"   lever: {lv.direction} {lv.name}{cur}{sug}: {lv.description}")
    for s in (getattr(f, "supporting", []) or [])[:3]:
        lines.append(f"   profiler says: {' '.join(str(s).split())[:300]}")
    return "\n".join(lines)


def _attempt_text(a: Any, original: str) -> str:
    c, v = a.candidate, a.verdict
    outcome = "ACCEPTED" if v.accepted else "rejected"
    speed = f", speedup {v.speedup:.3g}x" if v.speedup is not None else ""
    text = (f"- {c.id} ({c.advisor}): {outcome}{speed}; reason: {' '.join(v.reason.split())[:300]}\n"
            f"  tried: {' '.join((c.rationale or '(no rationale)').split())[:300]}")
    diff = _short_diff(c.diff or unified_diff(original, c.source))
    if diff:
        text += "\n  change:\n" + diff
    return text


def _short_diff(diff: str, max_lines: int = 12) -> str:
    """The changed lines of a diff (no context), indented, at most ``max_lines``."""
    changed = [ln for ln in diff.splitlines()
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    more = len(changed) - max_lines
    out = ["    " + ln[:160] for ln in changed[:max_lines]]
    if more > 0:
        out.append(f"    [... {more} more changed lines]")
    return "\n".join(out)


def _device_text(spec: Any) -> str:
    if spec is None:
        return ""
    g = lambda k: getattr(spec, k, None)  # noqa: E731 - duck-typed DeviceSpec
    out = [f"{g('name') or g('key') or 'unknown device'}"
           + (f" ({g('architecture')}, compute capability {g('compute_capability')})" if g("architecture") else "")]
    figures = [
        ("SMs/CUs", g("sm_count"), ""), ("warp size", g("warp_size"), ""),
        ("memory bandwidth", g("memory_bandwidth_gbps"), " GB/s"), ("L2", _mib(g("l2_bytes")), ""),
        ("shared memory per SM", _kib(g("shared_mem_per_sm_bytes")), ""),
        ("max shared memory per block", _kib(g("max_shared_mem_per_block_bytes")), ""),
        ("registers per SM", g("registers_per_sm"), ""), ("max warps per SM", g("max_warps_per_sm"), ""),
        ("boost clock", g("boost_clock_mhz"), " MHz"),
    ]
    out += [f"- {k}: {_fmt(v)}{u}" for k, v, u in figures if v]
    peaks = g("peak_tflops") or {}
    if peaks:
        out.append("- peak TFLOP/s (dense): " + ", ".join(f"{k} {_fmt(v)}" for k, v in peaks.items()))
    return "\n".join(out)


def _mib(v: Any) -> Optional[str]:
    return f"{v / 2**20:.0f} MiB" if v else None


def _kib(v: Any) -> Optional[str]:
    return f"{v / 2**10:.0f} KiB" if v else None


def _knobs_text(knobs: Any) -> str:
    items = getattr(knobs, "knobs", None) or []
    lines = []
    for k in items[:30]:
        shown = k.shown() if hasattr(k, "shown") else f"{getattr(k, 'name', '?')} = {getattr(k, 'value', '?')}"
        where = f" (line {k.line}, {k.kind}{', kernel ' + k.kernel if getattr(k, 'kernel', '') else ''})"
        lines.append(f"- {shown}{where}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reply parsing


@dataclass
class CodeBlock:
    """A fenced block of a reply."""

    lang: str
    code: str
    start: int  # line index of the opening fence
    end: int  # line index after the closing fence (or of the text's end)
    closed: bool


@dataclass
class ParsedCandidate:
    """A source from a reply that passed every check, with its rationale."""

    source: str
    rationale: str
    block: int  # 1-based index of the block in the reply


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")
_PY_LANGS = {"python", "py", "python3", "py3", ""}
_RATIONALE = re.compile(r"^[\s>*_#\-]*rationale[\s*_]*[:\-][\s*_]*(.+?)[\s*_]*$", re.I)


def extract_code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks (``` or ~~~, any info string) in order; an unclosed last block runs to the end."""
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i]) if len(lines[i]) < 200 else None
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        close = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            ln = lines[j]
            strip = len(ln) - len(ln.lstrip(" "))
            body.append(ln[min(indent, strip):])
            j += 1
        closed = j < len(lines)
        blocks.append(CodeBlock(lang=lang.strip("{}."), code="\n".join(body) + "\n", start=i,
                                end=j + 1 if closed else j, closed=closed))
        i = j + 1
    return blocks


def parse_reply(text: str, original: str, tried: set[str], want: int,
                finish_reason: str = "") -> tuple[list[ParsedCandidate], list[str]]:
    """Candidates from a reply, and the reasons for everything that was not taken.

    A block counts only if it is Python (```python, ```py or bare ```), is a complete
    target file (defines the entry point ``kernel`` or ``ModelNew``), parses, keeps the
    trusted part of ``original`` (:func:`contract_violations`) and is not in ``tried``
    (digests) nor a repeat within the reply.
    """
    entry = entry_point(original)
    blocks = extract_code_blocks(text)
    reasons: list[str] = []
    if not blocks:
        excerpt = " ".join(text.split())[:160]
        return [], [f"the reply contained no fenced code block (```python ... ```), so no candidate "
                    f"(reply starts: {excerpt!r})"]
    lines = text.splitlines()
    out: list[ParsedCandidate] = []
    seen = set(tried)
    partial = 0
    max_len = max(200_000, 20 * len(original))
    for k, b in enumerate(blocks, 1):
        if len(out) >= want:
            break
        if b.lang not in _PY_LANGS:
            reasons.append(f"block {k} is ```{b.lang}, not Python: skipped")
            continue
        if not re.search(rf"^\s*(async\s+def|def|class)\s+{entry}\b", b.code, re.M):
            partial += 1
            continue
        if not b.closed and finish_reason == "length":
            reasons.append(f"block {k} was cut off (finish_reason=length, the reply hit max_tokens): rejected; "
                           f"raise [llm] max_tokens")
            continue
        if len(b.code) > max_len:
            reasons.append(f"block {k} is implausibly large ({len(b.code)} characters): rejected")
            continue
        try:
            ast.parse(b.code)
        except SyntaxError as e:
            reasons.append(f"block {k} does not parse: SyntaxError at line {e.lineno}: {e.msg}")
            continue
        violations = contract_violations(original, b.code)
        if violations:
            reasons.append(f"block {k} breaks the file's contract: {'; '.join(violations)}")
            continue
        digest = source_digest(b.code)
        if digest in seen:
            reasons.append(f"block {k} repeats a source already tried or proposed: dropped")
            continue
        seen.add(digest)
        out.append(ParsedCandidate(source=b.code, rationale=_rationale(lines, blocks, k - 1), block=k))
    if partial and not out:
        reasons.append(f"{partial} block(s) were partial snippets (no `{'class' if entry == 'ModelNew' else 'def'} "
                       f"{entry}`), not complete files: skipped")
    return out, reasons


def _rationale(lines: list[str], blocks: list[CodeBlock], idx: int) -> str:
    """The ``Rationale:`` line nearest before the block (else after it), else the last prose line before it."""
    b = blocks[idx]
    lo = blocks[idx - 1].end if idx > 0 else 0
    hi = blocks[idx + 1].start if idx + 1 < len(blocks) else len(lines)
    before = lines[lo:b.start]
    after = lines[b.end:hi]
    for ln in reversed(before):
        m = _RATIONALE.match(ln)
        if m:
            return m.group(1).strip()[:300]
    for ln in after:
        m = _RATIONALE.match(ln)
        if m:
            return m.group(1).strip()[:300]
    for ln in reversed(before):
        t = ln.strip().strip("#*_>-: ").strip()
        if t:
            return t[:300]
    return "(no rationale given)"


from advisors.rewriters import AdvisorSpec  # noqa: E402  (the registry's type, at the end to keep the module's top unchanged)


def _build(table: Any) -> Optional["LLMAdvisor"]:
    # Without an endpoint and a model the LLM advisor is simply not in the list.
    if not (table.get("base_url") and table.get("model")):
        return None
    return LLMAdvisor(LLMConfig.from_mapping(table))


ADVISOR = AdvisorSpec(
    name="llm", summary="rewrites proposed by any OpenAI-compatible endpoint, judged like every other candidate",
    build=_build, section="llm", records_llm_exchange=True, order=20,
    options={f.name: f"{f.type} (default {f.default!r})" for f in fields(LLMConfig)},
)
