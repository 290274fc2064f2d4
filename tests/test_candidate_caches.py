"""A candidate cannot write the caches that later runs load without checks (Triton's compiled
kernels, profd's CUDA build cache, the user cache): it gets a private cache of its own.

A binary planted under the original's cache key would run in profd's later runs of the
original and in the user's own jobs outside profd. These tests run the real judge (Triton's
interpreter on CPU) on a candidate that tries exactly that, and Triton's real file cache
through profd's overlay manager.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from tests.hostile_attacks import TARGET, _k
except ImportError:
    from hostile_attacks import TARGET, _k

from profd.harness.sandbox import landlock_abi


def _plant(paths: dict[str, Path]) -> str:
    """Kernel body: try to write every path (catching the refusal), then compute honestly."""
    lines = ['o = _rt("os")', "got = []"]
    for p in paths.values():
        lines += ["try:", f"    o.makedirs({str(p.parent)!r}, exist_ok=True)",
                  f"    fd = o.open({str(p)!r}, o.O_WRONLY | o.O_CREAT | o.O_TRUNC, 0o644)",
                  "    o.write(fd, b'planted by a candidate')", "    o.close(fd)", "except OSError:", "    pass"]
    return _k("\n".join(lines) + "\n{launch}\nreturn out")


@pytest.mark.skipif(landlock_abi()[0] < 1, reason="needs Landlock")
def test_a_candidate_cannot_plant_binaries_in_the_caches_later_runs_load(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from profd.flow.judge import Judge, candidate_file

    state = tmp_path / "state"
    monkeypatch.setenv("PROFD_STATE_DIR", str(state))
    triton_cache, xdg, cuda_cache = tmp_path / "triton-cache", tmp_path / "xdg-cache", tmp_path / "cuda-cache"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(triton_cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("PROFD_CUDA_CACHE_DIR", str(cuda_cache))
    cubin = triton_cache / "ORIGINALKEY" / "add_kernel.cubin"
    so = cuda_cache / "0123abcd" / "ext_0123abcd.so"
    for p in (cubin, so):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"the user's build")
    targets = {"cubin": cubin, "so": so, "new triton entry": triton_cache / "NEWKEY" / "k.cubin",
               "user cache": xdg / "torch" / "kernels" / "x.bin", "home triton": tmp_path / ".triton" / "cache" / "x"}
    monkeypatch.setenv("HOME", str(tmp_path))
    user = tmp_path / "user"
    user.mkdir()
    f = user / "add.py"
    f.write_text(TARGET)
    judge = Judge(f, force_cpu=True, timeout_s=90.0)
    try:
        assert judge.baseline().measurement.correct
        cand = candidate_file(f, "planter", _plant(targets))
        r = judge.run(cand, trials=1)
    finally:
        judge.close()
    assert r.measurement.correct, r.measurement.verdict.message  # the honest part still runs
    assert cubin.read_bytes() == b"the user's build" and so.read_bytes() == b"the user's build"
    planted = [name for name, p in targets.items() if p.exists() and p.read_bytes() == b"planted by a candidate"]
    assert planted == [], f"the candidate wrote {planted}"
    assert not any(judge.caches.glob("*")), "the session's private caches outlived it"


def test_the_overlay_reads_the_users_triton_cache_and_writes_only_its_own(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from profd.harness import candidate_caches as C

    user, private = tmp_path / "user", tmp_path / "private"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(private))
    monkeypatch.setenv(C.TRUSTED_ENV, str(user))
    monkeypatch.setenv("TRITON_CACHE_MANAGER", C.MANAGER)
    from triton.runtime.cache import get_cache_manager

    # What the user's runs compiled, through Triton's own manager.
    monkeypatch.setenv("TRITON_CACHE_DIR", str(user))
    monkeypatch.delenv("TRITON_CACHE_MANAGER")
    mine = get_cache_manager("ab" * 16)
    cubin = mine.put(b"cubin bytes", "add.cubin")
    mine.put_group("add.json", {"add.cubin": cubin})
    monkeypatch.setenv("TRITON_CACHE_DIR", str(private))
    monkeypatch.setenv("TRITON_CACHE_MANAGER", C.MANAGER)
    m = get_cache_manager("ab" * 16)
    assert type(m).__name__ == "OverlayCacheManager"
    assert m.get_file("add.cubin") == cubin and m.get_group("add.json") == {"add.cubin": cubin}
    written = m.put(b"a candidate's bytes", "add.cubin")
    assert Path(written).is_relative_to(private)
    assert m.get_file("add.cubin") == written  # its own first
    assert Path(cubin).read_bytes() == b"cubin bytes"
    assert not any(p.name.startswith("tmp.") for p in user.rglob("*"))
    assert get_cache_manager("cd" * 16).get_file("add.cubin") is None


def test_private_cache_env_gives_each_source_its_own_directory(tmp_path: Path) -> None:
    from profd.harness.candidate_caches import private_cache_env

    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    a, b = private_cache_env(tmp_path / "c", b"source a", env), private_cache_env(tmp_path / "c", b"source b", env)
    assert a["PROFD_PRIVATE_CACHE"] != b["PROFD_PRIVATE_CACHE"]
    assert a == private_cache_env(tmp_path / "c", b"source a", env)
    for k in ("TRITON_CACHE_DIR", "XDG_CACHE_HOME", "CUDA_CACHE_PATH", "TORCHINDUCTOR_CACHE_DIR", "TRITON_HOME"):
        assert Path(a[k]).is_relative_to(a["PROFD_PRIVATE_CACHE"]) and Path(a[k]).is_dir()
    # The build cache and the user's Triton cache are resolved from the user's environment.
    assert a["PROFD_CUDA_CACHE_DIR"] == str(tmp_path / "xdg" / "profd" / "cuda-cache")
    assert a["PROFD_TRITON_TRUSTED_CACHE"] == str(tmp_path / ".triton" / "cache")
    assert os.stat(a["PROFD_PRIVATE_CACHE"]).st_mode & 0o077 == 0
