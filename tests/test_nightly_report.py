"""The nightly report's rendering: order, escaping, pictures, diffs, and the copy on disk."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from profd.report import nightly as nr
from profd.model import Candidate, CandidateVerdict, Finding, Roofline, Severity
from profd.store import RunRecord
from profd.report.nightly import (FindingLine, NightlyReport, ReadyCandidate, RooflinePoint, TargetSummary, TimeAt,
                                  load_latest, render_html, render_text, save)

pytest.importorskip("matplotlib")

EVIL = "<script>alert(1)</script> & <img src=x onerror=alert(2)>"
DIFF = "--- a/k.py\n+++ b/k.py\n@@ -1,3 +1,3 @@\n import triton\n-BLOCK = 64\n+BLOCK = 128\n num_warps = 4\n"


def _report() -> NightlyReport:
    now = time.time()
    hist = lambda base, step: [(now - 86400 * (5 - i), base + step * i) for i in range(6)]  # noqa: E731
    return NightlyReport(
        date="2024-05-01", device="NVIDIA H200", peak_gbps=4800.0, peak_tflops=989.0, precision="bf16 tensor",
        ceilings_source="datasheet", notes=[f"note: {EVIL}"],
        targets=[
            TargetSummary(path="/k/aaa_ok.py", correct=True, now=TimeAt(0.25, "NVIDIA H200"),
                          yesterday=TimeAt(0.26, "NVIDIA H200"), best=TimeAt(0.24, "NVIDIA H200"),
                          roofline=RooflinePoint(intensity=0.25, achieved_gbps=3500.0, bound="memory-bound",
                                                 pct_of_ceiling=73.0),
                          history=hist(0.26, -0.002)),
            # Incorrect and 5x slower, yet not flagged: it sorts after the flagged regressions.
            TargetSummary(path="/k/beta_wrong.py", correct=False, status="wrong", message=f"max abs err 3.2 {EVIL}",
                          now=TimeAt(5.0), yesterday=TimeAt(1.0), history=hist(1.0, 0.0)[:3]),
            TargetSummary(path="/k/alpha_small_regression.py", correct=True, now=TimeAt(1.1), yesterday=TimeAt(1.0),
                          regression=True, drift_note="+10% vs yesterday", history=hist(1.0, 0.02)),
            TargetSummary(path=f"/k/{EVIL.replace('/', '|')}_$x$_.py", correct=True, now=TimeAt(2.0),
                          yesterday=TimeAt(1.0), best=TimeAt(0.9, "NVIDIA H100", at=now - 86400 * 30),
                          regression=True, drift_note=EVIL,
                          roofline=RooflinePoint(intensity=120.0, achieved_tflops=400.0, bound="compute-bound",
                                                 pct_of_ceiling=40.0),
                          findings=[FindingLine("Small tiles", "BLOCK_M=32 " + EVIL, 12.0),
                                    FindingLine(EVIL, "low occupancy", 30.0)],
                          candidates=[ReadyCandidate(id=f"c-{EVIL}", advisor="llm:gpt & co", rationale=EVIL,
                                                     speedup=1.31, diff=DIFF + f"+# {EVIL}\n")],
                          history=hist(1.0, 0.2)),
        ])


def test_order_is_regressions_worst_first_then_incorrect_then_rest() -> None:
    r = _report()
    order = [os.path.basename(t.path) for t in r.ordered_targets()]
    assert order[0].endswith("_$x$_.py")  # +100%: worst regression first
    assert order[1:] == ["alpha_small_regression.py", "beta_wrong.py", "aaa_ok.py"]
    text = render_text(r)
    html, _ = render_html(r)
    for doc in (text, html):
        pos = [doc.index(name) for name in ("x$_.py", "alpha_small_regression.py", "beta_wrong.py", "aaa_ok.py")]
        assert pos == sorted(pos)


def test_everything_untrusted_is_escaped() -> None:
    html, _ = render_html(_report())
    low = html.lower()
    assert "<script" not in low and "<img src=x" not in low
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt;" in html
    # Every "&" in the document starts an entity: no raw ampersand from a kernel or an LLM got through.
    assert re.findall(r"&(?!(?:amp|lt|gt|quot|#x27|#\d+);)", html) == []
    assert "llm:gpt &amp; co" in html
    # The only tags are profd's own.
    tags = set(re.findall(r"<([a-zA-Z0-9]+)", html))
    assert tags <= {"html", "head", "meta", "title", "body", "div", "h1", "h2", "p", "b", "ul", "ol", "li", "table",
                    "tr", "th", "td", "a", "span", "pre", "img", "br"}


def test_images_are_png_and_referenced_by_cid() -> None:
    html, images = render_html(_report())
    assert len(images) == 2
    refs = set(re.findall(r'src="cid:([^"]+)"', html))
    assert refs == set(images)
    for cid, png in images.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
        assert "@" in cid and " " not in cid


def test_diff_lines_are_colored_inline_and_capped_in_mail() -> None:
    html = nr.diff_html(DIFF)
    assert html.startswith("<pre style=") and html.endswith("</pre>")
    added = re.search(r'<span style="([^"]*)">\+BLOCK = 128</span>', html)
    removed = re.search(r'<span style="([^"]*)">-BLOCK = 64</span>', html)
    header = re.search(r'<span style="([^"]*)">\+\+\+ b/k.py</span>', html)
    context = re.search(r'<span style="([^"]*)"> num_warps = 4</span>', html)
    assert added and removed and header and context
    assert "#dafbe1" in added.group(1) and "#ffebe9" in removed.group(1)
    assert "#dafbe1" not in header.group(1) and "background" not in context.group(1)

    long = "\n".join(f"+line {i}" for i in range(50))
    capped = nr.diff_html(long, max_lines=10)
    assert "+line 9<" in capped and "+line 10<" not in capped and "40 more lines" in capped


def test_text_report_has_the_facts_and_no_control_characters() -> None:
    r = _report()
    r.targets[0].message = "bell\x07 and \x1b[31mred\x1b[0m"
    text = render_text(r)
    assert "\x1b" not in text and "\x07" not in text
    assert "+100.0% slower" in text and "+10.0% slower" in text
    assert "best ever 0.900 ms (NVIDIA H100" in text  # another device: say so
    assert "measured speedup 1.31x" in text
    assert "\n-BLOCK = 64\n+BLOCK = 128\n" in text  # diff unindented: can be fed to patch
    assert "2 regressions, 1 incorrect, 1 candidate ready" in text
    # Findings ranked by estimated gain.
    assert text.index("low occupancy") < text.index("Small tiles")


def test_report_without_data_still_renders() -> None:
    empty = NightlyReport(date="2024-05-02", device="cpu")
    html, images = render_html(empty)
    assert images == {} and "0 targets" in html
    assert "0 targets" in render_text(empty)
    # Timed but no roofline numbers: a history chart, no roofline chart, and a hint why.
    r = NightlyReport(date="2024-05-02", device="cpu",
                      targets=[TargetSummary(path="/k/a.py", correct=True, now=TimeAt(1.0),
                                             history=[(time.time(), 1.0)])])
    html, images = render_html(r)
    assert [c.split("-")[0] for c in images] == ["history"]
    assert "define flops() and bytes_moved()" in html


def test_roofline_point_derives_missing_coordinate() -> None:
    assert RooflinePoint(intensity=2.0, achieved_gbps=1000.0).chart_xy() == (2.0, 2.0)
    assert RooflinePoint(achieved_tflops=2.0, achieved_gbps=1000.0).chart_xy() == (2.0, 2.0)
    assert RooflinePoint(intensity=2.0).chart_xy() is None
    assert RooflinePoint(intensity=float("nan"), achieved_tflops=1.0).chart_xy() is None


def test_builders_from_the_data_model() -> None:
    rec = RunRecord(id=7, target="/k/a.py", content_hash="h", kind="profile", started_at=1.7e9, device="NVIDIA H200",
                    status="correct", correct=True, median_ms=0.5, spread_pct=1.0, tflops=None, gbps=None,
                    representative=True, message="")
    assert TimeAt.from_record(rec) == TimeAt(0.5, "NVIDIA H200", 1.7e9, 7)
    rec.median_ms = None
    assert TimeAt.from_record(rec) is None and TimeAt.from_record(None) is None
    f = Finding(rule="occ", title="Low occupancy", severity=Severity.HIGH, summary="2 warps", estimated_gain_pct=25)
    assert FindingLine.from_finding(f) == FindingLine("Low occupancy", "2 warps", 25, "high")
    c = Candidate(id="c7", source="...", advisor="deterministic", rationale="bigger tile", diff=DIFF)
    v = CandidateVerdict(candidate_id="c7", accepted=True, reason="faster", speedup=1.4)
    assert ReadyCandidate.from_candidate(c, v) == ReadyCandidate("c7", "deterministic", "bigger tile", 1.4, DIFF)
    rl = Roofline(device="d", flops=1e9, bytes=1e8, time_s=1e-3, intensity=10.0, ridge=200.0, achieved_tflops=1.0,
                  achieved_gbps=100.0, peak_tflops=989.0, peak_gbps=4800.0, pct_of_ceiling=2.1, bound="memory-bound")
    assert RooflinePoint.from_roofline(rl) == RooflinePoint(10.0, 1.0, 100.0, "memory-bound", 2.1)


def test_save_writes_files_and_load_latest_reads_the_newest(tmp_path: Path) -> None:
    old = _report()
    old.date = "2024-04-30"
    old.targets = old.targets[:1]
    p_old = save(old, tmp_path / "2024-04-30")
    new = _report()
    p_new = save(new, tmp_path / "2024-05-01")
    os.utime(p_old, (time.time() - 3600, time.time() - 3600))

    d = p_new.parent
    html = p_new.read_text()
    assert "cid:" not in html
    pngs = sorted(x.name for x in d.glob("*.png"))
    assert len(pngs) == 2 and all(f'src="{name}"' in html for name in pngs)
    for f in d.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f  # private code in diffs: user-only
    assert (d / "report.txt").read_text() == render_text(new)

    latest = load_latest(tmp_path)
    assert latest is not None and latest.directory == d
    assert latest.report is not None and latest.report.date == "2024-05-01"
    assert [t.path for t in latest.report.targets] == [t.path for t in new.targets]
    assert latest.report.targets[3].candidates[0].diff == new.targets[3].candidates[0].diff
    assert latest.text() == render_text(new)
    assert load_latest(tmp_path / "nothing-here") is None


def test_saved_copy_keeps_full_diff_while_mail_caps_it(tmp_path: Path) -> None:
    r = _report()
    big = "--- a\n+++ b\n" + "\n".join(f"+l{i}" for i in range(nr.MAIL_MAX_DIFF_LINES + 20)) + "\n"
    r.targets[3].candidates[0].diff = big
    mail_html, _ = render_html(r)
    assert "22 more lines" in mail_html
    disk = save(r, tmp_path / "r").read_text()
    assert "more lines" not in disk and f"+l{nr.MAIL_MAX_DIFF_LINES + 19}<" in disk


def test_save_leaves_an_existing_folder_mode_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    save(_report(), shared)
    assert shared.stat().st_mode & 0o777 == 0o755  # files inside are 0600; the folder is the caller's
    assert (shared / "report.html").stat().st_mode & 0o077 == 0


def test_default_location_is_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    p = save(_report())
    assert p.parent == tmp_path / "state" / "artifacts" / "reports" / "2024-05-01"
    assert p.parent.stat().st_mode & 0o077 == 0
    latest = load_latest()
    assert latest is not None and latest.html_path == p
