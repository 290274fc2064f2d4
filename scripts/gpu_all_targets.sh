#!/usr/bin/env bash
# One bench run over every Triton target (issue 17: 12 corpus targets and 6 bundled examples), in
# three GPU calls on one commit (a call is at most 10 minutes), plus the daemon's throughput and the
# CuPy example tuned against its grid (issue 16). PART=a|b|c picks the call. Each step has its own
# cap and writes under $OUT as it goes ($OUT brings back 8 files at most).
#   THR_ARGS: extra bench/throughput.py arguments (--counters: the daemon as profd watch runs by default).
#   TUNE_TO: the bench's limit per tune (profd tune --time TUNE_TO-40); matmul/fla_matmul get TUNE_TO_BIG.
set -u
cd "$(dirname "$0")/.."
O=$OUT/r; . scripts/_gpu_env.sh; rm -f $O/env.txt
export BENCH_GIT_COMMIT=${BENCH_GIT_COMMIT:-unknown}
case "${PART:-a}" in
  a) ONLY="flaggems_log_softmax kernelbench_relu softmax matmul vector_add transpose layernorm" ;;
  b) ONLY="liger_cross_entropy liger_softmax unsloth_cross_entropy fla_softmax liger_layer_norm unsloth_swiglu" ;;
  c) ONLY="liger_rms_norm liger_swiglu liger_geglu unsloth_geglu fla_matmul" ;;
  d) ONLY=${ONLY:-"kernelbench_relu softmax flaggems_log_softmax"} ;;  # a re-run of those short of 0.95
esac
timeout ${TVG_S:-540} python3 bench/tune_vs_grid.py --corpus .rw --examples examples/kernels --only $ONLY \
  --out $O --tag="-${PART:-a}" --max-seconds $(( ${TVG_S:-540} - 75 )) --jobs 14 --tune-timeout ${TUNE_TO:-90} \
  --tune-timeout-big ${TUNE_TO_BIG:-100} --rep-ms 50 > $O/tvg.log 2>&1
grep -E "^==|tuned/grid|specs" $O/tvg.log
if [ "${THR_S:-0}" -gt 0 ]; then  # in whichever part has the time left
  timeout $THR_S python3 bench/throughput.py --paths daemon --examples vector_add,softmax --budget 24 \
    ${THR_ARGS:-} --out $O > $O/thr.log 2>&1
  tail -8 $O/thr.log | cut -c1-400
fi
if [ "${PART:-a}" = c ] && [ "${CUDA_S:-0}" -gt 0 ]; then
  timeout $CUDA_S python3 bench/cuda_gpu.py --targets examples/kernels/cupy_saxpy.py --out $O --budget 8 \
    --watch 0 --skip-profile > $O/cuda.log 2>&1
  tail -12 $O/cuda.log | cut -c1-400
fi
ls -la $O
