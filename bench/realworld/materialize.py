"""Materialize the real-world corpus: upstream Triton code from released wheels + our wrappers.

The corpus (``bench/realworld/corpus.py``) names, per target, a released wheel (name, version,
file name, sha256), the module paths inside it and the top-level definitions to take from each.
This module obtains each wheel, checks its hash, cuts those definitions out *verbatim* (by
``ast`` line ranges, decorators and the comments directly above them included, original order
kept), applies the target's one planted defect (an exact textual substitution that must match
exactly once) and writes one profd target file per entry::

    python bench/realworld/materialize.py OUTDIR [--wheels DIR] [--only NAME ...]

Upstream code is never committed to this repository; it is read out of the wheels at run time
(see README.md). The wheels are looked for in ``--wheels DIR``, then ``bench/realworld/.wheels``,
then ``~/.cache/profd/wheels``, and only then downloaded with ``python -m pip download``.
Nothing here imports the upstream packages (unsloth alone would pull in half of PyPI).

This file depends on nothing but the standard library, so it runs anywhere the wheels are.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

try:  # imported as bench.realworld.materialize
    from . import corpus
except ImportError:  # run as a script: python bench/realworld/materialize.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import corpus  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
WRAPPERS = HERE / "wrappers"
REPO_WHEELS = HERE / ".wheels"
CACHE_WHEELS = Path(os.environ.get("PROFD_WHEEL_CACHE", Path.home() / ".cache" / "profd" / "wheels"))

# The line in a wrapper file that separates its prelude (imports, shims: they must exist before
# the upstream decorators run) from its body (get_inputs, reference, kernel, ...).
UPSTREAM_MARKER = "# @@ upstream code @@"
BEGIN_UPSTREAM = "# ==== upstream code, verbatim (see the header for where it comes from) ===="
END_UPSTREAM = "# ==== end of upstream code ===="

# Licence texts shorter than this go into the header whole; longer ones (Apache-2.0) are named by
# SPDX id and pointed at, with each source module's own copyright/licence comment kept.
INLINE_LICENCE_MAX = 3000


class CorpusError(RuntimeError):
    """A wheel, a definition or a substitution is not what the corpus says it is."""


# --------------------------------------------------------------------------------------- wheels


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _good(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == sha256


def obtain_wheel(dist: str, wheels_dir: Path | None = None, download: bool = True) -> Path:
    """Path of the checked wheel of ``dist`` (a key of ``corpus.WHEELS``).

    Looks in ``wheels_dir``, ``bench/realworld/.wheels`` and the user cache, in that order; if
    none holds a file with the right sha256 it runs ``pip download`` into the user cache (and
    copies the wheel to ``bench/realworld/.wheels`` so it can be carried to an offline machine).
    Raises ``CorpusError`` on a hash mismatch or a failed download.
    """
    w = corpus.WHEELS[dist]
    dirs = [d for d in (wheels_dir, REPO_WHEELS, CACHE_WHEELS) if d is not None]
    for d in dirs:
        p = Path(d) / w.filename
        if p.is_file():
            if _good(p, w.sha256):
                return p
            raise CorpusError(f"{p}: sha256 {sha256_of(p)} != {w.sha256} (corpus.py pins {dist}=={w.version})")
    if not download:
        raise CorpusError(f"{w.filename} not found in {', '.join(map(str, dirs))} and downloads are off")
    CACHE_WHEELS.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", f"{w.dist}=={w.version}", "-d", str(CACHE_WHEELS)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    p = CACHE_WHEELS / w.filename
    if r.returncode != 0 or not p.is_file():
        raise CorpusError(f"pip download {w.dist}=={w.version} failed (rc {r.returncode}): {r.stderr[-2000:]}")
    if not _good(p, w.sha256):
        raise CorpusError(f"downloaded {p}: sha256 {sha256_of(p)} != {w.sha256}")
    try:  # best effort: keep a copy beside the corpus for offline machines (git-ignored)
        REPO_WHEELS.mkdir(exist_ok=True)
        (REPO_WHEELS / w.filename).write_bytes(p.read_bytes())
    except OSError:
        pass
    return p


def read_member(wheel: Path, member: str) -> str:
    """Text of one file inside a wheel (a zip)."""
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member).decode("utf-8")
        except KeyError:
            raise CorpusError(f"{wheel.name} has no {member}") from None


# ----------------------------------------------------------------------------------- extraction


def _bound_names(node: ast.stmt) -> set[str]:
    """Names a top-level statement binds (defs, assignments, imports, also inside if/try)."""
    out: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        out.add(node.name)
        return out
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for a in node.names:
            out.add(a.asname or a.name.split(".")[0])
        return out
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    out.add(n.id)
        return out
    if isinstance(node, (ast.If, ast.Try, ast.With)):
        for field in ("body", "orelse", "finalbody", "handlers"):
            for child in getattr(node, field, []) or []:
                if isinstance(child, ast.ExceptHandler):
                    for c in child.body:
                        out |= _bound_names(c)
                else:
                    out |= _bound_names(child)
    return out


def _first_line(node: ast.stmt) -> int:
    decos = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decos])


def extract(source: str, names: list[str], where: str = "<module>") -> list[tuple[int, int, str]]:
    """Cut the top-level statements binding ``names`` out of ``source``, verbatim.

    Returns ``(first_line, last_line, text)`` chunks in source order (1-based, inclusive). A
    statement's span starts at its first decorator and takes in the comment lines directly
    above it; statements that are neighbours in the source are joined into one chunk together
    with whatever lies between them (blank lines, comments). Every name must be bound by at
    least one top-level statement, else ``CorpusError``.
    """
    lines = source.splitlines()
    body = ast.parse(source).body
    wanted = set(names)
    picked: list[int] = []
    found: set[str] = set()
    for i, node in enumerate(body):
        b = _bound_names(node) & wanted
        if b:
            picked.append(i)
            found |= b
    missing = [n for n in names if n not in found]
    if missing:
        raise CorpusError(f"{where}: no top-level definition of {', '.join(missing)}")

    spans: list[list[int]] = []
    prev = None
    for i in picked:
        node = body[i]
        start, end = _first_line(node), node.end_lineno or node.lineno
        if prev is not None and i == prev + 1 and spans:
            spans[-1][1] = end  # neighbours: one chunk, the lines between them kept as they are
        else:
            while start > 1 and lines[start - 2].lstrip().startswith("#"):
                start -= 1  # the comment block directly above belongs to the definition
            spans.append([start, end])
        prev = i
    return [(s, e, "\n".join(lines[s - 1:e])) for s, e in spans]


def leading_comments(source: str) -> str:
    """The module's opening comment block (copyright / licence lines), or ''."""
    out = []
    for line in source.splitlines():
        if line.startswith("#"):
            out.append(line)
        elif line.strip() == "" and out:
            break
        elif line.strip() == "":
            continue
        else:
            break
    return "\n".join(out)


