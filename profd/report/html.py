"""The nightly report as HTML for mail and for the copy on disk.

Everything that came from a kernel file, a profiler, an advisor or an LLM (names, messages,
findings, rationales, diffs, notes) is untrusted text: all of it is escaped. Styles are inline
(mail clients drop <style>).
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any, Optional

from profd.report.charts import cid, render_charts
from profd.report.values import (INTERPRETER_NOTE, NightlyReport, TargetSummary, ceilings_text, change_vs,
                                 compared_line, display_names, fmt_roofline, fmt_time_at, status_word, subject,
                                 why_no_roofline_chart)

#: The email caps each diff (a mail client chokes on a 5,000-line <pre>); the saved copy does not.
MAIL_MAX_DIFF_LINES = 400


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


_FONT = "font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif"
_MONO = "font-family:SFMono-Regular,Menlo,Consolas,monospace"
_PRE = (f"{_MONO};font-size:12px;line-height:1.35;background:#f6f8fa;border:1px solid #d0d7de;"
        "padding:8px;margin:6px 0 12px 0;white-space:pre;overflow-x:auto")
_TH = "text-align:left;padding:4px 8px;border-bottom:2px solid #999;font-size:13px"
_TD = "padding:4px 8px;border-bottom:1px solid #ddd;font-size:13px;vertical-align:top"
_ROW_BG = {"regression": "#fdecea", "incorrect": "#fff4e5", "ok": "#ffffff"}


def _diff_line_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "color:#57606a;font-weight:bold"
    if line.startswith("@@"):
        return "color:#0550ae;background:#ddf4ff"
    if line.startswith("+"):
        return "color:#116329;background:#dafbe1"
    if line.startswith("-"):
        return "color:#82071e;background:#ffebe9"
    return "color:#24292f"


def diff_html(diff: str, max_lines: Optional[int] = None) -> str:
    """A unified diff as a <pre> with +/- lines colored by inline styles (mail clients drop <style>)."""
    lines = diff.splitlines()
    shown = lines if max_lines is None else lines[:max_lines]
    out = [f'<span style="{_diff_line_style(line)}">{_e(line)}</span>' for line in shown]
    if len(shown) < len(lines):
        out.append(f'<span style="color:#57606a;font-style:italic">… {len(lines) - len(shown)} more lines: '
                   "the full diff is in the saved report (profd report)</span>")
    return f'<pre style="{_PRE}">' + "\n".join(out) + "</pre>"


def _row_kind(t: TargetSummary) -> str:
    return "regression" if t.regression else "incorrect" if not t.correct else "ok"


def render_page(report: NightlyReport, image_src: dict[str, str], max_diff_lines: Optional[int]) -> str:
    names = display_names(report.targets)
    ordered = report.ordered_targets()
    c = report.counts()
    h: list[str] = []
    a = h.append
    a('<!DOCTYPE html><html><head><meta charset="utf-8">')
    a(f"<title>{_e(subject(report))}</title></head>")
    a(f'<body style="{_FONT};color:#24292f;margin:0;padding:16px"><div style="max-width:960px">')
    a(f'<h1 style="font-size:20px;margin:0 0 4px 0">profd nightly report · {_e(report.date)}</h1>')
    ceil = ceilings_text(report)
    src = f" [{report.ceilings_source}]" if report.ceilings_source and ceil else ""
    a(f'<div style="color:#57606a;font-size:13px">{_e(report.device)}'
      + (f" · ceilings: {_e(ceil + src)}" if ceil else "") + "</div>")
    if report.interpreter:
        a(f'<p style="font-size:13px;background:#fff8c5;border:1px solid #d4a72c;padding:6px 8px">{_e(INTERPRETER_NOTE)}'
          "</p>")
    summary = (f"{c['targets']} target{'s' * (c['targets'] != 1)}: "
               f"<b style=\"color:{'#c62828' if c['regressions'] else '#24292f'}\">{c['regressions']} regression"
               f"{'s' * (c['regressions'] != 1)}</b>, "
               f"<b style=\"color:{'#ef6c00' if c['incorrect'] else '#24292f'}\">{c['incorrect']} incorrect</b>, "
               f"{c['candidates']} candidate{'s' * (c['candidates'] != 1)} ready to apply.")
    a(f'<p style="font-size:14px">{summary}</p>')
    if report.notes:
        a('<ul style="font-size:13px;color:#57606a">' + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")

    if ordered:
        a('<table style="border-collapse:collapse;margin:8px 0 16px 0">')
        a("<tr>" + "".join(f'<th style="{_TH}">{x}</th>' for x in
                           ("Target", "Status", "Now", "Change (vs the run it compares with)", "Best ever", "Roofline", "Ready")) + "</tr>")
        for t in ordered:
            kind = _row_kind(t)
            color = {"regression": "#c62828", "incorrect": "#ef6c00", "ok": "#1b7f3b"}[kind]
            cells = [
                f'<a href="#{_anchor(t)}" style="color:#0969da">{_e(names[t.path])}</a>',
                f'<span style="color:{color};font-weight:bold">{_e(status_word(t))}</span>',
                _e(fmt_time_at(t.now, report.device)),
                _e(change_vs(t, report)),
                _e(fmt_time_at(t.best, report.device)),
                _e(fmt_roofline(t.roofline, t.roofline_note)),
                str(len(t.candidates)),
            ]
            a(f'<tr style="background:{_ROW_BG[kind]}">' + "".join(f'<td style="{_TD}">{x}</td>' for x in cells)
              + "</tr>")
        a("</table>")

    for kind, alt, missing in (
        ("roofline", "Roofline chart: every target against this device's memory ceiling and the compute ceiling "
         "of its own precision", why_no_roofline_chart(report)),
        ("history", "History chart: each target's median time per call in ms over its recent runs",
         "No history chart: no timed runs yet."),
    ):
        key = cid(kind, report)
        if key in image_src:
            a(f'<div style="margin:8px 0"><img src="{_e(image_src[key])}" alt="{_e(alt)}" '
              'style="max-width:100%;border:1px solid #ddd"></div>')
        elif ordered:
            a(f'<p style="font-size:12px;color:#57606a">{_e(missing)}</p>')

    for t in ordered:
        a(_target_html(t, names[t.path], report, max_diff_lines))
    a('<p style="font-size:11px;color:#8c959f;margin-top:24px">Generated by profd at '
      f"{_e(datetime.fromtimestamp(report.generated_at).strftime('%Y-%m-%d %H:%M:%S'))}.</p>")
    a("</div></body></html>")
    return "\n".join(h)


def _anchor(t: TargetSummary) -> str:
    return "t-" + re.sub(r"[^A-Za-z0-9]+", "-", t.path).strip("-")


def _target_html(t: TargetSummary, name: str, report: NightlyReport, max_diff_lines: Optional[int]) -> str:
    device = report.device
    kind = _row_kind(t)
    color = {"regression": "#c62828", "incorrect": "#ef6c00", "ok": "#1b7f3b"}[kind]
    h: list[str] = []
    a = h.append
    a(f'<div id="{_anchor(t)}" style="border-left:4px solid {color};padding:4px 0 4px 12px;margin:20px 0">')
    a(f'<h2 style="font-size:16px;margin:0"><span style="color:{color}">{_e(status_word(t))}</span> '
      f"{_e(name)}</h2>")
    a(f'<div style="{_MONO};font-size:12px;color:#57606a">{_e(t.path)}</div>')
    if not t.correct or t.message:
        a(f'<p style="font-size:13px;margin:6px 0"><b>Status:</b> {_e(t.status)}'
          + (f" — {_e(t.message)}" if t.message else "") + "</p>")
    a(f'<p style="font-size:13px;margin:6px 0"><b>Time:</b> now {_e(fmt_time_at(t.now, device))} · '
      f"{_e(compared_line(t, report))} · best ever {_e(fmt_time_at(t.best, device))}</p>")
    if t.drift_note:
        a(f'<p style="font-size:13px;margin:6px 0;color:{color}"><b>Drift:</b> {_e(t.drift_note)}</p>')
    if t.roofline is not None or t.roofline_note:
        a(f'<p style="font-size:13px;margin:6px 0"><b>Roofline:</b> {_e(fmt_roofline(t.roofline, t.roofline_note))}</p>')
    if t.findings:
        a('<div style="font-size:13px;margin:6px 0"><b>What limits it</b> (by estimated gain):</div><ol '
          'style="font-size:13px;margin:2px 0 8px 0">')
        for f in sorted(t.findings, key=lambda f: -(f.estimated_gain_pct or 0.0)):
            gain = f" <span style=\"color:#57606a\">(est. gain ~{f.estimated_gain_pct:.0f}%)</span>" \
                if f.estimated_gain_pct else ""
            a(f"<li><b>{_e(f.title)}</b>{gain}<br>{_e(f.summary)}</li>")
        a("</ol>")
    if t.candidates:
        a('<div style="font-size:13px;margin:6px 0"><b>Candidates ready to apply</b> '
          f'(<span style="{_MONO}">profd apply {_e(t.path)}</span>):</div>')
        for cand in sorted(t.candidates, key=lambda c: -(c.speedup or 0.0)):
            speed = f"measured speedup {cand.speedup:.2f}×" if cand.speedup else "speedup not measured"
            a(f'<div style="font-size:13px;margin:8px 0 0 0"><b style="{_MONO}">{_e(cand.id)}</b> · '
              f"{_e(cand.advisor)} · <b>{_e(speed)}</b></div>")
            if cand.rationale:
                a(f'<div style="font-size:13px;margin:2px 0;white-space:pre-wrap">{_e(cand.rationale)}</div>')
            if cand.diff:
                a(diff_html(cand.diff, max_diff_lines))
    a("</div>")
    return "\n".join(h)


def render_html(report: NightlyReport, max_diff_lines: Optional[int] = MAIL_MAX_DIFF_LINES
                ) -> tuple[str, dict[str, bytes]]:
    """The report as HTML for mail, and its pictures keyed by Content-ID (referenced as ``cid:``)."""
    images = render_charts(report)
    return render_page(report, {c: "cid:" + c for c in images}, max_diff_lines), images
