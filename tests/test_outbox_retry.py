"""A nightly report that could not be mailed is not forgotten: the daemon retries the outbox with
backoff and the next nightly run retries it first; ``profd status`` shows the attempts. Real
aiosmtpd servers that are down, then come up."""

from __future__ import annotations

import email
import email.policy
import sys
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from profd import config
from profd.flow.nightly import run_inline
from profd.report import mail
from profd.store import Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outbox_retry import scenario  # noqa: E402

try:
    from support import free_port
except ImportError:  # pragma: no cover
    from tests.support import free_port


class Inbox:
    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.subjects.append(str(email.message_from_bytes(envelope.content, policy=email.policy.default)["Subject"]))
        return "250 OK"


def _mail_table(port: int) -> dict:
    return {"host": "127.0.0.1", "port": port, "security": "none", "from_addr": "profd@localhost",
            "to": ["team@example.com"], "timeout_s": 5, "retries": 0, "outbox_retry_s": 30}


def _kept(subject: str, port: int) -> mail.SendResult:
    msg = email.message.EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject, "profd@localhost", "team@example.com"
    msg.set_content("the report")
    return mail.send(msg, mail.MailConfig.from_mapping(_mail_table(port)))


def test_backoff_doubles_and_due_only_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    port = free_port()
    res = _kept("one", port)
    assert not res.ok and res.outbox_path and "daemon retries it" in res.message
    mcfg = mail.MailConfig.from_mapping(_mail_table(port))
    assert [mcfg.backoff_s(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert mcfg.backoff_s(100) == mcfg.outbox_retry_max_s
    st = mail.outbox_status()
    assert st.pending == 1 and st.attempts == 1 and st.next_attempt_at > time.time() + 20
    assert not mail.outbox_due()
    assert mail.retry_outbox(mcfg, due_only=True) == []  # not due: no attempt, no count
    assert mail.outbox_status().attempts == 1
    assert [r.ok for r in mail.retry_outbox(mcfg)] == [False]  # the nightly's retry ignores the backoff
    st = mail.outbox_status()
    assert st.attempts == 2 and st.next_attempt_at > time.time() + 50  # the second wait is twice the first
    assert "after 2 attempts" in st.describe()


def test_nightly_sends_the_kept_report_before_tonights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    port = free_port()
    assert not _kept("last night's report", port).ok
    assert mail.outbox_status().pending == 1
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    said: list[str] = []
    try:
        cfg = config.load(tmp_path / "none.toml", env={})
        cfg.mail = _mail_table(port)
        cfg.run.warm_worker = False
        with Store() as store:
            _, _, note = run_inline(cfg, store, has_gpu=False, say=said.append)
    finally:
        ctl.stop()
    assert inbox.subjects[0] == "last night's report" and len(inbox.subjects) == 2  # kept one first, then tonight's
    assert note == "mailed to team@example.com"
    assert any("outbox: sent 1 kept report(s) (after 2 attempts)" in s for s in said), said
    st = mail.outbox_status()
    assert st.pending == 0 and st.last_delivered["attempts"] == 2
    assert [d["subject"] for d in mail.delivered_log()] == ["last night's report"]


def test_daemon_retries_until_the_server_comes_up_and_status_shows_attempts(tmp_path: Path) -> None:
    res = scenario(tmp_path, down_attempts=3, say=lambda s: None)
    assert "mail failed" in res["nightly_mail_note"] and "connection refused" in res["nightly_mail_note"]
    down = res["status_while_down"]
    assert down["pending"] == 1 and down["attempts"] >= 3 and "connection refused" in down["last_error"]
    assert res["messages_received"] == 1  # delivered once, not once per retry
    assert res["attempts_total"] == res["status_after"]["last_delivered"]["attempts"] >= 4
    assert res["status_after"]["pending"] == 0
    assert 0 <= res["delivery_delay_s"] < 10  # the backoff is capped at 2 s in this config
    assert any(f"after {res['attempts_total']} attempt(s)" in ln for ln in res["status_text"])
    assert res["subject"].startswith("profd nightly")
