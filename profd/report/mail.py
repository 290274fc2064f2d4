"""Mail the nightly report: build the MIME message, send it over SMTP, keep it when sending fails.

``send`` never raises: the nightly run must finish (and save its report) whatever the mail
server does. A message that could not be sent is kept in ``<state dir>/outbox/`` (user-only)
and ``retry_outbox`` sends it later; ``outbox_status`` tells ``profd status`` what is waiting.

The password is read at send time from an environment variable or a user-only file, never
from the config; it is scrubbed from every message and log line this module writes.
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import json
import logging
import os
import smtplib
import socket
import ssl
import stat
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from profd.report.nightly import NightlyReport, subject
from profd.paths import ensure_private_dir, state_dir, write_private

log = logging.getLogger("profd.report.mail")

SECURITY_MODES = ("starttls", "ssl", "none")
_DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class MailConfigError(ValueError):
    """The [mail] settings are unusable; the message says which setting and how to fix it."""


# --------------------------------------------------------------------------- config


@dataclass
class MailConfig:
    """The ``[mail]`` table of profd's config. The password itself is never stored here."""

    host: str
    from_addr: str
    to: list[str]
    port: int = 0  # 0: the usual port for the security mode (587 / 465 / 25)
    security: str = "starttls"  # "starttls" | "ssl" (implicit TLS) | "none"
    username: str = ""  # empty: no AUTH (a local relay)
    password_env: str = ""  # name of the environment variable holding the password
    password_file: str = ""  # path of a file (mode 0600) holding the password
    timeout_s: float = 30.0  # per network operation
    retries: int = 2  # extra attempts after the first, for transient failures only
    retry_delay_s: float = 10.0
    ca_file: str = ""  # trust this CA bundle (a private CA) instead of the system's
    verify: bool = True  # False: skip certificate checks (a lab relay with a self-signed cert)
    helo_name: str = ""  # name sent in EHLO; default: this host's name
    outbox_retry_s: float = 60.0  # the daemon retries a kept message after this, doubling per failure...
    outbox_retry_max_s: float = 3600.0  # ...up to this

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "MailConfig":
        """Build from the TOML ``[mail]`` table; raises ``MailConfigError`` with a one-paragraph fix."""
        if "password" in data:
            raise MailConfigError(
                "The [mail] table has a `password` key: profd does not read passwords from its config file, "
                "which is easy to leak (backups, dotfile repos, screenshots). Remove it and set either "
                "`password_env = \"PROFD_SMTP_PASSWORD\"` (an environment variable, e.g. from a systemd "
                "EnvironmentFile) or `password_file = \"~/.config/profd/smtp-password\"` (a file with mode 0600).")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MailConfigError(f"Unknown [mail] setting(s): {', '.join(unknown)}. Known settings: "
                                  f"{', '.join(sorted(known))}.")
        missing = [k for k in ("host", "from_addr", "to") if not data.get(k)]
        if missing:
            raise MailConfigError(f"The [mail] table needs {', '.join(missing)}: e.g. host = \"smtp.example.com\", "
                                  "from_addr = \"profd@example.com\", to = [\"you@example.com\"].")
        kw = dict(data)
        kw["to"] = [kw["to"]] if isinstance(kw["to"], str) else list(kw["to"])
        try:
            cfg = cls(**kw)
            cfg.port = int(cfg.port)
            cfg.timeout_s = float(cfg.timeout_s)
            cfg.retries = int(cfg.retries)
            cfg.retry_delay_s = float(cfg.retry_delay_s)
            cfg.outbox_retry_s = float(cfg.outbox_retry_s)
            cfg.outbox_retry_max_s = float(cfg.outbox_retry_max_s)
        except (TypeError, ValueError) as exc:
            raise MailConfigError(f"Bad value in the [mail] table: {exc}.") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``MailConfigError`` for settings that cannot work (without touching the network)."""
        if self.security not in SECURITY_MODES:
            raise MailConfigError(f"[mail] security = {self.security!r} is not one of {', '.join(SECURITY_MODES)}: "
                                  "use \"starttls\" (usually port 587), \"ssl\" (implicit TLS, usually port 465) "
                                  "or \"none\" (a local relay only).")
        if not self.to or not all("@" in a for a in self.to) or "@" not in self.from_addr:
            raise MailConfigError("[mail] from_addr and every address in `to` must be full addresses "
                                  f"(user@domain); got from_addr={self.from_addr!r}, to={self.to!r}.")
        if self.password_env and self.password_file:
            raise MailConfigError("[mail] sets both password_env and password_file; keep one, so it is clear "
                                  "which password profd uses.")
        if self.username and self.security == "none":
            raise MailConfigError("[mail] has a username but security = \"none\": the password would cross the "
                                  "network in clear text. Use security = \"starttls\" or \"ssl\", or remove "
                                  "username for a relay that needs no login.")
        if self.username and not (self.password_env or self.password_file):
            raise MailConfigError("[mail] has a username but no password source: set password_env (the name of "
                                  "an environment variable) or password_file (a file with mode 0600).")
        if not 0 <= self.port <= 65535 or self.retries < 0 or self.timeout_s <= 0 or self.retry_delay_s < 0:
            raise MailConfigError("[mail] port must be 0-65535, retries and retry_delay_s >= 0, timeout_s > 0.")
        if self.outbox_retry_s <= 0 or self.outbox_retry_max_s < self.outbox_retry_s:
            raise MailConfigError("[mail] outbox_retry_s must be > 0 and outbox_retry_max_s >= outbox_retry_s "
                                  "(e.g. outbox_retry_s = 60, outbox_retry_max_s = 3600).")

    def backoff_s(self, attempts: int) -> float:
        """How long a kept message waits before its next try, after ``attempts`` failed ones."""
        return min(self.outbox_retry_s * 2 ** max(0, attempts - 1), self.outbox_retry_max_s)

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS.get(self.security, 587)

    def password(self) -> Optional[str]:
        """The password from password_env or password_file (None when no login is configured).

        Raises ``MailConfigError`` when the source is missing or the file is readable by others.
        """
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise MailConfigError(
                    f"The mail password comes from the environment variable {self.password_env}, which is not set "
                    "(or empty) in profd's environment. Under systemd, put it in an EnvironmentFile= (mode 0600) "
                    "of the profd unit; in a shell, export it before running profd.")
            return value
        if self.password_file:
            return read_password_file(Path(self.password_file).expanduser())
        return None

    def to_dict(self) -> dict[str, Any]:
        """The settings (no password: the config never holds it), for ``--json`` output."""
        return dict(self.__dict__)


def read_password_file(path: Path) -> str:
    """Read a password file, refusing one that group or others can access."""
    try:
        st = path.stat()
    except OSError as exc:
        raise MailConfigError(f"Cannot read the mail password file {path}: {exc.strerror or exc}. Create it "
                              f"with the password on one line and run `chmod 600 {path}`.") from None
    if not stat.S_ISREG(st.st_mode):
        raise MailConfigError(f"The mail password file {path} is not a regular file.")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise MailConfigError(
            f"Refusing to use the mail password file {path}: its mode is {mode:04o}, so other users on this "
            f"machine can read (or change) it. Run `chmod 600 {path}` so that only you can read it, then run "
            "profd again. profd did not read the file.")
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise MailConfigError(f"Cannot read the mail password file {path}: {exc}.") from None
    if not value:
        raise MailConfigError(f"The mail password file {path} is empty.")
    return value


# --------------------------------------------------------------------------- message


def build_message(report: NightlyReport, html: str, images: Mapping[str, bytes], text: str,
                  cfg: MailConfig) -> EmailMessage:
    """multipart/alternative: text/plain, then multipart/related (text/html + inline PNGs by Content-ID)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = subject(report)
    msg["From"] = cfg.from_addr
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=True)
    # An explicit domain: make_msgid() would otherwise ask DNS for this host's FQDN.
    msg["Message-ID"] = make_msgid("profd", domain=cfg.from_addr.rpartition("@")[2] or "profd.local")
    msg["X-Profd-Report-Date"] = " ".join(report.date.split())
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    html_part = msg.get_payload()[1]
    for cid, png in images.items():
        # filename: clients that list inline parts as attachments then show a sensible name.
        html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>", disposition="inline",
                              filename=cid.split("@")[0] + ".png")
    return msg


