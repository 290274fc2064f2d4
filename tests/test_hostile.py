"""Hostile candidates against the judge (issue #14), through a non-LLM advisor and through the
LLM advisor (the real ``openai`` client and a real HTTP server on 127.0.0.1).

Every attack must be rejected with its cause named, the genuine rewrite kept (and
confirmed), the user's file unchanged in bytes and metadata, no canary secret anywhere
profd stores or sends, and profd alive. ``PROFD_HOSTILE_TABLE=path`` writes the table.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.hostile_attacks import ATTACKS, GENUINE, TARGET
    from tests.llm_server import ScriptedLLMServer
except ImportError:
    from hostile_attacks import ATTACKS, GENUINE, TARGET
    from llm_server import ScriptedLLMServer

from advisors.base import TuneContext
from profd.model import Candidate
from profd.store import Store

CANARY = "canary-SECRET-5f3a9c21e7"


class ScriptedAdvisor:
    """A non-LLM advisor that proposes the given sources, in order."""

    name = "scripted"

    def __init__(self, sources: list[tuple[str, str]]) -> None:
        self.todo = list(sources)
        self.last_errors: list[str] = []

    def propose(self, ctx: TuneContext, n: int) -> list[Candidate]:
        out = [Candidate(id=f"s{len(ctx.history) + i:02d}", source=src, advisor="scripted", rationale=name)
               for i, (name, src) in enumerate(self.todo[:n])]
        self.todo = self.todo[n:]
        return out


def _sleepers() -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True).stdout
    return [ln for ln in ps.splitlines() if "profd.harness.judged" in ln]


def _everything(state: Path) -> str:
    text = []
    for p in state.rglob("*"):
        if p.is_file():
            text.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(text)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state = tmp_path / "state"
    monkeypatch.setenv("PROFD_STATE_DIR", str(state))
    monkeypatch.setenv("PROFD_LLM_API_KEY", CANARY)
    monkeypatch.setenv("INNOCENT_LOOKING_VAR", CANARY)  # the key under a name the pattern misses
    from profd import secrets

    secrets.register(CANARY)
    user = tmp_path / "user"
    user.mkdir()
    f = user / "add.py"
    f.write_text(TARGET)
    os.chmod(f, 0o644)
    os.utime(f, (1_700_000_000, 1_700_000_000))
    return {"state": state, "file": f, "stat": f.stat(), "store": Store(tmp_path / "profd.db")}


def _table(rows: list[tuple[str, str, str]], title: str) -> str:
    lines = [f"### {title}", "", "| attack | what it tries | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {w} | {v.replace('|', '/')[:220]} |" for a, w, v in rows]
    return "\n".join(lines) + "\n"


def _check(res: Any, env: dict[str, Any], extra_text: str = "") -> list[tuple[str, str, str]]:
    f: Path = env["file"]
    assert f.read_text() == TARGET, "the user's file changed"
    st = f.stat()
    assert (st.st_mode, st.st_mtime_ns) == (env["stat"].st_mode, env["stat"].st_mtime_ns), "metadata changed"
    blob = _everything(env["state"]) + json.dumps(res.to_dict(), default=str) + extra_text
    blob += "\n".join(str(r[0]) for r in env["store"].db.execute("SELECT reason FROM candidates"))
    assert CANARY not in blob, "a secret leaked into profd's state, results or requests"
    assert not _sleepers(), "a candidate process outlived its judgement"
    row = env["store"].db.execute("SELECT finished_at FROM tune_sessions WHERE id=?", (res.session_id,)).fetchone()
    assert row["finished_at"] is not None, "the tuning session was left open"
    by_name = {a.candidate.rationale: a for a in res.attempts}
    rows = []
    for name, what, _ in ATTACKS:
        a = by_name.get(name)
        verdict = a.verdict.reason if a else next((n for n in res.notes if name in n or "contract" in n), "(not proposed)")
        rows.append((name, what, verdict))
        if a is not None:
            assert not a.verdict.accepted, f"attack {name!r} was kept: {a.verdict.reason}"
            assert a.verdict.reason, f"attack {name!r} rejected without a cause"
    kept = [a for a in res.attempts if a.verdict.accepted]
    assert [a.candidate.rationale for a in kept] == ["genuine"], [a.verdict.reason for a in res.attempts if a.candidate.rationale == "genuine"]
    assert kept[0].verdict.confirmed
    rows.append(("genuine rewrite (BLOCK 64 -> 1024)", "a real speed-up", kept[0].verdict.reason))
    return rows


def _write(rows: list[tuple[str, str, str]], title: str) -> None:
    out = os.environ.get("PROFD_HOSTILE_TABLE")
    if out:
        with open(out, "a") as fh:
            fh.write(_table(rows, title) + "\n")


def test_hostile_candidates_through_a_plain_advisor(env: dict[str, Any]) -> None:
    from profd.flow.apply import apply_best
    from profd.flow.tune import tune

    sources = [(n, s) for n, _, s in ATTACKS] + [("genuine", GENUINE)]
    res = tune(env["file"], env["store"], budget=len(sources), advisors=[ScriptedAdvisor(sources)],
               force_cpu=True, timeout_s=40.0, batch=len(sources))
    rows = _check(res, env)
    _write(rows, "non-LLM advisor")
    # apply writes only the confirmed candidate; the file is the genuine rewrite afterwards
    apply_best(env["file"], env["store"])
    assert env["file"].read_text() == GENUINE


def test_hostile_candidates_through_the_llm_advisor(env: dict[str, Any]) -> None:
    from advisors.rewriters.llm.advisor import LLMAdvisor
    from advisors.rewriters.llm.config import LLMConfig
    from profd.flow.tune import tune

    script = ["Here it is (\ud800 invalid text):\n```python\n" + ATTACKS[0][2] + "\n```"]
    script += [f"{name}\n```python\n{src}\n```" for name, _, src in ATTACKS[1:]]
    script += ["genuine\n```python\n" + GENUINE + "\n```"]
    with ScriptedLLMServer(script) as srv:
        adv = LLMAdvisor(LLMConfig(base_url=srv.base_url, model="scripted-model", max_retries=0, timeout_s=20))
        from profd.flow.tune import adopt_secrets

        adopt_secrets(adv)  # what profd does with every advisor before it forks anything
        assert CANARY not in os.environ.get("PROFD_LLM_API_KEY", ""), "the key stayed in the forking process's env"
        res = tune(env["file"], env["store"], budget=len(script), advisors=[adv], force_cpu=True, timeout_s=40.0,
                   batch=1)
        sent = "\n".join(json.dumps(r.body) for r in srv.chat_requests())
    # the LLM advisor names its attempts by the reply's first line: map them back
    for a in res.attempts:
        for name, _, _ in ATTACKS:
            if a.candidate.rationale.startswith(name) or name in a.candidate.rationale:
                a.candidate.rationale = name
        if "genuine" in a.candidate.rationale:
            a.candidate.rationale = "genuine"
    rows = _check(res, env, sent)
    _write(rows, "LLM advisor (real openai client, HTTP server on 127.0.0.1)")
