"""One device resolution for every flow: a device name (and a user's hint) -> spec, ceilings, note.

``profd profile`` (a measured device name), ``profd explain`` (the names a capture carries, plus
``--device``) and the nightly report all ask the same question; they get the same answer and
the same error policy: this never raises, and the note says what was found or why nothing was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from hwspecs import db
from hwspecs.ceilings import ceilings_for, datasheet_ceilings
from hwspecs.spec import Ceilings, DeviceSpec


def resolve(
    name: Union[str, Sequence[str], None],
    hint: Optional[str] = None,
    *,
    compute_capability: str = "",
    sm_count: Optional[float] = None,
    vendor_example: str = "h100",
    cache_dir: Optional[Path] = None,
) -> tuple[Optional[DeviceSpec], Optional[Ceilings], str]:
    """The spec of a device, its roofline ceilings, and a sentence on how it was found (or why not).

    Order: the reported ``name`` (or the first of several names that the database knows), then
    the user's ``hint`` (``--device``), then a unique database entry with ``compute_capability``
    and ``sm_count``. Ceilings are the cached measurement, else the datasheet; nothing is measured
    here. An unreadable cache falls back to the datasheet with a note. The note is empty when the
    name itself identified the device and nothing needs saying.
    """
    spec, note = _spec(name, hint, compute_capability, sm_count, vendor_example)
    if spec is None:
        return None, None, note
    try:
        ceilings = ceilings_for(spec, cache_dir, measure=False)
    except (OSError, ValueError) as e:  # a broken cache must not cost the report
        ceilings = datasheet_ceilings(spec)
        ceilings.notes.append(f"cached ceilings unreadable ({e}); datasheet used")
    return spec, ceilings, note


def _spec(name: Union[str, Sequence[str], None], hint: Optional[str], cc: str, sms: Optional[float],
          example: str) -> tuple[Optional[DeviceSpec], str]:
    names = [name] if isinstance(name, str) else list(name or [])
    names = [n for n in names if n]
    for n in names:
        spec = db.match(n)
        if spec is None:
            continue
        if hint:
            try:
                given = db.lookup(hint)
            except KeyError:
                given = None
            if given is not None and given.key != spec.key:
                return spec, (f"Device {spec.name} identified from the capture ({n}) (the capture's device wins "
                              f"over --device {hint}).")
        return spec, ""
    if hint:
        try:
            spec = db.lookup(hint)
        except KeyError as e:
            return None, (f"--device {hint!r} is not in profd's device database ({e.args[0] if e.args else ''}); "
                          f"rules that need device facts were skipped.")
        return spec, f"Device {spec.name} taken from --device {hint} (the capture does not name it)."
    if cc and sms:
        fits = [s for s in db.all_specs() if s.compute_capability == cc and s.sm_count == int(sms)]
        if len(fits) == 1:
            return fits[0], (f"Device taken to be {fits[0].name}: the only database entry with compute capability "
                             f"{cc} and {int(sms)} SMs, as in the capture.")
        if fits:
            both = " or ".join(s.key for s in fits)
            return None, (f"The capture does not name its device; compute capability {cc} with {int(sms)} SMs fits "
                          f"{both}. Pass --device to get roofline ceilings and device-dependent rules.")
    shown = f" ({names[0]})" if names else ""
    return None, (f"Device unknown{shown}: pass --device (e.g. --device {example}) for roofline ceilings; rules "
                  f"that need device facts were skipped.")