# --------------------------------------------------------------------------- sending


@dataclass
class SendResult:
    """What happened to one message. ``ok`` False always comes with a message saying what to check."""

    ok: bool
    message: str
    kind: str = "sent"  # sent | config | connection | dns | timeout | tls | auth | sender | recipients | smtp | internal
    attempts: int = 0
    transient: bool = False  # worth retrying later as is
    recipients_refused: dict[str, str] = field(default_factory=dict)  # accepted for the others
    outbox_path: Optional[str] = None  # where the unsent message waits

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Failure(Exception):
    def __init__(self, kind: str, message: str, transient: bool) -> None:
        super().__init__(message)
        self.kind, self.message, self.transient = kind, message, transient


def _scrub(text: str, secret: Optional[str], username: str = "") -> str:
    """Remove the password (and its AUTH encodings) from text bound for a log or a file."""
    if not secret:
        return text
    forms = {secret, base64.b64encode(secret.encode()).decode(),
             base64.b64encode(f"\0{username}\0{secret}".encode()).decode()}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _ssl_context(cfg: MailConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=os.path.expanduser(cfg.ca_file) if cfg.ca_file else None)
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _where(cfg: MailConfig) -> str:
    return f"{cfg.host}:{cfg.effective_port} (security = \"{cfg.security}\")"


