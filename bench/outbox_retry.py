"""Evidence that a nightly report which failed to mail is delivered later, by the daemon's retry.

The scenario, all real: an aiosmtpd server port with nothing listening; ``profd nightly --inline``
on one example kernel (its mail fails and is kept in the outbox); ``profd watch`` (the daemon)
retries the outbox with backoff while the server is down, ``profd status`` shows the attempts;
then the server comes up and the daemon's next retry delivers the kept report.

    python bench/outbox_retry.py --out bench/results       # writes outbox-retry-<date>-cpu.txt

No GPU needed (the kernel runs in Triton's CPU interpreter); the mail path is the same on any host.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import email
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[float, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append((time.time(), list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def scenario(work: Path, *, down_attempts: int = 3, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole scenario under ``work``; returns what happened (attempts, times, status lines)."""
    from aiosmtpd.controller import Controller

    port = _free_port()
    state, watch, kernels = work / "state", work / "watched", work / "kernels"
    for d in (watch, kernels):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "kernels" / "vector_add.py", kernels / "vector_add.py")
    cfg = work / "config.toml"
    cfg.write_text(f'[run]\ncounters = false\nwarm_worker = false\n'
                   f'[mail]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\nfrom_addr = "profd@localhost"\n'
                   f'to = ["team@example.com"]\ntimeout_s = 2\nretries = 0\noutbox_retry_s = 0.5\n'
                   f'outbox_retry_max_s = 2\n')
    env = dict(os.environ, PROFD_STATE_DIR=str(state), PROFD_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cli = [sys.executable, "-m", "profd.cli"]

    def status() -> dict[str, Any]:
        cp = subprocess.run(cli + ["status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        return json.loads(cp.stdout)["mail"]

    out: dict[str, Any] = {"port": port, "events": []}

    def event(text: str) -> None:
        out["events"].append({"at": time.time(), "what": text})
        say(f"{time.strftime('%H:%M:%S')} {text}")

    event(f"SMTP port {port}: nothing listening (server down)")
    night = subprocess.run(cli + ["nightly", "--inline", "--cpu", "--budget", "0", str(kernels), "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    if night.returncode != 0:
        raise RuntimeError(f"profd nightly failed ({night.returncode}): {night.stdout[-2000:]}{night.stderr[-2000:]}")
    out["nightly_mail_note"] = json.loads(night.stdout)["mail"]
    event(f"profd nightly: {out['nightly_mail_note'][:160]}")
    kept = status()
    event(f"status: {kept['pending']} pending, {kept['attempts']} attempt(s)")
    daemon = subprocess.Popen(cli + ["watch", str(watch), "--no-counters", "--config", str(cfg)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctl = None
    try:
        down = _wait(lambda: (lambda m: m if m["attempts"] >= down_attempts else None)(status()), 60,
                     f"{down_attempts} attempts while the server is down")
        out["attempts_while_down"] = down["attempts"]
        out["status_while_down"] = down
        event(f"status (server still down): {down['pending']} pending after {down['attempts']} attempts; "
              f"last error: {down['last_error'][:120]}")
        inbox = _Inbox()
        ctl = Controller(inbox, hostname="127.0.0.1", port=port)
        ctl.start()
        up_at = time.time()
        out["server_up_at"] = up_at
        event("SMTP server up (aiosmtpd)")
        _wait(lambda: inbox.messages, 30, "the daemon to deliver the kept report")
        delivered_at = inbox.messages[0][0]
        after = _wait(lambda: (lambda m: m if m["pending"] == 0 and m.get("last_delivered") else None)(status()), 30,
                      "status to show the delivery")
        out.update(delivered_at=delivered_at, delivery_delay_s=round(delivered_at - up_at, 2),
                   status_after=after, attempts_total=after["last_delivered"]["attempts"],
                   messages_received=len(inbox.messages),
                   subject=str(email.message_from_bytes(inbox.messages[0][2], policy=email.policy.default)["Subject"]))
        event(f"delivered to {inbox.messages[0][1]} {out['delivery_delay_s']} s after the server came up; "
              f"attempts in all: {out['attempts_total']}")
        human = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60).stdout
        out["status_text"] = [ln for ln in human.splitlines() if ln.startswith("mail:")]
        for ln in out["status_text"]:
            event(f"profd status: {ln}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            log, _ = daemon.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            log, _ = daemon.communicate()
        out["daemon_outbox_lines"] = [ln for ln in log.splitlines() if "outbox" in ln]
        if ctl is not None:
            ctl.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results directory")
    args = p.parse_args(argv)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    work = Path(tempfile.mkdtemp(prefix="profd-outbox-"))
    try:
        res = scenario(work, say=say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    date = _dt.date.today().isoformat()
    head = [f"# the outbox retried against a real aiosmtpd server that was down and then came up ({date}, cpu)",
            f"attempts while the server was down: {res['attempts_while_down']}",
            f"attempts in all (the delivering one included): {res['attempts_total']}",
            f"delivered {res['delivery_delay_s']} s after the server came up, at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(res['delivered_at']))}",
            f"subject: {res['subject']}", f"messages the server received: {res['messages_received']}", "",
            "## timeline"]
    tail = ["", "## daemon log lines about the outbox"] + res["daemon_outbox_lines"]
    dest = Path(args.out) / f"outbox-retry-{date}-cpu.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(head + lines + tail) + "\n")
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
