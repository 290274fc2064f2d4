"""Compiling the next candidates ahead, without the GPU (profd/harness/precompile.py).

Triton's NVIDIA backend compiles for a named target on a machine without a GPU, so these
run here: a compile-only process under the no-ioctl filter fills a candidate's private cache
from meta tensors, under the key a process with real tensors then finds (no second compile);
the filter refuses ioctl the way CPython copes with (ENOTTY); and a tuning session that
compiles ahead keeps its verdicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from profd.flow.tune import tune
from profd.harness.warm import WarmWorker
from profd.store import Store

try:
    from support import store, tunable_add_target, warm  # noqa: F401 (fixtures)
except ImportError:  # pragma: no cover
    from tests.support import store, tunable_add_target, warm  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
H200 = {"backend": "cuda", "arch": 90, "warp_size": 32, "capability": [9, 0], "name": "NVIDIA H200"}


def _child(code: str, env: dict[str, str], cwd: Path) -> dict:
    env = {k: v for k, v in env.items() if k != "TRITON_INTERPRET"}  # a real compile, for sm_90
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _compile_ahead(tmp_path: Path, cand: Path, dtype: str, specs: Optional[list[dict]] = None
                   ) -> tuple[dict, dict[str, str]]:
    """Run the compile-only process on ``cand`` for an H200, from ``specs`` (default a [64, 1000]
    meta input of ``dtype``): (its result, the environment it ran with). Skips where it refuses to run."""
    from profd.harness.candidate_caches import private_cache_env

    env = {**os.environ, **private_cache_env(tmp_path / "caches", cand.read_bytes()),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "CUDA_VISIBLE_DEVICES": ""}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    specs = specs or [{"shape": [64, 1000], "stride": [1000, 1], "offset": 0, "dtype": dtype, "grad": False}]
    req = {"original": str(cand), "candidate": str(cand), "sys_path": [str(cand.parent)], "target": H200,
           "inputs": {"0": specs}}
    (scratch / "request.json").write_text(json.dumps(req))
    got = _child("""
        from profd.harness import precompile as P
        P.main(["request.json"])
        print(open("result.json").read())
    """, env, scratch)
    if "refused" in got:
        pytest.skip(f"this kernel cannot run the compile-only process: {got['refused']}")
    return got, env


def test_a_compile_only_fork_fills_the_cache_its_candidate_then_hits(tmp_path: Path) -> None:
    """The Triton tutorial softmax example, compiled for an H200 from meta tensors under the
    no-GPU filter; then the same launch with real tensors compiles nothing new."""
    cand = tmp_path / "user" / "softmax.py"
    cand.parent.mkdir()
    cand.write_text((ROOT / "examples" / "kernels" / "softmax.py").read_text())
    first, env = _compile_ahead(tmp_path, cand, "float32")
    scratch = tmp_path / "scratch"
    assert first.get("compiled", 0) >= 1, first
    assert "error" not in first["shapes"]["0"], first
    cache = Path(env["TRITON_CACHE_DIR"])
    cubins = sorted(p.name for p in cache.rglob("*.cubin"))
    assert cubins, first
    # The key a process with real tensors computes (as the candidate's own child does on the GPU):
    # same target, same dtypes and alignment; Triton finds the kernel and compiles nothing.
    second = _child(f"""
        import json, sys, torch
        from pathlib import Path
        from profd.harness import precompile as P
        from profd.harness.target import import_file
        P._pretend({H200!r})
        n = {{"launches": 0, "compiles": 0}}
        P._compile_only(n)
        sys.path.insert(0, {str(cand.parent)!r})
        m = import_file(Path({str(cand)!r}))
        m.kernel(torch.randn(64, 1000))
        print(json.dumps(n))
    """, env, scratch)
    assert second["compiles"] >= 1  # Triton asked for the kernel ...
    assert sorted(p.name for p in cache.rglob("*.cubin")) == cubins  # ... and found it: nothing new built


def test_the_no_gpu_filter_refuses_ioctl_with_enotty_and_files_still_open(tmp_path: Path) -> None:
    out = _child("""
        import errno, fcntl, json, tempfile, termios
        from profd.harness.sandbox import apply_seccomp
        how = apply_seccomp(gpu=False)
        res = {"how": how}
        if not how.startswith("unavailable"):
            try:
                fcntl.ioctl(0, termios.FIONREAD, bytearray(4))
                res["ioctl"] = "allowed"
            except OSError as e:
                res["ioctl"] = errno.errorcode.get(e.errno, str(e.errno))
            f = tempfile.NamedTemporaryFile(delete=False, mode="w", suffix=".ptx")
            f.write("x")
            f.close()
            res["tempfile"] = True
        print(json.dumps(res))
    """, {**os.environ, "PYTHONPATH": str(ROOT)}, tmp_path)
    if out["how"].startswith("unavailable"):
        pytest.skip(out["how"])
    assert "no ioctl" in out["how"]
    assert out["ioctl"] == "ENOTTY" and out["tempfile"] is True


def test_a_session_that_compiles_ahead_keeps_its_verdicts(tmp_path: Path, store: Store, warm: WarmWorker,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced on in the interpreter (where it compiles nothing): the forks run, finish, and the
    session still keeps the faster block size."""
    monkeypatch.setenv("PROFD_PRECOMPILE", "1")
    target = tmp_path / "user" / "add.py"
    target.parent.mkdir()
    target.write_text(tunable_add_target([1000], bench=16384))
    res = tune(target, store, budget=4, runner=warm, warm=warm)
    assert res.best_candidate is not None, res.to_dict()
    assert res.precompile.get("queued", 0) >= 1, res.precompile
    assert res.precompile["finished"] >= 1
    assert res.to_dict()["precompile"] == res.precompile


