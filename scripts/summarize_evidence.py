"""Print the per-example table from a gpu_evidence.sh run (verdict, time, rate, counters)."""

import json
import sys
from pathlib import Path

ev = Path(sys.argv[1])
print(f"{'example':18} {'verdict':9} {'median':>10} {'spread':>7} {'rate':>16} {'kernels captured':28} headline counters")
for f in sorted(ev.glob("counters-*.json")):
    name = f.stem[len("counters-"):]
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError:
        print(f"{name:18} (no JSON: {(ev / f'counters-{name}.err').read_text()[-300:]!r})")
        continue
    m = d["measurement"]
    t = m.get("timing") or {}
    rate = f"{t['tflops']:.1f} TFLOP/s" if t.get("tflops") else (f"{t['gbps']:.0f} GB/s" if t.get("gbps") else "-")
    c = d.get("counters") or {}
    launches = c.get("launches") or []
    kernels = sorted({r.get("kernel") for r in launches})
    h = launches[0] if launches else {}
    head = ", ".join(f"{k}={h[k]:.3g}" for k in ("duration_ns", "dram_throughput_pct", "l2_hit_rate_pct",
                                                   "achieved_occupancy_pct", "tensor_pipe_pct")
                     if isinstance(h.get(k), (int, float)))
    ncu_s = next((w for w in c.get("warnings", []) if "profiler step took" in w), "")
    med = f"{t['median_ms']:.4g} ms" if t.get("median_ms") else "-"
    spread = f"{100 * (t['p75_ms'] - t['p25_ms']) / t['median_ms']:.1f}%" if t.get("median_ms") else "-"
    top = d["findings"][0]["title"] if d.get("findings") else "-"
    print(f"{name:18} {m['verdict']['status']:9} {med:>10} {spread:>7} {rate:>16} {','.join(kernels)[:28]:28} {head} | {ncu_s} | top: {top}")
    for w in d.get("warnings", []):
        print(f"{'':18} warning: {w[:200]}")
