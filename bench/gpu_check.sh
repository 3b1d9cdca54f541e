#!/bin/bash
# GPU check, one short script: the Triton kernels' tests on a real GPU, then `goft bench --device cuda` (Triton
# kernels) and the same layers on the torch reference path for comparison.  Logs and bench output go to $OUT
# (default ./gpu_out).  Expects python3 with CUDA torch and triton; wheels in .whl/ (e.g. peft) are installed first.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton, peft, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'peft', peft.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
timeout 240 python3 -m pytest -q tests/test_ops_cuda_triton.py -p no:cacheprovider -p no:warnings 2>&1 | tee "$OUT/test_ops_cuda_triton.log"
timeout 180 python3 -m goft bench --device cuda --dims 768,4096 --tokens 4096 --reps 20 --dense-max-d 1024 \
  --methods goft,qgoft,goft_scaling,goft_butterfly,goft_tree_depth2,lora_r8,oft,authors_dense --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
GOFT_KERNEL=torch timeout 90 python3 -m goft bench --device cuda --dims 768,4096 --tokens 4096 --reps 20 \
  --methods goft,qgoft,lora_r8 --no-merge --no-e2e --out "$OUT/bench_torch_path" 2>&1 | tee "$OUT/bench_torch_path.log"
