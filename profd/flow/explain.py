"""``profd explain CAPTURE``: diagnose a profiler capture the user already has (no GPU needed).

Load the capture (any format ``collectors.load_capture`` reads), work out the device, place the
main kernel on the roofline, run the rules and render the report, which starts at the
profiler's own durations because there is no measurement of the kernel against a reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from hwspecs.spec import Ceilings, DeviceSpec
from profd.model import CounterTable, Finding, Roofline

from advisors import roofline as roofline_mod
from advisors.diagnosis import diagnose, kernel_rows
from advisors.knobs import Knobs, discover
from advisors.report import findings_json, render_counters, render_markdown, render_terminal

# Keys under which collectors may leave a device name or product in ``device_attrs``.
_NAME_ATTRS = ("device_name", "device__attribute_display_name", "display_name", "gpu_model", "Product_Name",
               "Marketing_Name", "product_name", "name", "gpu_name", "Name", "gpu_arch")


@dataclass
class ExplainResult:
    """What ``explain`` found: the report and everything it was built from."""

    markdown: str
    findings: list[Finding]
    roofline: Optional[Roofline]
    table: CounterTable
    spec: Optional[DeviceSpec]
    ceilings: Optional[Ceilings] = None
    device_note: str = ""
    knobs: Optional[Knobs] = None
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The report for a terminal."""
        return render_terminal(self.markdown)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for ``profd explain --json``)."""
        out = findings_json(self.findings, self.roofline)
        out.update({
            "device": self.spec.key if self.spec is not None else None,
            "device_note": self.device_note,
            "ceilings": self.ceilings.to_dict() if self.ceilings is not None else None,
            "capture": self.table.to_dict() if self.table is not None else None,
            "markdown": self.markdown,
        })
        return out


def explain(
    path: Union[str, Path],
    device: Optional[str] = None,
    *,
    source: Optional[Union[str, Path]] = None,
    cache_dir: Optional[Path] = None,
    precision: str = "bf16",
) -> ExplainResult:
    """Explain the profiler capture at ``path``.

    ``device`` (what the user passed to ``--device``) is used when the capture does not name a
    device profd knows. ``source`` is the kernel's Python file, for levers that name its knobs.
    ``cache_dir`` is where measured ceilings are cached (profd's state directory by default);
    nothing is measured here. Raises ``collectors.CaptureError`` for a file profd cannot read.
    """
    from collectors import load_capture

    path = Path(path)
    table = load_capture(path)
    spec, note = resolve_device(table, device)
    ceilings = _ceilings(spec, cache_dir)
    knobs = discover(Path(source)) if source is not None else None
    roof = roofline_mod.main_roofline(table, ceilings, precision)
    findings = diagnose(table, spec, ceilings, roofline=roof, knobs=knobs, precision=precision)
    md = render_markdown(target=path.name, measurement=None, history=(), roofline=roof, findings=findings,
                         table=table, spec=spec, ceilings=ceilings, device_note=note)
    md += render_counters(table)
    notes = [note] if note else []
    return ExplainResult(markdown=md, findings=findings, roofline=roof, table=table, spec=spec,
                         ceilings=ceilings, device_note=note, knobs=knobs, notes=notes + list(table.warnings))


def resolve_device(table: CounterTable, device: Optional[str]) -> tuple[Optional[DeviceSpec], str]:
    """The device spec for a capture, and a sentence on how it was found (or why not).

    Order: the device name in the capture, then the ``--device`` the user gave, then a unique
    database entry with the capture's compute capability and SM count. Unknown devices leave
    spec-dependent rules silent; the note says so.
    """
    from hwspecs import db

    names = [table.device_name] + [str(table.device_attrs.get(k) or "") for k in _NAME_ATTRS]
    for name in [n for n in names if n]:
        spec = db.match(name)
        if spec is not None:
            extra = ""
            if device:
                try:
                    given = db.lookup(device)
                    if given.key != spec.key:
                        extra = f" (the capture's device wins over --device {device})"
                except KeyError:
                    pass
            return spec, (f"Device {spec.name} identified from the capture ({name}){extra}." if extra else "")
    if device:
        try:
            spec = db.lookup(device)
            return spec, f"Device {spec.name} taken from --device {device} (the capture does not name it)."
        except KeyError as e:
            return None, (f"--device {device!r} is not in profd's device database ({e.args[0] if e.args else ''}); "
                          f"rules that need device facts were skipped.")
    cc = str(table.device_attrs.get("compute_capability") or "")
    sms = _first_metric(table, "sm_count")
    if cc and sms:
        fits = [s for s in db.all_specs() if s.compute_capability == cc and s.sm_count == int(sms)]
        if len(fits) == 1:
            return fits[0], (f"Device taken to be {fits[0].name}: the only database entry with compute capability "
                             f"{cc} and {int(sms)} SMs, as in the capture.")
        if fits:
            names = " or ".join(s.key for s in fits)
            return None, (f"The capture does not name its device; compute capability {cc} with {int(sms)} SMs fits "
                          f"{names}. Pass --device to get roofline ceilings and device-dependent rules.")
    shown = f" ({table.device_name})" if table.device_name else ""
    example = "mi300x" if table.source.startswith("rocprof") else "h100"
    return None, (f"Device unknown{shown}: pass --device (e.g. --device {example}) for roofline ceilings; rules "
                  f"that need device facts were skipped.")


def _first_metric(table: CounterTable, name: str) -> Optional[float]:
    for r in kernel_rows(table):
        if name in r.metrics:
            return r.metrics[name]
    return None


def _ceilings(spec: Optional[DeviceSpec], cache_dir: Optional[Path]) -> Optional[Ceilings]:
    if spec is None:
        return None
    from hwspecs.ceilings import ceilings, datasheet_ceilings

    try:
        return ceilings(spec, cache_dir, measure=False)
    except (OSError, ValueError) as e:  # an unreadable cache must not stop an explanation
        c = datasheet_ceilings(spec)
        c.notes.append(f"cached ceilings unreadable ({e}); datasheet used")
        return c
