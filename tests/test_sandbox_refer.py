"""The candidate child's /proc layer must not break re-parenting renames (Triton's compile cache).

Found on an H200: with the read layer handling only reads, Landlock denied every rename that
changes a file's directory (EXDEV), so each new Triton config failed to compile in the judge's
child while cached ones passed. The interpreter never compiles, so only this test sees it on a CPU.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from profd.harness.sandbox import landlock_abi

PROG = r'''
import os, sys, tempfile
from profd.harness import sandbox as S
d = tempfile.mkdtemp()
os.makedirs(d + "/tmp.pid_1"); open(d + "/tmp.pid_1/k.so", "w").write("x")
print(S.apply_read_restriction())
os.replace(d + "/tmp.pid_1/k.so", d + "/k.so")  # what Triton's cache does after a compile
try:
    open(f"/proc/{os.getppid()}/environ").read()
    sys.exit("the parent's environ was readable")
except PermissionError:
    pass
print("ok")
'''


@pytest.mark.skipif(landlock_abi()[0] < 2, reason="needs Landlock ABI 2 (REFER)")
def test_a_reparenting_rename_still_works_under_the_read_layer() -> None:
    cp = subprocess.run([sys.executable, "-c", PROG], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert cp.stdout.strip().endswith("ok")
