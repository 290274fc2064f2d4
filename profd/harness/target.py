"""Loading a kernel target file, in profd's format or KernelBench's.

profd's format (the file stays runnable without profd installed)::

    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    def get_inputs(**shape): ...        # fresh random inputs from torch's RNG
    def reference(*inputs): ...         # trusted semantics, usually PyTorch
    def kernel(*inputs): ...            # the implementation under test
    # optional
    def get_init_inputs(): ...          # constant extra arguments appended to every call
    SHAPES = [dict(N=4096), ...]        # every shape is verified; get_inputs(**shape)
    BENCH_SHAPE = dict(N=1 << 26)       # the shape timed and profiled (default: SHAPES[-1])
    def flops(*inputs): ...             # for the roofline
    def bytes_moved(*inputs): ...
    RTOL = 1e-2; ATOL = 1e-3            # or TOLERANCE = {"rtol": ..., "atol": ...}
    PRECISION = "tf32"                  # a hint for the default tolerance

KernelBench's format: ``Model`` (reference), ``ModelNew`` (implementation),
``get_inputs()`` and ``get_init_inputs()`` (constructor arguments of both models).
KernelBench makes CPU tensors; the harness moves them to the device.

This module runs only inside the harness child: importing a target executes the
user's code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional


class TargetLoadError(Exception):
    """The file cannot be used as a target; ``line`` points into it where known."""

    def __init__(self, message: str, line: Optional[int] = None, tb: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.tb = tb


#: Default relative tolerances by output dtype. Without a user ATOL the absolute floor
#: is rtol times the reference's RMS, so that near-zero elements of a large result
#: don't fail on rounding.
DEFAULT_RTOL = {
    "float64": 1e-7,
    "float32": 1e-4,
    "tf32": 1e-3,
    "bfloat16": 1e-2,
    "float16": 1e-2,
    "float8_e4m3fn": 1e-1,
    "float8_e5m2": 1e-1,
}


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: the identity of one saved version."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Target:
    """A loaded target: callables plus the options it declared."""

    path: Path
    format: str  # "profd" or "kernelbench"
    module: ModuleType
    make_inputs: Callable[..., list[Any]]
    reference: Callable[..., Any]
    kernel: Callable[..., Any]
    shapes: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    bench_shape: dict[str, Any] = field(default_factory=dict)
    init_inputs: list[Any] = field(default_factory=list)
    flops: Optional[Callable[..., float]] = None
    bytes_moved: Optional[Callable[..., float]] = None
    rtol: Optional[float] = None
    atol: Optional[float] = None
    precision: Optional[str] = None

    def tolerance_for(self, dtype_name: str) -> tuple[float, Optional[float]]:
        """(rtol, atol) for an output dtype. ``atol`` is the user's absolute ATOL, or
        None: the verifier then uses ``rtol`` times the reference's RMS."""
        rtol = self.rtol
        if rtol is None:
            key = self.precision if self.precision in DEFAULT_RTOL else dtype_name
            rtol = DEFAULT_RTOL.get(key, 1e-4)
        return rtol, self.atol


def _user_line(tb: Any, path: Path) -> Optional[int]:
    """The deepest traceback line that lies in the user's file."""
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def syntax_error_text(e: SyntaxError) -> str:
    """The user's file, line and caret -- without profd's and importlib's frames above them."""
    import traceback

    return "".join(traceback.format_exception_only(type(e), e))


def import_file(path: Path) -> ModuleType:
    """Execute a target file as a fresh module; errors become TargetLoadError."""
    import traceback

    path = Path(path).resolve()
    if not path.exists():
        raise TargetLoadError(f"{path} does not exist. Check the path, or whether the file was moved or deleted.")
    name = f"profd_target_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetLoadError(f"{path} is not a Python file profd can import; targets are .py files.")
    module = importlib.util.module_from_spec(spec)
    # The target's own directory goes first on sys.path so that it can import its
    # siblings, as it would when run as a script.
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise TargetLoadError(
            f"{path.name}:{e.lineno}: syntax error: {e.msg}. Fix the line and save again.",
            line=e.lineno,
            tb=syntax_error_text(e),
        ) from None
    except ImportError as e:
        raise TargetLoadError(
            f"{path.name}: importing the file failed: {e}. Install the missing module in the environment "
            "profd runs in, or fix the import.",
            line=_user_line(e.__traceback__, path),
            tb=traceback.format_exc(),
        ) from None
    except BaseException as e:  # the module body is user code: anything can happen
        if isinstance(e, KeyboardInterrupt):
            raise
        if getattr(e, "profd_line", None) is not None:  # a CUDA build error, mapped to the .py line
            raise TargetLoadError(f"{path.name}:{e.profd_line}: the CUDA build failed: {e}", line=e.profd_line,
                                  tb=traceback.format_exc()) from None
        line = _user_line(e.__traceback__, path)
        where = f":{line}" if line else ""
        raise TargetLoadError(
            f"{path.name}{where}: running the file's top level raised {type(e).__name__}: {e}. "
            "Module-level code must only define things; move work into functions.",
            line=line,
            tb=traceback.format_exc(),
        ) from None
    return module


