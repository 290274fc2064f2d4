"""Candidates' CUDA builds run in a confined builder, never in the candidate's sandboxed child.

The candidate's child denies setpgid and chmod (seccomp), which ninja (posix_spawn with
SETPGROUP) and the linker need: on an H200 every CUDA candidate of ``profd tune`` failed with
"ninja: fatal: posix_spawn: Operation not permitted". These tests build real extensions with
the real toolchain -- torch's ``load_inline`` with a C++-only source, so g++ and ninja suffice
and no GPU is needed -- through profd's pre-builder, in the confined builder process, and load
them inside a process confined exactly as a candidate's child is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (shutil.which("g++") and shutil.which("ninja")),
                                reason="needs g++ and ninja to build a C++ extension")

ORIGINAL = textwrap.dedent('''
    from torch.utils.cpp_extension import load_inline

    SRC = "int twice(int x) { return 2 * x + BIAS; }"
    mod = load_inline("profd_confined_test", [SRC], functions=["twice"], with_cuda=False,
                      extra_cflags=["-O2", "-DBIAS=0"])
''')

# Runs in a fresh process: confine it as the judge's child confines itself, then load `file`.
LOADER = textwrap.dedent('''
    import json, os, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from profd.harness import sandbox
    scratch = tempfile.mkdtemp()
    os.chdir(scratch)
    os.environ["PROFD_PRIVATE_CACHE"] = tempfile.mkdtemp()
    sandbox.sandbox_child(sys.argv[1], Path(scratch) / "result.json", candidate=True)
    sandbox.confine_candidate()
    from profd.harness.cuda_build import CudaBuildError, install_build_hook
    install_build_hook(sys.argv[2], sys.argv[1], cupy=False)
    import importlib.util
    spec = importlib.util.spec_from_file_location("cand", sys.argv[1])
    m = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(m)
        try:  # the build cache is read-only for a candidate: no .so another run loads can be replaced
            open(m.mod.__file__, "r+b").close()
            so = "writable"
        except PermissionError:
            so = "read-only"
        print(json.dumps({"twice_3": m.mod.twice(3), "so": so}))
    except CudaBuildError as e:
        print(json.dumps({"error": str(e)}))
''')


def _files(tmp_path: Path, bias: int, flags: str = '"-O2", "-DBIAS=0"') -> tuple[Path, Path]:
    user = tmp_path / "user"
    user.mkdir(exist_ok=True)
    orig = user / "k.py"
    orig.write_text(ORIGINAL)
    cand_dir = tmp_path / "state" / "candidates" / f"c{bias}"
    cand_dir.mkdir(parents=True)
    cand = cand_dir / "k.py"
    cand.write_text(ORIGINAL.replace("BIAS; }", f"BIAS + {bias}; }}").replace('"-O2", "-DBIAS=0"', flags))
    return orig, cand


def _load(cand: Path, cache: Path, tmp_path: Path) -> dict:
    loader = tmp_path / "loader.py"
    loader.write_text(LOADER)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROFD_STATE_DIR": str(tmp_path / "state"),
           "PROFD_CUDA_CACHE_DIR": str(cache), "TMPDIR": str(tmp_path)}
    cp = subprocess.run([sys.executable, str(loader), str(cand), str(cache), str(ROOT)], capture_output=True,
                        text=True, timeout=300, env=env)
    assert cp.stdout.strip(), cp.stderr[-3000:]
    return json.loads(cp.stdout.strip().splitlines()[-1])


def _prebuild(cand: Path, orig: Path, cache: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    from profd.harness.cuda_build import PreBuilder

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROFD_STATE_DIR": str(tmp_path / "state"),
           "PROFD_CUDA_CACHE_DIR": str(cache), "TMPDIR": str(tmp_path)}
    with PreBuilder(cache, max_jobs=1, env=env, original=orig) as pb:
        return pb.submit(cand).result()


def test_a_candidate_built_by_the_confined_builder_loads_in_the_candidates_sandbox(tmp_path: Path) -> None:
    orig, cand = _files(tmp_path, 5)
    cache = tmp_path / "cache"
    # Without a pre-build, the confined child does not try to compile: a clear paragraph.
    miss = _load(cand, cache, tmp_path)
    assert "has no build in profd's cache" in miss["error"] and "module-level strings" in miss["error"]
    r = _prebuild(cand, orig, cache, tmp_path)
    assert r.ok, r.error_paragraph
    assert not r.cache_hit and r.builds and r.builds[0].build_directory.startswith(str(cache))
    before = sorted((str(p), p.stat().st_mtime_ns) for p in cache.rglob("*"))
    assert _load(cand, cache, tmp_path) == {"twice_3": 11, "so": "read-only"}
    assert sorted((str(p), p.stat().st_mtime_ns) for p in cache.rglob("*")) == before, "loading wrote the cache"
    # A second pre-build of the same source is a cache hit.
    again = _prebuild(cand, orig, cache, tmp_path)
    assert again.ok and again.cache_hit


def test_the_candidates_own_filter_is_what_stops_ninja(tmp_path: Path) -> None:
    """The reason for the builder: under the candidate's confinement torch's own build fails."""
    _, cand = _files(tmp_path, 1)
    script = tmp_path / "direct.py"
    # The extensions directory is the child's writable cache here: only the filter stands in the way.
    script.write_text(LOADER.replace("install_build_hook(sys.argv[2], sys.argv[1], cupy=False)",
                                     "os.environ['TORCH_EXTENSIONS_DIR'] = sys.argv[2]")
                      .replace('os.environ["PROFD_PRIVATE_CACHE"] = tempfile.mkdtemp()',
                               'os.environ["PROFD_PRIVATE_CACHE"] = sys.argv[2]'))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROFD_STATE_DIR": str(tmp_path / "state"),
           "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), "TMPDIR": str(tmp_path)}
    (tmp_path / "ext").mkdir()
    cp = subprocess.run([sys.executable, str(script), str(cand), str(tmp_path / "ext"), str(ROOT)],
                        capture_output=True, text=True, timeout=300, env=env)
    assert "Operation not permitted" in cp.stdout + cp.stderr


def test_flags_that_could_run_a_program_are_refused_and_the_originals_are_kept(tmp_path: Path) -> None:
    orig, cand = _files(tmp_path, 2, flags='"-O2", "-DBIAS=0", "-fplugin=/tmp/evil.so"')
    cache = tmp_path / "cache"
    r = _prebuild(cand, orig, cache, tmp_path)
    assert not r.ok and "-fplugin=/tmp/evil.so" in r.error_paragraph
    assert not (cache.exists() and any(cache.iterdir()))  # refused before anything was built
    _, ok_cand = _files(tmp_path, 3, flags='"-O3", "-DBIAS=0", "-funroll-loops"')
    assert _prebuild(ok_cand, orig, cache, tmp_path).ok


def test_the_builder_cannot_write_the_users_directory(tmp_path: Path) -> None:
    """The builder compiles untrusted source: it may write its scratch, the temp dir and the caches only."""
    from profd.harness import sandbox

    if sandbox.landlock_abi()[0] <= 0:
        pytest.skip("no Landlock on this kernel")
    orig, cand = _files(tmp_path, 4)
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(f'''
        import sys, tempfile
        sys.path.insert(0, {str(ROOT)!r})
        from profd.harness.sandbox import confine_builder
        print(confine_builder({str(cand)!r}, tempfile.mkdtemp()))
        for p in ({str(orig.parent / "x")!r}, {str(tmp_path / "cache" / "ok")!r}):
            try:
                open(p, "w").write("x"); print("wrote", p)
            except PermissionError:
                print("denied", p)
    '''))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROFD_STATE_DIR": str(tmp_path / "state"),
           "PROFD_CUDA_CACHE_DIR": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "t")}
    (tmp_path / "t").mkdir()
    (tmp_path / "cache").mkdir()
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=60, env=env).stdout
    assert f"denied {orig.parent / 'x'}" in out and f"wrote {tmp_path / 'cache' / 'ok'}" in out, out


def test_a_cuda_target_proposes_as_many_candidates_per_round_as_it_builds_at_once(tmp_path: Path) -> None:
    """Builds overlap only if they are proposed together; a Triton target keeps its batch."""
    import os

    from profd.flow.tune import _Prebuilds

    examples = ROOT / "examples" / "kernels"
    cuda = _Prebuilds(examples / "cuda_matmul.py", (examples / "cuda_matmul.py").read_text())
    triton = _Prebuilds(examples / "vector_add.py", (examples / "vector_add.py").read_text())
    assert cuda.width == max(1, min(8, (os.cpu_count() or 2) - 2)) and triton.width == 0
    assert triton.wait(tmp_path / "x.py") is None  # nothing to wait for: the judge goes straight on


def test_the_flag_screen_on_real_flag_lists() -> None:
    """KernelBench solutions pass extra_cflags=[""]; the examples -O3 and ptxas -v; plugins are refused."""
    from profd.harness.cuda_build import static_load_inline_calls, unsafe_build_flags

    for f in ("cuda_matmul.py", "cuda_reduce.py", "kernelbench_cuda_add.py"):
        calls, skipped = static_load_inline_calls((ROOT / "examples" / "kernels" / f).read_text())
        assert calls and not skipped and all(unsafe_build_flags(c) == [] for c in calls), f
    call = {"extra_cuda_cflags": ["-O3", "--use_fast_math", "--ptxas-options=-v", "-Xcompiler", "-fplugin=x.so"],
            "extra_ldflags": ["-Wl,--wrap=malloc", "-lcublas"]}
    assert unsafe_build_flags(call) == ["-Xcompiler", "-fplugin=x.so", "-Wl,--wrap=malloc"]
    assert unsafe_build_flags(call, [{"extra_cuda_cflags": ["-Xcompiler"]}]) == ["-fplugin=x.so", "-Wl,--wrap=malloc"]


def test_ending_a_session_kills_its_pending_builds_and_their_leftovers_do_not_block_a_rebuild(
        tmp_path: Path) -> None:
    """A session that ends does not wait for builds it will never measure; torch's lock file left
    by a killed build would make every later load of that source wait forever."""
    import time

    from profd.harness.cuda_build import PreBuilder

    orig, cand = _files(tmp_path, 7)
    cache = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PROFD_STATE_DIR": str(tmp_path / "state"),
           "PROFD_CUDA_CACHE_DIR": str(cache), "TMPDIR": str(tmp_path)}
    pb = PreBuilder(cache, max_jobs=1, env=env, original=orig)
    fut = pb.submit(cand)
    queued = pb.submit(tmp_path / "never.py")
    # wait until torch holds its lock in the build directory, then end the session
    end = time.monotonic() + 120
    while time.monotonic() < end and not list(cache.glob("*/lock")):
        time.sleep(0.05)
    locks = list(cache.glob("*/lock"))
    assert locks, "the build never started"
    t0 = time.monotonic()
    pb.shutdown(wait=False)
    r = fut.result(timeout=30)
    assert time.monotonic() - t0 < 10 and not r.ok
    assert queued.cancelled() or not queued.result(timeout=10).ok
    assert locks[0].exists()  # the killed build's leftover
    # A later session builds the same source (its hook clears the stale lock under its flock) ...
    again = _prebuild(cand, orig, cache, tmp_path)
    assert again.ok, again.error_paragraph
    # ... and a confined child loads it even when a stale lock is there again.
    locks[0].write_text("")
    assert _load(cand, cache, tmp_path) == {"twice_3": 13, "so": "read-only"}
