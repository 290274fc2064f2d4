"""What a new user hits, through the real CLI as a subprocess: exit codes (2 bad input, 3 profd's own
failure, one paragraph each, a traceback only with -v), config errors naming file, key, type and an
example, `--version`, and `watch --json` as JSON lines."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The real captures the tests read are copied under tests/fixtures (a fresh clone has no ../shared).
FIXTURES = ROOT / "tests" / "fixtures"
HELPER = "import torch\n\ndef helper(x):\n    return x * 2\n"


@pytest.fixture
def env(tmp_path: Path) -> dict:
    return dict(os.environ, PROFD_STATE_DIR=str(tmp_path / "state"), PROFD_CONFIG=str(tmp_path / "none.toml"),
                PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def profd(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profd.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_paragraph(cp: subprocess.CompletedProcess) -> str:
    err = cp.stderr.strip()
    assert err.startswith("profd: ") and "\n" not in err and "Traceback" not in err, cp.stderr
    return err


def test_version(env: dict) -> None:
    cp = profd(env, "--version")
    assert cp.returncode == 0 and cp.stdout.strip().startswith("profd 0.")


@pytest.mark.parametrize("args, words", [
    (["tune", "--budget", "0", "X"], "--budget '0': give a whole number >= 1"),
    (["tune", "--budget", "-1", "X"], "--budget '-1'"),
    (["profile", "--timeout", "0", "X"], "--timeout '0': give a number > 0"),
    (["specs", "--device", "h900"], "no device 'h900'; known:"),
    (["explain", "--device", "h900", "CAPTURE"], "no device 'h900'; known:"),
    (["history", "nosuch.py"], "no such file, and profd has no runs stored"),
    (["specs", "--measure"], "--measure needs the GPU it measures"),
])
def test_bad_input_exits_2(env: dict, tmp_path: Path, args: list[str], words: str) -> None:
    target = tmp_path / "t.py"
    shutil.copy(ROOT / "examples" / "kernels" / "vector_add.py", target)
    args = [str(target) if a == "X" else str(FIXTURES / "ncu/h200_vector_add_basic_raw.csv")
            if a == "CAPTURE" else a for a in args]
    cp = profd(env, *args)
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    assert words in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr


def test_ambiguous_device_has_no_stray_quote(env: dict) -> None:
    err = one_paragraph(cp := profd(env, "specs", "--device", "h100"))
    assert cp.returncode == 2 and "'h100' is ambiguous: h100-pcie, h100-sxm" in err
    assert err.count("'") % 2 == 0


def test_a_py_that_is_no_target_is_bad_input_and_not_stored(env: dict, tmp_path: Path) -> None:
    helper = tmp_path / "helpers.py"
    helper.write_text(HELPER)
    for cmd in ("profile", "tune"):
        cp = profd(env, cmd, str(helper))
        assert cp.returncode == 2, cp.stderr
        err = one_paragraph(cp)
        assert "not a kernel target" in err and "get_inputs, reference, kernel" in err and cp.stdout == ""
    db = Path(env["PROFD_STATE_DIR"]) / "profd.db"
    if db.exists():
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    cp = profd(env, "history", str(helper))
    assert cp.returncode == 0 and "No runs recorded" in cp.stdout


def test_syntax_error_shows_the_users_line_only(env: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\ndef kernel(:\n    pass\n")
    cp = profd(env, "profile", str(broken))
    assert cp.returncode == 1
    out = cp.stdout
    assert "broken.py:3: syntax error" in out and "def kernel(:" in out and "^" in out
    assert "importlib" not in out and "profd/harness" not in out and "Traceback" not in out
    assert "## 2." not in out and "How fast" not in out  # no sections of "nothing"


def test_explain_of_a_capture_without_metrics_is_bad_input(env: dict, tmp_path: Path) -> None:
    rows = list(csv.reader((FIXTURES / "ncu/h200_vector_add_basic_raw.csv").read_text().splitlines()))
    rows = [r for r in rows if len(r) > 1]
    bare = tmp_path / "kernels-only.csv"
    with bare.open("w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows([r[:11] for r in rows])  # ID .. CC: no metrics
    cp = profd(env, "explain", str(bare))
    assert cp.returncode == 2 and "holds no kernel metrics" in one_paragraph(cp)


@pytest.mark.parametrize("body, words", [
    ('[watch]\ndebounce_ms = "fast"\n', '[watch] debounce_ms = "fast": expected a whole number, e.g. debounce_ms = 400'),
    ('[run]\ntimeout_s = "soon"\n', '[run] timeout_s = "soon": expected a number, e.g. timeout_s = 120'),
    ('[watch]\ndirs = "/path"\n', '[watch] dirs = "/path": expected a list of strings, e.g. dirs = ["~/kernels"]'),
    ('[llm]\nbse_url = "http://x/v1"\n', "[llm]: unknown setting 'bse_url'. Did you mean 'base_url'?"),
    ('[mail]\nhots = "smtp.example.com"\n', "[mail]: unknown setting 'hots'. Did you mean 'host'?"),
    ('[executor]\ngpus = ["a"]\n', '[executor] gpus = ["a"]: expected a list of whole numbers, e.g. gpus = [0, 1]'),
    ('[nightly]\nat = "2am"\n', '[nightly] at = "2am": must be a time HH:MM'),
    ('[wacth]\ndirs = []\n', "unknown section(s) [wacth]"),
])
def test_config_file_errors_name_file_key_type_and_example(env: dict, tmp_path: Path, body: str, words: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(body)
    cp = profd(env, "doctor", "--config", str(cfg))
    assert cp.returncode == 2, (cp.stdout, cp.stderr)
    err = one_paragraph(cp)
    assert str(cfg) in err and words in err, err


def test_environment_overrides_follow_the_same_rules(env: dict, tmp_path: Path) -> None:
    cp = profd(dict(env, PROFD_WATCH_DEBOUNCE_MS="fast"), "doctor")
    assert cp.returncode == 2
    assert "PROFD_WATCH_DEBOUNCE_MS='fast': expected a whole number, e.g. PROFD_WATCH_DEBOUNCE_MS=400" in one_paragraph(cp)
    cp = profd(dict(env, PROFD_LLM_MODELL="m"), "doctor")
    assert cp.returncode == 2 and "PROFD_LLM_MODELL: unknown setting 'modell'. Did you mean 'model'?" in cp.stderr
    cp = profd(dict(env, PROFD_RUN_COUNTERS="maybe"), "doctor")
    assert cp.returncode == 2 and "expected true or false" in cp.stderr


def test_good_config_and_env_are_typed() -> None:
    from profd import config

    cfg = config.load(Path("/nonexistent.toml"), env={"PROFD_WATCH_DIRS": "/a:/b", "PROFD_RUN_COUNTERS": "off",
                                                       "PROFD_EXECUTOR_GPUS": "0,1", "PROFD_MAIL_PORT": "2525",
                                                       "PROFD_LLM_API_KEY": "sk-not-a-setting"})
    assert cfg.watch.dirs == ["/a", "/b"] and cfg.run.counters is False
    assert cfg.executor == {"gpus": [0, 1]} and cfg.mail == {"port": 2525} and cfg.llm == {}


@pytest.mark.parametrize("setup", ["not-a-database", "state-dir-is-a-file"])
def test_profds_own_failures_exit_3_with_the_fix_and_a_traceback_only_with_v(env: dict, tmp_path: Path,
                                                                              setup: str) -> None:
    state = Path(env["PROFD_STATE_DIR"])
    if setup == "not-a-database":
        state.mkdir(mode=0o700)
        (state / "profd.db").write_text("these are my notes, not a database\n")
        fix = "Move it away"
    else:
        state.write_text("oops\n")
        fix = "is not a directory"
    cp = profd(env, "status")
    assert cp.returncode == 3, (cp.stdout, cp.stderr)
    err = one_paragraph(cp)
    assert fix in err and "PROFD_STATE_DIR" in err and "-v" in err
    cp = profd(env, "status", "-v")
    assert cp.returncode == 3 and "Traceback" in cp.stderr and fix in cp.stderr.splitlines()[-1]


def test_watch_json_prints_one_json_object_per_line(env: dict, tmp_path: Path) -> None:
    d = tmp_path / "kernels"
    d.mkdir()
    shutil.copy(ROOT / "examples" / "kernels" / "vector_add.py", d / "vector_add.py")
    (d / "broken.py").write_text("def kernel(:\n")
    (d / "helpers.py").write_text(HELPER)
    cp = profd(env, "watch", str(d), "--json", "--once", "--no-counters", timeout=300)
    assert cp.returncode == 0, cp.stderr[-2000:]
    events = [json.loads(line) for line in cp.stdout.splitlines()]  # every line is JSON
    by = {}
    for e in events:
        by.setdefault(e["event"], []).append(e)
    assert {Path(e["path"]).name for e in by["saved"]} == {"vector_add.py", "broken.py", "helpers.py"}
    verdicts = {Path(e["path"]).name: e for e in by["verdict"]}
    assert verdicts["vector_add.py"]["correct"] is True and verdicts["vector_add.py"]["median_ms"] > 0
    assert verdicts["broken.py"]["status"] == "load_error" and verdicts["broken.py"]["line"] == 1
    assert [Path(e["path"]).name for e in by["skipped"]] == ["helpers.py"]
