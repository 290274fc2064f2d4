"""The nightly report on disk: one folder per run with HTML (pictures as PNG beside it), text and JSON."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from profd.paths import artifacts_dir, ensure_private_dir, write_private
from profd.report.charts import render_charts
from profd.report.html import render_page
from profd.report.text import render_text
from profd.report.values import NightlyReport, finite



def reports_dir() -> Path:
    """Where nightly reports are kept: one folder per run under the state dir's artifacts."""
    return artifacts_dir("reports")


def default_report_dir(report: NightlyReport) -> Path:
    """``reports_dir()/<date>-<HHMMSS>``, a new folder per run, created user-only.

    A second nightly the same day (a re-run after a fix, a manual ``profd nightly``) must not
    overwrite the first one's report: the folder carries the time the report was generated,
    and a suffix when two land in the same second.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", report.date).strip("-.") or "undated"
    stamp = datetime.fromtimestamp(report.generated_at).strftime("%H%M%S") if finite(report.generated_at) else "run"
    root = ensure_private_dir(reports_dir())
    for n in range(1, 1000):
        candidate = root / (f"{safe}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            candidate.mkdir(mode=0o700)  # atomic: two runs in the same second get two folders
        except FileExistsError:
            continue
        return ensure_private_dir(candidate)
    raise OSError(f"{root}: a thousand reports named {safe}-{stamp}; remove old ones")


def save(report: NightlyReport, directory: Optional[Path] = None) -> Path:
    """Write ``report.html`` (pictures as PNG files next to it), ``report.txt`` and ``report.json``.

    Returns the path of ``report.html``. The saved copy shows full diffs; the mail caps them.
    """
    if directory is None:
        directory = default_report_dir(report)
    else:
        # A folder the caller chose: create it user-only, but never chmod one that exists (it may be shared).
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    images = render_charts(report)
    files = {cid: cid.split("@")[0] + ".png" for cid in images}
    for cid, png in images.items():
        write_private(directory / files[cid], png)
    write_private(directory / "report.txt", render_text(report).encode("utf-8"))
    write_private(directory / "report.json", report.to_json(indent=1).encode("utf-8"))
    html_path = directory / "report.html"
    # Written last: its presence marks a complete report for load_latest().
    write_private(html_path, render_page(report, files, max_diff_lines=None).encode("utf-8"))
    return html_path


@dataclass
class SavedReport:
    """A nightly report found on disk."""

    directory: Path
    html_path: Path
    text_path: Path
    report: Optional[NightlyReport]  # None when report.json is missing or unreadable

    def text(self) -> str:
        try:
            return self.text_path.read_text(encoding="utf-8")
        except OSError:
            return render_text(self.report) if self.report else ""

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "html": str(self.html_path), "text": str(self.text_path),
                "report": self.report.to_dict() if self.report else None}


def load_latest(root: Optional[Path] = None) -> Optional[SavedReport]:
    """The most recently saved report under ``root`` (default: the state dir's reports), or None."""
    root = Path(root) if root else reports_dir()
    found = [p for p in root.glob("*/report.html") if p.is_file()]
    if not found:
        return None
    html_path = max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    d = html_path.parent
    report: Optional[NightlyReport] = None
    try:
        report = NightlyReport.from_dict(json.loads((d / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return SavedReport(directory=d, html_path=html_path, text_path=d / "report.txt", report=report)