def substitute_once(text: str, old: str, new: str, what: str, count: int = 1) -> str:
    """Replace ``old`` by ``new``; ``old`` must occur exactly ``count`` times, else CorpusError."""
    n = text.count(old)
    if n != count:
        raise CorpusError(f"{what}: {old!r} occurs {n} times, expected {count}")
    return text.replace(old, new)


# ------------------------------------------------------------------------------------- assembly


def _wrapper_parts(name: str) -> tuple[str, str]:
    path = WRAPPERS / f"{name}.py"
    text = path.read_text()
    if text.count(UPSTREAM_MARKER) != 1:
        raise CorpusError(f"{path}: needs exactly one line {UPSTREAM_MARKER!r}")
    pre, post = text.split(UPSTREAM_MARKER)
    # Shims several wrappers share live once, in wrappers/_<name>.snippet (the first line says so).
    def include(part: str) -> str:
        for name in re.findall(r"^# @@ include (\w+) @@$", part, flags=re.M):
            snippet = (WRAPPERS / f"_{name}.snippet").read_text().split("\n", 1)[1]
            part = part.replace(f"# @@ include {name} @@\n", snippet)
        return part
    return include(pre).strip("\n"), include(post).strip("\n")


def _header(t: corpus.Target, wheels: dict[str, Path], sources: dict[tuple[str, str], str]) -> str:
    w = corpus.WHEELS[t.dist]
    out = [
        f"{t.name}: {t.kind}, {t.project} upstream Triton code wrapped as a profd target.",
        "",
        "MATERIALIZED FILE: written by bench/realworld/materialize.py from a released wheel; do not",
        "edit or commit it (edit bench/realworld/corpus.py or wrappers/ instead).",
        "",
        f"Upstream repository: {w.repo}",
        f"Upstream path:       {t.upstream_path}",
        f"Version:             {w.dist}=={w.version}",
        f"Wheel:               {w.filename}",
        f"Wheel sha256:        {w.sha256}",
        f"Licence:             {w.licence} (SPDX); the wheel's {w.licence_file}",
        "",
        "Taken verbatim from the wheel (top-level definitions, in their original order):",
    ]
    for p in t.pieces:
        out.append(f"  {p.path}: {', '.join(p.names)}")
    out.append("")
    if len(t.pieces) > 1:
        out.append("Inlined helpers (copied from sibling modules, so every launch knob lives in this file):")
        for p in t.pieces[:-1]:
            out.append(f"  {', '.join(p.names)} from {p.path}")
        out.append("")
    out.append("Everything outside the upstream section is ours: imports and marked shims for the")
    out.append("project-internal helpers the code imports, then the profd wrapper (get_inputs,")
    out.append("reference, kernel, SHAPES, BENCH_SHAPE, flops, bytes_moved, tolerances).")
    out.append("")
    if t.defect is None:
        out.append("Planted defect: none (control: the upstream code exactly as released).")
    else:
        d = t.defect
        out += ["Planted defect (one textual substitution in the upstream code):",
                f"  was:  {d.old.strip()}", f"  now:  {d.new.strip()}", ""]
        out += ["  " + line for line in d.why.strip().splitlines()]
        out += ["", f"  Fix: {d.fix.strip()}"]
    out.append("")
    out.append("Upstream licence:")
    lic = read_member(wheels[t.dist], w.licence_file).strip()
    if len(lic) <= INLINE_LICENCE_MAX:
        out += ["", *("    " + line if line else "" for line in lic.splitlines())]
    else:
        out.append(f"  {w.licence}; the full text is in the wheel's {w.licence_file}")
        out.append("  (also https://spdx.org/licenses/" + w.licence + ".html).")
    for p in t.pieces:
        head = leading_comments(sources[(t.dist, p.path)])
        if head:
            out += ["", f"  {p.path} opens with:", *("    " + line for line in head.splitlines())]
    text = "\n".join(out).replace("\\", "\\\\").replace('"""', "'''")
    return '"""' + text + '\n"""'


