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
    assert "define flops() and bytes_moved()" in html  # nothing says otherwise: the generic hint


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
    assert RooflinePoint.from_roofline(rl) == RooflinePoint(10.0, 1.0, 100.0, "memory-bound", 2.1, "", 989.0, 4800.0)


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
    assert p.parent.parent == tmp_path / "state" / "artifacts" / "reports"
    assert re.fullmatch(r"2024-05-01-\d{6}", p.parent.name)  # one folder per run, named by date and time
    assert p.parent.stat().st_mode & 0o077 == 0
    latest = load_latest()
    assert latest is not None and latest.html_path == p


# --------------------------------------------------------------------------- issue 15: what a new user hits

from profd.report import charts  # noqa: E402
from profd.report.values import INTERPRETER_NOTE, chart_ceilings, fmt_roofline  # noqa: E402


def _fp32_and_transpose() -> NightlyReport:
    """An H200 night with an fp32 matmul, two bf16 matmuls on top of each other, and a zero-FLOP transpose."""
    now = time.time()
    hist = lambda vals: [(now - 86400 * (len(vals) - 1 - i), v) for i, v in enumerate(vals)]  # noqa: E731

    def point(i: float, tf: float, gb: float, prec: str, peak: float, pct: float) -> RooflinePoint:
        return RooflinePoint(intensity=i, achieved_tflops=tf, achieved_gbps=gb, bound="compute-bound",
                             pct_of_ceiling=pct, precision=prec, peak_tflops=peak, peak_gbps=4800.0)

    return NightlyReport(
        date="2024-05-01", device="NVIDIA H200", peak_gbps=4800.0, peak_tflops=989.0, precision="bf16",
        compute_ceilings={"bf16": 989.0, "fp32": 67.0},
        targets=[
            TargetSummary(path="/k/mm_fp32.py", correct=True, now=TimeAt(2.0, at=now),
                          roofline=point(1365.0, 41.0, 30.0, "fp32", 67.0, 61.0),
                          history=hist([2.0, 2.0008, 2.0004, 2.0002, 2.0008])),  # a 0.04% wobble
            TargetSummary(path="/k/mm_bf16.py", correct=True, now=TimeAt(4.0, at=now),
                          roofline=point(2730.0, 271.0, 99.0, "bf16", 989.0, 27.0), history=hist([4.4, 4.0])),
            TargetSummary(path="/k/mm_bf16_grouped.py", correct=True, now=TimeAt(3.6, at=now),
                          roofline=point(2731.0, 280.0, 100.0, "bf16", 989.0, 28.0), history=hist([3.6])),
            TargetSummary(path="/k/transpose.py", correct=True, now=TimeAt(0.1, at=now),
                          roofline=RooflinePoint(intensity=0.0, achieved_tflops=0.0, achieved_gbps=2900.0,
                                                 bound="memory-bound", pct_of_ceiling=60.4, precision="fp32",
                                                 peak_tflops=67.0, peak_gbps=4800.0),
                          history=hist([0.1, 0.1001])),
        ])


def test_roofline_draws_each_precisions_ceiling_and_places_a_zero_flop_kernel() -> None:
    r = _fp32_and_transpose()
    assert chart_ceilings(r) == [("bf16", 989.0), ("fp32", 67.0)]
    fig = charts.roofline_figure(r)
    roof, bars = fig.axes
    legend = [t.get_text() for t in roof.get_legend().get_texts()]
    assert "compute 989 TFLOP/s (bf16)" in legend and "compute 67 TFLOP/s (fp32)" in legend
    assert "memory 4,800 GB/s" in legend
    assert any("mm_fp32.py (fp32, 61%)" in x for x in legend)
    # The transpose has no place on a log FLOP axis: it gets a bar against the memory ceiling, not silence.
    assert [t.get_text() for t in bars.get_yticklabels()] == ["4 transpose.py"]
    assert any(t.get_text() == "2,900 GB/s (60%)" for t in bars.texts)
    assert "memory-only: 2,900 GB/s of 4,800 GB/s (60%)" in fmt_roofline(r.targets[3].roofline)
    assert "memory-only" in render_text(r) and "memory-only" in render_html(r)[0]


def test_roofline_point_labels_do_not_overlap() -> None:
    fig = charts.roofline_figure(_fp32_and_transpose())
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts if t.get_text().isdigit()]
    assert len(boxes) == 3  # two bf16 matmuls sit on the same spot: their numbers must still both be readable
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    # The placement itself: three labels on one pixel get three different, non-overlapping slots.
    offsets = charts.place_labels([(100.0, 100.0)] * 3, ["1", "2", "3"])
    assert len(set(offsets)) == 3


def test_history_is_in_absolute_time_without_offset_notation() -> None:
    fig = charts.history_figure(_fp32_and_transpose())
    panels = {ax.get_title().split(":")[0]: ax for ax in fig.axes}
    ax = panels["mm_fp32.py"]
    fig.canvas.draw()
    assert ax.get_ylabel() == "ms"
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "+2e0" offset that blows a 0.04% change up
    lo, hi = ax.get_ylim()
    assert lo <= 2.0 * 0.95 and hi >= 2.0 * 1.05  # the axis spans at least ±5%: the wobble stays flat
    ticks = [float(t.get_text().replace("−", "-")) for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and all(1.8 < v < 2.2 for v in ticks)  # absolute milliseconds, not ratios
    assert panels["transpose.py"].get_ylabel() == "ms" and "0.100 ms" in panels["transpose.py"].get_title()


def test_cpu_mode_says_why_there_is_no_roofline_and_what_times_mean() -> None:
    from advisors.roofline import why_not_placed

    note = why_not_placed(representative=False, has_work_counts=True, has_ceilings=False)
    now = time.time()
    r = NightlyReport(date="2024-05-02", device="no GPU (Triton CPU interpreter)", interpreter=True, generated_at=now,
                      targets=[TargetSummary(path="/k/a.py", correct=True, now=TimeAt(10.0, at=now),
                                             yesterday=TimeAt(9.0, at=now - 600), roofline_note=note,
                                             history=[(now - 600, 9.0), (now, 10.0)])])
    import html as html_lib

    html, images = render_html(r)
    text = render_text(r)
    for doc in (html_lib.unescape(html), text):
        assert "define flops()" not in doc  # every target did; the missing part is the device ceilings
        assert "Triton's CPU interpreter" in doc and "no device ceilings" in doc
        assert "10 min earlier" in doc and "yesterday 9" not in doc  # a run minutes old is not "yesterday"
    assert INTERPRETER_NOTE in text and html_lib.escape(INTERPRETER_NOTE) in html
    assert "vs yesterday" not in html
    # A GPU night where one target lacks the counts says that, naming what to define.
    gpu = NightlyReport(date="2024-05-02", device="NVIDIA H200", targets=[TargetSummary(
        path="/k/b.py", correct=True, now=TimeAt(1.0),
        roofline_note=why_not_placed(representative=True, has_work_counts=False, has_ceilings=True))])
    assert "defines neither flops() nor bytes_moved()" in render_html(gpu)[0]


def test_a_second_nightly_the_same_day_gets_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    first, second = _report(), _report()
    second.generated_at = first.generated_at  # even within one second
    p1, p2 = save(first), save(second)
    assert p1.parent != p2.parent and p1.exists() and p2.exists()
    assert p1.parent.name.startswith("2024-05-01-") and p2.parent.name.startswith("2024-05-01-")
    latest = load_latest()
    assert latest is not None and latest.directory in (p1.parent, p2.parent)
