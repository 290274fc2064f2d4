"""Run-time capture of Triton launches: what every kernel really received.

Static discovery (advisors/knobs.py) reads ``BLOCK_SIZE = triton.next_power_of_2(n)`` but cannot
know ``n``; an autotuned kernel's values depend on the config the autotuner picked. The harness
child therefore runs ``kernel(...)`` once at the bench shape with Triton's launch path wrapped,
and records for every launch the kernel's name, its constexpr values, ``num_warps``,
``num_stages`` and the grid. Identical launches are folded (``count``).

Wrapped, only while :func:`recording` is active (timing never runs wrapped: the wrapper costs
microseconds per launch):

* ``JITFunction.run`` (GPU) and ``InterpretedFunction.run`` (``TRITON_INTERPRET=1``): every
  ``kernel[grid](...)`` and ``kernel.warmup(...)`` goes through one of them, and so do the
  launches of ``@triton.autotune`` / ``@triton.heuristics`` wrappers, with the final values;
* ``Autotuner.run`` marks its inner launch as ``autotuned`` and ``Autotuner._bench`` hides the
  autotuner's own benchmarking launches (they are not what the program uses);
* ``CompiledKernel.__getitem__``: the handle that ``kernel.warmup(...)`` returns and the Triton
  tutorial's fused softmax launches directly.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from typing import Any, Callable, Iterator, Optional

from profd.model import LaunchRecord

_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "waves_per_eu", "matrix_instr_nonkdim",
                   "kpack", "debug", "enable_fp_fusion", "launch_cooperative_grid", "warmup", "grid")


class _State(threading.local):
    def __init__(self) -> None:
        self.benchmarking = 0
        self.autotuned = 0


_state = _State()
_records: Optional[dict[tuple, LaunchRecord]] = None
_originals: list[tuple[Any, str, Any]] = []
_defaults: dict[str, Optional[int]] = {}


def _plain(v: Any) -> Any:
    """A JSON-able stand-in for a launch argument value."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    inner = getattr(v, "value", None)  # tl.constexpr wraps its value
    if isinstance(inner, (bool, int, float, str)):
        return inner
    return repr(v)[:80]


def _backend_defaults() -> dict[str, Optional[int]]:
    """Triton's own num_warps / num_stages when a launch does not pass them (GPU only)."""
    if _defaults:
        return _defaults
    _defaults.update(num_warps=None, num_stages=None)
    try:
        from triton.compiler.compiler import make_backend
        from triton.runtime.driver import driver

        opts = make_backend(driver.active.get_current_target()).parse_options({})
        _defaults.update(num_warps=int(opts.num_warps), num_stages=int(opts.num_stages))
    except Exception:  # the interpreter has no backend; values stay unknown
        pass
    return _defaults


def _constexpr_names(fn: Any) -> list[str]:
    params = getattr(fn, "params", None)
    if params:  # JITFunction
        return [p.name for p in params if getattr(p, "is_constexpr", False)]
    try:
        sig = inspect.signature(getattr(fn, "fn", fn))
    except (TypeError, ValueError):
        return []
    return [n for n, p in sig.parameters.items() if "constexpr" in str(p.annotation)]


def _record(rec: LaunchRecord) -> None:
    if _records is None:
        return
    key = (rec.kernel, tuple(sorted(rec.constexprs.items())), rec.num_warps, rec.num_stages,
           tuple(rec.grid) if rec.grid else None, rec.via)
    if key in _records:
        _records[key].count += 1
    else:
        _records[key] = rec