def build(t: corpus.Target, wheels: dict[str, Path]) -> str:
    """Source text of one materialized target."""
    sources: dict[tuple[str, str], str] = {}
    chunks: list[str] = []
    for p in t.pieces:
        src = read_member(wheels[t.dist], p.path)
        sources[(t.dist, p.path)] = src
        for s, e, text in extract(src, p.names, where=f"{t.name}: {p.path}"):
            chunks.append(f"# ---- {p.path}, lines {s}-{e} ----\n{text}")
    upstream = "\n\n\n".join(chunks)
    if t.defect is not None:
        upstream = substitute_once(upstream, t.defect.old, t.defect.new, f"{t.name}: planted defect")
    pre, post = _wrapper_parts(t.name)
    return "\n".join([
        _header(t, wheels, sources), "", pre, "", "", BEGIN_UPSTREAM, upstream, END_UPSTREAM, "", "", post, ""
    ])


def materialize(outdir: str | os.PathLike, wheels_dir: str | os.PathLike | None = None,
                only: list[str] | None = None, download: bool = True) -> list[Path]:
    """Write every corpus target (or those named in ``only``) into ``outdir``; return their paths."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    targets = [t for t in corpus.TARGETS if not only or t.name in only]
    if only and len(targets) != len(set(only)):
        unknown = set(only) - {t.name for t in targets}
        raise CorpusError(f"no such targets: {', '.join(sorted(unknown))}")
    wd = Path(wheels_dir) if wheels_dir else None
    wheels = {d: obtain_wheel(d, wd, download) for d in sorted({t.dist for t in targets})}
    paths = []
    for t in targets:
        p = out / f"{t.name}.py"
        p.write_text(build(t, wheels))
        paths.append(p)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", help="directory to write the target files into")
    ap.add_argument("--wheels", help="directory holding the pinned wheels (looked in first)")
    ap.add_argument("--only", nargs="*", help="target names (default: all)")
    ap.add_argument("--offline", action="store_true", help="never run pip download")
    a = ap.parse_args(argv)
    try:
        for p in materialize(a.outdir, a.wheels, a.only, download=not a.offline):
            print(p)
    except CorpusError as e:
        print(f"materialize: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
