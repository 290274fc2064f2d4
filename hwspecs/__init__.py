"""The device database, live detection and the roofline ceilings of profd.

``hwspecs`` depends only on ``profd.model`` (and ``profd.paths`` for the default
cache location); collectors, advisors and the daemon use it, never the reverse.

``resolve(name, hint)`` is what profd's flows call: the spec, the ceilings and a note, with one
error policy. ``hwspecs.ceilings`` is the module; the function is ``ceilings_for``.
``hwspecs.detect`` is the function (it shadows its module): import anything else from that module
with ``from hwspecs.detect import ...``.
"""

from hwspecs.ceilings import (
    ceilings_for,
    datasheet_ceilings,
    is_measured,
    measure_ceilings,
    read_cached,
    ridge_point,
)
from hwspecs.db import SpecError, all_specs, get, keys, load_file, lookup, match
from hwspecs.summary import describe, specs_json
from hwspecs.detect import DetectedDevice, detect
from hwspecs.spec import Ceilings, DeviceSpec
from hwspecs.resolve import resolve

__all__ = [
    "Ceilings",
    "DetectedDevice",
    "DeviceSpec",
    "SpecError",
    "all_specs",
    "ceilings_for",
    "datasheet_ceilings",
    "describe",
    "detect",
    "get",
    "is_measured",
    "keys",
    "load_file",
    "lookup",
    "match",
    "measure_ceilings",
    "read_cached",
    "resolve",
    "ridge_point",
    "specs_json",
]
