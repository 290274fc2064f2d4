"""The device database, live detection and the roofline ceilings of profd.

``hwspecs`` depends only on ``profd.model`` (and ``profd.paths`` for the default
cache location); collectors, advisors and the daemon use it, never the reverse.

The package attributes ``hwspecs.ceilings`` and ``hwspecs.detect`` are the functions,
which shadow the submodules of the same name: import anything else from those
modules with ``from hwspecs.ceilings import read_cached`` (which always works), not
``import hwspecs.ceilings as m``.
"""

from hwspecs.ceilings import (
    ceilings,
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

__all__ = [
    "Ceilings",
    "DetectedDevice",
    "DeviceSpec",
    "SpecError",
    "all_specs",
    "ceilings",
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
    "ridge_point",
    "specs_json",
]
