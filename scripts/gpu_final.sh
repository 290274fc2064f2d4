#!/usr/bin/env bash
# Final single-GPU call: warm-worker check, timing precision, idle overhead, save latency,
# a matmul re-tune (after the batch fix), and a nightly run over the examples for docs/.
set -u
cd "$(dirname "$0")/.."
O=/tmp/o; mkdir -p $O/tq $O/nightly
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=$(date +%s)
left() { echo $(( ${DEADLINE:-545} - $(date +%s) + S )); }
OUT_REAL="$OUT"
OUT=$O BENCH_GIT_COMMIT=${COMMIT:-unknown} BENCH_DEADLINE_S=300 bash bench/run_all_gpu.sh precision overhead latency 2>&1 | tee $O/run.log | grep -v "^  " | tail -30
echo "== matmul re-tune ($(left) s left)"
timeout $(( $(left) - 150 )) python3 bench/tuning_quality.py --examples matmul --fresh --out $O/tq 2>&1 | tail -6
echo "== nightly ($(left) s left)"
mkdir -p /tmp/nk && cp examples/kernels/*.py /tmp/nk/
PROFD_STATE_DIR=/tmp/nstate PROFD_CONFIG=/nonexistent timeout $(( $(left) - 10 )) python3 -m profd.cli nightly /tmp/nk --inline --budget 1 2>&1 | tail -5
cp -r /tmp/nstate/artifacts/reports $O/nightly/ 2>/dev/null
cp -r bench/results $O/results
tar -C /tmp -czf "$OUT_REAL/final.tar.gz" o
