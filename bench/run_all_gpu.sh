#!/usr/bin/env bash
# Run profd's benchmarks on a GPU machine in one call (no network, no `pip install -e .`).
#
#   bash bench/run_all_gpu.sh                      # every step, cheap ones first, within $BENCH_DEADLINE_S
#   bash bench/run_all_gpu.sh tuning               # only the named steps (any of the five below)
#
# Steps, in this order (the combined run uses reduced settings; each script also runs alone
# with its full defaults, see bench/README.md):
#   precision   timing_precision.py  10 runs each of vector_add and matmul, 20 identical candidates   ~1-1.5 min
#   throughput  throughput.py        4 small kernels, profd tune CLI + daemon --tune 12, fresh cache  ~2-3 min
#   overhead    overhead.py          --minutes 1 (the full question asks for 5) after the start-up scan ~1.5 min
#   latency     latency.py           --saves 3 --examples vector_add,softmax,matmul, counters on    ~1.5-2.5 min
#   tuning      tuning_quality.py    budget 24, all six examples, resumable, gets the time left      ~6-7 min alone
# Everything together does not fit one 10-minute call: tuning_quality starts only the examples the
# time left allows and records them; run `bash bench/run_all_gpu.sh tuning` in a second call, with the
# first call's bench/results/tuning_quality-*.json in the working tree, to finish the rest.
#
# Environment: BENCH_DEADLINE_S (default 560: seconds for the whole call), BENCH_GIT_COMMIT (the
# commit being measured, recorded in the JSON when the tree has no .git), OUT (results are also
# copied there, with one log per step), PYTHON (default python3).
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
DEADLINE=${BENCH_DEADLINE_S:-560}
PY=${PYTHON:-python3}
RES=bench/results
mkdir -p "$RES"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/logs"; fi

PP="$PWD"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && PP="/tmp/site:$PP"
fi
export PYTHONPATH="$PP${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "== $(date -u +%FT%TZ) profd bench on $(hostname); deadline ${DEADLINE}s"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,temperature.gpu --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
"$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
"$PY" -c "import watchdog" 2>/dev/null || echo "WARNING: watchdog not importable: latency/overhead will record an error (carry the wheel in .whl/)"

STEPS=("$@")
if [ ${#STEPS[@]} -eq 0 ]; then STEPS=(precision throughput overhead latency tuning); fi

copy_out() {
  if [ -n "${OUT:-}" ]; then cp -f "$RES"/*.json "$OUT"/ 2>/dev/null || true; fi
}

# run NAME CAP_S SCRIPT ARGS...: at most CAP_S seconds and never past the deadline.
run() {
  local name=$1 cap=$2 script=$3; shift 3
  local now left lim rc t0
  now=$(date +%s); left=$((DEADLINE - (now - START) - 5))
  if [ "$left" -lt 30 ]; then echo "== $name: SKIPPED (only ${left}s left of the ${DEADLINE}s deadline)"; return; fi
  lim=$cap; if [ "$left" -lt "$lim" ]; then lim=$left; fi
  echo "== $name: $script $* (limit ${lim}s, $((now - START))s elapsed)"
  t0=$(date +%s)
  local log=/dev/null
  if [ -n "${OUT:-}" ]; then log="$OUT/logs/$name.log"; fi
  timeout -k 15 "$lim" "$PY" "bench/$script" --out "$RES" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $(( $(date +%s) - t0 ))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  copy_out
}

for step in "${STEPS[@]}"; do
  case "$step" in
    precision)  run precision 180 timing_precision.py ;;
    throughput) run throughput 300 throughput.py ;;
    overhead)   run overhead 200 overhead.py --minutes 1 ;;
    latency)    run latency 180 latency.py --saves 3 --examples vector_add,softmax,matmul ;;
    tuning)
      now=$(date +%s); left=$((DEADLINE - (now - START) - 25))
      run tuning 600 tuning_quality.py --max-seconds "$left" ;;
    *) echo "unknown step '$step' (precision throughput overhead latency tuning)"; exit 2 ;;
  esac
done
copy_out
echo "== done in $(( $(date +%s) - START ))s; results in $RES${OUT:+ and $OUT}"
ls -1 "$RES"/*.json 2>/dev/null | tail -n 12
