"""The README's set-up commands are what CI and users actually run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    cmds = _commands()
    test_cmd = next(c for c in cmds if "pytest" in c)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_readme_main_job_watches_the_bundled_examples() -> None:
    main = _commands()[0]
    assert "profd watch examples/kernels" in main
    assert (ROOT / "examples" / "kernels").is_dir()
