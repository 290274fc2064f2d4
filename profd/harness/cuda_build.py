"""Building the CUDA code of a Python target: a build cache, compile-error mapping, the toolchain check, and a pre-builder.

* :func:`install_build_hook` runs in the harness child *before the target is imported*. It wraps
  ``torch.utils.cpp_extension.load_inline`` and ``load`` so that every build goes to
  ``<cache_dir>/<hash>`` under a unique extension name per hash (hash of sources, flags, torch and
  CUDA versions): a re-save with the same CUDA source, or the next child of the same candidate,
  finds the library built and does not rebuild. Each build is recorded (:class:`BuildRecord`:
  cache hit or miss, seconds) so the report shows build time apart from run time. CuPy keeps its
  own cache; its first compile per kernel is only timed.
* :func:`map_compile_error` turns nvcc / ninja / g++ output about torch's generated ``cuda.cu`` and
  ``main.cpp`` into one paragraph that names the user's .py file and line.
* :func:`cuda_toolchain_status` says whether nvcc and a CUDA GPU exist, with the verdict text for a
  machine that lacks them.
* :class:`PreBuilder` compiles candidate sources in a bounded pool of subprocesses, so the tuner
  can compile the next candidates on the CPU while the GPU measures others.

Nothing here imports torch at module level: the daemon uses the toolchain check and the pre-builder
without loading torch or touching the GPU.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from profd.harness.runner import kill_group

# --------------------------------------------------------------------------- records


@dataclass
class BuildRecord:
    """One build of a target's CUDA code, as the report shows it."""

    kind: str  # "load_inline", "load", "cupy"
    name: str  # the extension name the user gave
    key: str = ""  # cache key (hash); "" for CuPy
    cache_hit: bool = False
    seconds: float = 0.0
    ok: bool = True
    build_directory: str = ""
    error: str = ""  # the mapped one-paragraph compile error
    line: Optional[int] = None  # the user's .py line of the error, when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildResult:
    """What the pre-builder returns for one source file."""

    ok: bool
    seconds: float
    cache_hit: bool
    error_paragraph: str = ""
    builds: list[BuildRecord] = field(default_factory=list)
    note: str = ""  # e.g. "nothing to build" or "built statically: 1 load_inline call"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


class CudaBuildError(RuntimeError):
    """A CUDA/C++ build of the target failed. ``message`` is the mapped paragraph; ``line`` its .py line.

    A RuntimeError, like torch's own build error, so user code that catches that still does."""

    def __init__(self, message: str, line: Optional[int] = None, raw: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.profd_line = line  # read by the child's classify(): the line to report
        self.raw = raw


# --------------------------------------------------------------------------- cache keys


def default_cache_dir(env: Optional[dict[str, str]] = None) -> Path:
    """Where builds are cached: ``$PROFD_CUDA_CACHE_DIR``, else ``$PROFD_STATE_DIR/cuda-cache``,
    else ``$XDG_CACHE_HOME/profd/cuda-cache`` (``~/.cache``)."""
    env = os.environ if env is None else env
    if env.get("PROFD_CUDA_CACHE_DIR"):
        return Path(env["PROFD_CUDA_CACHE_DIR"])
    if env.get("PROFD_STATE_DIR"):
        return Path(env["PROFD_STATE_DIR"]) / "cuda-cache"
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "profd" / "cuda-cache"


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, (str, bytes, os.PathLike)):
        return [v]
    return list(v)


def build_key(kind: str, name: str, parts: dict[str, Any], versions: Optional[dict[str, str]] = None) -> str:
    """SHA-256 (hex, 20 chars) of everything that changes the built library.

    ``parts`` are the sources (text) and flags as given; ``versions`` the torch / CUDA / compiler
    versions (a library built against another torch must not be loaded)."""
    h = hashlib.sha256()
    payload = {"kind": kind, "name": name, "parts": parts, "versions": versions or toolchain_versions()}
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


_versions_cache: Optional[dict[str, str]] = None


def toolchain_versions() -> dict[str, str]:
    """torch version, torch's CUDA version, nvcc's release line, the C++ compiler: the cache-key part."""
    global _versions_cache
    if _versions_cache is None:
        v: dict[str, str] = {"python": sys.version.split()[0]}
        torch = sys.modules.get("torch")
        if torch is not None:
            v["torch"] = str(getattr(torch, "__version__", ""))
            v["torch_cuda"] = str(getattr(getattr(torch, "version", None), "cuda", "") or "")
        nvcc = find_nvcc()
        v["nvcc"] = _nvcc_release(nvcc) if nvcc else ""
        v["cxx"] = os.environ.get("CXX", "c++")
        v["arch"] = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
        _versions_cache = v
    return dict(_versions_cache)


def _safe_name(name: str) -> str:
    s = re.sub(r"\W", "_", str(name)) or "ext"
    return s if not s[0].isdigit() else "_" + s


# --------------------------------------------------------------------------- the hook


