"""The nightly report's pictures: the roofline of the device and each target's history, as PNG.

Drawn with matplotlib's object API on an Agg canvas (no pyplot: no global state, safe in the
daemon's threads, no display needed). Every label comes from a kernel file's name, so it is
escaped for matplotlib's mathtext and kept short.
"""

from __future__ import annotations

import io
import math
import re
from datetime import datetime
from typing import Any, Optional

from profd.report.values import (NightlyReport, TargetSummary, chart_ceilings, display_names, finite, fmt_ms,
                                 one_line)

#: Small multiples shown in the history chart; the rest are named under it.
MAX_HISTORY_PANELS = 12
#: The history panels' y axis spans at least this share of the median either side, so a 0.04%
#: wobble stays a flat line instead of filling the panel.
MIN_HISTORY_SPAN = 0.05


def cid(kind: str, report: NightlyReport) -> str:
    """The Content-ID of picture ``kind`` ("roofline", "history") of ``report``."""
    safe = re.sub(r"[^A-Za-z0-9]+", "-", report.date).strip("-") or "report"
    return f"{kind}-{safe}@profd"


def mpl_text(s: str, limit: int = 40) -> str:
    """Untrusted text for a matplotlib label."""
    # Matplotlib reads $...$ as math (a stray "$" in a file name would raise while drawing),
    # and a legend silently drops labels that start with "_".
    s = one_line(s)
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    s = s.replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def render_charts(report: NightlyReport) -> dict[str, bytes]:
    """PNG pictures keyed by Content-ID: the roofline and the history (each only when it has data).

    Empty when matplotlib is missing: the report stays useful without pictures.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (Agg: no display needed)
    except ImportError:
        return {}
    images: dict[str, bytes] = {}
    for kind, draw in (("roofline", roofline_png), ("history", history_png)):
        png = draw(report)
        if png:
            images[cid(kind, report)] = png
    return images


def _new_figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def group_color(t: TargetSummary) -> str:
    return "#c62828" if t.regression else "#ef6c00" if not t.correct else "#1565c0"


_CEILING_STYLES = ("-", "--", "-.", ":")


def roofline_png(report: NightlyReport) -> Optional[bytes]:
    """The roofline picture as PNG, or None without a target to place."""
    fig = roofline_figure(report)
    return _png(fig) if fig is not None else None


def history_png(report: NightlyReport) -> Optional[bytes]:
    """The history picture as PNG, or None without a timed run."""
    fig = history_figure(report)
    return _png(fig) if fig is not None else None


def roofline_figure(report: NightlyReport) -> Any:
    """Every target against the memory ceiling and the compute ceiling of its own precision.

    Points are numbered and named in a legend beside the plot (names next to the points overlap
    as soon as two kernels sit close); kernels without floating-point work (a transpose) have no
    place on a log FLOP axis and get a bar of their bandwidth against the peak instead.
    """
    names = display_names(report.targets)
    ordered = sorted(report.targets, key=lambda t: t.path)
    points = [(t, xy) for t in ordered if t.roofline is not None and (xy := t.roofline.chart_xy())]
    memory_only = [t for t in ordered if t.roofline is not None and t.roofline.memory_only()]
    if not points and not memory_only:
        return None
    import numpy as np

    gbps = report.peak_gbps if finite(report.peak_gbps) and report.peak_gbps > 0 else None
    ceilings = chart_ceilings(report)
    fig = _new_figure(9.0, 4.8 + 0.35 * len(memory_only) if points else 1.2 + 0.5 * len(memory_only))
    if points and memory_only:
        grid_spec = fig.add_gridspec(2, 1, height_ratios=[4.8, 0.9 + 0.35 * len(memory_only)], hspace=0.45)
        ax, bars = fig.add_subplot(grid_spec[0]), fig.add_subplot(grid_spec[1])
    elif points:
        ax, bars = fig.add_subplot(), None
    else:
        ax, bars = None, fig.add_subplot()

    number = {t.path: i for i, t in enumerate([t for t, _ in points] + memory_only, 1)}
    if ax is not None:
        xs = [xy[0] for _, xy in points]
        ys = [xy[1] for _, xy in points]
        ridges = [tf * 1000.0 / gbps for _, tf in ceilings] if gbps else []
        lo, hi = min(xs + ridges) / 8, max(xs + ridges) * 8
        grid = np.logspace(math.log10(lo), math.log10(hi), 256)
        top = max([tf for _, tf in ceilings] + ys)
        if gbps:  # one memory slope, up to the highest ridge; each precision's flat roof from its own ridge
            x_end = max(ridges) if ridges else hi
            slope = grid[grid <= x_end]
            ax.plot(slope, gbps * slope / 1000.0, color="black", lw=1.8, label=f"memory {gbps:,.0f} GB/s")
        for k, (prec, tf) in enumerate(ceilings):
            start = tf * 1000.0 / gbps if gbps else lo
            ax.plot([start, hi], [tf, tf], color="black", lw=1.8 if k == 0 else 1.2,
                    ls=_CEILING_STYLES[k % len(_CEILING_STYLES)],
                    label=mpl_text(f"compute {tf:,.4g} TFLOP/s ({prec})" if prec else f"compute {tf:,.4g} TFLOP/s", 50))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(min(ys) / 10, top * 3)
        for t, (x, y) in points:
            ax.scatter([x], [y], color=group_color(t), marker="x" if not t.correct else "o", s=40, zorder=3)
            ax.plot([], [], ls="none", marker="o", color=group_color(t),
                    label=mpl_text(f"{number[t.path]} {names[t.path]}" + _point_note(t), 60))
        fig.canvas.draw()  # fixes the layout, so data -> pixel transforms are final for placing labels
        pixels = [tuple(ax.transData.transform((x, y))) for _, (x, y) in points]
        for (t, (x, y)), offset in zip(points, place_labels(pixels, [str(number[t.path]) for t, _ in points])):
            ax.annotate(str(number[t.path]), (x, y), xytext=offset, textcoords="offset pixels", fontsize=8,
                        fontweight="bold", color=group_color(t),
                        arrowprops=dict(arrowstyle="-", lw=0.5, color="#888888") if max(map(abs, offset)) > 12 else None)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("achieved TFLOP/s")
        ax.set_title(mpl_text(f"Roofline: {report.device}", 70), fontsize=10)
        ax.grid(True, which="major", ls="-", lw=0.3, color="#cccccc")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    if bars is not None:
        labels = [mpl_text(f"{number[t.path]} {names[t.path]}", 40) for t in memory_only]
        vals = [float(t.roofline.achieved_gbps or 0.0) for t in memory_only]  # type: ignore[union-attr]
        pos = list(range(len(memory_only)))[::-1]
        bars.barh(pos, vals, color=[group_color(t) for t in memory_only], height=0.6)
        if gbps:
            bars.axvline(gbps, color="black", lw=1.5)
            bars.set_xlim(0, gbps * 1.15)
            for p, v in zip(pos, vals):
                bars.annotate(f"{v:,.0f} GB/s ({100 * v / gbps:.0f}%)", (v, p), xytext=(4, 0),
                              textcoords="offset points", va="center", fontsize=8)
        bars.set_yticks(pos)
        bars.set_yticklabels(labels, fontsize=8)
        bars.set_xlabel("achieved GB/s" + (f" (line: memory ceiling {gbps:,.0f} GB/s)" if gbps else ""))
        bars.set_title("Memory-only kernels (no floating-point work, so no place on the FLOP axis)", fontsize=9)
    return fig


#: Where a point's number may go, in pixels from the point, nearest first.
_LABEL_OFFSETS = [(5, 4), (5, -14), (-14, 4), (-14, -14), (5, 16), (-14, 16), (18, -4), (-26, -4), (5, 28), (5, -26),
                  (-14, 28), (-14, -26), (30, 10), (-38, 10), (30, -20), (-38, -20)]


def place_labels(points: list[tuple[float, float]], texts: list[str], char_px: float = 7.0,
                 height_px: float = 11.0) -> list[tuple[float, float]]:
    """An offset per label so that no two labels and no label and point overlap (greedy, nearest slot first).

    Kernels often sit on top of each other (two variants of one matmul); numbers next to the points
    then print over each other. Each label takes the first slot whose box is clear of the labels
    already placed and of every point; when none is, the least crowded one.
    """
    boxes: list[tuple[float, float, float, float]] = []
    dots = [(px - 4, py - 4, px + 4, py + 4) for px, py in points]

    def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    out = []
    for (px, py), text in zip(points, texts):
        w = char_px * len(text)
        best, best_cost = _LABEL_OFFSETS[0], math.inf
        for dx, dy in _LABEL_OFFSETS:
            box = (px + dx, py + dy, px + dx + w, py + dy + height_px)
            cost = sum(overlap(box, b) for b in boxes + dots)
            if cost < best_cost:
                best, best_cost = (dx, dy), cost
            if cost == 0:
                break
        dx, dy = best
        boxes.append((px + dx, py + dy, px + dx + w, py + dy + height_px))
        out.append((float(dx), float(dy)))
    return out


def _point_note(t: TargetSummary) -> str:
    r = t.roofline
    if r is None:
        return ""
    bits = [b for b in (r.precision, f"{r.pct_of_ceiling:.0f}%" if finite(r.pct_of_ceiling) else "") if b]
    return f" ({', '.join(bits)})" if bits else ""


def history_figure(report: NightlyReport) -> Any:
    """One small panel per target: its median time in absolute units over the recent runs.

    Each panel has its own axis (kernels of 5 µs and 50 ms do not share one), plain numbers
    (no matplotlib offset notation) and a span of at least ±5% of the median, so the eye reads
    a change at its real size.
    """
    names = display_names(report.targets)
    series = []
    for t in report.ordered_targets():
        pts = sorted((float(ts), float(ms)) for ts, ms in t.history if finite(ts) and finite(ms) and ms > 0)
        if pts:
            series.append((t, pts))
    if not series:
        return None
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import ScalarFormatter

    shown, rest = series[:MAX_HISTORY_PANELS], series[MAX_HISTORY_PANELS:]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = _new_figure(3.4 * cols, 2.5 * rows + (0.3 if rest else 0.0))
    for k, (t, pts) in enumerate(shown):
        ax = fig.add_subplot(rows, cols, k + 1)
        values = [ms for _, ms in pts]
        med = sorted(values)[len(values) // 2]
        scale, unit = (1000.0, "µs") if med < 0.1 else (1.0, "ms")
        when = [datetime.fromtimestamp(ts) for ts, _ in pts]
        ys = [v * scale for v in values]
        color = group_color(t)
        ax.plot(when, ys, marker="o", ms=3, lw=2.0 if t.regression else 1.2, color=color)
        lo = min(min(ys), med * scale * (1 - MIN_HISTORY_SPAN))
        hi = max(max(ys), med * scale * (1 + MIN_HISTORY_SPAN))
        pad = 0.08 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        ax.yaxis.set_major_formatter(fmt)
        ax.set_ylabel(unit, fontsize=8)
        if len(when) > 1:
            locator = AutoDateLocator(minticks=2, maxticks=5)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        else:
            ax.set_xticks(when)
            ax.set_xticklabels([w.strftime("%m-%d %H:%M") for w in when])
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
        last = values[-1]
        title = f"{names[t.path]}: {fmt_ms(last)}"
        ax.set_title(mpl_text(title, 44), fontsize=8, color=color if t.regression or not t.correct else "black")
        ax.grid(True, lw=0.3, color="#cccccc")
    fig.suptitle("Median time per call, recent runs (lower is faster)" +
                 (" — CPU interpreter times, not GPU times" if report.interpreter else ""), fontsize=10)
    if rest:
        fig.text(0.01, 0.0, mpl_text(f"{len(rest)} more: " + ", ".join(names[t.path] for t, _ in rest), 160),
                 fontsize=7, color="#57606a")
    fig.tight_layout()
    return fig
