"""Child-process device probe: prints one JSON line describing a GPU as torch sees it.

Run as a script (``python _probe.py INDEX``), never imported by the daemon: touching
CUDA/HIP creates driver state that the long-lived daemon must not hold. It imports
nothing from profd so that it works whatever the child's sys.path is.
"""

from __future__ import annotations

import json
import sys


def _attr(obj, *names, default=None):
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def probe(index: int) -> dict:
    out: dict = {"ok": True, "available": False}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - report anything, the parent decides
        return {"ok": False, "error": f"import torch failed: {exc!r}"}
    out["torch_version"] = torch.__version__
    out["cuda_version"] = getattr(torch.version, "cuda", None) or ""
    out["hip_version"] = getattr(torch.version, "hip", None) or ""
    try:
        available = torch.cuda.is_available()
        out["count"] = torch.cuda.device_count() if available else 0
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"torch.cuda.is_available() raised {exc!r}"
        return out
    out["available"] = bool(available)
    if not available:
        return out
    if index >= out["count"]:
        out["available"] = False
        out["error"] = f"device index {index} out of range: torch sees {out['count']} device(s)"
        return out
    p = torch.cuda.get_device_properties(index)
    uuid = _attr(p, "uuid")
    out["device"] = {
        "name": p.name,
        "major": p.major,
        "minor": p.minor,
        "gcn_arch": _attr(p, "gcnArchName", default=""),
        "sm_count": p.multi_processor_count,
        "total_memory": p.total_memory,
        "l2_bytes": _attr(p, "L2_cache_size", default=0),
        "uuid": str(uuid) if uuid is not None else "",
        "pci_bus_id": _attr(p, "pci_bus_id", default=None),
        "pci_domain_id": _attr(p, "pci_domain_id", default=None),
        "pci_device_id": _attr(p, "pci_device_id", default=None),
        "max_threads_per_sm": _attr(p, "max_threads_per_multi_processor", default=0),
        "warp_size": _attr(p, "warp_size", default=0),
        "regs_per_sm": _attr(p, "regs_per_multiprocessor", default=0),
        "smem_per_sm": _attr(p, "shared_memory_per_multiprocessor", default=0),
        "smem_per_block_optin": _attr(p, "shared_memory_per_block_optin", default=0),
    }
    return out


def main(argv: list[str]) -> int:
    index = int(argv[1]) if len(argv) > 1 else 0
    try:
        result = probe(index)
    except Exception as exc:  # noqa: BLE001
        result = {"ok": False, "error": repr(exc)}
    # A single JSON line last on stdout: torch or a driver may print warnings before it.
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