class BuildHook:
    """Installed wrappers around torch's JIT builders (and CuPy's kernels); records every build.

    Use :func:`install_build_hook`; ``records`` fills as the target builds."""

    def __init__(self, cache_dir: Path, py_path: Optional[Path] = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.py_path = Path(py_path) if py_path else None
        self.records: list[BuildRecord] = []
        self._orig: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _refuse_unbuilt(self, rec: BuildRecord, call: str, file: str) -> None:
        """In a confined candidate child, a build missing from the cache is an error, never a build."""
        rec.ok, rec.error = False, "not pre-built"
        with self._lock:
            self.records.append(rec)
        raise CudaBuildError(_NOT_PREBUILT.format(file=file, call=call, name=rec.name), None)

    def _load_prebuilt(self, rec: BuildRecord, ext: str, bdir: Path, is_python_module: bool) -> Any:
        """In a confined candidate child: load a finished build without torch's JIT, which would write
        the build directory (its lock, the ninja file) -- the build cache is read-only there, so that
        no candidate can replace the ``.so`` another source's runs load (candidate_caches)."""
        t0 = time.perf_counter()
        try:
            so = next(bdir / f"{ext}{suf}" for suf in (".so", ".pyd", ".dylib") if (bdir / f"{ext}{suf}").exists())
            if is_python_module:
                import importlib.util

                spec = importlib.util.spec_from_file_location(ext, so)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
            import torch

            torch.ops.load_library(str(so))
            return str(so)
        except Exception as e:
            rec.ok, rec.error = False, f"{type(e).__name__}: {e}"
            raise
        finally:
            rec.seconds = time.perf_counter() - t0
            with self._lock:
                self.records.append(rec)

    # ---- torch
    def _wrap_load_inline(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        hook = self

        def load_inline(name: str, cpp_sources: Any, cuda_sources: Any = None, *args: Any, **kwargs: Any) -> Any:
            # positional arguments beyond cuda_sources are rare; keep them as they are
            cpp = [str(s) for s in _as_list(cpp_sources)]
            cuda = [str(s) for s in _as_list(cuda_sources)]
            flags = {k: kwargs.get(k) for k in ("functions", "extra_cflags", "extra_cuda_cflags", "extra_ldflags",
                                                "extra_include_paths", "with_cuda", "is_python_module",
                                                "with_pytorch_error_handling", "no_implicit_headers", "use_pch")}
            flags["positional"] = [repr(a) for a in args]
            key = build_key("load_inline", name, {"cpp": cpp, "cuda": cuda, "flags": flags})
            user_dir = kwargs.pop("build_directory", None)
            bdir = Path(user_dir) if user_dir else hook.cache_dir / key
            ext = name if user_dir else f"{_safe_name(name)}_{key}"
            hit = _built(bdir, ext)
            rec = BuildRecord("load_inline", name, key, hit, build_directory=str(bdir))
            # the user's file for the error mapping: the target, else whoever called load_inline
            py_path = hook.py_path or _caller_file()
            if _confined():
                if not hit:
                    hook._refuse_unbuilt(rec, "load_inline", py_path.name if py_path else "the candidate")
                return hook._load_prebuilt(rec, ext, bdir, kwargs.get("is_python_module", True))
            bdir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            try:
                # copies: torch's load_inline inserts its prelude into the lists it is given
                with _build_dir_lock(bdir):
                    return orig(ext, list(cpp), list(cuda) or None, *args, build_directory=str(bdir), **kwargs)
            except Exception as e:
                rec.ok = False
                text = str(e)
                if _is_build_failure(e):
                    cu = bdir / "cuda.cu"
                    mp = bdir / "main.cpp"
                    m = map_compile_error(text, py_path=py_path, cpp_sources=cpp, cuda_sources=cuda,
                                          cuda_file=cu if cu.exists() else None,
                                          cpp_file=mp if mp.exists() else None,
                                          no_implicit_headers=bool(kwargs.get("no_implicit_headers")))
                    rec.error, rec.line = m.paragraph, m.line
                    raise CudaBuildError(m.paragraph, m.line, text) from None
                rec.error = f"{type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
                raise
            finally:
                rec.seconds = time.perf_counter() - t0
                with hook._lock:
                    hook.records.append(rec)

        load_inline.__wrapped__ = orig  # type: ignore[attr-defined]
        load_inline.__doc__ = orig.__doc__
        return load_inline

    def _wrap_load(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        hook = self

        def load(name: str, sources: Any, *args: Any, **kwargs: Any) -> Any:
            files = [str(s) for s in _as_list(sources)]
            texts = {}
            for f in files:
                try:
                    texts[f] = Path(f).read_text(errors="replace")
                except OSError:
                    texts[f] = ""
            flags = {k: kwargs.get(k) for k in ("extra_cflags", "extra_cuda_cflags", "extra_ldflags",
                                                "extra_include_paths", "with_cuda", "is_python_module",
                                                "is_standalone")}
            flags["positional"] = [repr(a) for a in args]
            key = build_key("load", name, {"sources": texts, "flags": flags})
            user_dir = kwargs.pop("build_directory", None)
            bdir = Path(user_dir) if user_dir else hook.cache_dir / key
            ext = name if user_dir else f"{_safe_name(name)}_{key}"
            rec = BuildRecord("load", name, key, _built(bdir, ext), build_directory=str(bdir))
            if _confined():
                if not rec.cache_hit:
                    hook._refuse_unbuilt(rec, "load", Path(files[0]).name if files else "the candidate")
                return hook._load_prebuilt(rec, ext, bdir, kwargs.get("is_python_module", True))
            bdir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            try:
                with _build_dir_lock(bdir):
                    return orig(ext, files, *args, build_directory=str(bdir), **kwargs)
            except Exception as e:
                rec.ok = False
                if _is_build_failure(e):
                    m = map_compile_error(str(e), py_path=None)
                    rec.error, rec.line = m.paragraph, m.line
                    raise CudaBuildError(m.paragraph, None, str(e)) from None
                rec.error = f"{type(e).__name__}: {e}"
                raise
            finally:
                rec.seconds = time.perf_counter() - t0
                with hook._lock:
                    hook.records.append(rec)

        load.__wrapped__ = orig  # type: ignore[attr-defined]
        return load

    def install_torch(self) -> bool:
        try:
            import torch.utils.cpp_extension as ce
        except Exception:
            return False
        # Installed before (a fork of a warm worker that had a hook): wrap torch's originals again so
        # that this hook, not the parent's, records this process's builds.
        li = getattr(ce.load_inline, "__wrapped__", ce.load_inline)
        ld = getattr(ce.load, "__wrapped__", ce.load)
        self._orig["load_inline"], self._orig["load"] = li, ld
        ce.load_inline = self._wrap_load_inline(li)
        ce.load = self._wrap_load(ld)
        return True

    # ---- CuPy: its own on-disk cache; time the first compile of each kernel object
    def install_cupy(self, module: Any = None) -> bool:
        """Wrap ``cupy.RawKernel`` / ``cupy.RawModule`` (when CuPy is importable) to time their compile."""
        cp = module
        if cp is None:
            if "cupy" not in sys.modules:
                # Don't import CuPy just to hook it: its import initialises CUDA. Point its cache at ours
                # (read when it compiles) and hook it if the target imports it: see _CupyFinder.
                os.environ.setdefault("CUPY_CACHE_DIR", str(self.cache_dir / "cupy"))
                _CupyFinder.install(self)
                return False
            cp = sys.modules["cupy"]
        if getattr(cp, "_profd_hooked", False):
            return True
        hook = self
        for cls_name, compile_attr in (("RawKernel", "kernel"), ("RawModule", "get_function")):
            base = getattr(cp, cls_name, None)
            if base is None:
                continue
            try:
                wrapped = _timed_cupy_class(base, cls_name, compile_attr, hook)
            except TypeError:  # a final extension type: leave it, record nothing
                continue
            setattr(cp, cls_name, wrapped)
        cp._profd_hooked = True
        return True

    def uninstall(self) -> None:
        """Put torch's builders back (tests)."""
        try:
            import torch.utils.cpp_extension as ce
        except Exception:
            return
        for k, v in self._orig.items():
            setattr(ce, k, v)
        self._orig.clear()

    def summary(self) -> dict[str, Any]:
        """Totals for the Measurement: build seconds apart from run time."""
        return {"builds": [r.to_dict() for r in self.records],
                "build_seconds": round(sum(r.seconds for r in self.records), 3),
                "cache_hits": sum(1 for r in self.records if r.cache_hit),
                "cache_misses": sum(1 for r in self.records if not r.cache_hit and r.kind != "cupy")}


def _timed_cupy_class(base: type, cls_name: str, compile_attr: str, hook: BuildHook) -> type:
    def timed(self: Any, *a: Any, **k: Any) -> Any:
        first = not getattr(self, "_profd_compiled", False)
        t0 = time.perf_counter()
        try:
            out = getattr(base, compile_attr).__get__(self)(*a, **k) if compile_attr == "get_function" \
                else getattr(base, compile_attr).__get__(self)
            return out
        finally:
            if first:
                try:
                    self._profd_compiled = True
                except AttributeError:
                    pass
                name = getattr(self, "name", "") or (a[0] if a else cls_name)
                with hook._lock:
                    hook.records.append(BuildRecord("cupy", str(name), seconds=time.perf_counter() - t0))

    if compile_attr == "kernel":
        ns = {"kernel": property(lambda self: timed(self))}
    else:
        ns = {"get_function": lambda self, *a, **k: timed(self, *a, **k)}
    return type(cls_name, (base,), ns)


class _CupyFinder:
    """A meta-path hook that hooks CuPy right after the target imports it (not before: importing
    CuPy initialises CUDA, which a target that never uses CuPy should not pay for)."""

    _hook: Optional[BuildHook] = None

    @classmethod
    def install(cls, hook: BuildHook) -> None:
        cls._hook = hook
        if not any(isinstance(f, cls) for f in sys.meta_path):
            sys.meta_path.insert(0, cls())

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "cupy":
            return None
        import importlib.machinery

        sys.meta_path.remove(self)  # one shot: find the real CuPy, then step aside
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module  # type: ignore[union-attr]
        hook = type(self)._hook

        def exec_module(module: Any) -> None:
            real_exec(module)
            if hook is not None:
                hook.install_cupy(module)

        spec.loader.exec_module = exec_module  # type: ignore[union-attr, method-assign]
        return spec


_NOT_PREBUILT = ("{file}: {call}('{name}') has no build in profd's cache. A candidate runs in a sandbox "
                 "that cannot compile, so profd builds its CUDA code beforehand, from load_inline calls whose "
                 "arguments are literals or module-level strings; this call's sources or flags are computed "
                 "when the file runs. Keep the CUDA source and flags in module-level strings (as the original "
                 "does) so that the builder can read them without running the candidate.")


def _confined() -> bool:
    try:
        from profd.harness.sandbox import confined
    except ImportError:
        return False
    return confined()


def _caller_file() -> Optional[Path]:
    """The first .py file up the stack that is neither this module nor torch: the user's file."""
    f = sys._getframe(1)
    here = os.path.abspath(__file__)
    while f is not None:
        fn = f.f_code.co_filename
        if fn.endswith(".py") and os.path.abspath(fn) != here and f"{os.sep}torch{os.sep}" not in fn \
                and os.path.isfile(fn):
            return Path(fn)
        f = f.f_back  # type: ignore[assignment]
    return None


@contextlib.contextmanager
def _build_dir_lock(bdir: Path) -> Iterator[None]:
    """Hold an flock on ``bdir`` around torch's build or load there, and clear a stale torch lock.

    torch guards a build directory with a ``lock`` file it creates and deletes itself (even to
    load a finished build); a builder killed mid-build (a tuning session that ends kills its
    pending builds) leaves it behind, and every later load of that source would wait for it
    forever. The kernel drops an flock when its holder dies, so under ours a ``lock`` file can
    only be such a leftover."""
    import fcntl

    fd = os.open(bdir / ".profd.flock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            (bdir / "lock").unlink()
        except FileNotFoundError:
            pass
        yield
    finally:
        os.close(fd)


def _built(bdir: Path, ext: str) -> bool:
    return any((bdir / f"{ext}{suf}").exists() for suf in (".so", ".pyd", ".dylib"))


def _is_build_failure(e: BaseException) -> bool:
    t = str(e)
    return isinstance(e, RuntimeError) and ("Error building extension" in t or "error:" in t or "ninja" in t.lower())


def install_build_hook(cache_dir: Union[str, Path, None] = None, py_path: Union[str, Path, None] = None,
                       cupy: bool = True) -> BuildHook:
    """Install the build cache and recorder; call in the harness child before importing the target.

    ``cache_dir`` defaults to :func:`default_cache_dir`; ``py_path`` is the target's .py file (for
    the error mapping). Returns the hook; ``hook.records`` / ``hook.summary()`` after the run.
    """
    hook = BuildHook(Path(cache_dir) if cache_dir else default_cache_dir(), Path(py_path) if py_path else None)
    if not _confined():  # read-only for a candidate's child (see BuildHook._load_prebuilt)
        hook.cache_dir.mkdir(parents=True, exist_ok=True)
    # torch's JIT looks here for builds without a build_directory too (and ninja's lock files go there)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(hook.cache_dir / "torch_extensions"))
    hook.install_torch()
    if cupy:
        hook.install_cupy()
    return hook


# --------------------------------------------------------------------------- compile errors


@dataclass
class CompileDiagnostic:
    """One compiler message, mapped back to the user's file where possible."""

    file: str  # generated file (cuda.cu / main.cpp) as the compiler named it
    gen_line: int
    severity: str  # "error", "warning", "catastrophic error", "fatal error"
    message: str
    source_index: Optional[int] = None  # which string of cuda_sources / cpp_sources
    role: str = ""  # "cuda" / "cpp"
    line_in_string: Optional[int] = None
    py_line: Optional[int] = None
    code: str = ""  # the offending source line


@dataclass
class MappedError:
    """The result of :func:`map_compile_error`: one paragraph for the verdict, and its parts."""

    paragraph: str
    line: Optional[int]
    diagnostics: list[CompileDiagnostic] = field(default_factory=list)


# The file name starts a line, or follows a space or ": " (torch's "Error building extension 'x': " prefix
# lands on the first line of ninja's output when that is the diagnostic itself).
_NVCC_DIAG = re.compile(r"(?:^|(?<=\s))(?P<file>[^\s:()'\"]+)\((?P<line>\d+)\): (?P<sev>catastrophic error|error|warning)"
                        r"(?: #\w+(?:-D)?)?: (?P<msg>.*)$", re.M)
_GCC_DIAG = re.compile(r"(?:^|(?<=\s))(?P<file>[^\s:'\"]+):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<sev>fatal error|error|warning): "
                       r"(?P<msg>.*)$", re.M)
_PTXAS = re.compile(r"^ptxas (?:fatal|error)\s*: (?P<msg>.*)$", re.M)


def _prelude_lines(file: Optional[Path], sources: Sequence[str], default: int) -> int:
    """How many lines torch put before the user's strings in a generated file.

    Read from the file itself when it exists (the strings are joined with "\\n" at its end), so a
    torch that changes its prelude is still mapped right; else torch's layout at the time of writing:
    ``cuda.cu`` = 3 include lines + strings, ``main.cpp`` = 1 include line + strings (+ bindings)."""
    if file is not None and sources:
        try:
            text = file.read_text(errors="replace")
            joined = "\n".join(sources)
            i = text.find(joined)
            if i >= 0:
                return text[:i].count("\n")
        except OSError:
            pass
    return default


def _locate(gen_line: int, prelude: int, sources: Sequence[str]) -> tuple[Optional[int], Optional[int]]:
    """(index of the string, 1-based line within it) of generated line ``gen_line``."""
    n = gen_line - prelude
    if n < 1:
        return None, None
    for i, s in enumerate(sources):
        count = s.count("\n") + 1
        if n <= count:
            return i, n
        n -= count
    return None, None


def map_compile_error(output: str, *, py_path: Union[str, Path, None] = None, cpp_sources: Sequence[str] = (),
                      cuda_sources: Sequence[str] = (), cuda_file: Optional[Path] = None,
                      cpp_file: Optional[Path] = None, no_implicit_headers: bool = False,
                      py_source: Optional[str] = None, max_diagnostics: int = 3) -> MappedError:
    """One paragraph naming the user's .py line for nvcc / ninja / g++ output about torch's generated files.

    ``output`` is the compiler's text (torch's "Error building extension" message carries it).
    ``cpp_sources``/``cuda_sources`` are the strings load_inline received; ``py_path`` (or
    ``py_source``) is the user's file, whose string literals are matched to them
    (:func:`advisors.cuda_knobs.py_line_for`).
    """
    name = Path(py_path).name if py_path else "the target"
    knobs = None
    if py_source is None and py_path:
        try:
            py_source = Path(py_path).read_text()
        except OSError:
            py_source = None
    if py_source is not None:
        try:
            from advisors.cuda_knobs import discover_cuda

            knobs = discover_cuda(py_source, str(py_path or ""))
        except Exception:
            knobs = None
    pre = {"cuda": _prelude_lines(cuda_file, cuda_sources, 0 if no_implicit_headers else 3),
           "cpp": _prelude_lines(cpp_file, cpp_sources, 0 if no_implicit_headers else 1)}
    diags: list[CompileDiagnostic] = []
    for rx in (_NVCC_DIAG, _GCC_DIAG):
        for m in rx.finditer(output):
            f = m.group("file")
            base = os.path.basename(f)
            d = CompileDiagnostic(f, int(m.group("line")), m.group("sev"), m.group("msg").strip())
            role = "cuda" if base.endswith((".cu", ".cuh")) else ("cpp" if base.endswith((".cpp", ".cc", ".cxx"))
                                                                   else "")
            if role:
                srcs = cuda_sources if role == "cuda" else cpp_sources
                idx, lis = _locate(d.gen_line, pre[role], srcs)
                if idx is not None and lis is not None:
                    d.role, d.source_index, d.line_in_string = role, idx, lis
                    d.code = srcs[idx].split("\n")[lis - 1].strip()
                    if knobs is not None:
                        from advisors.cuda_knobs import py_line_for

                        d.py_line = py_line_for(knobs, srcs[idx], lis)
            if not _is_header(f) or d.severity != "warning":
                diags.append(d)
    errors = [d for d in diags if "error" in d.severity]
    # Prefer errors in the user's own strings over errors reported inside headers
    errors.sort(key=lambda d: (d.line_in_string is None, output.find(d.message)))
    ptx = [m.group("msg").strip() for m in _PTXAS.finditer(output)]
    if not errors and ptx:
        para = f"{name}: ptxas: {ptx[0]}"
        if "shared data" in ptx[0]:
            para += (". The kernel declares more shared memory than a block may have: shrink the __shared__ "
                     "tiles (TILE) or opt in to more with cudaFuncSetAttribute")
        return MappedError(para + ".", None, [])
    if not errors:
        und = re.search(r"undefined symbol: (\S+)", output)
        if und:
            return MappedError(f"{name}: the extension built but does not load: undefined symbol {und.group(1)}. "
                               "A function declared in cpp_sources is not defined (with the same signature) in "
                               "cuda_sources.", None, [])
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
        return MappedError(f"{name}: building the CUDA extension failed: " + " / ".join(tail), None, [])
    first = errors[0]
    where = f"{name}:{first.py_line}" if first.py_line else name
    what = f"nvcc: {first.message}" if first.role == "cuda" else f"{_cxx_name(output)}: {first.message}"
    ctx = []
    if first.source_index is not None:
        label = first.role + "_sources"
        var = ""
        if knobs is not None and first.py_line:
            srcs = cuda_sources if first.role == "cuda" else cpp_sources
            s = knobs.source_for_text(srcs[first.source_index])
            var = s.name if s is not None and s.name else ""
        ctx.append(f"in {label}" + (f" (`{var}`)" if var else f"[{first.source_index}]") +
                   f", line {first.line_in_string} of the string")
    ctx.append(f"{os.path.basename(first.file)}:{first.gen_line} as torch generated it")
    para = f"{where}: {what} ({'; '.join(ctx)})"
    if first.code:
        para += f": `{first.code}`"
    more = errors[1:max_diagnostics]
    if more:
        bits = []
        for d in more:
            loc = f"line {d.py_line}" if d.py_line else f"{os.path.basename(d.file)}:{d.gen_line}"
            bits.append(f"{loc}: {d.message}")
        para += ". Also " + "; ".join(bits)
    if len(errors) > max_diagnostics:
        para += f" (and {len(errors) - max_diagnostics} more)"
    return MappedError(para + ".", first.py_line, errors)


def _is_header(f: str) -> bool:
    return f.endswith((".h", ".hpp", ".cuh")) or "/include/" in f


def _cxx_name(output: str) -> str:
    return "g++" if re.search(r"(?<![\w+])(?:c\+\+|g\+\+)(?![\w+])", output) else "C++ compiler"


# --------------------------------------------------------------------------- toolchain


@dataclass
class ToolchainStatus:
    """Whether this machine can build and run CUDA code from Python."""

    nvcc: Optional[str]  # path to nvcc, or None
    nvcc_version: str
    gpu: bool
    gpu_name: str
    torch_cuda: Optional[bool]  # torch built with CUDA (None: torch not checked)
    ok: bool
    verdict: str  # "" when ok; else the text to show as the target's verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_nvcc(env: Optional[dict[str, str]] = None) -> Optional[str]:
    """nvcc from ``$CUDA_HOME``/``$CUDA_PATH``, ``PATH``, ``/usr/local/cuda`` or NVIDIA's pip wheels."""
    env = os.environ if env is None else env
    cands = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            cands.append(os.path.join(env[var], "bin", "nvcc"))
    w = shutil.which("nvcc", path=env.get("PATH"))
    if w:
        cands.append(w)
    cands.append("/usr/local/cuda/bin/nvcc")
    # pip install nvidia-cuda-nvcc (13.x: nvidia/cu13/bin/nvcc; 12.x wheels ship ptxas only)
    for p in sys.path:
        for sub in ("nvidia/cu13/bin/nvcc", "nvidia/cu12/bin/nvcc", "nvidia/cuda_nvcc/bin/nvcc"):
            cands.append(os.path.join(p, sub))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _nvcc_release(nvcc: str) -> str:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = re.search(r"release [\d.]+, V[\d.]+", out)
    return m.group(0) if m else out.strip().splitlines()[-1] if out.strip() else ""


def _gpu_probe() -> tuple[bool, str]:
    """Is there an NVIDIA GPU? Through NVML (no CUDA context: the daemon may ask), else /dev/nvidia*."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            n = pynvml.nvmlDeviceGetCount()
            if n > 0:
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
                return True, name.decode() if isinstance(name, bytes) else str(name)
            return False, ""
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    devs = [p for p in Path("/dev").glob("nvidia[0-9]*")] if Path("/dev").exists() else []
    return (bool(devs), "NVIDIA GPU" if devs else "")


def cuda_toolchain_status(env: Optional[dict[str, str]] = None, gpu_probe: Optional[Callable[[], tuple[bool, str]]] = None,
                          check_torch: bool = False) -> ToolchainStatus:
    """nvcc and a CUDA GPU: both present, or the verdict for a target that needs them.

    The verdict reads "needs a CUDA toolkit and GPU; found neither", or names the one missing.
    ``gpu_probe`` replaces the NVML probe (tests); ``check_torch`` also asks whether torch was built
    with CUDA (imports torch: the child may, the daemon should not)."""
    nvcc = find_nvcc(env)
    gpu, gpu_name = (gpu_probe or _gpu_probe)()
    torch_cuda: Optional[bool] = None
    if check_torch:
        try:
            import torch

            torch_cuda = bool(torch.version.cuda)
        except Exception:
            torch_cuda = False
    nvcc_v = _nvcc_release(nvcc) if nvcc else ""
    if not nvcc and not gpu:
        verdict = "needs a CUDA toolkit and GPU; found neither"
    elif not nvcc:
        verdict = (f"needs a CUDA toolkit and GPU; found the GPU ({gpu_name or 'NVIDIA'}) but no nvcc "
                   "(install the CUDA toolkit or `pip install nvidia-cuda-nvcc`, or set CUDA_HOME)")
    elif not gpu:
        verdict = f"needs a CUDA toolkit and GPU; found nvcc ({nvcc}) but no CUDA GPU"
    elif torch_cuda is False:
        verdict = ("needs a CUDA build of torch to build load_inline extensions; this torch is a CPU build")
    else:
        verdict = ""
    return ToolchainStatus(nvcc, nvcc_v, gpu, gpu_name, torch_cuda, not verdict, verdict)


# --------------------------------------------------------------------------- the pre-builder


class PreBuilder:
    """Compile candidates' CUDA code ahead of their measurement, at most ``max_jobs`` at a time.

    Each job is a subprocess (``python -m profd.harness.cuda_build prebuild FILE``): compiling
    imports torch and runs nvcc, neither of which belongs in the daemon. The pool's threads only
    wait for those subprocesses. A job builds into the same cache the harness child uses, so the
    child's build of that candidate is a cache hit.

    ``submit(path)`` returns a ``Future[BuildResult]``.
    """

    def __init__(self, cache_dir: Union[str, Path, None] = None, max_jobs: int = 2, python: str = sys.executable,
                 timeout_s: float = 600.0, env: Optional[dict[str, str]] = None,
                 allow_import: bool = False, original: Union[str, Path, None] = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.max_jobs = max(1, int(max_jobs))
        self.python = python
        self.timeout_s = timeout_s
        self.env = env
        self.allow_import = allow_import
        # set: the files are candidates of this original, built confined with screened flags
        self.original = Path(original) if original else None
        self._pool = cf.ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix="profd-prebuild")
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, source_path: Union[str, Path]) -> "cf.Future[BuildResult]":
        """Queue one file; the future's result is its :class:`BuildResult` (never raises for a bad build)."""
        return self._pool.submit(self._run, Path(source_path))

    def _run(self, path: Path) -> BuildResult:
        t0 = time.perf_counter()
        env = dict(self.env if self.env is not None else os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [self.python, "-m", "profd.harness.cuda_build", "prebuild", str(path), "--cache-dir", str(self.cache_dir)]
        if self.allow_import:
            cmd.append("--allow-import")
        if self.original is not None:
            cmd += ["--confine", "--original", str(self.original)]
        with self._lock:
            if self._closed:
                return BuildResult(False, 0.0, False, f"{path.name}: not built (the tuning session ended)")
            # its own session: a hung nvcc is killed with the job, and shutdown() kills what still runs
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
            self._procs.add(proc)
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.communicate()
            return BuildResult(False, time.perf_counter() - t0, False,
                               f"{path.name}: building the CUDA code took longer than {self.timeout_s:.0f} s")
        finally:
            with self._lock:
                self._procs.discard(proc)
        for line in reversed(out.splitlines()):
            if line.startswith("PREBUILD "):
                d = json.loads(line[len("PREBUILD "):])
                d["builds"] = [BuildRecord(**b) for b in d.get("builds", [])]
                return BuildResult(**d)
        tail = " / ".join((err or out).strip().splitlines()[-3:])
        return BuildResult(False, time.perf_counter() - t0, False,
                           f"{path.name}: the pre-build process exited with {proc.returncode}: {tail}")

    def shutdown(self, wait: bool = True) -> None:
        """``wait=False``: queued builds are dropped and running ones killed (a tuning session that
        ends must not wait a minute for builds of candidates it will never measure)."""
        if not wait:
            with self._lock:
                self._closed = True
                for proc in list(self._procs):
                    kill_group(proc)
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> "PreBuilder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def static_load_inline_calls(py_source: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``load_inline(...)`` calls of a file whose arguments are literals or module-level literals.

    Returns (kwargs dicts ready for load_inline, reasons some calls were skipped). Nothing is run:
    the pre-builder builds a candidate without importing it (its module level may launch kernels)."""
    import ast

    tree = ast.parse(py_source)
    consts: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            consts[node.targets[0].id] = node.value
    # a source built inside the function that calls load_inline (lazy builders): its locals, where
    # no module-level name is the same
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            consts.setdefault(node.targets[0].id, node.value)
    ints = {n: v.value for n, v in consts.items() if isinstance(v, ast.Constant)}

    def value(e: ast.expr, depth: int = 0) -> Any:
        if depth > 5:
            raise ValueError("too deep")
        if isinstance(e, ast.Name) and e.id in consts:
            return value(consts[e.id], depth + 1)
        if isinstance(e, ast.JoinedStr):
            out = ""
            for part in e.values:
                if isinstance(part, ast.Constant):
                    out += str(part.value)
                elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) \
                        and part.value.id in ints and part.conversion == -1 and part.format_spec is None:
                    out += str(ints[part.value.id])
                else:
                    raise ValueError("f-string with a runtime value")
            return out
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            return value(e.left, depth + 1) + value(e.right, depth + 1)
        if isinstance(e, (ast.List, ast.Tuple)):
            return [value(x, depth + 1) for x in e.elts]
        if isinstance(e, ast.Dict):
            return {value(k, depth + 1): value(v, depth + 1) for k, v in zip(e.keys, e.values) if k is not None}
        return ast.literal_eval(e)

    calls, skipped = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (getattr(node.func, "attr", None) == "load_inline"
                                           or getattr(node.func, "id", None) == "load_inline"):
            try:
                kw: dict[str, Any] = {}
                names = ["name", "cpp_sources", "cuda_sources"]
                for i, a in enumerate(node.args[:3]):
                    kw[names[i]] = value(a)
                for k in node.keywords:
                    if k.arg:
                        kw[k.arg] = value(k.value)
                calls.append(kw)
            except Exception as e:
                skipped.append(f"load_inline at line {node.lineno}: arguments computed at run time ({e})")
    return calls, skipped


# Flags a candidate may add to the original's: optimisation, code generation, defines,
# warnings, register limits. Anything else (``-fplugin``, ``-B``, ``-specs``, ``-wrapper``,
# ``-ccbin``, ``-Wl,``/``-Xlinker``, ``@file``) could make the compiler run a program of the
# candidate's choosing in the builder, which runs outside the candidate's sandbox.
_SAFE_FLAG = re.compile(
    r"^(-O[0-3s]?|-g|-lineinfo|--?use_fast_math|-f(no-)?fast-math|-ffp-contract=\w+|-funroll-loops"
    r"|-std=[\w+]+|-[DU][A-Za-z_]\w*(=[\w.+-]*)?|-w|-W(all|extra|error|no-[\w-]+)"
    r"|-march=native|-mtune=native|--?expt-(relaxed-constexpr|extended-lambda)|-Xptxas=?-(v|O[0-3])"
    r"|-Xptxas|-v|--?maxrregcount=?\d+|--?ptxas-options=-?(v|O[0-3])|-arch=(sm|compute)_\d+a?"
    r"|-gencode=?arch=compute_\d+a?,code=(sm|compute)_\d+a?|--?extra-device-vectorization"
    r"|--?restrict|-l(cuda|cublas|cublasLt|curand|cusparse|cufft))$")
_FLAG_KEYS = ("extra_cflags", "extra_cuda_cflags", "extra_ldflags")


def unsafe_build_flags(call: dict[str, Any], trusted: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The flags of one ``load_inline`` call that neither the original (``trusted``) passes nor
    the safe list allows; ``extra_include_paths`` only read headers and are not screened."""
    ok = {str(f) for t in trusted for k in _FLAG_KEYS for f in _as_list(t.get(k))}
    bad = []
    for k in _FLAG_KEYS:
        for f in _as_list(call.get(k)):
            f = str(f)
            if f.strip() and f not in ok and not _SAFE_FLAG.match(f):  # KernelBench passes [""]
                bad.append(f)
    return bad


def prebuild_file(path: Union[str, Path], cache_dir: Union[str, Path], allow_import: bool = False,
                  confine: bool = False, original: Union[str, Path, None] = None) -> BuildResult:
    """Build one target's CUDA code into the cache (runs in the pre-build subprocess).

    ``confine``: ``path`` is a candidate (untrusted): this process confines itself first
    (:func:`profd.harness.sandbox.confine_builder`), never imports the file, and refuses flags
    outside the safe list that ``original``'s own calls do not pass."""
    path = Path(path)
    t0 = time.perf_counter()
    src = path.read_text()
    calls, skipped = static_load_inline_calls(src)
    if confine:
        allow_import = False
        trusted = static_load_inline_calls(Path(original).read_text())[0] if original else []
        bad = sorted({f for kw in calls for f in unsafe_build_flags(kw, trusted)})
        if bad:
            return BuildResult(False, time.perf_counter() - t0, False,
                               f"{path.name}: the candidate passes compiler flags profd does not run for a "
                               f"candidate: {' '.join(bad)}. Candidates may use the original's flags and "
                               "optimisation, code-generation, define and warning flags (-O3, --use_fast_math, "
                               "-DNAME=1, --maxrregcount=N, ...); flags that load plugins or choose other "
                               "tools could run a program outside the candidate's sandbox.")
        import tempfile

        from profd.harness.sandbox import confine_builder

        confine_builder(path, tempfile.mkdtemp(prefix="profd-build-"))
    import torch  # noqa: F401  (the cache key includes its version)

    hook = install_build_hook(cache_dir, path, cupy=False)
    err = ""
    try:
        if calls:
            import torch.utils.cpp_extension as ce

            for kw in calls:
                kw.pop("build_directory", None)
                try:
                    ce.load_inline(**kw)
                except CudaBuildError as e:
                    err = err or str(e)
                except Exception as e:
                    err = err or f"{path.name}: {type(e).__name__}: {e}"
        elif skipped and allow_import:
            import importlib.util

            spec = importlib.util.spec_from_file_location(f"profd_prebuild_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            try:
                spec.loader.exec_module(mod)  # type: ignore[union-attr]
            except CudaBuildError as e:
                err = str(e)
            except Exception as e:
                err = f"{path.name}: importing to pre-build raised {type(e).__name__}: {e}"
    finally:
        hook.uninstall()
    recs = hook.records
    note = (f"built {len(calls)} load_inline call(s) without importing the file" if calls else
            ("; ".join(skipped) if skipped else "nothing to build"))
    return BuildResult(ok=not err and all(r.ok for r in recs), seconds=time.perf_counter() - t0,
                       cache_hit=bool(recs) and all(r.cache_hit for r in recs), error_paragraph=err,
                       builds=recs, note=note)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m profd.harness.cuda_build prebuild FILE --cache-dir DIR [--allow-import]`` | ``status``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m profd.harness.cuda_build")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prebuild")
    p.add_argument("file")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--allow-import", action="store_true")
    p.add_argument("--confine", action="store_true", help="FILE is a candidate: confine the build, screen flags")
    p.add_argument("--original", default=None, help="with --confine: the user's file, whose flags are trusted")
    sub.add_parser("status")
    a = ap.parse_args(argv)
    if a.cmd == "status":
        print(json.dumps(cuda_toolchain_status().to_dict()))
        return 0
    try:
        r = prebuild_file(a.file, a.cache_dir or default_cache_dir(), a.allow_import, a.confine, a.original)
    except Exception as e:  # report, never traceback at the pool
        r = BuildResult(False, 0.0, False, f"{Path(a.file).name}: pre-build failed: {type(e).__name__}: {e}")
    d = r.to_dict()
    print("PREBUILD " + json.dumps(d, default=str))
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- the harness child's side


def child_cache_dir(env: Optional[dict[str, str]] = None) -> Path:
    """Where a harness child keeps CUDA builds: ``$PROFD_CUDA_CACHE_DIR``, else the user's cache
    (``$XDG_CACHE_HOME/profd/cuda-cache``), which the sandbox lets children write -- unlike the state
    directory, which candidate code must never write."""
    env = os.environ if env is None else env
    if env.get("PROFD_CUDA_CACHE_DIR"):
        return Path(env["PROFD_CUDA_CACHE_DIR"])
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "profd" / "cuda-cache"


def prepare_child(target: Path, *extra: Path) -> tuple[Optional[str], Optional[BuildHook]]:
    """In a harness child, before any user file is imported: (verdict text when this machine cannot
    build and run the CUDA code ``target`` needs, else None; the installed build hook, or None when no
    file here builds CUDA code)."""
    from advisors.cuda_knobs import needs_cuda

    files = [Path(target), *[Path(e) for e in extra]]
    try:
        wanted = any(needs_cuda(f) for f in files if f.suffix == ".py" and f.is_file())
    except Exception:  # a file that does not parse: the loader reports it with its line
        return None, None
    if not wanted:
        return None, None
    st = cuda_toolchain_status(check_torch=True)
    if not st.ok:
        return (f"{Path(target).name} {st.verdict}. profd builds and runs CUDA C++ targets (load_inline, CuPy) "
                "only where both exist; the daemon keeps watching.", None)
    return None, install_build_hook(child_cache_dir(), target)
