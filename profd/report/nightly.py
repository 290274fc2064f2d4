"""The nightly report: an HTML email with pictures, its plain-text twin, and its copy on disk.

One import for callers; the parts live where their names say:

* ``values``  — the data (``NightlyReport`` of ``TargetSummary``) and the words and numbers
  every rendering shares;
* ``charts``  — the roofline and history pictures (PNG);
* ``html``    — the mail's HTML (untrusted text escaped, styles inline);
* ``text``    — the plain-text twin (control characters dropped);
* ``storage`` — one folder per run on disk, and finding the newest.
"""

from __future__ import annotations

from profd.report.charts import render_charts
from profd.report.html import MAIL_MAX_DIFF_LINES, diff_html, render_html
from profd.report.storage import SavedReport, default_report_dir, load_latest, reports_dir, save
from profd.report.text import render_text
from profd.report.values import (FindingLine, NightlyReport, ReadyCandidate, RooflinePoint, TargetSummary, TimeAt,
                                 display_names, fmt_ms, subject)

__all__ = [
    "TimeAt", "RooflinePoint", "FindingLine", "ReadyCandidate", "TargetSummary", "NightlyReport", "SavedReport",
    "render_html", "render_text", "render_charts", "diff_html", "subject", "save", "load_latest", "reports_dir",
    "default_report_dir", "fmt_ms", "display_names", "MAIL_MAX_DIFF_LINES",
]