def _classify(exc: BaseException, cfg: MailConfig) -> _Failure:
    """Turn what smtplib/ssl/socket raised into one paragraph that says what to check."""
    where = _where(cfg)
    mode_hint = ("Check that security matches the port: \"starttls\" for 587 (or 25), \"ssl\" for 465.")
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, MailConfigError):
        return _Failure("config", str(exc), False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _Failure("tls", f"TLS certificate check failed for {where}: {exc.verify_message or exc}. The server's "
                        "certificate is not trusted by this machine or does not name this host. Check [mail] host "
                        "(use the name on the certificate); for a private CA set ca_file to its PEM bundle.", False)
    if isinstance(exc, ssl.SSLError):
        return _Failure("tls", f"TLS handshake with {where} failed ({exc.reason or exc}). {mode_hint}", False)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _Failure("auth", f"The server {where} rejected the login for user {cfg.username!r} "
                        f"({exc.smtp_code} {_decode(exc.smtp_error)}). Check [mail] username and the password in "
                        f"{_password_source(cfg)}; some providers need an app password.", False)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return _Failure("auth", f"The server {where} does not support what profd asked for ({exc}). If it offers "
                        "no AUTH, it may only offer it over TLS (use starttls/ssl) or need no login (remove "
                        "username).", False)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _Failure("sender", f"The server {where} refused the sender {cfg.from_addr!r} ({exc.smtp_code} "
                        f"{_decode(exc.smtp_error)}). Check [mail] from_addr: many servers only accept the "
                        "logged-in user's own address.", 400 <= exc.smtp_code < 500)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        why = "; ".join(f"{a}: {c} {_decode(m)}" for a, (c, m) in exc.recipients.items())
        return _Failure("recipients", f"The server {where} refused every recipient ({why}). Check [mail] to.",
                        all(400 <= c < 500 for c, _ in exc.recipients.values()))
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return _Failure("connection", f"The server {where} closed the connection unexpectedly ({exc or 'no reason'}). "
                        f"{mode_hint} If it is right, the server may be overloaded; profd will retry.", True)
    if isinstance(exc, smtplib.SMTPResponseException):
        transient = 400 <= exc.smtp_code < 500
        return _Failure("smtp", f"The server {where} answered {exc.smtp_code} {_decode(exc.smtp_error)}. "
                        + ("That is a temporary refusal; profd will retry." if transient
                           else "Check the server's logs or its postmaster."), transient)
    if isinstance(exc, ConnectionRefusedError):
        return _Failure("connection", f"Could not connect to the mail server {where}: connection refused, so "
                        "nothing is listening there. Check that the server is up and that [mail] host and port "
                        "are right (587 for starttls, 465 for ssl).", True)
    if isinstance(exc, socket.gaierror):
        return _Failure("dns", f"Cannot resolve the mail server name {cfg.host!r} ({exc.strerror or exc}). Check "
                        "[mail] host and this machine's DNS.", True)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return _Failure("timeout", f"The mail server {where} did not answer within {cfg.timeout_s:g} s. Check that "
                        f"host and port are right and reachable (a firewall dropping packets looks like this). "
                        f"{mode_hint}", True)
    if isinstance(exc, OSError):
        return _Failure("connection", f"Network error talking to the mail server {where}: "
                        f"{exc.strerror or exc}. Check the network path to it and [mail] host and port.", True)
    return _Failure("internal", f"Unexpected error while mailing through {where}: {type(exc).__name__}: {exc}.",
                    False)


def _decode(b: Any) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _password_source(cfg: MailConfig) -> str:
    if cfg.password_env:
        return f"the environment variable {cfg.password_env}"
    if cfg.password_file:
        return f"the file {cfg.password_file}"
    return "the password setting"


@contextlib.contextmanager
def _session(cfg: MailConfig, password: Optional[str]) -> Iterator[smtplib.SMTP]:
    """A connected, encrypted (per cfg) and logged-in SMTP session."""
    helo = cfg.helo_name or socket.gethostname() or "localhost"
    ctx = _ssl_context(cfg) if cfg.security != "none" else None
    if cfg.security == "ssl":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.effective_port, local_hostname=helo,
                                              timeout=cfg.timeout_s, context=ctx)
    else:
        smtp = smtplib.SMTP(cfg.host, cfg.effective_port, local_hostname=helo, timeout=cfg.timeout_s)
    # Never set_debuglevel(): smtplib would print the AUTH exchange, password included.
    try:
        smtp.ehlo()
        if cfg.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise _Failure("tls", f"The server {_where(cfg)} does not offer STARTTLS, so profd will not send "
                               "over it (the login and report would travel in clear text). Use security = \"ssl\" "
                               "if it is an implicit-TLS port (465), or the server's submission port (587).", False)
            smtp.starttls(context=ctx)
            smtp.ehlo()
        if cfg.username:
            smtp.login(cfg.username, password or "")
        yield smtp
    finally:
        try:
            smtp.quit()
        except Exception:  # the session is over either way
            smtp.close()