def _from_run(self: Any, args: tuple, grid: Any, warmup: bool, kwargs: dict) -> LaunchRecord:
    fn = getattr(self, "fn", None)
    name = getattr(fn, "__name__", "") or getattr(self, "__name__", "?")
    values: dict[str, Any] = {}
    try:
        sig = inspect.signature(fn)
        bound = sig.bind_partial(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})
        bound.apply_defaults()
        values = dict(bound.arguments)
    except (TypeError, ValueError):
        pass
    constexprs = {n: _plain(values[n]) for n in _constexpr_names(self) if n in values}
    grid_out: Optional[list[int]] = None
    if not warmup and grid is not None:
        try:
            g = grid({**values, **kwargs}) if callable(grid) else grid
            grid_out = [int(x) for x in (g if isinstance(g, (tuple, list)) else (g,))]
        except Exception:
            grid_out = None
    defaults = _backend_defaults()
    warps, stages = kwargs.get("num_warps"), kwargs.get("num_stages")
    return LaunchRecord(kernel=name, constexprs=constexprs,
                        num_warps=int(warps) if isinstance(warps, int) else defaults.get("num_warps"),
                        num_stages=int(stages) if isinstance(stages, int) else defaults.get("num_stages"),
                        grid=grid_out, autotuned=_state.autotuned > 0, via="warmup" if warmup else "launch")


def _wrap_run(original: Callable) -> Callable:
    def run(self: Any, *args: Any, grid: Any = None, warmup: bool = False, **kwargs: Any) -> Any:
        if _records is not None and not _state.benchmarking:
            try:
                _record(_from_run(self, args, grid, warmup, kwargs))
            except Exception:  # capture must never break the user's launch
                pass
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)
    run.__wrapped__ = original  # type: ignore[attr-defined]
    return run


def _wrap_flag(original: Callable, flag: str) -> Callable:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        setattr(_state, flag, getattr(_state, flag) + 1)
        try:
            return original(self, *args, **kwargs)
        finally:
            setattr(_state, flag, getattr(_state, flag) - 1)
    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapped


def _wrap_compiled_getitem(original: Callable) -> Callable:
    def getitem(self: Any, grid: Any) -> Any:
        launcher = original(self, grid)
        if _records is None:
            return launcher

        def runner(*args: Any, **kwargs: Any) -> Any:
            try:
                md = getattr(self, "metadata", None)
                _record(LaunchRecord(kernel=str(getattr(self, "name", "?")),
                                     num_warps=getattr(md, "num_warps", None),
                                     num_stages=getattr(md, "num_stages", None),
                                     grid=[int(x) for x in grid], via="compiled"))
            except Exception:
                pass
            return launcher(*args, **kwargs)
        return runner
    getitem.__wrapped__ = original  # type: ignore[attr-defined]
    return getitem


def _patch(owner: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
    original = owner.__dict__.get(attr)
    if original is None or getattr(original, "__wrapped__", None) is not None:
        return
    _originals.append((owner, attr, original))
    setattr(owner, attr, make(original))


def install() -> None:
    """Wrap Triton's launch path (idempotent); records are kept only inside :func:`recording`."""
    import triton.runtime.autotuner as at
    import triton.runtime.jit as jit

    _patch(jit.JITFunction, "run", _wrap_run)
    try:
        import triton.runtime.interpreter as interp

        _patch(interp.InterpretedFunction, "run", _wrap_run)
    except ImportError:
        pass
    _patch(at.Autotuner, "run", lambda f: _wrap_flag(f, "autotuned"))
    _patch(at.Autotuner, "_bench", lambda f: _wrap_flag(f, "benchmarking"))
    try:
        import triton.compiler.compiler as cc

        _patch(cc.CompiledKernel, "__getitem__", _wrap_compiled_getitem)
    except ImportError:
        pass


def uninstall() -> None:
    """Put Triton's own functions back."""
    while _originals:
        owner, attr, original = _originals.pop()
        setattr(owner, attr, original)


@contextlib.contextmanager
def recording() -> Iterator[list[LaunchRecord]]:
    """Record launches inside the block; the yielded list is filled when the block ends."""
    global _records
    out: list[LaunchRecord] = []
    install()
    _records = {}
    try:
        yield out
    finally:
        out.extend(_records.values())
        _records = None
        uninstall()


def capture(fn: Callable[[], Any]) -> list[LaunchRecord]:
    """Call ``fn()`` once with launches recorded; a failure inside ``fn`` propagates."""
    with recording() as launches:
        fn()
    return launches