def _tolerances(module: ModuleType) -> tuple[Optional[float], Optional[float]]:
    tol = getattr(module, "TOLERANCE", None)
    rtol = getattr(module, "RTOL", None)
    atol = getattr(module, "ATOL", None)
    if isinstance(tol, dict):
        rtol = tol.get("rtol", rtol)
        atol = tol.get("atol", atol)
    return (float(rtol) if rtol is not None else None, float(atol) if atol is not None else None)


def _shapes(module: ModuleType) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    shapes = getattr(module, "SHAPES", None) or [{}]
    if not isinstance(shapes, (list, tuple)) or not all(isinstance(s, dict) for s in shapes):
        raise TargetLoadError("SHAPES must be a list of dicts of keyword arguments for get_inputs(**shape).")
    bench = getattr(module, "BENCH_SHAPE", None)
    if bench is None:
        bench = shapes[-1]
    if not isinstance(bench, dict):
        raise TargetLoadError("BENCH_SHAPE must be a dict of keyword arguments for get_inputs(**shape).")
    return [dict(s) for s in shapes], dict(bench)


def _line_of(obj: Any) -> Optional[int]:
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None


def load_target(path: Path) -> Target:
    """Import ``path`` and recognise its format; raise TargetLoadError with advice."""
    path = Path(path).resolve()
    module = import_file(path)
    has = {n: callable(getattr(module, n, None)) for n in ("get_inputs", "reference", "kernel", "Model", "ModelNew")}
    rtol, atol = _tolerances(module)
    precision = getattr(module, "PRECISION", None)
    init = list(module.get_init_inputs()) if callable(getattr(module, "get_init_inputs", None)) else []
    flops = getattr(module, "flops", None)
    bytes_moved = getattr(module, "bytes_moved", None)

    if has["get_inputs"] and has["kernel"] and has["reference"]:
        shapes, bench = _shapes(module)
        return Target(
            path=path, format="profd", module=module, make_inputs=module.get_inputs,
            reference=module.reference, kernel=module.kernel, shapes=shapes, bench_shape=bench,
            init_inputs=init, flops=flops if callable(flops) else None,
            bytes_moved=bytes_moved if callable(bytes_moved) else None,
            rtol=rtol, atol=atol, precision=precision,
        )
    if has["Model"] and has["ModelNew"] and has["get_inputs"]:
        return _kernelbench(path, module, init, rtol, atol, precision, flops, bytes_moved)

    missing = [n for n in ("get_inputs", "reference", "kernel") if not has[n]]
    raise TargetLoadError(
        f"{path.name} is not a profd target: it lacks {', '.join(missing)}. A target defines "
        "get_inputs() (fresh random inputs), reference(*inputs) (trusted result) and kernel(*inputs) "
        "(the implementation under test) -- or, in KernelBench's format, Model, ModelNew, get_inputs() "
        "and get_init_inputs(). See examples/kernels/ for complete files."
    )


def _kernelbench(path: Path, module: ModuleType, init: list[Any], rtol: Optional[float],
                 atol: Optional[float], precision: Optional[str], flops: Any, bytes_moved: Any) -> Target:
    """Wrap KernelBench's Model/ModelNew pair as reference/kernel callables.

    Both models are built once, on the device, with the same ``get_init_inputs()``
    and the same seed, so that any parameters they create start out identical.
    """
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models: dict[str, Any] = {}

    def build(name: str) -> Any:
        if name not in models:
            torch.manual_seed(0)
            try:
                m = getattr(module, name)(*init)
            except Exception as e:
                raise TargetLoadError(
                    f"{path.name}: constructing {name}(*get_init_inputs()) raised {type(e).__name__}: {e}.",
                    line=_line_of(getattr(module, name)),
                ) from None
            models[name] = m.to(device) if hasattr(m, "to") else m
            if hasattr(models[name], "eval"):
                models[name].eval()
        return models[name]

    def reference(*inputs: Any) -> Any:
        with torch.no_grad():
            return build("Model")(*inputs)

    def kernel(*inputs: Any) -> Any:
        with torch.no_grad():
            return build("ModelNew")(*inputs)

    # init inputs are constructor arguments here, not call arguments
    return Target(
        path=path, format="kernelbench", module=module, make_inputs=module.get_inputs,
        reference=reference, kernel=kernel, shapes=[{}], bench_shape={}, init_inputs=[],
        flops=flops if callable(flops) else None, bytes_moved=bytes_moved if callable(bytes_moved) else None,
        rtol=rtol, atol=atol, precision=precision,
    )