def _attempt(msg: EmailMessage, cfg: MailConfig, sender: str, rcpts: list[str]) -> dict[str, str]:
    password: Optional[str] = None
    try:
        password = cfg.password()
        with _session(cfg, password) as smtp:
            refused = smtp.send_message(msg, from_addr=sender, to_addrs=rcpts)
    except Exception as exc:
        f = _classify(exc, cfg)
        raise _Failure(f.kind, _scrub(f.message, password, cfg.username), f.transient) from None
    return {a: f"{c} {_decode(m)}" for a, (c, m) in refused.items()}


def _deliver(msg: EmailMessage, cfg: MailConfig, sender: str, rcpts: list[str], tries: int) -> SendResult:
    attempts = 0
    while True:
        attempts += 1
        try:
            refused = _attempt(msg, cfg, sender, rcpts)
        except _Failure as f:
            if f.transient and attempts < tries:
                log.warning("mail attempt %d/%d failed, retrying in %gs: %s", attempts, tries, cfg.retry_delay_s,
                            f.message)
                time.sleep(cfg.retry_delay_s)
                continue
            return SendResult(ok=False, message=f.message, kind=f.kind, attempts=attempts, transient=f.transient)
        except Exception as exc:  # anything else is a bug here; still, never raise to the nightly run
            return SendResult(ok=False, message=f"Unexpected error while mailing: {type(exc).__name__}: {exc}",
                              kind="internal", attempts=attempts)
        text = f"Sent to {', '.join(r for r in rcpts if r not in refused)} via {_where(cfg)}."
        if refused:
            text += " Refused: " + "; ".join(f"{a} ({why})" for a, why in refused.items()) + ". Check [mail] to."
        return SendResult(ok=True, message=text, kind="sent", attempts=attempts, recipients_refused=refused)


def _envelope(msg: EmailMessage, cfg: MailConfig) -> tuple[str, list[str]]:
    sender = cfg.from_addr or (getaddresses([str(msg.get("From", ""))]) or [("", "")])[0][1]
    rcpts = list(cfg.to) or [a for _, a in getaddresses([str(v) for v in msg.get_all("To", [])]) if a]
    return sender, rcpts


def send(msg: EmailMessage, cfg: MailConfig, keep_in_outbox: bool = True,
         outbox: Optional[Path] = None) -> SendResult:
    """Send ``msg`` with up to ``cfg.retries`` retries for transient failures; never raises.

    On failure the message is kept in the outbox (unless ``keep_in_outbox`` is False) and
    the result's ``outbox_path`` says where; ``retry_outbox`` sends it later.
    """
    try:
        cfg.validate()
        sender, rcpts = _envelope(msg, cfg)
        result = _deliver(msg, cfg, sender, rcpts, tries=1 + max(0, cfg.retries))
    except MailConfigError as exc:
        result = SendResult(ok=False, message=str(exc), kind="config", attempts=0)
        sender, rcpts = cfg.from_addr, list(cfg.to)
    except Exception as exc:
        result = SendResult(ok=False, message=f"Unexpected error while mailing: {type(exc).__name__}: {exc}",
                            kind="internal")
        sender, rcpts = cfg.from_addr, list(cfg.to)
    if result.ok:
        log.info("%s", result.message)
        return result
    log.error("mail not sent: %s", result.message)
    if keep_in_outbox:
        try:
            wait = cfg.backoff_s(max(result.attempts, 1))
            path = _outbox_put(msg, sender, rcpts, result, outbox, wait)
            result.outbox_path = str(path)
            result.message += (f" The message is kept in {path.parent}; the running daemon retries it (first in "
                               f"{wait:g} s, then less often), and so does the next `profd nightly`.")
        except Exception as exc:  # a full disk must not turn a mail failure into a crash
            result.message += f" It could not be kept in the outbox either ({type(exc).__name__}: {exc})."
    return result


