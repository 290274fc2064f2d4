"""profd doctor against real local services: an OpenAI-compatible server and an SMTP server."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from profd import config
from profd.doctor import check_llm, check_mail, check_state_dir, run_checks

try:
    from support import free_port
except ImportError:  # pragma: no cover
    from tests.support import free_port

try:
    from llm_server import ScriptedLLMServer
except ImportError:  # pragma: no cover
    from tests.llm_server import ScriptedLLMServer


class Sink:
    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        return "250 OK"



@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    return config.load(tmp_path / "none.toml", env={})


def test_llm_endpoint_up_and_down(cfg: config.Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_LLM_API_KEY", "sk-doctor-secret")
    with ScriptedLLMServer([]) as srv:
        cfg.llm = {"base_url": srv.base_url, "model": "scripted-model"}
        ok = check_llm(cfg)
    assert ok.ok, ok.detail
    assert "scripted-model" in ok.detail
    down = check_llm(cfg)  # the server is gone now
    assert not down.ok and "base_url" in down.fix
    assert "sk-doctor-secret" not in down.detail


def test_mail_probe_up_and_down(cfg: config.Config) -> None:
    port = free_port()
    cfg.mail = {"host": "127.0.0.1", "port": port, "security": "none", "from_addr": "p@localhost", "to": ["t@x.org"],
                "timeout_s": 5, "retries": 0}
    down = check_mail(cfg)
    assert not down.ok and down.fix
    ctl = Controller(Sink(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        up = check_mail(cfg)
    finally:
        ctl.stop()
    assert up.ok, up.detail


def test_doctor_runs_every_check_without_a_gpu(cfg: config.Config) -> None:
    seen = []
    checks = run_checks(cfg, progress=seen.append)
    assert [c.name for c in checks] == ["state", "gpu", "profiler", "sandbox", "llm", "mail"] == [c.name for c in seen]
    assert check_state_dir().ok
    assert all(c.detail for c in checks)
    assert all(c.fix for c in checks if not c.ok)


def test_doctor_says_which_candidate_protections_the_kernel_enforces(monkeypatch: pytest.MonkeyPatch) -> None:
    from profd.doctor import check_sandbox

    on = check_sandbox()
    for what in ("writes outside scratch", "other processes' /proc", "network", "signals outside its group",
                 "metadata changes"):
        assert what in on.detail
    monkeypatch.setenv("PROFD_SANDBOX", "off")
    off = check_sandbox()
    assert not off.ok and "NOT enforced: PROFD_SANDBOX=off" in off.detail and off.fix
