"""The nightly report as plain text: the mail's text alternative and what ``profd report`` prints.

Untrusted text (names, messages, diffs) loses its control characters, so the report cannot
drive the reader's terminal.
"""

from __future__ import annotations

from typing import Optional

from profd.report.values import (INTERPRETER_NOTE, NightlyReport, ceilings_text, clean, compared_line, display_names,
                                 fmt_roofline, fmt_time_at, one_line, plural, status_word)



def render_text(report: NightlyReport, max_diff_lines: Optional[int] = None) -> str:
    """The report as plain text: the mail's text alternative and what ``profd report`` prints."""
    names = display_names(report.targets)
    c = report.counts()
    out: list[str] = []
    a = out.append
    a(one_line(f"profd nightly report - {report.date} - {report.device}"))
    ceil = ceilings_text(report)
    if ceil:
        a("Ceilings: " + ceil + (f" [{report.ceilings_source}]" if report.ceilings_source else ""))
    if report.interpreter:
        a(INTERPRETER_NOTE)
    a(f"{plural(c['targets'], 'target')}: {plural(c['regressions'], 'regression')}, {c['incorrect']} incorrect, "
      f"{plural(c['candidates'], 'candidate')} ready to apply.")
    for n in report.notes:
        a(f"  * {n}")
    for t in report.ordered_targets():
        a("")
        a(f"== {status_word(t)}: {names[t.path]} ==")
        a(f"path:     {t.path}")
        if not t.correct or t.message:
            a(f"status:   {t.status}" + (f" - {t.message}" if t.message else ""))
        a(f"time:     now {fmt_time_at(t.now, report.device)} | {compared_line(t, report)} | "
          f"best ever {fmt_time_at(t.best, report.device)}")
        if t.drift_note:
            a(f"drift:    {t.drift_note}")
        if t.roofline is not None or t.roofline_note:
            a(f"roofline: {fmt_roofline(t.roofline, t.roofline_note)}")
        if t.findings:
            a("what limits it:")
            for i, f in enumerate(sorted(t.findings, key=lambda f: -(f.estimated_gain_pct or 0.0)), 1):
                gain = f" (est. gain ~{f.estimated_gain_pct:.0f}%)" if f.estimated_gain_pct else ""
                a(f"  {i}. {f.title}{gain}")
                if f.summary:
                    a(f"     {f.summary}")
        if t.candidates:
            a(f"candidates ready to apply (profd apply {t.path}):")
            for cand in sorted(t.candidates, key=lambda c: -(c.speedup or 0.0)):
                speed = f"measured speedup {cand.speedup:.2f}x" if cand.speedup else "speedup not measured"
                a(f"  [{cand.id}] {cand.advisor}, {speed}")
                for line in cand.rationale.splitlines():
                    a(f"    {line}")
                if cand.diff:
                    lines = cand.diff.splitlines()
                    shown = lines if max_diff_lines is None else lines[:max_diff_lines]
                    out.extend(shown)  # unindented, so it can be piped to `patch`
                    if len(shown) < len(lines):
                        a(f"  ... {len(lines) - len(shown)} more lines: the full diff is in the saved report")
    return clean("\n".join(out) + "\n")
