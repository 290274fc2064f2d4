"""Helpers several test files share: the committed fixtures, a free loopback port, a real Triton add-kernel
target whose kernel(...) the test can hold (while a marker file exists) to catch a job
in flight, and the tune loop's setup: a slow add-kernel target, a scripted advisor, a
store in the test's state dir and a warm worker (pytest fixtures: import them by name)."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from bench._common import ScriptedAdvisor  # noqa: F401 (re-exported: the tests' scripted advisor is the bench's)
from profd.harness.warm import WarmWorker
from profd.store import Store

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


# --------------------------------------------------------------------------- the tune loop's setup

_TUNABLE_ADD = '''
import torch
import triton
import triton.language as tl

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK_SIZE = 16
NUM_WARPS = 4


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


def kernel(x, y):
    out = torch.empty_like(x)
    grid = (triton.cdiv(x.numel(), BLOCK_SIZE),)
    add_kernel[grid](x, y, out, x.numel(), BLOCK_SIZE=BLOCK_SIZE, num_warps=NUM_WARPS)
    return out


def reference(x, y):
    return x + y


SHAPES = [{shapes}]
BENCH_SHAPE = dict(n={bench})


def get_inputs(n={default}):
    return [torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)]
'''


def tunable_add_target(shapes: Sequence[int], bench: int) -> str:
    """The source of an add-kernel target with a tiny ``BLOCK_SIZE = 16`` (``NUM_WARPS = 4``) to tune.

    In the interpreter every program instance costs real time, so a tiny block over many
    elements is many times slower than a large one: a win no noise can hide. ``shapes``: the
    ``n`` of each declared shape, in order; ``bench``: ``BENCH_SHAPE``'s ``n``; ``get_inputs``
    defaults to the smallest shape.
    """
    return _TUNABLE_ADD.format(shapes=", ".join(f"dict(n={n})" for n in shapes), bench=bench, default=min(shapes))


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store in this test's own state dir (``PROFD_STATE_DIR`` points there for the test)."""
    monkeypatch.setenv("PROFD_STATE_DIR", str(tmp_path / "state"))
    s = Store()
    yield s
    s.close()


@pytest.fixture(scope="module")
def warm() -> Iterator[WarmWorker]:
    """One warm worker for the test module (a zygote the judged children fork from)."""
    w = WarmWorker()
    w.start()
    yield w
    w.close()
