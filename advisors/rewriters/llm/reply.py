"""The LLM advisor's reply: text made safe to store, and fenced code blocks turned into checked sources.

Only complete target files count (a snippet without ``def kernel`` is skipped); the source
must parse and keep the trusted half of the file (:func:`advisors.contract.contract_violations`);
duplicates of anything already measured are dropped.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass

from advisors.base import source_digest
from advisors.contract import contract_violations, entry_point

log = logging.getLogger(__name__)

#: Marks the place of text a reply carried that is not valid Unicode (a lone surrogate).
INVALID_TEXT = "\ufffd"


def sanitize_text(text: str) -> str:
    """``text`` with lone surrogates (valid JSON escapes, invalid Unicode) replaced by U+FFFD.

    Such text cannot be encoded as UTF-8: stored as is, it crashed the SQLite insert."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        fixed = "".join(INVALID_TEXT if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
        n = sum(1 for ch in text if 0xD800 <= ord(ch) <= 0xDFFF)
        log.warning("the LLM reply held %d invalid character(s) (lone surrogates); replaced by U+FFFD", n)
        return fixed


@dataclass
class CodeBlock:
    """A fenced block of a reply."""

    lang: str
    code: str
    start: int  # line index of the opening fence
    end: int  # line index after the closing fence (or of the text's end)
    closed: bool


@dataclass
class ParsedCandidate:
    """A source from a reply that passed every check, with its rationale."""

    source: str
    rationale: str
    block: int  # 1-based index of the block in the reply


_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")
_PY_LANGS = {"python", "py", "python3", "py3", ""}
_RATIONALE = re.compile(r"^[\s>*_#\-]*rationale[\s*_]*[:\-][\s*_]*(.+?)[\s*_]*$", re.I)


def extract_code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks (``` or ~~~, any info string) in order; an unclosed last block runs to the end."""
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i]) if len(lines[i]) < 200 else None
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        close = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            ln = lines[j]
            strip = len(ln) - len(ln.lstrip(" "))
            body.append(ln[min(indent, strip):])
            j += 1
        closed = j < len(lines)
        blocks.append(CodeBlock(lang=lang.strip("{}."), code="\n".join(body) + "\n", start=i,
                                end=j + 1 if closed else j, closed=closed))
        i = j + 1
    return blocks


def parse_reply(text: str, original: str, tried: set[str], want: int,
                finish_reason: str = "") -> tuple[list[ParsedCandidate], list[str]]:
    """Candidates from a reply, and the reasons for everything that was not taken.

    A block counts only if it is Python (```python, ```py or bare ```), is a complete
    target file (defines the entry point ``kernel`` or ``ModelNew``), parses, keeps the
    trusted part of ``original`` (:func:`contract_violations`) and is not in ``tried``
    (digests) nor a repeat within the reply.
    """
    entry = entry_point(original)
    blocks = extract_code_blocks(text)
    reasons: list[str] = []
    if not blocks:
        excerpt = " ".join(text.split())[:160]
        return [], [f"the reply contained no fenced code block (```python ... ```), so no candidate "
                    f"(reply starts: {excerpt!r})"]
    lines = text.splitlines()
    out: list[ParsedCandidate] = []
    seen = set(tried)
    partial = 0
    max_len = max(200_000, 20 * len(original))
    for k, b in enumerate(blocks, 1):
        if len(out) >= want:
            break
        if b.lang not in _PY_LANGS:
            reasons.append(f"block {k} is ```{b.lang}, not Python: skipped")
            continue
        if not re.search(rf"^\s*(async\s+def|def|class)\s+{entry}\b", b.code, re.M):
            partial += 1
            continue
        if not b.closed and finish_reason == "length":
            reasons.append(f"block {k} was cut off (finish_reason=length, the reply hit max_tokens): rejected; "
                           f"raise [llm] max_tokens")
            continue
        if len(b.code) > max_len:
            reasons.append(f"block {k} is implausibly large ({len(b.code)} characters): rejected")
            continue
        try:
            ast.parse(b.code)
        except SyntaxError as e:
            reasons.append(f"block {k} does not parse: SyntaxError at line {e.lineno}: {e.msg}")
            continue
        violations = contract_violations(original, b.code)
        if violations:
            reasons.append(f"block {k} breaks the file's contract: {'; '.join(violations)}")
            continue
        digest = source_digest(b.code)
        if digest in seen:
            reasons.append(f"block {k} repeats a source already tried or proposed: dropped")
            continue
        seen.add(digest)
        out.append(ParsedCandidate(source=b.code, rationale=_rationale(lines, blocks, k - 1), block=k))
    if partial and not out:
        reasons.append(f"{partial} block(s) were partial snippets (no `{'class' if entry == 'ModelNew' else 'def'} "
                       f"{entry}`), not complete files: skipped")
    return out, reasons


def _rationale(lines: list[str], blocks: list[CodeBlock], idx: int) -> str:
    """The ``Rationale:`` line nearest before the block (else after it), else the last prose line before it."""
    b = blocks[idx]
    lo = blocks[idx - 1].end if idx > 0 else 0
    hi = blocks[idx + 1].start if idx + 1 < len(blocks) else len(lines)
    before = lines[lo:b.start]
    after = lines[b.end:hi]
    for ln in reversed(before):
        m = _RATIONALE.match(ln)
        if m:
            return m.group(1).strip()[:300]
    for ln in after:
        m = _RATIONALE.match(ln)
        if m:
            return m.group(1).strip()[:300]
    for ln in reversed(before):
        t = ln.strip().strip("#*_>-: ").strip()
        if t:
            return t[:300]
    return "(no rationale given)"
