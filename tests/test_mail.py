"""profd.report.mail against a real SMTP server (aiosmtpd on 127.0.0.1) with STARTTLS, implicit TLS and AUTH."""

from __future__ import annotations

import email.policy
import re
import shutil
import ssl
import subprocess
import time
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Optional

import pytest

pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

from profd.report import mail  # noqa: E402
from profd.report.mail import MailConfig, MailConfigError, build_message, outbox_status, retry_outbox, send  # noqa: E402
from profd.report.nightly import (NightlyReport, ReadyCandidate, RooflinePoint, TargetSummary, TimeAt,  # noqa: E402
                                  render_html, render_text)

try:
    from support import free_port
except ImportError:  # pragma: no cover
    from tests.support import free_port

USER, PASSWORD = "profd-bot", "s3cret-Pa55-&<x>"
EVIL = "<script>alert(1)</script> & co"
TO = ["alice@example.com", "bob@example.org"]


# --------------------------------------------------------------------------- a self-signed cert


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the `cryptography` package is not installed: openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    # EC key: generated in milliseconds, where RSA would take a noticeable fraction of the test budget.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def _server_ctx(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


# --------------------------------------------------------------------------- the server


class Recorder:
    """aiosmtpd handler + authenticator: keeps every message and every login attempt."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.logins: list[tuple[str, str, str, bool]] = []  # mechanism, login, password, accepted
        self.echo_password = False  # some servers quote what they got in the 535 line

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": envelope.original_content or envelope.content,
            "login": session.login_data,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        })
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, pw = auth_data.login.decode(), auth_data.password.decode()
        ok = (login, pw) == (USER, PASSWORD)
        self.logins.append((mechanism, login, pw, ok))
        # handled=False: aiosmtpd then answers 235/535 itself (True would leave the client waiting).
        message = f"535 5.7.8 bad credentials {login}:{pw}" if self.echo_password and not ok else None
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None, message=message)


class _Controller(Controller):
    def _trigger_server(self) -> None:
        # Port 0 = an ephemeral port: learn which one before aiosmtpd connects to itself.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Server:
    def __init__(self, mode: str, cert: Optional[tuple[Path, Path]], port: int = 0) -> None:
        self.rec = Recorder()
        kw: dict[str, Any] = dict(hostname="127.0.0.1", port=port, authenticator=self.rec.authenticate,
                                  auth_required=cert is not None, ready_timeout=10)
        if mode == "starttls":
            kw.update(tls_context=_server_ctx(cert), require_starttls=True, auth_require_tls=True)
        elif mode == "ssl":
            # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; the socket itself is TLS here.
            kw.update(ssl_context=_server_ctx(cert), auth_require_tls=False)
        self.ctl = _Controller(self.rec, **kw)
        self.ctl.start()
        self.port = self.ctl.port

    def stop(self) -> None:
        self.ctl.stop()


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(mode: str = "starttls", cert: Optional[tuple[Path, Path]] = None, port: int = 0) -> Server:
        s = Server(mode, cert, port)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PROFD_TEST_SMTP_PW", PASSWORD)
    return tmp_path / "state"



def _cfg(port: int, cert: Optional[tuple[Path, Path]], **kw: Any) -> MailConfig:
    data: dict[str, Any] = dict(host="127.0.0.1", port=port, security="starttls", username=USER,
                                password_env="PROFD_TEST_SMTP_PW", from_addr="profd@example.net", to=TO,
                                timeout_s=5, retries=0, retry_delay_s=0.05, ca_file=str(cert[0]) if cert else "")
    data.update(kw)
    return MailConfig.from_mapping(data)


def _report() -> NightlyReport:
    now = time.time()
    return NightlyReport(
        date="2024-05-01", device="NVIDIA H200", peak_gbps=4800.0, peak_tflops=989.0, notes=[EVIL],
        targets=[
            TargetSummary(path="/k/fine.py", correct=True, now=TimeAt(0.5), yesterday=TimeAt(0.5),
                          roofline=RooflinePoint(intensity=0.3, achieved_gbps=3000.0, bound="memory-bound"),
                          history=[(now - 86400 * i, 0.5) for i in range(3)]),
            TargetSummary(path=f"/k/{EVIL}.py", correct=True, now=TimeAt(1.3), yesterday=TimeAt(1.0),
                          regression=True, drift_note=EVIL,
                          roofline=RooflinePoint(intensity=100.0, achieved_tflops=300.0, bound="compute-bound"),
                          candidates=[ReadyCandidate("c1", "llm:x", EVIL, 1.25, f"--- a\n+++ b\n-{EVIL}\n+ok\n")],
                          history=[(now - 86400 * i, 1.0 + 0.1 * i) for i in range(3)]),
        ])


def _message(cfg: MailConfig) -> EmailMessage:
    report = _report()
    html, images = render_html(report)
    return build_message(report, html, images, render_text(report), cfg)


def _parse(data: bytes) -> EmailMessage:
    return BytesParser(_class=EmailMessage, policy=email.policy.default).parsebytes(data)


def _outbox_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((state / "outbox").glob("*")) if p.is_file())


# --------------------------------------------------------------------------- delivery


def test_report_mail_over_starttls_with_auth(servers, cert, state: Path) -> None:
    srv = servers("starttls", cert)
    cfg = _cfg(srv.port, cert)
    msg = _message(cfg)
    res = send(msg, cfg)
    assert res.ok, res.message
    assert res.attempts == 1 and res.outbox_path is None

    assert srv.rec.logins and srv.rec.logins[-1][1:] == (USER, PASSWORD, True)
    assert len(srv.rec.messages) == 1
    got = srv.rec.messages[0]
    assert got["tls"] and got["login"] == USER.encode()
    assert got["mail_from"] == "profd@example.net"
    assert sorted(got["rcpt_tos"]) == sorted(TO)

    m = _parse(got["data"])
    assert [a.strip() for a in str(m["To"]).split(",")] == TO
    assert m.get_content_type() == "multipart/alternative"
    plain, related = m.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    html = html_part.get_content()
    assert len(images) == 2  # roofline + history
    cids = set()
    for img in images:
        assert img.get_content_type() == "image/png"
        assert img.get_content_disposition() == "inline"
        cid = img["Content-ID"].strip()
        assert cid.startswith("<") and cid.endswith(">")
        cids.add(cid[1:-1])
        assert img.get_content().startswith(b"\x89PNG\r\n\x1a\n")
        assert f'src="cid:{cid[1:-1]}"' in html
    assert cids == set(re.findall(r'src="cid:([^"]+)"', html))

    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert EVIL in plain.get_content()  # plain text needs no escaping
    assert PASSWORD not in got["data"].decode("utf-8", "replace")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_ssl_mode(servers, cert) -> None:
    srv = servers("ssl", cert)
    res = send(_message(cfg := _cfg(srv.port, cert, security="ssl")), cfg)
    assert res.ok, res.message
    assert srv.rec.messages and srv.rec.messages[0]["tls"]
    assert srv.rec.logins[-1][1:] == (USER, PASSWORD, True)


def test_untrusted_certificate_is_a_tls_failure(servers, cert) -> None:
    # Without ca_file the system trust store is used, which does not know our self-signed cert.
    srv = servers("starttls", cert)
    cfg = _cfg(srv.port, None)
    res = send(_message(cfg), cfg)
    assert not res.ok and res.kind == "tls"
    assert "certificate" in res.message and "ca_file" in res.message
    assert srv.rec.messages == [] and srv.rec.logins == []


def test_server_without_starttls_is_refused_before_login(servers) -> None:
    srv = servers("plain", None)
    cfg = _cfg(srv.port, None)
    res = send(_message(cfg), cfg)
    assert not res.ok and res.kind == "tls" and "STARTTLS" in res.message
    assert srv.rec.logins == [] and srv.rec.messages == []


def test_wrong_password_auth_failure_does_not_leak_or_retry(servers, cert, state, monkeypatch) -> None:
    wrong = "WRONG-pw-9f8e7d"
    monkeypatch.setenv("PROFD_TEST_SMTP_PW", wrong)
    srv = servers("starttls", cert)
    srv.rec.echo_password = True
    cfg = _cfg(srv.port, cert, retries=3)
    res = send(_message(cfg), cfg)
    assert not res.ok and res.kind == "auth"
    assert res.attempts == 1  # a rejected login will not start working by itself
    assert USER in res.message and "PROFD_TEST_SMTP_PW" in res.message and "bad credentials" in res.message
    assert wrong not in res.message
    assert srv.rec.logins and srv.rec.logins[-1][1:] == (USER, wrong, False)
    saved = _outbox_bytes(state)
    assert saved and wrong.encode() not in saved
    assert wrong not in outbox_status().last_error


def test_server_down_then_outbox_retry_delivers(servers, cert, state: Path) -> None:
    port = free_port()
    cfg = _cfg(port, cert, retries=1, retry_delay_s=0.05)
    res = send(_message(cfg), cfg)
    assert not res.ok and res.kind == "connection" and res.transient
    assert "connection refused" in res.message and f"127.0.0.1:{port}" in res.message
    assert res.attempts == 2
    assert res.outbox_path and Path(res.outbox_path).is_file()
    for p in (state / "outbox").glob("*.*"):
        assert p.stat().st_mode & 0o777 == 0o600, p
    st = outbox_status()
    assert st.pending == 1 and "connection refused" in st.last_error
    assert PASSWORD.encode() not in _outbox_bytes(state)

    # Still down: stays queued, error recorded.
    again = retry_outbox(cfg)
    assert [r.ok for r in again] == [False] and outbox_status().pending == 1

    srv = servers("starttls", cert, port=port)
    done = retry_outbox(cfg)
    assert [r.ok for r in done] == [True], [r.message for r in done]
    assert outbox_status().pending == 0
    assert len(srv.rec.messages) == 1
    assert sorted(srv.rec.messages[0]["rcpt_tos"]) == sorted(TO)
    m = _parse(srv.rec.messages[0]["data"])
    assert m.get_content_type() == "multipart/alternative"
    assert retry_outbox(cfg) == []  # nothing sent twice


def test_password_file_too_open_is_refused_then_fixed(servers, cert, tmp_path: Path, state: Path) -> None:
    pw = tmp_path / "smtp-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o644)
    srv = servers("starttls", cert)
    cfg = _cfg(srv.port, cert, password_env="", password_file=str(pw))

    with pytest.raises(MailConfigError) as ei:
        mail.read_password_file(pw)
    assert f"chmod 600 {pw}" in str(ei.value) and "0644" in str(ei.value)
    for loose in (0o640, 0o604, 0o610):  # any group or other bit
        pw.chmod(loose)
        with pytest.raises(MailConfigError, match="chmod 600"):
            mail.read_password_file(pw)
    pw.chmod(0o400)
    assert mail.read_password_file(pw) == PASSWORD  # trailing newline dropped
    pw.chmod(0o644)

    res = send(_message(cfg), cfg)
    assert not res.ok and res.kind == "config"
    assert f"chmod 600 {pw}" in res.message
    assert PASSWORD not in res.message
    assert srv.rec.logins == [] and srv.rec.messages == []  # refused before touching the network
    assert outbox_status().pending == 1

    pw.chmod(0o600)
    assert [r.ok for r in retry_outbox(cfg)] == [True]
    assert srv.rec.logins[-1][1:] == (USER, PASSWORD, True)
    assert len(srv.rec.messages) == 1


def test_password_env_missing_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("PROFD_TEST_SMTP_PW")
    cfg = _cfg(free_port(), None)
    res = send(_message(cfg), cfg, keep_in_outbox=False)
    assert not res.ok and res.kind == "config" and "PROFD_TEST_SMTP_PW" in res.message
    assert outbox_status().pending == 0


def test_probe_logs_in_without_sending(servers, cert, monkeypatch) -> None:
    srv = servers("starttls", cert)
    assert mail.probe(_cfg(srv.port, cert)).ok
    assert srv.rec.logins[-1][3] and srv.rec.messages == []
    monkeypatch.setenv("PROFD_TEST_SMTP_PW", "nope-123456")
    bad = mail.probe(_cfg(srv.port, cert))
    assert not bad.ok and bad.kind == "auth" and "nope-123456" not in bad.message


# --------------------------------------------------------------------------- config and message


def test_config_from_mapping_rules() -> None:
    base = dict(host="smtp.example.com", from_addr="p@example.com", to="me@example.com", username="u",
                password_env="X")
    cfg = MailConfig.from_mapping(base)
    assert cfg.to == ["me@example.com"] and cfg.effective_port == 587
    assert MailConfig.from_mapping({**base, "security": "ssl"}).effective_port == 465
    for bad, needle in [
        ({**base, "password": "x"}, "password_env"),
        ({**base, "security": "tls"}, "starttls"),
        ({**base, "security": "none"}, "clear text"),
        ({**base, "password_file": "/x"}, "both"),
        ({**base, "password_env": ""}, "no password source"),
        ({**base, "colour": 1}, "Unknown"),
        ({k: v for k, v in base.items() if k != "to"}, "to"),
    ]:
        with pytest.raises(MailConfigError, match=needle):
            MailConfig.from_mapping(bad)
    # A local relay: no login, no TLS.
    assert MailConfig.from_mapping({**base, "security": "none", "username": "", "password_env": ""}).port == 0


def test_message_headers_are_single_line_even_with_hostile_device_name() -> None:
    cfg = _cfg(25, None)
    report = _report()
    report.device = "GPU\r\nBcc: victim@example.com"
    html, images = render_html(report)
    msg = build_message(report, html, images, render_text(report), cfg)
    headers = msg.as_bytes().split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in headers and _parse(msg.as_bytes())["Bcc"] is None
    assert "GPU Bcc: victim@example.com" in str(msg["Subject"])