def probe(cfg: MailConfig) -> SendResult:
    """Connect, encrypt and log in without sending anything (for ``profd doctor``); never raises."""
    password: Optional[str] = None
    try:
        cfg.validate()
        password = cfg.password()
        with _session(cfg, password) as smtp:
            smtp.noop()
        return SendResult(ok=True, message=f"Connected to {_where(cfg)}" + (f" and logged in as {cfg.username!r}."
                                                                          if cfg.username else "."), attempts=1)
    except Exception as exc:
        f = _classify(exc, cfg)
        return SendResult(ok=False, message=_scrub(f.message, password, cfg.username), kind=f.kind, attempts=1,
                          transient=f.transient)


# --------------------------------------------------------------------------- outbox


def outbox_dir() -> Path:
    """``<state dir>/outbox``: one ``.eml`` per unsent message and a ``.json`` with its envelope and last error."""
    return ensure_private_dir(state_dir() / "outbox")


def _caller_dir(path: Path) -> Path:
    # A folder the caller chose: create it user-only, but never chmod one that exists (it may be shared).
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _outbox_put(msg: EmailMessage, sender: str, rcpts: list[str], result: SendResult,
                outbox: Optional[Path], backoff: float) -> Path:
    box = _caller_dir(outbox) if outbox else outbox_dir()
    name = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
    eml = box / f"{name}.eml"
    write_private(eml, msg.as_bytes(policy=email.policy.SMTP))
    _write_meta(eml, {"created_at": time.time(), "from": sender, "to": rcpts, "subject": str(msg["Subject"] or ""),
                      "attempts": result.attempts, "last_attempt_at": time.time(), "last_error": result.message,
                      "last_kind": result.kind, "next_attempt_at": time.time() + backoff})
    return eml


def _write_meta(eml: Path, meta: dict[str, Any]) -> None:
    write_private(eml.with_suffix(".json"), json.dumps(meta, indent=1).encode("utf-8"))


