#!/usr/bin/env bash
# Issue 17 figures in one GPU call: `profd tune` from the CLI on the real-world corpus and the
# bundled examples against the exhaustive grid (bench/tune_vs_grid.py), within BENCH_DEADLINE_S.
# Needs the materialized corpus in .rw/ (python bench/realworld/materialize.py .rw) and the
# wheels profd needs in .whl/ (carried: the GPU machine has no network). Results: $OUT/tvg.tar.gz.
set -u
cd "$(dirname "$0")/.."
O=/tmp/tvg; . scripts/_gpu_env.sh
ORDER=${ORDER:-"liger_layer_norm unsloth_swiglu liger_rms_norm fla_softmax liger_cross_entropy unsloth_geglu \
unsloth_cross_entropy liger_softmax vector_add softmax transpose layernorm kernelbench_relu fla_matmul \
flaggems_log_softmax liger_swiglu liger_geglu matmul"}
timeout $(( ${BENCH_DEADLINE_S:-540} + 20 )) python3 bench/tune_vs_grid.py --corpus .rw --examples examples/kernels \
  --only $ORDER --out $O --max-seconds $(( ${BENCH_DEADLINE_S:-540} - 90 )) --jobs 14 --tune-timeout 150 \
  ${TVG_ARGS:-} 2>&1 | tee $O/tvg.log | grep -v "^|"
tail -25 $O/tvg.log
tar -C /tmp -czf "$OUT/tvg.tar.gz" tvg