def test_a_new_round_supersedes_the_last_and_a_compile_not_started_is_dropped(tmp_path: Path) -> None:
    """The precompiler's order: after a kept candidate the tuner proposes a new round, and the
    old round's candidates not started yet must not compile before it; a candidate about to be
    measured whose compile has not started is dropped (its child compiles), one under way is
    left to finish without anyone waiting for it."""
    import threading
    import time

    from profd.harness.precompile import Precompiler

    release = threading.Event()
    started: list[str] = []

    def request_for(f: Path) -> None:
        started.append(f.name)
        if f.name == "a.py":
            release.wait(10)
        return None  # "no baseline specs": nothing to fork

    class NoFork:
        pass

    pre = Precompiler(NoFork(), request_for, lambda f: {}, slots=1)
    a, b, c, d, e = (tmp_path / f"{n}.py" for n in "abcde")
    pre.queue([a, b, c])
    for _ in range(200):
        if started:
            break
        time.sleep(0.01)
    pre.queue([d, e])  # b and c never started: dropped
    assert b not in pre.jobs and c not in pre.jobs and a in pre.jobs
    pre.settle(e)  # queued behind a and d: dropped, returns at once
    assert pre.jobs[e].cancelled()
    t0 = time.perf_counter()
    pre.settle(a)  # under way: not waited for, not stopped
    assert time.perf_counter() - t0 < 0.2 and not pre.jobs[a].done()
    release.set()
    for _ in range(300):  # d, the new round's first, compiles next
        if pre.jobs[d].done():
            break
        time.sleep(0.01)
    assert started == ["a.py", "d.py"], started
    pre.close()


