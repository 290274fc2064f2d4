"""The LLM advisor's prompt: what the tune loop knows, as chat messages within a token budget.

The source, the task and the device figures always go in; findings, earlier candidates
with their measured outcomes, and the report share what is left of ``max_prompt_tokens``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from advisors.base import TuneContext, unified_diff
from advisors.contract import entry_point
from advisors.rewriters.llm.config import LLMConfig
from profd.model import Candidate

#: Rough characters per token for budgeting; code tokenizes at ~3-4 chars/token.
CHARS_PER_TOKEN = 3.5

_SYSTEM = """\
You are an expert GPU kernel performance engineer. You rewrite Triton kernels so that they run faster \
on the given device while computing the same results (within floating-point tolerance).

The target file is a Python module with a fixed contract:
{contract}
- The file must stay a complete, importable Python module.

For each candidate make ONE targeted change that addresses the findings (for example block/tile sizes, \
num_warps, num_stages, vector width, program order / swizzling, masking, loop structure). Do not repeat \
an earlier attempt, and learn from the measured outcomes of earlier candidates.

Answer format, for each candidate:
Rationale: <one line: what you changed and why it should be faster>
```python
<the complete file, every line of it>
```
Write no other code blocks."""

_CONTRACT_PROFD = """\
- `reference`, `get_inputs` (and `get_init_inputs`, `SHAPES`, `BENCH_SHAPE`, `RTOL`/`ATOL`/`TOLERANCE`, \
`PRECISION`, `flops`, `bytes_moved` where present, and the module-level names they use) are the trusted \
harness: copy them unchanged. Never add tolerances.
- Only `kernel` and the Triton code it launches (@triton.jit functions, launch parameters, tuning \
constants) may change; `kernel` must keep its name and arguments."""

_CONTRACT_KB = """\
- `Model`, `get_inputs`, `get_init_inputs` (and the module-level names they use, such as problem sizes) are \
the trusted harness: copy them unchanged.
- Only `ModelNew` and the Triton code it launches (@triton.jit functions, launch parameters, tuning \
constants) may change; `ModelNew` must keep its name and constructor/forward signatures."""


def build_messages(ctx: TuneContext, want: int, config: LLMConfig,
                   pending: Optional[list[Candidate]] = None) -> list[dict[str, str]]:
    """The chat messages for one call asking for ``want`` candidates, within the prompt budget.

    The source, the task and the device figures always go in; findings, history and
    the report share what is left of ``config.max_prompt_tokens``, in that order of
    priority, each truncated at item boundaries with a note saying what was left out.
    """
    kb = entry_point(ctx.original_source) == "ModelNew"
    system = _SYSTEM.format(contract=_CONTRACT_KB if kb else _CONTRACT_PROFD)
    fname = os.path.basename(ctx.path) or "kernel.py"
    head = [f"## Task\nPropose {want} candidate rewrite{'s' if want > 1 else ''} of `{fname}` "
            f"(the current best source, at the end). Each candidate: one `Rationale:` line, then the complete "
            f"file in a ```python block."]
    if ctx.best_median_ms is not None:
        which = "the user's original" if ctx.best_source == ctx.original_source else "a candidate kept earlier"
        head.append(f"Current best: {ctx.best_median_ms:.4g} ms median per call of "
                    f"`{'ModelNew' if kb else 'kernel'}` ({which}).")
    device = _device_text(ctx.device_spec)
    if device:
        head.append("## Device\n" + device)
    knobs = _knobs_text(ctx.knobs)
    if knobs:
        head.append("## Tunable knobs found in the source\n" + knobs)
    tail = f"## Current best source (`{fname}`)\n```python\n{ctx.best_source.rstrip()}\n```"
    fixed = len(system) + sum(len(h) + 2 for h in head) + len(tail)
    left = max(0, int(config.max_prompt_tokens * CHARS_PER_TOKEN) - fixed)

    findings_items = [_finding_text(i + 1, f) for i, f in enumerate(ctx.findings)]
    findings, used = _fit(findings_items, int(left * 0.4), "finding")
    left -= used
    history_items = [_attempt_text(a, ctx.original_source) for a in reversed(ctx.history)]  # newest first: they matter most
    pending_items = [f"- (proposed in this round, not measured yet) {c.rationale}\n  change:\n{_short_diff(c.diff, 6)}"
                     for c in (pending or [])]
    history, used = _fit(pending_items + history_items, int(left * 0.7), "earlier candidate")
    left -= used
    report = ctx.report.strip()
    if len(report) > left:
        cut = report[:max(0, left - 80)]
        cut = cut[:cut.rfind("\n")] if "\n" in cut else cut
        report = (cut + f"\n[... report truncated: {len(ctx.report) - len(cut)} characters left out]").strip()

    parts = list(head)
    if findings:
        parts.append("## Findings of the diagnosis (ranked by estimated gain)\n" + findings)
    if history:
        parts.append("## Earlier candidates and their measured outcomes (newest first)\n" + history)
    if report:
        parts.append("## Profiling report of the original\n" + report)
    parts.append(tail)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def render_messages(messages: list[dict[str, str]]) -> str:
    """The messages as one readable text, as recorded on a Candidate."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def _fit(items: list[str], budget: int, noun: str) -> tuple[str, int]:
    """As many whole items as fit in ``budget`` characters, plus a note on the rest."""
    kept: list[str] = []
    used = 0
    for item in items:
        if used + len(item) + 1 > budget:
            break
        kept.append(item)
        used += len(item) + 1
    if len(kept) < len(items):
        note = f"[{len(items) - len(kept)} more {noun}(s) left out to fit the prompt budget]"
        kept.append(note)
        used += len(note) + 1
    return "\n".join(kept), used


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _finding_text(rank: int, f: Any) -> str:
    sev = getattr(getattr(f, "severity", ""), "value", getattr(f, "severity", ""))
    lines = [f"{rank}. [{sev}] {f.title} (rule {f.rule}"
             + (f", kernel {f.kernel}" if getattr(f, "kernel", "") else "")
             + (f", est. gain {f.estimated_gain_pct:.0f}%" if getattr(f, "estimated_gain_pct", 0) else "") + ")",
             f"   {f.summary}"]
    for e in getattr(f, "evidence", []) or []:
        thr = f" (threshold {e.comparison} {_fmt(e.threshold)})" if e.threshold is not None else ""
        gloss = f": {e.meaning}" if e.meaning else ""
        lines.append(f"   evidence: {e.metric} = {_fmt(e.value)}{(' ' + e.unit) if e.unit else ''}{thr}{gloss}")
    for lv in getattr(f, "levers", []) or []:
        where = f" at line {lv.line}" if lv.line else ""
        cur = f" (now {lv.current}{where})" if lv.current else where
        sug = f", suggested {lv.suggested}" if lv.suggested else ""
        lines.append(f"   lever: {lv.direction} {lv.name}{cur}{sug}: {lv.description}")
    for s in (getattr(f, "supporting", []) or [])[:3]:
        lines.append(f"   profiler says: {' '.join(str(s).split())[:300]}")
    return "\n".join(lines)


