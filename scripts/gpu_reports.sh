#!/usr/bin/env bash
# Issue 15 figures on one GPU: per-save reports with counters (roofline at the kernel's precision,
# class from counters, a zero-FLOP transpose), and two nightly runs the same day (one folder each,
# per-candidate progress, roofline and history PNGs). Usage: scripts/gpu_reports.sh OUT_DIR
set -u
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_reports.sh OUT_DIR}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PROFD_STATE_DIR=/tmp/rstate PROFD_CONFIG=/nonexistent.toml
P="python3 -m profd.cli"
{ nvidia-smi -L; git log -1 --format=%H 2>/dev/null; } > "$OUT/env.txt" 2>&1
for n in matmul transpose vector_add; do
  timeout 300 $P profile "examples/kernels/$n.py" --counters > "$OUT/report-$n.md" 2> "$OUT/report-$n.err"
  echo "profile --counters $n rc=$? $(grep -m1 -A2 '## 3\.' "$OUT/report-$n.md" | tail -1 | cut -c1-120)"
done
mkdir -p /tmp/rk && cp examples/kernels/*.py /tmp/rk/
for night in 1 2; do
  timeout 200 $P nightly /tmp/rk --inline --budget 1 > "$OUT/nightly-$night.out" 2> "$OUT/nightly-$night.progress"
  echo "nightly $night rc=$? progress lines: $(wc -l < "$OUT/nightly-$night.progress")"
done
cp -r "$PROFD_STATE_DIR/artifacts/reports" "$OUT/nightly-reports" 2>/dev/null
ls "$OUT/nightly-reports"