def test_the_warm_worker_fills_tritons_per_process_keys_before_any_fork() -> None:
    """Triton's cache key hashes libtriton.so (500 MB) once per process; the zygote computes it
    before it forks, so no candidate child pays for it on its first launch (0.49 s on an H200)."""
    out = _child("""
        import json
        from triton.runtime import cache
        from profd.harness.zygote import prewarm_triton
        before = cache.triton_key.cache_info().currsize
        done = prewarm_triton()
        t = __import__("time").perf_counter(); cache.triton_key(); again = __import__("time").perf_counter() - t
        print(json.dumps({"before": before, "after": cache.triton_key.cache_info().currsize, "done": done,
                          "again": again}))
    """, {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}, ROOT)
    assert out["before"] == 0 and out["after"] == 1, out
    assert any(d.endswith("triton_key") for d in out["done"]), out
    assert out["again"] < 0.01, out  # inherited by forks as a cached value, not recomputed


def _corpus_target(tmp_path: Path, name: str) -> Path:
    """The corpus target ``name``, materialized as upstream wrote it (skips without the wheels)."""
    from bench.realworld import materialize as mat

    try:
        [cand] = mat.materialize(tmp_path / "user", only=[name])
    except mat.CorpusError as e:
        if "pip download" in str(e):
            pytest.skip(f"wheels unavailable: {e}")
        raise
    return cand


def test_flaggems_launch_inside_torch_cuda_device_is_compiled_ahead(tmp_path: Path) -> None:
    """FlagGems' log-softmax wrapper, as upstream wrote it, launches inside
    ``with torch_device_fn.device(inp.device):``; on meta tensors that refused the device and
    every FlagGems candidate compiled nothing ahead ("compiled 0" on an H200)."""
    cand = _corpus_target(tmp_path, "flaggems_log_softmax")
    got, env = _compile_ahead(tmp_path, cand, "bfloat16")
    assert "error" not in got["shapes"]["0"], got
    assert got["compiled"] >= 1, got
    assert list(Path(env["TRITON_CACHE_DIR"]).rglob("*.cubin")), got


def test_a_wrapper_that_reads_a_count_off_its_inputs_is_compiled_ahead_under_the_key_its_child_uses(
        tmp_path: Path) -> None:
    """Liger's cross-entropy, as upstream wrote it, counts its targets with ``.item()`` before it
    launches: on meta tensors that raised and none of its candidates compiled ahead (0 of 25 on an
    H200). Now the read answers a guess per Triton key class; a process with the real tensors
    (7 of 8 targets counted: not a multiple of 16) then finds its kernel and builds nothing."""
    import torch

    from profd.harness.precompile import specs_of

    cand = _corpus_target(tmp_path, "liger_cross_entropy")
    shape = dict(BT=8, V=300)
    # The inputs as on the GPU (bf16 logits there), on the CPU: the module picks its code by device
    # when imported (libdevice's tanh on a GPU), so both processes import it as on an H200.
    specs = specs_of([torch.randn(8, 300, dtype=torch.bfloat16), torch.randint(0, 300, (8,))])
    got, env = _compile_ahead(tmp_path, cand, "", specs)
    scratch = tmp_path / "scratch"
    assert "error" not in got["shapes"]["0"], got
    assert got["compiled"] == 2, got  # one variant per key class of the count it read
    cache = Path(env["TRITON_CACHE_DIR"])
    cubins = sorted(p.name for p in cache.rglob("*.cubin"))
    assert len(cubins) == 2, cubins
    second = _child(f"""
        import json, sys, torch
        from pathlib import Path
        from profd.harness import precompile as P
        from profd.harness.target import import_file, load_target
        from profd.harness.verify import make_inputs
        sys.path.insert(0, {str(cand.parent)!r})
        P._pretend({H200!r})
        t = load_target(Path({str(cand)!r}))
        t.module.DEVICE = "cpu"  # real tensors, with the dtypes it makes on a GPU
        inputs = make_inputs(t, {shape!r}, 0, torch.device("cpu"))
        n = {{"launches": 0, "compiles": 0}}
        P._compile_only(n)
        t.kernel(*inputs)
        print(json.dumps(n))
    """, env, scratch)
    assert second["launches"] >= 1
    assert sorted(p.name for p in cache.rglob("*.cubin")) == cubins  # found: nothing new built
