"""A candidate's caches: it reads the user's, it writes only a directory of its own.

Triton keeps compiled kernels (cubins, launchers, ``cuda_utils``) in one cache directory that
every later run loads from without checking what made the files; torch's ``load_inline`` loads
a ``.so`` from its build directory the same way. A candidate that could write those could plant
a binary under the key of the original's kernel (the key is a hash anyone can compute):
profd's own later runs of the original, and the user's training jobs outside profd, would run
it. So the judge gives each candidate *source* a private cache directory
(:func:`private_cache_env`), the only cache its child may write (``profd.harness.sandbox``,
``candidate=True``), and :class:`OverlayCacheManager`, named in ``TRITON_CACHE_MANAGER``, looks
there first and then in the user's Triton cache, which the child can read but not write. A
candidate still finds the original's compiled helpers, later runs of the same source reuse
what it compiled, and nothing it writes reaches another source's runs. CUDA builds are read
from profd's build cache (``PROFD_CUDA_CACHE_DIR``), which only the confined builder writes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Optional

#: The environment variable naming the user's (read-only for candidates) Triton cache directory.
TRUSTED_ENV = "PROFD_TRITON_TRUSTED_CACHE"
#: The value of ``TRITON_CACHE_MANAGER`` that selects :class:`OverlayCacheManager`.
MANAGER = "profd.harness.candidate_caches:OverlayCacheManager"


def user_triton_cache(env: Optional[Mapping[str, str]] = None) -> Path:
    """The Triton cache directory a process with ``env`` uses (Triton's own default rule)."""
    env = os.environ if env is None else env
    if env.get("TRITON_CACHE_DIR"):
        return Path(env["TRITON_CACHE_DIR"])
    return Path(env.get("TRITON_HOME") or env.get("HOME") or os.path.expanduser("~")) / ".triton" / "cache"


def private_cache_env(root: Path, source: bytes, env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Environment for a candidate child: caches under ``root/<digest of source>``, the user's
    Triton cache as a read-only layer, and profd's CUDA build cache to load pre-builds from.

    ``root`` must be a directory candidates cannot write (the judge's, under profd's state dir):
    the sandbox grants the child its own subdirectory only."""
    from profd.harness.cuda_build import child_cache_dir
    from profd.harness.sandbox import PRIVATE_CACHE_ENV

    env = os.environ if env is None else env
    private = Path(root) / hashlib.sha256(source).hexdigest()[:24]
    dirs = {k: private / sub for k, sub in (("TRITON_CACHE_DIR", "triton"), ("TRITON_HOME", "home"),
                                            ("XDG_CACHE_HOME", "xdg"), ("CUDA_CACHE_PATH", "nv"),
                                            ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
                                            ("CUPY_CACHE_DIR", "cupy"))}
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    for d in dirs.values():
        d.mkdir(exist_ok=True, mode=0o700)
    out = {k: str(v) for k, v in dirs.items()}
    out.update({PRIVATE_CACHE_ENV: str(private), "TRITON_CACHE_MANAGER": MANAGER,
                TRUSTED_ENV: str(user_triton_cache(env)),
                # Resolved with the user's environment, before XDG_CACHE_HOME is redirected.
                "PROFD_CUDA_CACHE_DIR": str(child_cache_dir(dict(env)))})
    return out


def _overlay_class() -> type:
    from triton.runtime.cache import FileCacheManager

    class OverlayCacheManager(FileCacheManager):  # type: ignore[misc, valid-type]
        """Triton's file cache, with the user's cache as a read-only layer below the private one."""

        def __init__(self, key: str, override: bool = False, dump: bool = False) -> None:
            super().__init__(key, override=override, dump=dump)
            base = os.environ.get(TRUSTED_ENV, "")
            self.trusted_dir = os.path.join(base, key) if base and not (override or dump) else ""

        def _trusted(self, filename: str) -> Optional[str]:
            p = os.path.join(self.trusted_dir, filename) if self.trusted_dir else ""
            return p if p and os.path.exists(p) else None

        def get_file(self, filename: str) -> Optional[str]:
            return super().get_file(filename) or self._trusted(filename)

        def get_group(self, filename: str) -> Optional[dict[str, str]]:
            got = super().get_group(filename)
            if got is not None or not self.trusted_dir:
                return got
            # The user's group lists paths inside the user's cache: read it there.
            lower = FileCacheManager.__new__(FileCacheManager)
            lower.key, lower.cache_dir, lower.lock_path = self.key, self.trusted_dir, None
            return lower.get_group(filename)

    return OverlayCacheManager


def __getattr__(name: str) -> Any:
    # Built on first use: only a candidate's child (through TRITON_CACHE_MANAGER) imports Triton
    # for it; the judge's process, which only builds the environment, never does.
    if name == "OverlayCacheManager":
        cls = _overlay_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
