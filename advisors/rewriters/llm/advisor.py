"""The LLM advisor: asks any OpenAI-compatible chat endpoint for targeted rewrites.

The advisor builds one prompt from what the tune loop knows (:mod:`.prompt`), sends it
through :mod:`.client`, and turns the fenced code blocks of the reply into
:class:`~profd.model.Candidate` values (:mod:`.reply`). It is deliberately distrustful of
what comes back: see :func:`advisors.rewriters.llm.reply.parse_reply`.

Transport trouble never raises into the daemon: ``propose`` returns ``[]`` and
``last_errors`` says what happened and what to do.

The API key comes from the environment only (``api_key_env``, default
``PROFD_LLM_API_KEY``, then ``OPENAI_API_KEY``) and is scrubbed from every prompt,
response, error message and log line this advisor produces.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Mapping, Optional

from advisors.base import TuneContext, source_digest, unified_diff
from advisors.rewriters.llm.client import CallFailed, ChatClient, LLMCall
from advisors.rewriters.llm.config import LLMConfig
from advisors.rewriters.llm.prompt import build_messages, render_messages
from advisors.rewriters.llm.reply import parse_reply
from profd.model import Candidate

log = logging.getLogger(__name__)


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
        self.chat = ChatClient(config, client, env, redact=self._redact)
        self._secrets = [k for k in (self.chat.key, self.chat.supplied_key) if isinstance(k, str) and len(k) >= 4]
        # profd (the tune loop) registers these with its redactor and, since the process forks
        # candidates, takes the key's variable out of its environment once read. Advisors do not
        # import the daemon's modules: they declare, profd acts.
        self.secrets = list(self._secrets)
        self.secret_env = [self.chat.key_source] if env is None and self.chat.key_source else []
        self.redactor: Any = lambda text: text
        self.last_errors: list[str] = []
        self.last_calls: list[LLMCall] = []
        self.total_tokens_in = 0
        self.total_tokens_out = 0
        self.total_cost_usd = 0.0

    @property
    def client(self) -> Any:
        """The openai client, built on first use."""
        return self.chat.client

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
                content, finish = self.chat.complete(messages, call)
            except CallFailed as e:
                call.error = self._error(str(e))
                if e.fatal:
                    break
                continue
            finally:  # a call that failed after its reply was read still cost its tokens
                self.total_tokens_in += call.tokens_in
                self.total_tokens_out += call.tokens_out
                self.total_cost_usd += call.cost_usd
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
