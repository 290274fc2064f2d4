# Sourced by the scripts/gpu_*.sh drivers: the carried wheels (the GPU machine has no network)
# on the path, unbuffered output, and $O/env.txt naming the device and versions. Set O first.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
mkdir -p "$O"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader
  command -v nvcc && nvcc --version | tail -2
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$O/env.txt" 2>&1
cat "$O/env.txt"
