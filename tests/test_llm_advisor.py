"""LLMAdvisor against a real local HTTP server, through the real ``openai`` client.

Nothing is mocked: ``tests/llm_server.py`` is an OpenAI-compatible HTTP server on
127.0.0.1 replaying scripted replies, errors and delays.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest

from advisors.base import Attempt, TuneContext, source_digest
from advisors.contract import contract_violations
from advisors.rewriters.llm.advisor import LLMAdvisor
from advisors.rewriters.llm.config import LLMConfig, LLMConfigError
from advisors.rewriters.llm.reply import extract_code_blocks
from profd.model import Candidate, CandidateVerdict, Evidence, Finding, Lever, Severity

try:
    from tests.llm_server import ScriptedLLMServer, delay, huge, reply, status
except ImportError:  # pytest's rootdir-less import mode puts tests/ itself on sys.path
    from llm_server import ScriptedLLMServer, delay, huge, reply, status

KEY = "sk-test-Zq8pSECRETkey-41"

TARGET = '''\
"""Vector add: out = x + y."""

import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

BLOCK_SIZE = 64
NUM_WARPS = 4


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(axis=0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, x + y, mask=mask)


def kernel(x, y):
    out = torch.empty_like(x)
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK_SIZE),)
    add_kernel[grid](x, y, out, n, BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS)
    return out


def reference(x, y):
    return x + y


def get_inputs(N=4096):
    return [torch.randn(N, device=DEVICE), torch.randn(N, device=DEVICE)]
'''

BIGGER_BLOCK = TARGET.replace("BLOCK_SIZE = 64", "BLOCK_SIZE = 1024")
MORE_WARPS = TARGET.replace("NUM_WARPS = 4", "NUM_WARPS = 8")


def fenced(source: str, lang: str = "python", rationale: str = "Raise BLOCK_SIZE to 1024 for wider loads.") -> str:
    return f"Here is a faster version.\n\nRationale: {rationale}\n\n```{lang}\n{source}```\n\nHope it helps."


def make_ctx(history: list[Attempt] | None = None, report: str = "# Report\nmemory-bound at 30% of peak.\n",
             findings: list[Finding] | None = None) -> TuneContext:
    if findings is None:
        findings = [Finding(
            rule="tiny_grid", title="Blocks too small to keep memory busy", severity=Severity.HIGH,
            summary="64 elements per program: 2 bytes in flight per thread.",
            evidence=[Evidence(metric="dram_throughput_pct", value=31.5, threshold=60.0, unit="%", comparison="<",
                               meaning="share of peak DRAM bandwidth")],
            levers=[Lever(name="BLOCK_SIZE", direction="increase", description="more elements per program",
                          current="64", line=9, suggested="1024")],
            estimated_gain_pct=60.0)]
    return TuneContext(path="/kernels/vector_add.py", original_source=TARGET, best_source=TARGET,
                       best_median_ms=0.125, findings=findings, report=report, history=history or [],
                       budget_left=8)


def attempt(source: str, accepted: bool, reason: str, speedup: float | None, rationale: str) -> Attempt:
    c = Candidate(id=f"c-{source_digest(source)}", source=source, advisor="deterministic", rationale=rationale)
    return Attempt(candidate=c, verdict=CandidateVerdict(candidate_id=c.id, accepted=accepted, reason=reason,
                                                         speedup=speedup))


@pytest.fixture
def server():
    with ScriptedLLMServer(model="scripted-model") as srv:
        yield srv


def advisor_for(url: str, monkeypatch: pytest.MonkeyPatch, **kw) -> LLMAdvisor:
    monkeypatch.setenv("PROFD_LLM_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = dict(base_url=url, model="scripted-model", timeout_s=5.0, max_retries=2, max_retry_wait_s=3.0,
               price_in_per_mtok=2.0, price_out_per_mtok=8.0)
    cfg.update(kw)
    return LLMAdvisor(LLMConfig.from_mapping(cfg))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --------------------------------------------------------------------------- good replies


def test_good_rewrite_becomes_a_candidate_with_accounting(server, monkeypatch):
    server.push(reply(fenced(BIGGER_BLOCK), prompt_tokens=1234, completion_tokens=567))
    adv = advisor_for(server.base_url, monkeypatch)
    cands = adv.propose(make_ctx(), 1)

    assert adv.last_errors == []
    assert len(cands) == 1
    c = cands[0]
    assert c.source.strip() == BIGGER_BLOCK.strip()
    assert c.advisor == "llm:scripted-model" == adv.name
    assert c.rationale == "Raise BLOCK_SIZE to 1024 for wider loads."
    assert (c.tokens_in, c.tokens_out) == (1234, 567)
    assert c.cost_usd == pytest.approx(1234 * 2.0 / 1e6 + 567 * 8.0 / 1e6)
    assert c.latency_s > 0
    assert "-BLOCK_SIZE = 64" in c.diff and "+BLOCK_SIZE = 1024" in c.diff
    assert c.diff.startswith("--- a/vector_add.py")
    assert "BLOCK_SIZE = 64" in c.prompt  # the prompt carried the current source
    assert c.response.startswith("Here is a faster version.")
    assert c.id == f"llm-{source_digest(BIGGER_BLOCK)}"
    req = server.chat_requests()[0]
    assert req.body["model"] == "scripted-model"
    assert [m["role"] for m in req.body["messages"]] == ["system", "user"]


def test_fence_variants_and_partial_snippets(server, monkeypatch):
    snippet = "```python\ndef kernel(x, y):\n    return x\n```\n"  # has `def kernel` but drops the rest
    only_jit = "```py\n@triton.jit\ndef add_kernel(x_ptr):\n    pass\n```\n"
    server.push(only_jit + "Rationale: wider blocks\n" + fenced(BIGGER_BLOCK, lang="py").split("\n\n", 1)[1],
                "Rationale: 8 warps\n```\n" + MORE_WARPS + "```\n",
                "Just change this:\n" + only_jit)
    adv = advisor_for(server.base_url, monkeypatch)

    first = adv.propose(make_ctx(), 1)
    assert [c.source for c in first] == [BIGGER_BLOCK]  # the ```py block, not the snippet before it
    second = adv.propose(make_ctx(), 1)
    assert [c.source for c in second] == [MORE_WARPS] and second[0].rationale == "8 warps"  # bare ```
    assert adv.propose(make_ctx(), 1) == []
    assert any("partial snippet" in e for e in adv.last_errors), adv.last_errors
    # a snippet that defines kernel but drops reference/get_inputs is no complete file either
    server.push(snippet)
    assert adv.propose(make_ctx(), 1) == []
    assert any("removes or renames `reference`" in e for e in adv.last_errors), adv.last_errors


def test_several_candidates_per_call_share_the_cost(server, monkeypatch):
    text = (fenced(BIGGER_BLOCK) + "\n" + fenced(MORE_WARPS, rationale="8 warps") + "\n"
            + fenced(MORE_WARPS, rationale="same again"))
    server.push(reply(text, prompt_tokens=1001, completion_tokens=401))
    adv = advisor_for(server.base_url, monkeypatch, candidates_per_call=3)
    cands = adv.propose(make_ctx(), 3)
    assert [c.source for c in cands] == [BIGGER_BLOCK, MORE_WARPS]
    assert [c.rationale for c in cands] == ["Raise BLOCK_SIZE to 1024 for wider loads.", "8 warps"]
    assert sum(c.tokens_in for c in cands) == 1001 and sum(c.tokens_out for c in cands) == 401
    assert any("repeats a source" in e for e in adv.last_errors)
    assert "Propose 3 candidate rewrites" in server.chat_requests()[0].prompt_text()


def test_missing_usage_is_estimated_not_free(server, monkeypatch):
    server.push(reply(fenced(BIGGER_BLOCK), include_usage=False))
    adv = advisor_for(server.base_url, monkeypatch, price_in_per_mtok=1.0)
    (c,) = adv.propose(make_ctx(), 1)
    assert c.params["usage_estimated"] is True
    assert c.tokens_in > 100 and c.tokens_out > 50 and c.cost_usd > 0


# --------------------------------------------------------------------------- rejected replies


def test_reply_without_code_gives_no_candidate_and_a_reason(server, monkeypatch):
    server.push("You should increase BLOCK_SIZE to 1024 and use 8 warps.")
    adv = advisor_for(server.base_url, monkeypatch)
    assert adv.propose(make_ctx(), 1) == []
    assert len(adv.last_errors) == 1
    assert "no fenced code block" in adv.last_errors[0]
    assert adv.last_calls[0].tokens_in > 0  # the call still cost tokens, and that is recorded


def test_syntax_error_is_rejected_with_the_error(server, monkeypatch):
    broken = BIGGER_BLOCK.replace("def kernel(x, y):", "def kernel(x, y)")
    server.push(fenced(broken))
    adv = advisor_for(server.base_url, monkeypatch)
    assert adv.propose(make_ctx(), 1) == []
    assert any("SyntaxError at line" in e for e in adv.last_errors), adv.last_errors


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s.replace("    return x + y\n", "    return kernel(x, y)\n"), "changes the body of `reference`"),
    (lambda s: s.replace("def reference(", "def reference_impl("), "removes or renames `reference`"),
    (lambda s: s.replace("def get_inputs(N=4096)", "def get_inputs(N=16)"), "changes the body of `get_inputs`"),
    (lambda s: s + "\nRTOL = 1.0\nATOL = 1.0\n", "adds a module-level `ATOL`"),
    (lambda s: s.replace('DEVICE = "cuda" if', 'DEVICE = "cpu" if'), "changes the definition of `DEVICE`"),
    (lambda s: s.replace("    out = torch.empty_like(x)\n", "    torch.add = lambda a, b: a\n    out = torch.empty_like(x)\n"),
     "assigns to `torch.add`"),
])
def test_candidates_that_touch_the_trusted_half_are_rejected(server, monkeypatch, edit, expected):
    server.push(fenced(edit(BIGGER_BLOCK)))
    adv = advisor_for(server.base_url, monkeypatch)
    assert adv.propose(make_ctx(), 1) == []
    assert any(expected in e for e in adv.last_errors), adv.last_errors


def test_contract_check_allows_cosmetic_changes_and_kernel_edits():
    reformatted = TARGET.replace("def reference(x, y):\n    return x + y",
                                 "def reference(x, y):  # trusted\n    return (x + y)")
    assert contract_violations(TARGET, reformatted) == []
    assert contract_violations(TARGET, BIGGER_BLOCK.replace("import torch\n", "import torch\nimport torch.nn\n")) == []
    assert contract_violations(TARGET, TARGET.replace("def kernel(", "def kernel2(")) == ["`kernel` is not defined at module level"]


def test_duplicates_of_earlier_candidates_are_dropped(server, monkeypatch):
    tried = attempt(BIGGER_BLOCK, False, "not faster than noise (1.01x, spread 3%)", 1.01, "bigger block")
    # the same source with trailing whitespace is still the same candidate
    server.push(fenced(BIGGER_BLOCK.replace("BLOCK_SIZE = 1024", "BLOCK_SIZE = 1024   ")), fenced(TARGET))
    adv = advisor_for(server.base_url, monkeypatch)
    assert adv.propose(make_ctx(history=[tried]), 1) == []
    assert any("repeats a source already tried" in e for e in adv.last_errors)
    assert adv.propose(make_ctx(history=[tried]), 1) == []  # the original itself is "tried" too


def test_huge_reply_is_cut_off_quickly(server, monkeypatch):
    server.push(huge(5_000_000), fenced(BIGGER_BLOCK))
    adv = advisor_for(server.base_url, monkeypatch, max_response_bytes=1_000_000)
    t0 = time.monotonic()
    assert adv.propose(make_ctx(), 1) == []
    assert time.monotonic() - t0 < 3
    assert "max_response_bytes=1000000" in adv.last_errors[0]
    assert adv.last_calls[0].response_bytes <= 1_000_000 + 65536
    assert adv.propose(make_ctx(), 1) != []  # and the advisor still works afterwards


def test_huge_reply_without_content_length_is_cut_off_while_reading(server, monkeypatch):
    server.push(huge(5_000_000, chunked=True))
    adv = advisor_for(server.base_url, monkeypatch, max_response_bytes=1_000_000)
    t0 = time.monotonic()
    assert adv.propose(make_ctx(), 1) == []
    assert time.monotonic() - t0 < 3
    assert "stopped reading" in adv.last_errors[0]
    assert 1_000_000 < adv.last_calls[0].response_bytes <= 1_000_000 + 65536 * 2


# --------------------------------------------------------------------------- transport faults


def test_server_500_then_success_is_retried(server, monkeypatch):
    server.push(status(500), fenced(BIGGER_BLOCK))
    adv = advisor_for(server.base_url, monkeypatch)
    cands = adv.propose(make_ctx(), 1)
    assert len(cands) == 1 and cands[0].params["attempts"] == 2
    assert len(server.chat_requests()) == 2
    assert adv.last_errors == []


def test_server_500_every_time_gives_up_with_a_message(server, monkeypatch):
    server.push(status(500, message="CUDA out of memory"), status(502), status(503))
    adv = advisor_for(server.base_url, monkeypatch, max_retries=2, max_retry_wait_s=0.2)
    assert adv.propose(make_ctx(), 3) == []
    assert len(server.chat_requests()) == 3  # one call, 3 tries, then no further calls
    assert "HTTP 503" in adv.last_errors[0] and "3 time(s)" in adv.last_errors[0]


def test_429_with_retry_after_is_respected(server, monkeypatch):
    server.push(status(429, retry_after=1), fenced(BIGGER_BLOCK))
    adv = advisor_for(server.base_url, monkeypatch)
    cands = adv.propose(make_ctx(), 1)
    assert len(cands) == 1
    first, second = server.chat_requests()
    assert second.at - first.at >= 0.95


def test_429_asking_for_a_long_wait_is_not_waited_for(server, monkeypatch):
    server.push(status(429, retry_after=3600))
    adv = advisor_for(server.base_url, monkeypatch, max_retry_wait_s=3.0)
    t0 = time.monotonic()
    assert adv.propose(make_ctx(), 1) == []
    assert time.monotonic() - t0 < 2
    assert "Retry-After" in adv.last_errors[0] and "max_retry_wait_s=3" in adv.last_errors[0]


def test_timeout_gives_up_with_a_clear_message(server, monkeypatch):
    server.push(delay(4.0, fenced(BIGGER_BLOCK)))
    adv = advisor_for(server.base_url, monkeypatch, timeout_s=1, max_retries=0)
    t0 = time.monotonic()
    assert adv.propose(make_ctx(), 2) == []
    assert time.monotonic() - t0 < 2.5
    (msg,) = adv.last_errors
    assert "did not answer within timeout_s=1 s" in msg and "raise [llm] timeout_s" in msg


def test_connection_refused_gives_up_with_a_clear_message(monkeypatch):
    url = closed_port_url()
    adv = advisor_for(url, monkeypatch, max_retries=1, max_retry_wait_s=0.2)
    t0 = time.monotonic()
    assert adv.propose(make_ctx(), 2) == []
    assert time.monotonic() - t0 < 3
    (msg,) = adv.last_errors
    assert url in msg and "connection refused" in msg.lower()
    assert "Is the server running" in msg and "base_url" in msg


def test_auth_failure_names_the_env_var(server, monkeypatch):
    server.push(status(401, message=f"Incorrect API key provided: {KEY}"))
    adv = advisor_for(server.base_url, monkeypatch)
    assert adv.propose(make_ctx(), 1) == []
    (msg,) = adv.last_errors
    assert "PROFD_LLM_API_KEY" in msg and "HTTP 401" in msg
    assert KEY not in msg and "[redacted]" in msg  # a server echoing the key does not leak it


# --------------------------------------------------------------------------- prompt and secrets


def test_prompt_carries_source_findings_and_history(server, monkeypatch):
    history = [
        attempt(MORE_WARPS, False, "slower: 0.91x, beyond the 2% noise", 0.91, "use 8 warps"),
        attempt(TARGET.replace("BLOCK_SIZE = 64", "BLOCK_SIZE = 256"), True, "faster: 1.35x", 1.35,
                "block of 256"),
    ]
    server.push(fenced(BIGGER_BLOCK))
    adv = advisor_for(server.base_url, monkeypatch)
    adv.propose(make_ctx(history=history), 1)
    prompt = server.chat_requests()[0].prompt_text()
    for needle in ["BLOCK_SIZE = 64", "def reference(x, y)", "Blocks too small to keep memory busy",
                   "dram_throughput_pct = 31.5 %", "threshold < 60", "increase BLOCK_SIZE (now 64 at line 9)",
                   "rejected, speedup 0.91x", "slower: 0.91x, beyond the 2% noise", "use 8 warps",
                   "ACCEPTED, speedup 1.35x", "+BLOCK_SIZE = 256", "memory-bound at 30% of peak",
                   "0.125 ms", "```python"]:
        assert needle in prompt, needle
    assert prompt.index("block of 256") < prompt.index("use 8 warps")  # newest first


def test_prompt_stays_within_budget(server, monkeypatch):
    history = [attempt(TARGET.replace("NUM_WARPS = 4", f"NUM_WARPS = {i}"), False, f"reason {i} " * 20, 0.9,
                       f"try {i} " * 20) for i in range(200)]
    report = "\n".join(f"line {i}: " + "x" * 100 for i in range(3000))
    server.push(fenced(BIGGER_BLOCK))
    adv = advisor_for(server.base_url, monkeypatch, max_prompt_tokens=4000)
    adv.propose(make_ctx(history=history, report=report), 1)
    prompt = server.chat_requests()[0].prompt_text()
    assert len(prompt) <= 4000 * 3.5 * 1.02
    assert "BLOCK_SIZE = 64" in prompt and "def get_inputs" in prompt  # the source is never cut
    assert "try 199" in prompt  # the newest attempt made it
    assert "left out to fit the prompt budget" in prompt and "report truncated" in prompt


def test_key_goes_only_into_the_authorization_header(server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    server.push(fenced(BIGGER_BLOCK), "no code here", status(500), status(500), status(500))
    adv = advisor_for(server.base_url, monkeypatch, max_retry_wait_s=0.1)
    (c,) = adv.propose(make_ctx(), 1)
    adv.propose(make_ctx(), 1)
    errors = list(adv.last_errors)
    adv.propose(make_ctx(), 1)
    errors += adv.last_errors
    assert len(errors) == 2
    reqs = server.chat_requests()
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in reqs)
    assert all(KEY not in r.raw.decode() for r in reqs)  # not in any request body
    recorded = [c.prompt, c.response, c.to_json(), *errors, *(call.prompt for call in adv.last_calls)]
    assert all(KEY not in text for text in recorded)
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_openai_api_key_is_the_fallback(server, monkeypatch):
    monkeypatch.delenv("PROFD_LLM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback-key")
    server.push(fenced(BIGGER_BLOCK))
    LLMAdvisor(LLMConfig(base_url=server.base_url, model="m")).propose(make_ctx(), 1)
    assert server.chat_requests()[0].headers["authorization"] == "Bearer sk-fallback-key"


# --------------------------------------------------------------------------- config and parsing


def test_config_from_mapping():
    cfg = LLMConfig.from_mapping({"base_url": "http://h:1/v1", "model": "m", "timeout_s": "30",
                                  "max_retries": "1", "candidates_per_call": 2, "price_in_per_mtok": 0.5})
    assert (cfg.timeout_s, cfg.max_retries, cfg.candidates_per_call, cfg.price_in_per_mtok) == (30.0, 1, 2, 0.5)
    assert cfg.api_key_env == "PROFD_LLM_API_KEY"
    with pytest.raises(LLMConfigError, match="secret"):
        LLMConfig.from_mapping({"api_key": "sk-x"})
    with pytest.raises(LLMConfigError, match="unknown setting"):
        LLMConfig.from_mapping({"timeout": 3})
    with pytest.raises(LLMConfigError, match="timeout_s must be > 0"):
        LLMConfig.from_mapping({"timeout_s": 0})
    with pytest.raises(LLMConfigError, match="expected a whole number"):
        LLMConfig.from_mapping({"max_retries": "many"})


def test_code_block_extraction():
    text = "a\n~~~python\nx = 1\n~~~\n```diff\n- a\n```\n  ```py\n  y = 2\n  ```\n```\nunclosed = 3\n"
    blocks = extract_code_blocks(text)
    assert [(b.lang, b.code, b.closed) for b in blocks] == [
        ("python", "x = 1\n", True), ("diff", "- a\n", True), ("py", "y = 2\n", True), ("", "unclosed = 3\n", False)]


KB_TARGET = '''\
import torch
import torch.nn as nn
import triton
import triton.language as tl

BLOCK_SIZE = 1024
batch_size = 8
dim = 5000


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x)


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    tl.store(out_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=offs < n), 0.0), mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        out = torch.empty_like(x)
        relu_kernel[(triton.cdiv(x.numel(), BLOCK_SIZE),)](x, out, x.numel(), BLOCK_SIZE=BLOCK_SIZE)
        return out


def get_inputs():
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
'''


def test_kernelbench_targets_protect_model_and_problem_size(server, monkeypatch):
    better = KB_TARGET.replace("        super().__init__()\n", "        super().__init__()\n        self.warps = 8\n")
    server.push("Rationale: more warps\n```python\n" + better + "```\n",
                "```python\n" + KB_TARGET.replace("dim = 5000", "dim = 50") + "```\n",
                "```python\n" + KB_TARGET.replace("return torch.relu(x)", "return x.clamp(min=0)") + "```\n")
    adv = advisor_for(server.base_url, monkeypatch)
    ctx = make_ctx()
    ctx.original_source = ctx.best_source = KB_TARGET
    assert [c.source for c in adv.propose(ctx, 1)] == [better]
    assert "`ModelNew` and the Triton code" in server.chat_requests()[0].prompt_text()
    assert adv.propose(ctx, 1) == [] and "changes the definition of `dim`" in adv.last_errors[0]
    assert adv.propose(ctx, 1) == [] and "changes the body of `Model`" in adv.last_errors[0]


def test_a_supplied_client_is_used_without_its_own_retries(server):
    import openai

    server.push(status(429, retry_after=60))
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-supplied", max_retries=5)
    adv = LLMAdvisor(LLMConfig(base_url="http://unused.invalid/v1", model="m", max_retries=0), client=client)
    t0 = time.monotonic()
    assert adv.propose(make_ctx(), 1) == []
    assert time.monotonic() - t0 < 2 and len(server.chat_requests()) == 1  # no 60 s waits by the client
    assert server.chat_requests()[0].headers["authorization"] == "Bearer sk-supplied"
