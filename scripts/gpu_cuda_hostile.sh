#!/usr/bin/env bash
# Issues 14, 15 and 16 figures in one GPU call (results: $OUT/ch.tar.gz):
#   1. bench/hostile_gpu.py: the GPU-only attacks on the judge (side streams, patched CUDA events);
#   2. bench/kernelbench_memory.py on KernelBench's level-1 RMSNorm at full size (.kb/36_RMSNorm_.py);
#   3. bench/cuda_gpu.py on the CUDA examples and KernelBench's tiled-matmul solution
#      (.kb/kb_tiled_matmul.py, from bench/kernelbench_cuda.py), as time allows.
# Needs .whl (openai, watchdog, ...) and .kb carried: the machine has no network.
set -u
cd "$(dirname "$0")/.."
O=/tmp/ch; . scripts/_gpu_env.sh
START=$(date +%s)
# What runs, every 15 s: a step that stalls says where.
( while sleep 15; do echo "== $(( $(date +%s) - START )) s"; ps -eo pid,etimes,pcpu,rss,args --forest \
    | grep -v "ps -eo\|sleep 15\|grep" | cut -c1-220 | tail -25; done ) > $O/ps.log 2>&1 &
PS_LOOP=$!
if [ "${SKIP_HOSTILE:-0}" != 1 ]; then
  timeout 150 python3 bench/hostile_gpu.py --out $O/hostile > $O/hostile.log 2>&1; echo "hostile_gpu rc=$?"
  tail -30 $O/hostile/hostile-gpu.md 2>/dev/null || tail -20 $O/hostile.log
fi
if [ "${SKIP_KBMEM:-0}" != 1 ] && [ -f .kb/36_RMSNorm_.py ]; then
  timeout 150 python3 bench/kernelbench_memory.py --problem .kb/36_RMSNorm_.py --out $O/kbmem --timeout 130 > $O/kbmem.log 2>&1
  echo "kernelbench_memory rc=$?"; tail -12 $O/kbmem.log
fi
LEFT=$(( ${BENCH_DEADLINE_S:-540} - ($(date +%s) - START) ))
echo "cuda bench with ${LEFT}s left"
timeout $(( LEFT > 30 ? LEFT - 15 : 15 )) python3 bench/cuda_gpu.py --out $O/cuda --max-seconds $(( LEFT - 200 )) \
  --budget ${CUDA_BUDGET:-8} ${CUDA_ARGS:-} --targets ${CUDA_TARGETS:-examples/kernels/cuda_matmul.py .kb/kb_tiled_matmul.py \
  examples/kernels/cuda_reduce.py examples/kernels/kernelbench_cuda_add.py} > $O/cuda.log 2>&1
echo "cuda_gpu rc=$?"; grep -v "^ *$" $O/cuda.log | tail -20
kill $PS_LOOP 2>/dev/null
tar -C /tmp -czf "$OUT/ch.tar.gz" ch
