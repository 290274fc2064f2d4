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

from advisors.diagnosis import Diagnosis, analyze, kernel_rows
from advisors.knobs import Knobs, discover
from advisors.report import findings_json, render_counters, render_diagnosis, render_terminal

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
    diagnosis: Optional[Diagnosis] = None

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
    spec, ceilings, note = _resolve(table, device, cache_dir)
    knobs = discover(Path(source)) if source is not None else None
    dx = analyze(table, spec, ceilings, knobs=knobs, precision=precision)
    md = render_diagnosis(dx, target=path.name, measurement=None, history=(), device_note=note)
    md += render_counters(table)
    notes = [note] if note else []
    return ExplainResult(markdown=md, findings=dx.findings, roofline=dx.roofline, table=table, spec=spec,
                         ceilings=ceilings, device_note=note, knobs=knobs, notes=notes + list(table.warnings),
                         diagnosis=dx)


def capture_names(table: CounterTable) -> list[str]:
    """Every device name a capture carries, the table's own first."""
    names = [table.device_name] + [str(table.device_attrs.get(k) or "") for k in _NAME_ATTRS]
    return [n for n in names if n]


def resolve_device(table: CounterTable, device: Optional[str]) -> tuple[Optional[DeviceSpec], str]:
    """The device spec for a capture, and a sentence on how it was found (``hwspecs.resolve``)."""
    spec, _, note = _resolve(table, device, None)
    return spec, note


def _resolve(table: CounterTable, device: Optional[str],
             cache_dir: Optional[Path]) -> tuple[Optional[DeviceSpec], Optional[Ceilings], str]:
    from hwspecs import resolve

    return resolve(capture_names(table), device, cache_dir=cache_dir,
                   compute_capability=str(table.device_attrs.get("compute_capability") or ""),
                   sm_count=_first_metric(table, "sm_count"),
                   vendor_example="mi300x" if table.source.startswith("rocprof") else "h100")


def _first_metric(table: CounterTable, name: str) -> Optional[float]:
    for r in kernel_rows(table):
        if name in r.metrics:
            return r.metrics[name]
    return None
