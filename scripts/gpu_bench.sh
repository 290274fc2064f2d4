#!/usr/bin/env bash
# One device call: check that the warm worker's forks really run on the GPU, then run the
# named bench steps (bench/run_all_gpu.sh) and the GPU-marked tests; everything lands in
# $OUT/bench.tar.gz (the device returns few files).
set -u
cd "$(dirname "$0")/.."
O=/tmp/o; mkdir -p $O
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
S=$(date +%s)
{ ls -l /dev/nvidia* 2>&1 | head -5; python3 -c "from profd.gpu import probe; print('probe', probe())"; } | tee $O/diag.txt
check() {
python3 - <<'PY' 2>&1 | tee -a $O/diag.txt
from profd.harness.warm import WarmWorker
from profd.harness.runner import measure
w = WarmWorker(); w.start(); print("zygote interpret =", w.interpret)
m = measure("examples/kernels/vector_add.py", runner=w)
print("warm fork:", m.device.name, m.verdict.status.value, m.timing and round(m.timing.median_ms, 4), m.warnings); w.close()
raise SystemExit(0 if m.device.backend == "cuda" else 3)
PY
return "${PIPESTATUS[0]}"
}
if ! check; then
  echo "SANDBOX BREAKS THE GPU HERE: retrying with PROFD_SANDBOX=0" | tee -a $O/diag.txt
  export PROFD_SANDBOX=0
  if ! check; then echo "warm worker not on the GPU: stopping"; tar -C /tmp -czf "$OUT/bench.tar.gz" o; exit 3; fi
fi
DEADLINE=${DEADLINE:-540}
OUT_REAL="$OUT"
OUT=$O BENCH_GIT_COMMIT=${COMMIT:-unknown} BENCH_DEADLINE_S=$((DEADLINE - 60 - $(date +%s) + S)) bash bench/run_all_gpu.sh "$@" 2>&1 | tee $O/run.log | tail -25
if [ -n "${GPU_TESTS:-}" ]; then
  timeout $((DEADLINE - $(date +%s) + S)) python3 -m pytest -q -m gpu -p no:cacheprovider -rA $GPU_TESTS > $O/gpu-tests.log 2>&1
  tail -8 $O/gpu-tests.log
fi
cp -r bench/results $O/results
tar -C /tmp -czf "$OUT_REAL/bench.tar.gz" o
