#!/usr/bin/env bash
# One GPU call for what the 2026-12-03 session still lacked: the bundled Triton examples tuned
# against their grid (issue 17), the CuPy example's profile/watch/tune/grid (issue 16), and the
# daemon's tuning throughput (issue 17). Each step has its own cap and writes under $OUT as it goes.
set -u
cd "$(dirname "$0")/.."
O=$OUT/b; . scripts/_gpu_env.sh; rm -f $O/env.txt  # printed above; $OUT brings back 8 files at most
export BENCH_GIT_COMMIT=${BENCH_GIT_COMMIT:-unknown}
timeout ${TVG_S:-300} python3 bench/tune_vs_grid.py --corpus .rw --examples examples/kernels \
  --only ${ORDER:-vector_add softmax transpose layernorm kernelbench_relu matmul} --out $O \
  --max-seconds $(( ${TVG_S:-300} - 60 )) --jobs 14 --tune-timeout ${TUNE_TO:-100} --rep-ms 50 > $O/tvg.log 2>&1
grep -v '^|' $O/tvg.log | grep -E "^==|tuned/grid" ; tail -9 $O/tvg.log
timeout ${CUDA_S:-170} python3 bench/cuda_gpu.py --targets examples/kernels/cupy_saxpy.py --out $O --budget 8 \
  --watch ${CUDA_WATCH:-1} > $O/cuda.log 2>&1
tail -12 $O/cuda.log | cut -c1-400
timeout ${THR_S:-110} python3 bench/throughput.py --paths daemon --examples vector_add,softmax --budget 12 \
  --out $O > $O/thr.log 2>&1
tail -8 $O/thr.log | cut -c1-400
ls -la $O
