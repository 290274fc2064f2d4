"""The nightly run on real kernels (CPU interpreter), mailed to a real SMTP server,
inline and through the daemon's queue."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from profd import config
from profd.flow.nightly import run_inline
from profd.report.nightly import load_latest
from profd.store import Store

try:
    from support import free_port
except ImportError:  # pragma: no cover
    from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK"



@pytest.fixture
def kernels(tmp_path: Path) -> Path:
    d = tmp_path / "kernels"
    d.mkdir()
    for name in ("vector_add.py", "kernelbench_relu.py"):
        shutil.copy(ROOT / "examples" / "kernels" / name, d / name)
    return d


def test_nightly_inline_saves_and_mails_the_report(kernels: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        cfg = config.load(tmp_path / "none.toml", env={})
        cfg.watch.dirs = [str(kernels)]
        cfg.nightly.budget = 2
        cfg.mail = {"host": "127.0.0.1", "port": port, "security": "none", "from_addr": "profd@localhost",
                    "to": ["team@example.com"], "timeout_s": 10}
        said: list[str] = []
        with Store() as store:
            rep, where, note = run_inline(cfg, store, has_gpu=False, say=said.append)
            rep2, where2, _ = run_inline(cfg, store, has_gpu=False, say=lambda s: None)
    finally:
        ctl.stop()
    # Long work is not silent: a line per step and per candidate, named by target.
    for name in ("vector_add.py", "kernelbench_relu.py"):
        assert f"nightly: {name}: verifying and timing" in said
        assert any(re.match(rf"nightly: {re.escape(name)}: \[[#.]+\] [12]/2( \d+/min)? \S+ (kept|rejected)", x) for x in said), said
    # A second nightly the same day keeps the first one's report.
    assert Path(where).parent != Path(where2).parent and Path(where).exists()
    # CPU mode says so, and does not blame the targets' flops()/bytes_moved() for the missing roofline.
    saved = Path(where).read_text()
    assert "define flops()" not in saved and "CPU interpreter" in saved and "vs yesterday" not in saved
    assert {Path(t.path).name for t in rep.targets} == {"vector_add.py", "kernelbench_relu.py"}
    assert all(t.correct for t in rep.targets)
    assert note == "mailed to team@example.com"
    assert Path(where).exists() and load_latest() is not None
    assert len(inbox.messages) == 2
    rcpts, raw = inbox.messages[0]
    assert rcpts == ["team@example.com"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()
    assert "vector_add.py" in html and "kernelbench_relu.py" in html
    cids = [p["Content-ID"].strip("<>") for p in msg.walk() if p.get_content_maintype() == "image"]
    assert cids and all(f"cid:{c}" in html for c in cids)
    # each target got a nightly tuning session stored, each night
    with Store() as store:
        kinds = [r[0] for r in store.db.execute("SELECT kind FROM tune_sessions")]
    assert kinds.count("nightly") == 4  # two nights of two targets


def test_nightly_through_the_daemon_queue(kernels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from profd.service.jobqueue import JobQueue
    from profd.model import JobKind

    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    env = dict(os.environ, PROFD_CONFIG=str(tmp_path / "none.toml"), PROFD_NIGHTLY_BUDGET="1")
    # queue the nightly jobs as `profd nightly` does with a daemon up, then let a daemon drain them
    with Store() as store:
        q = JobQueue(store)
        for f in sorted(kernels.glob("*.py")):
            q.enqueue(f, JobKind.NIGHTLY)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "profd.cli", "watch", str(empty), "--once", "--no-counters"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nightly: vector_add.py done" in out.stdout
    assert "nightly report:" in out.stdout
    rep = subprocess.run([sys.executable, "-m", "profd.cli", "report", "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert rep.returncode == 0 and "kernelbench_relu.py" in rep.stdout