def _attempt_text(a: Any, original: str) -> str:
    c, v = a.candidate, a.verdict
    outcome = "ACCEPTED" if v.accepted else "rejected"
    speed = f", speedup {v.speedup:.3g}x" if v.speedup is not None else ""
    text = (f"- {c.id} ({c.advisor}): {outcome}{speed}; reason: {' '.join(v.reason.split())[:300]}\n"
            f"  tried: {' '.join((c.rationale or '(no rationale)').split())[:300]}")
    diff = _short_diff(c.diff or unified_diff(original, c.source))
    if diff:
        text += "\n  change:\n" + diff
    return text


def _short_diff(diff: str, max_lines: int = 12) -> str:
    """The changed lines of a diff (no context), indented, at most ``max_lines``."""
    changed = [ln for ln in diff.splitlines()
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    more = len(changed) - max_lines
    out = ["    " + ln[:160] for ln in changed[:max_lines]]
    if more > 0:
        out.append(f"    [... {more} more changed lines]")
    return "\n".join(out)


def _device_text(spec: Any) -> str:
    if spec is None:
        return ""
    g = lambda k: getattr(spec, k, None)  # noqa: E731 - duck-typed DeviceSpec
    out = [f"{g('name') or g('key') or 'unknown device'}"
           + (f" ({g('architecture')}, compute capability {g('compute_capability')})" if g("architecture") else "")]
    figures = [
        ("SMs/CUs", g("sm_count"), ""), ("warp size", g("warp_size"), ""),
        ("memory bandwidth", g("memory_bandwidth_gbps"), " GB/s"), ("L2", _mib(g("l2_bytes")), ""),
        ("shared memory per SM", _kib(g("shared_mem_per_sm_bytes")), ""),
        ("max shared memory per block", _kib(g("max_shared_mem_per_block_bytes")), ""),
        ("registers per SM", g("registers_per_sm"), ""), ("max warps per SM", g("max_warps_per_sm"), ""),
        ("boost clock", g("boost_clock_mhz"), " MHz"),
    ]
    out += [f"- {k}: {_fmt(v)}{u}" for k, v, u in figures if v]
    peaks = g("peak_tflops") or {}
    if peaks:
        out.append("- peak TFLOP/s (dense): " + ", ".join(f"{k} {_fmt(v)}" for k, v in peaks.items()))
    return "\n".join(out)


def _mib(v: Any) -> Optional[str]:
    return f"{v / 2**20:.0f} MiB" if v else None


def _kib(v: Any) -> Optional[str]:
    return f"{v / 2**10:.0f} KiB" if v else None


def _row_note(knobs: Any, k: Any) -> str:
    """The deterministic advisor's constraint (Knobs.spans_row), told to the model too: a block
    that covers a whole row must not be lowered, or the rest of the row is silently dropped."""
    spans = getattr(knobs, "spans_row", None)
    if spans is None or not spans(k):
        return ""
    floor = knobs.row_floor(k)
    at_least = f" (at least {floor})" if floor is not None else ""
    return f"; must cover the whole row: never lower it{at_least}"


def _knobs_text(knobs: Any) -> str:
    items = getattr(knobs, "knobs", None) or []
    lines = []
    for k in items[:30]:
        shown = k.shown() if hasattr(k, "shown") else f"{getattr(k, 'name', '?')} = {getattr(k, 'value', '?')}"
        where = f" (line {k.line}, {k.kind}{', kernel ' + k.kernel if getattr(k, 'kernel', '') else ''})"
        lines.append(f"- {shown}{where}{_row_note(knobs, k)}")
    return "\n".join(lines)
