"""The device database: one TOML file per GPU model under ``hwspecs/devices/``.

Each file holds every ``DeviceSpec`` field (the key is the file stem) plus its
``sources`` and ``notes``. ``peak_tflops`` always uses the keys fp64, fp32, tf32,
bf16, fp16, fp8 where the device has that precision (a missing key means "not
supported", never "unknown"); some files add ``fp64_tensor`` / ``fp32_tensor``
(tensor-core / MFMA rates where they differ) and ``fp4``.

Extra device files can be dropped into the directory named by the environment
variable ``PROFD_HWSPECS_DIR``; a file there replaces a shipped file with the same key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Union, get_type_hints

from hwspecs.spec import DeviceSpec

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with tomli installed
    import tomli as _toml  # type: ignore[no-redef]

ENV_EXTRA_DIR = "PROFD_HWSPECS_DIR"
PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8")

_HINTS = get_type_hints(DeviceSpec)
_REQUIRED = {f.name for f in dataclasses.fields(DeviceSpec)
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


class SpecError(ValueError):
    """A device file is malformed (missing field, wrong type, unknown key)."""


def _check_type(path: str, name: str, value: Any) -> Any:
    """Coerce TOML values to the dataclass field's type, refusing what cannot fit."""
    tp = _HINTS[name]
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path}: {name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{path}: {name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{path}: {name} must be a string, got {value!r}")
        return value
    if name == "peak_tflops":
        if not isinstance(value, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value.values()
        ):
            raise SpecError(f"{path}: peak_tflops must be a table of positive numbers")
        return {str(k): float(v) for k, v in value.items()}
    if name in ("match", "match_exclude", "sources", "notes"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{path}: {name} must be a list of strings")
        return [v.lower() for v in value] if name.startswith("match") else list(value)
    if name == "cus_per_xcd":  # Optional[int]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(f"{path}: cus_per_xcd must be an integer")
        return value
    return value


def load_file(path: Union[str, Path]) -> DeviceSpec:
    """Load and validate one device file; raises ``SpecError`` when it is malformed."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            data = _toml.load(fh)
        except _toml.TOMLDecodeError as exc:
            raise SpecError(f"{path}: {exc}") from exc
    data.setdefault("key", path.stem)
    if data["key"] != path.stem:
        raise SpecError(f"{path}: key {data['key']!r} differs from the file name {path.stem!r}")
    unknown = set(data) - set(_HINTS)
    if unknown:
        raise SpecError(f"{path}: unknown fields {sorted(unknown)}")
    missing = _REQUIRED - set(data)
    if missing:
        raise SpecError(f"{path}: missing fields {sorted(missing)}")
    kwargs = {name: _check_type(str(path), name, value) for name, value in data.items()}
    spec = DeviceSpec(**kwargs)
    if not spec.sources:
        raise SpecError(f"{path}: a device file must cite its sources")
    if not spec.match:
        raise SpecError(f"{path}: match is empty, the entry could never be detected")
    return spec


def _shipped_files() -> list[Path]:
    root = resources.files("hwspecs") / "devices"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml"))


def _extra_files(extra_dir: Optional[str]) -> list[Path]:
    if not extra_dir or not Path(extra_dir).is_dir():
        return []
    return sorted(Path(extra_dir).glob("*.toml"))


@functools.lru_cache(maxsize=4)
def _load(extra_dir: Optional[str]) -> dict[str, DeviceSpec]:
    specs: dict[str, DeviceSpec] = {}
    for path in _shipped_files():
        spec = load_file(path)
        specs[spec.key] = spec
    for path in _extra_files(extra_dir):  # later files win: a local file may correct a shipped one
        spec = load_file(path)
        specs[spec.key] = spec
    return specs


def _db() -> dict[str, DeviceSpec]:
    # The env var is part of the cache key so that tests and users can switch it.
    return _load(os.environ.get(ENV_EXTRA_DIR))


def all_specs() -> list[DeviceSpec]:
    """Every device in the database, sorted by key (copies: mutate freely)."""
    return [copy.deepcopy(s) for _, s in sorted(_db().items())]


def keys() -> list[str]:
    """The database keys (file stems), sorted."""
    return sorted(_db())


def get(key: str) -> DeviceSpec:
    """The entry with exactly this key (case-insensitive); ``KeyError`` otherwise."""
    db = _db()
    k = key.strip().lower()
    if k not in db:
        raise KeyError(f"no device {key!r} in the database; known: {', '.join(sorted(db))}")
    return copy.deepcopy(db[k])


def _contains_word(haystack: str, needle: str) -> bool:
    # Word boundaries keep "gh200" from hitting "h200" and "mi300xa" from "mi300x".
    return re.search(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])", haystack) is not None


def _best(name: str, specs: Iterable[DeviceSpec]) -> Optional[DeviceSpec]:
    hay = " ".join(name.lower().split())
    best: Optional[tuple[int, DeviceSpec]] = None
    for spec in specs:
        if any(_contains_word(hay, ex) for ex in spec.match_exclude):
            continue
        for pattern in spec.match:
            if _contains_word(hay, pattern) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), spec)
    return best[1] if best else None


def match(name: str) -> Optional[DeviceSpec]:
    """The entry whose ``match`` strings occur in a reported device name, or None.

    Case-insensitive, whole-word, and the longest matching string wins, so that
    "NVIDIA H100 PCIe" picks the PCIe entry. Names like "NVIDIA H200 NVL" that an
    entry lists in ``match_exclude`` return None rather than the wrong figures.
    """
    if not name or not name.strip():
        return None
    spec = _best(name, _db().values())
    return copy.deepcopy(spec) if spec else None


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


_VENDOR_WORDS = ("nvidia", "amd", "instinct", "geforce", "radeon")


def lookup(name_or_key: str) -> DeviceSpec:
    """Resolve what a user typed after ``--device``: a key, a reported name or a short name.

    Accepts "h200-sxm", "H200", "NVIDIA H200", "MI300X", "rtx4090", "A100". Raises
    ``KeyError`` naming the candidates when nothing or more than one entry fits.
    """
    query = name_or_key.strip()
    db = _db()
    if query.lower() in db:
        return copy.deepcopy(db[query.lower()])
    spec = match(query)
    if spec is not None:
        return spec
    squashed = _squash(query)
    for word in _VENDOR_WORDS:  # "NVIDIA GeForce RTX 4090" -> "rtx4090"
        squashed = squashed.replace(word, "")
    if not squashed:
        raise KeyError(f"no device {name_or_key!r}; known: {', '.join(sorted(db))}")
    exact = [s for s in db.values()
             if squashed in {_squash(s.key), *(_squash(m) for m in s.match)}]
    if len(exact) == 1:
        return copy.deepcopy(exact[0])
    for test in (str.startswith, str.__contains__):  # "a100" first, then "4090"
        hits = [s for s in db.values()
                if any(test(_squash(t), squashed) for t in (s.key, *s.match))]
        if len(hits) == 1:
            return copy.deepcopy(hits[0])
        if len(hits) > 1:
            raise KeyError(f"{name_or_key!r} is ambiguous: "
                           f"{', '.join(sorted(s.key for s in hits))}")
    raise KeyError(f"no device {name_or_key!r}; known: {', '.join(sorted(db))}")
