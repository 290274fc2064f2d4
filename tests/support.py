"""Helpers several test files share: the committed fixtures, a free loopback port, and a real Triton add-kernel
target whose kernel(...) the test can hold (while a marker file exists) to catch a job
in flight."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any

#: Real profiler captures and reference data the tests read, committed with the repository so a
#: fresh clone runs every test (fixtures/README.md names where each file came from).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture_file(*parts: str) -> Path:
    """A committed fixture; a missing one is a broken checkout, so it fails rather than skips."""
    path = FIXTURES.joinpath(*parts)
    assert path.is_file(), f"fixture {path} is missing: it is part of the repository (see tests/fixtures/README.md)"
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HELD_ADD = '''
import os, time
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
{consts}

@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)

def get_inputs(n={n}):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]

def reference(x, y):
    return x + y

def kernel(x, y):
{before}    while {hold}:   # the test holds the job here
        time.sleep(0.05)
    out = torch.empty_like(x)
    add_kernel[(triton.cdiv(x.numel(), {block}),)](x, y, out, x.numel(), BLOCK={block})
{after}    return out
'''


def held_add_target(hold: str, *, consts: dict[str, Any], before: str = "", after: str = "", n: int = 777,
                    block: int = 256) -> str:
    """The source of an add-kernel target whose kernel(...) spins while ``hold`` is true.

    ``consts`` become module constants (repr'd); ``before``/``after`` are statements run
    before the hold and after the launch, inside kernel(...).
    """
    body = lambda s: textwrap.indent(textwrap.dedent(s).strip("\n") + "\n", "    ") if s.strip() else ""  # noqa: E731
    return _HELD_ADD.format(consts="\n".join(f"{k} = {v!r}" for k, v in consts.items()), n=n, block=block,
                            hold=hold, before=body(before), after=body(after))
