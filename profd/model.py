"""profd's data model: the plain values that pass between pipeline stages.

Every arrow in DESIGN.md's data flow carries one of these. They are dataclasses
that round-trip through JSON (``to_dict`` / ``from_dict``) so that they can cross
the child-process boundary, be stored in SQLite and be printed with ``--json``.

``collectors`` and ``advisors`` may import this module (and ``profd.metrics``);
they never import the daemon.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


def to_jsonable(value: Any) -> Any:
    """Turn a dataclass (nested lists/dicts/enums too) into JSON-compatible data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = get_origin(tp)
    if origin is None and dataclasses.is_dataclass(tp):
        return from_dict(tp, data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        return [_build(inner, v) for v in data]
    if origin is dict:
        _, inner = get_args(tp) or (Any, Any)
        return {k: _build(inner, v) for k, v in data.items()}
    args = [a for a in get_args(tp) if a is not type(None)]
    if args and origin is not None:  # Optional[X] / X | None
        return _build(args[0], data)
    return data


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a dataclass from ``to_jsonable`` output; unknown keys are ignored."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _build(hints[f.name], data[f.name])
    return cls(**kwargs)


# --------------------------------------------------------------------------- typed settings
# One set of type rules for every config table (profd.config, the LLM advisor's table): the
# TOML file gives typed values, the environment gives strings; both end up as the field's type.

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingTypeError(ValueError):
    """A value does not fit its setting's type; ``expected`` says the type in words."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def setting_types(cls: type) -> dict[str, Any]:
    """The annotated type of every field of the settings dataclass ``cls``."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


def describe_type(tp: Any) -> str:
    """A setting's type in words, for error messages ("a whole number", "a list of strings")."""
    origin, args = get_origin(tp), [a for a in get_args(tp) if a is not type(None)]
    if origin in (list, tuple):
        inner = describe_type(args[0]) if args else "value"
        return "a list of " + {"a string": "strings", "a whole number": "whole numbers"}.get(inner, inner + "s")
    if origin is dict:
        return "a table"
    if origin is not None and args:  # Optional[X]
        return describe_type(args[0])
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(tp, str(tp))


def parse_setting(tp: Any, raw: Any, *, from_env: bool = False) -> Any:
    """``raw`` as a value of type ``tp``; raises ``SettingTypeError`` when it is not one.

    From the file the TOML type must fit (no "fast" for a number, no string for a list);
    from the environment (``from_env``) the string is parsed: numbers, ``1/0/true/false/yes/no/on/off``,
    lists split on ``,`` or ``:``, tables as JSON objects.
    """
    origin, args = get_origin(tp), [a for a in get_args(tp) if a is not type(None)]
    if origin is not None and origin not in (list, tuple, dict) and args:  # Optional[X]
        return parse_setting(args[0], raw, from_env=from_env)
    want = describe_type(tp)
    if origin in (list, tuple):
        if from_env and isinstance(raw, str):
            raw = [p.strip() for p in raw.replace(",", ":").split(":") if p.strip()]
        if not isinstance(raw, (list, tuple)):
            raise SettingTypeError(want)
        try:
            return [parse_setting(args[0] if args else Any, v, from_env=from_env) for v in raw]
        except SettingTypeError:
            raise SettingTypeError(want) from None
    if origin is dict or tp is dict:
        if from_env and isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise SettingTypeError(want + " (a JSON object in the environment)") from None
        if not isinstance(raw, dict):
            raise SettingTypeError(want)
        return dict(raw)
    if tp is bool:
        if isinstance(raw, str) and from_env and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        if not isinstance(raw, bool):
            raise SettingTypeError(want)
        return raw
    if tp is int or tp is float:
        if from_env and isinstance(raw, str):
            try:
                raw = float(raw) if tp is float else int(raw.strip())
            except ValueError:
                raise SettingTypeError(want) from None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise SettingTypeError(want)
        if tp is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise SettingTypeError(want)
            return int(raw)
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            raise SettingTypeError(want)
        return raw
    return raw


def example_value(tp: Any, default: Any) -> Any:
    """A value of type ``tp`` to show in an error message: the default when it says something."""
    if default not in (None, "", [], {}) and not callable(default):
        return default
    origin, args = get_origin(tp), [a for a in get_args(tp) if a is not type(None)]
    if origin in (list, tuple):
        return [example_value(args[0], None)] if args else []
    if origin is not None and origin is not dict and args:
        return example_value(args[0], None)
    return {bool: True, int: 1, float: 1.0, str: "text"}.get(tp, {})


class JsonMixin:
    """``to_dict`` / ``to_json`` / ``from_dict`` for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # type: ignore[no-untyped-def]
        return from_dict(cls, data)


# --------------------------------------------------------------------------- device


@dataclass
class DeviceInfo(JsonMixin):
    """The device a measurement ran on, as the child process saw it."""

    name: str  # "NVIDIA H200", "cpu (Triton interpreter)"
    backend: str  # "cuda", "hip" or "cpu"
    index: int = 0
    compute_capability: str = ""  # "9.0" or gfx target "gfx942"
    sm_count: int = 0
    total_memory_bytes: int = 0
    l2_bytes: int = 0
    driver: str = ""
    torch_version: str = ""
    triton_version: str = ""


@dataclass
class DeviceState(JsonMixin):
    """NVML snapshot around a measurement: is the device throttled or shared?"""

    sm_clock_mhz: Optional[float] = None
    mem_clock_mhz: Optional[float] = None
    max_sm_clock_mhz: Optional[float] = None
    temperature_c: Optional[float] = None
    power_w: Optional[float] = None
    throttle_reasons: list[str] = field(default_factory=list)
    other_processes: list[dict[str, Any]] = field(default_factory=list)
    memory_used_bytes: Optional[int] = None
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- verification


class Status(str, enum.Enum):
    """What happened to one run of a target. Everything but CORRECT fails."""

    CORRECT = "correct"
    WRONG = "wrong"  # finite output outside tolerance
    NONFINITE = "nonfinite"  # NaN/Inf where the reference is finite
    UNWRITTEN = "unwritten"  # poisoned output elements were never written
    MUTATED_INPUT = "mutated_input"
    SHAPE_MISMATCH = "shape_mismatch"
    LOAD_ERROR = "load_error"  # syntax/import error, missing entry points
    KERNEL_ERROR = "kernel_error"  # exception raised by kernel(...)
    REFERENCE_ERROR = "reference_error"
    ILLEGAL_ACCESS = "illegal_access"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    CRASH = "crash"  # child died without reporting (signal, abort)
    INTERNAL = "internal"  # profd's own fault


@dataclass
class OutputCheck(JsonMixin):
    """Comparison of one output tensor of one trial against the reference."""

    trial: int
    output: int
    shape: list[int]
    dtype: str
    max_abs_err: float
    max_rel_err: float  # max |out-ref| / (|ref| + atol)
    norm_rel_err: float  # ||out-ref|| / ||ref||
    rtol: float
    atol: float
    passed: bool
    reason: str = ""
    mismatched: int = 0  # elements outside tolerance
    nonfinite: int = 0


def worst_of(checks: "list[OutputCheck]") -> Optional[OutputCheck]:
    """The worst of ``checks`` as one check: each error its own maximum over all of them.

    The errors of one trial are not all worst together (the largest absolute error and the
    largest relative one come from different trials), so a row that shows one trial's check
    under "worst" understates the others. ``trial`` is the trial of the largest absolute error,
    ``passed`` whether every check passed, ``reason`` the first failure's. None for no checks.
    """
    if not checks:
        return None
    first_fail = next((c for c in checks if not c.passed), None)
    top = max(checks, key=lambda c: c.max_abs_err)
    return OutputCheck(
        trial=top.trial, output=top.output, shape=list(top.shape), dtype=top.dtype,
        max_abs_err=top.max_abs_err, max_rel_err=max(c.max_rel_err for c in checks),
        norm_rel_err=max(c.norm_rel_err for c in checks), rtol=max(c.rtol for c in checks),
        atol=max(c.atol for c in checks), passed=first_fail is None,
        reason=first_fail.reason if first_fail is not None else "",
        mismatched=sum(c.mismatched for c in checks), nonfinite=sum(c.nonfinite for c in checks))


@dataclass
class Verdict(JsonMixin):
    """Is the kernel correct? The first failure decides the status and message."""

    status: Status
    message: str = ""
    line: Optional[int] = None  # line in the user's file, where known
    trials: int = 0
    shapes: list[dict[str, Any]] = field(default_factory=list)
    checks: list[OutputCheck] = field(default_factory=list)
    traceback: str = ""

    @property
    def correct(self) -> bool:
        return self.status == Status.CORRECT


# --------------------------------------------------------------------------- timing


@dataclass
class Timing(JsonMixin):
    """How long one call of ``kernel(*inputs)`` takes."""

    median_ms: float
    min_ms: float
    max_ms: float
    p25_ms: float
    p75_ms: float
    stdev_ms: float
    runs: int
    method: str  # "cuda-events+device-sync", "wall-clock (interpreter)"
    representative: bool  # False on CPU/interpreter: do not compare with GPU numbers
    l2_flushed: bool = False
    shape: dict[str, Any] = field(default_factory=dict)
    flops: Optional[float] = None
    bytes_moved: Optional[float] = None
    tflops: Optional[float] = None
    gbps: Optional[float] = None
    note: str = ""
    #: The spin (ns) that opened each bracket on a GPU; 0 where there was none (profd.harness.timing).
    spin_ns: int = 0

    @property
    def spread_pct(self) -> float:
        """Inter-quartile range relative to the median: the noise a win must beat."""
        return 100.0 * (self.p75_ms - self.p25_ms) / self.median_ms if self.median_ms else 0.0


@dataclass
class LaunchRecord(JsonMixin):
    """One distinct Triton launch seen at run time: the values the kernel really received."""

    kernel: str  # the @triton.jit function's name
    constexprs: dict[str, Any] = field(default_factory=dict)  # constexpr parameter -> value
    num_warps: Optional[int] = None  # None: not known (the interpreter has no such option)
    num_stages: Optional[int] = None
    grid: Optional[list[int]] = None  # (x, y, z) after a grid callable was applied; None for warm-ups
    count: int = 1  # identical launches are folded into one record
    autotuned: bool = False  # the values come from the config the autotuner picked
    via: str = "launch"  # "launch", "warmup" (kernel.warmup(...)) or "compiled" (a handle from warmup)


@dataclass
class Measurement(JsonMixin):
    """One run of the harness on one target: verdict, timing, device, errors."""

    target: str
    content_hash: str
    verdict: Verdict
    device: Optional[DeviceInfo] = None
    timing: Optional[Timing] = None
    # One Timing per declared shape (``Timing.shape`` says which) when the request asked
    # for every shape to be timed (``ChildRequest.time_shapes="all"``); ``timing`` stays
    # the bench shape's, the figure every comparison uses.
    shape_timings: list[Timing] = field(default_factory=list)
    device_state_before: Optional[DeviceState] = None
    device_state_after: Optional[DeviceState] = None
    started_at: float = 0.0
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    stderr_tail: str = ""
    #: What each Triton launch of one kernel(...) call at the bench shape really received
    #: (profd/harness/launches.py); knob discovery merges these with what it read statically.
    launches: list["LaunchRecord"] = field(default_factory=list)
    #: CUDA builds of the run (profd/harness/cuda_build.py): build seconds apart from run time,
    #: cache hits and misses; empty for a Triton-only target.
    builds: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.verdict.correct


# --------------------------------------------------------------------------- counters


@dataclass
class RuleMessage(JsonMixin):
    """A profiler's own guided-analysis message (ncu rules), kept as evidence."""

    kernel: str
    launch: int
    rule: str
    section: str
    type: str  # "OPT", "WRN", "INF"
    message: str
    estimated_speedup_pct: Optional[float] = None
    speedup_type: str = ""


@dataclass
class CounterTable:
    """Normalized counters: one row per kernel launch.

    ``frame`` is a pandas DataFrame whose index is the launch number and whose
    columns are ``kernel`` (str) plus canonical metric names from
    ``profd.metrics`` (floats, base units). ``raw`` keeps the vendor's own
    metric names and values per launch so that nothing the profiler said is lost.
    """

    source: str  # "ncu", "rocprof-v1", "rocprofv2", "rocprofv3", "rocprof-compute"
    frame: Any  # pandas.DataFrame
    device_name: str = ""
    rules: list[RuleMessage] = field(default_factory=list)
    raw: Any = None  # pandas.DataFrame of vendor metrics, or None
    artifact: str = ""  # path of the raw report file kept on disk
    warnings: list[str] = field(default_factory=list)
    device_attrs: dict[str, Any] = field(default_factory=dict)

    def kernels(self) -> list[str]:
        return list(dict.fromkeys(self.frame["kernel"])) if len(self.frame) else []

    def value(self, metric: str, launch: int = 0) -> Optional[float]:
        """One metric of one launch (row position), or None when not collected."""
        if metric not in self.frame.columns or launch >= len(self.frame):
            return None
        v = self.frame[metric].iloc[launch]
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return None if f != f else f

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for _, row in self.frame.iterrows():
            rows.append({k: to_jsonable(_py(v)) for k, v in row.items()})
        return {
            "source": self.source,
            "device_name": self.device_name,
            "launches": rows,
            "rules": [r.to_dict() for r in self.rules],
            "artifact": self.artifact,
            "warnings": list(self.warnings),
            "device_attrs": to_jsonable(self.device_attrs),
        }


def _py(v: Any) -> Any:
    """numpy scalars -> Python scalars."""
    item = getattr(v, "item", None)
    return item() if callable(item) else v


# --------------------------------------------------------------------------- diagnosis


class Severity(str, enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


@dataclass
class Evidence(JsonMixin):
    """A metric a finding rests on: its value, the threshold it crossed, the unit."""

    metric: str
    value: float
    threshold: Optional[float] = None
    unit: str = ""
    comparison: str = ""  # "<", ">", ...
    meaning: str = ""  # plain-language gloss of the metric


@dataclass
class Lever(JsonMixin):
    """A source-level change that addresses a finding."""

    name: str  # "BLOCK_SIZE", "num_warps", "GROUP_M", "program order"
    direction: str  # "increase", "decrease", "add", "set"
    description: str
    current: Optional[str] = None  # current value in the user's source, when known
    line: Optional[int] = None
    suggested: Optional[str] = None


@dataclass
class Finding(JsonMixin):
    """One thing that holds a kernel back, with its evidence and levers."""

    rule: str
    title: str
    severity: Severity
    summary: str  # plain language, with numbers and units
    evidence: list[Evidence] = field(default_factory=list)
    levers: list[Lever] = field(default_factory=list)
    estimated_gain_pct: float = 0.0
    kernel: str = ""
    supporting: list[str] = field(default_factory=list)  # profiler rule messages


@dataclass
class Roofline(JsonMixin):
    """Where a kernel sits against this device's ceilings."""

    device: str
    flops: Optional[float]
    bytes: Optional[float]
    time_s: float
    intensity: Optional[float]  # FLOP/byte
    ridge: Optional[float]  # FLOP/byte where the ceilings meet
    achieved_tflops: Optional[float]
    achieved_gbps: Optional[float]
    peak_tflops: Optional[float]
    peak_gbps: Optional[float]
    pct_of_ceiling: Optional[float]
    bound: str  # "memory-bound", "compute-bound", "latency-bound", "launch-bound", "unknown"
    precision: str = ""
    ceilings_source: str = ""  # "measured" or "datasheet"


# --------------------------------------------------------------------------- tuning


@dataclass
class Candidate(JsonMixin):
    """A rewrite of the user's source proposed by an advisor."""

    id: str
    source: str
    advisor: str  # "deterministic", "llm:<model>"
    rationale: str
    diff: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    response: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0


@dataclass
class CandidateVerdict(JsonMixin):
    """What the re-measure loop decided about one candidate."""

    candidate_id: str
    accepted: bool
    reason: str
    measurement: Optional[Measurement] = None
    speedup: Optional[float] = None  # baseline median / candidate median
    confirmed: bool = False  # re-timed and re-checked in fresh processes on fresh inputs (profd apply needs it)


# --------------------------------------------------------------------------- jobs


class JobKind(str, enum.Enum):
    PROFILE = "profile"
    TUNE = "tune"
    NIGHTLY = "nightly"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Job(JsonMixin):
    """A unit of work in the persisted queue."""

    id: int
    path: str
    kind: JobKind
    priority: int  # lower runs first; saves beat nightly work
    state: JobState
    content_hash: str = ""
    created_at: float = 0.0
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    attempts: int = 0
    error: str = ""