def _read_meta(eml: Path) -> dict[str, Any]:
    try:
        return json.loads(eml.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@dataclass
class OutboxStatus:
    """What waits in the outbox, for ``profd status``."""

    pending: int
    last_error: str = ""
    last_attempt_at: Optional[float] = None
    oldest_at: Optional[float] = None
    directory: str = ""
    attempts: int = 0  # send attempts so far, over every waiting message
    next_attempt_at: Optional[float] = None  # when the daemon tries the earliest one again
    last_delivered: Optional[dict[str, Any]] = None  # the latest message that left the outbox: subject, attempts, when

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        done = ""
        if self.last_delivered:
            d = self.last_delivered
            done = (f"; last delivered from the outbox {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['delivered_at']))}"
                    f" after {d['attempts']} attempt{'s' * (d['attempts'] != 1)}")
        if not self.pending:
            return "mail outbox: empty" + done
        when = (f"; next try {time.strftime('%H:%M:%S', time.localtime(self.next_attempt_at))}"
                if self.next_attempt_at else "")
        return (f"mail outbox: {self.pending} unsent message{'s' * (self.pending != 1)} in {self.directory} "
                f"after {self.attempts} attempt{'s' * (self.attempts != 1)}{when}; last error: "
                f"{self.last_error or 'unknown'}{done}")


def outbox_status(outbox: Optional[Path] = None) -> OutboxStatus:
    """How many messages wait and the most recent error (reads files only; never raises on a bad entry)."""
    box = Path(outbox) if outbox else outbox_dir()
    pending = sorted(box.glob("*.eml")) if box.is_dir() else []
    metas = [_read_meta(p) for p in pending]
    latest = max(metas, key=lambda m: m.get("last_attempt_at") or 0, default={})
    created = [m["created_at"] for m in metas if m.get("created_at")]
    nexts = [m["next_attempt_at"] for m in metas if m.get("next_attempt_at")]
    return OutboxStatus(pending=len(pending), last_error=latest.get("last_error", ""),
                        last_attempt_at=latest.get("last_attempt_at"), oldest_at=min(created) if created else None,
                        directory=str(box), attempts=sum(int(m.get("attempts", 0)) for m in metas),
                        next_attempt_at=min(nexts) if nexts else None, last_delivered=_last_delivered(box))


_SENT_LOG = "delivered.jsonl"  # one line per message that left the outbox, for status and evidence


def _last_delivered(box: Path) -> Optional[dict[str, Any]]:
    try:
        lines = (box / _SENT_LOG).read_text(encoding="utf-8").splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def delivered_log(outbox: Optional[Path] = None) -> list[dict[str, Any]]:
    """Every message the outbox delivered (oldest first): subject, created_at, attempts, delivered_at."""
    box = Path(outbox) if outbox else outbox_dir()
    try:
        return [json.loads(x) for x in (box / _SENT_LOG).read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def outbox_due(outbox: Optional[Path] = None, now: Optional[float] = None) -> bool:
    """Is any kept message due for another try? (cheap: the daemon asks about once a second)"""
    box = Path(outbox) if outbox else state_dir() / "outbox"
    if not box.is_dir():
        return False
    now = time.time() if now is None else now
    return any((_read_meta(p).get("next_attempt_at") or 0) <= now for p in box.glob("*.eml"))


@contextlib.contextmanager
def _outbox_lock(box: Path) -> Iterator[bool]:
    # The daemon and a `profd` command may retry at once: one of them skips, so nothing is sent twice.
    import fcntl

    fd = os.open(box / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def retry_outbox(cfg: MailConfig, outbox: Optional[Path] = None, *, due_only: bool = False) -> list[SendResult]:
    """Try each unsent message once, oldest first; sent ones leave the outbox. Never raises.

    One attempt per message per call (the caller schedules the next call), so a dead server
    costs one timeout per message, not the full retry budget. With ``due_only`` (the daemon's
    timer) a message is tried only once its backoff (``MailConfig.backoff_s``) has passed;
    the nightly run tries every message.
    """
    box = _caller_dir(outbox) if outbox else outbox_dir()
    results: list[SendResult] = []
    with _outbox_lock(box) as locked:
        if not locked:
            return results
        for eml in sorted(box.glob("*.eml")):
            meta = _read_meta(eml)
            if due_only and (meta.get("next_attempt_at") or 0) > time.time():
                continue
            try:
                msg = BytesParser(_class=EmailMessage, policy=email.policy.SMTP).parsebytes(eml.read_bytes())
                cfg.validate()
                sender, rcpts = _envelope(msg, cfg)
                sender, rcpts = meta.get("from") or sender, meta.get("to") or rcpts
                res = _deliver(msg, cfg, sender, rcpts, tries=1)
            except MailConfigError as exc:
                res = SendResult(ok=False, message=str(exc), kind="config")
            except Exception as exc:
                res = SendResult(ok=False, message=f"Unexpected error while resending {eml.name}: "
                                 f"{type(exc).__name__}: {exc}", kind="internal")
            res.outbox_path = str(eml)
            if res.ok:
                attempts = int(meta.get("attempts", 0)) + max(res.attempts, 1)
                res.attempts = attempts
                with contextlib.suppress(OSError):
                    line = json.dumps({"subject": meta.get("subject", ""), "created_at": meta.get("created_at"),
                                       "attempts": attempts, "delivered_at": time.time()}) + "\n"
                    fd = os.open(box / _SENT_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    try:
                        os.write(fd, line.encode("utf-8"))
                    finally:
                        os.close(fd)
                eml.unlink(missing_ok=True)
                eml.with_suffix(".json").unlink(missing_ok=True)
                log.info("outbox: %s (after %d attempts)", res.message, attempts)
            else:
                attempts = int(meta.get("attempts", 0)) + max(res.attempts, 1)
                meta.update(attempts=attempts, last_attempt_at=time.time(), last_error=res.message,
                            last_kind=res.kind, next_attempt_at=time.time() + cfg.backoff_s(attempts))
                with contextlib.suppress(OSError):
                    _write_meta(eml, meta)
                log.warning("outbox: %s still unsent: %s", eml.name, res.message)
            results.append(res)
    return results


__all__ = ["MailConfig", "MailConfigError", "SendResult", "OutboxStatus", "build_message", "send", "probe",
           "retry_outbox", "outbox_status", "outbox_dir", "outbox_due", "delivered_log", "read_password_file",
           "SECURITY_MODES"]
