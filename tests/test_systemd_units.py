"""The unit files: verified by systemd itself (where systemd-analyze exists), hardened, documented
by a file the install steps put in place, ordered sensibly, and a nightly timer for both flavours."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
INSTALL = (UNITS / "INSTALL.md").read_text()
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")

USER_UNITS = ["profd.service", "profd-nightly.service", "profd-nightly.timer"]
# Installed under these names in /etc/systemd/system (INSTALL.md's cp lines).
SYSTEM_UNITS = {"profd-system.service": "profd.service", "profd-system-nightly.service": "profd-nightly.service",
                "profd-system-nightly.timer": "profd-nightly.timer"}


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, allow_no_value=True)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((UNITS / name).read_text())
    return cp


def _problems(out: str) -> list[str]:
    # The binary is not installed on a test machine; everything else systemd says is a problem.
    return [ln for ln in out.splitlines() if ln.strip() and "is not executable" not in ln]


def test_documentation_points_at_a_file_the_install_steps_install() -> None:
    for name in USER_UNITS + list(SYSTEM_UNITS):
        doc = _unit(name)["Unit"]["Documentation"]
        assert doc.startswith("file://"), (name, doc)
        installed = doc.removeprefix("file://").replace("%h", "~")
        assert installed in INSTALL, f"{name}: nothing in INSTALL.md installs {installed}"


def test_user_unit_is_not_ordered_after_the_target_that_wants_it() -> None:
    u = _unit("profd.service")
    assert u["Install"]["WantedBy"] == "default.target"
    assert "default.target" not in u["Unit"].get("After", "")


def test_both_flavours_have_a_nightly_timer_and_the_install_enables_it() -> None:
    for timer, service in (("profd-nightly.timer", "profd-nightly.service"),
                           ("profd-system-nightly.timer", "profd-system-nightly.service")):
        t = _unit(timer)
        assert t["Timer"]["OnCalendar"] and t["Install"]["WantedBy"] == "timers.target"
        assert "profd nightly" in _unit(service)["Service"]["ExecStart"]
    assert "enable --now profd profd-nightly.timer" in INSTALL
    assert "User=profd" in (UNITS / "profd-system-nightly.service").read_text()


def test_user_unit_is_hardened() -> None:
    s = _unit("profd.service")["Service"]
    for key in ("NoNewPrivileges", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime", "RestrictNamespaces"):
        assert s.get(key) == "yes", key
    assert s["SystemCallFilter"].startswith("~@") and s["UMask"] == "0077"
    assert "@debug" not in s["SystemCallFilter"]  # profilers need ptrace / perf_event_open


@needs_analyze
def test_systemd_analyze_verify_user_units(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    tmp_path.chmod(0o700)
    cp = subprocess.run([ANALYZE, "--user", "verify", *USER_UNITS], cwd=UNITS, env=env, capture_output=True,
                        text=True, timeout=60)
    if "Failed to initialize manager" in cp.stderr:
        pytest.skip(f"systemd-analyze --user cannot run here: {cp.stderr.strip()[:200]}")
    assert _problems(cp.stdout + cp.stderr) == []


@needs_analyze
def test_systemd_analyze_verify_system_units(tmp_path: Path) -> None:
    for src, dst in SYSTEM_UNITS.items():
        shutil.copy(UNITS / src, tmp_path / dst)
    cp = subprocess.run([ANALYZE, "verify", *SYSTEM_UNITS.values()], cwd=tmp_path, capture_output=True, text=True,
                        timeout=60)
    assert _problems(cp.stdout + cp.stderr) == []


def _exposure(path: Path) -> float:
    cp = subprocess.run([ANALYZE, "security", "--offline=yes", str(path)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", cp.stdout + cp.stderr)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline is not available here: {(cp.stdout + cp.stderr)[-200:]}")
    return float(m.group(1))


@needs_analyze
def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    # An unhardened service scores 9.6 ("UNSAFE"); the user unit cannot use mount namespaces.
    assert _exposure(UNITS / "profd.service") <= 7.0
    shutil.copy(UNITS / "profd-system.service", tmp_path / "profd.service")
    assert _exposure(tmp_path / "profd.service") <= 4.5
