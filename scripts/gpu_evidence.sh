#!/usr/bin/env bash
# One device call's worth of evidence for issues #2-#4: profile every example (verdict,
# timing), the same with hardware counters (report, kernel names, ncu time), and the
# illegal-access / hang cases. Writes $OUT/evidence.tar.gz and prints a short summary.
set -u
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export PROFD_STATE_DIR=${PROFD_STATE_DIR:-/tmp/profd-state} PROFD_CONFIG=/nonexistent.toml
EV=${OUT:-/tmp/out}/ev; mkdir -p "$EV"
P="python3 -m profd.cli"
{ nvidia-smi -L; python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'; ncu --version | tail -1; date -u; git log -1 --format=%H 2>/dev/null; } > "$EV/env.txt" 2>&1
cat "$EV/env.txt"
timeout 120 $P specs --measure > "$EV/specs.txt" 2>&1; tail -25 "$EV/specs.txt"
for f in examples/kernels/*.py; do
  n=$(basename "$f" .py)
  s=$(date +%s.%N)
  timeout 300 $P profile "$f" > "$EV/profile-$n.md" 2>&1; rc=$?
  echo "profile $n rc=$rc $(python3 -c "print(round($(date +%s.%N)-$s,1))") s"
done
for f in examples/kernels/*.py; do
  n=$(basename "$f" .py)
  s=$(date +%s.%N)
  timeout 400 $P profile "$f" --counters --json > "$EV/counters-$n.json" 2> "$EV/counters-$n.err"; rc=$?
  echo "counters $n rc=$rc $(python3 -c "print(round($(date +%s.%N)-$s,1))") s"
done
for f in scripts/gpu_faults/illegal_access.py scripts/gpu_faults/hang.py examples/kernels/vector_add.py; do
  n=$(basename "$f" .py)
  s=$(date +%s.%N)
  timeout 120 $P profile "$f" --timeout 20 > "$EV/fault-$n.md" 2>&1; rc=$?
  echo "fault $n rc=$rc $(python3 -c "print(round($(date +%s.%N)-$s,1))") s"; head -8 "$EV/fault-$n.md" | grep -i "correct\|illegal\|finish" | head -2
done
nvidia-smi --query-gpu=memory.used --format=csv > "$EV/mem-after.txt" 2>&1
cp "$PROFD_STATE_DIR/profd.db" "$EV/" 2>/dev/null
mkdir -p "$EV/captures"; find "$PROFD_STATE_DIR/artifacts/captures" -name '*.ncu-rep' -size -3M -exec cp {} "$EV/captures/" \; 2>/dev/null
tar -C "$(dirname "$EV")" -czf "${OUT:-/tmp/out}/evidence.tar.gz" ev
python3 scripts/summarize_evidence.py "$EV"
