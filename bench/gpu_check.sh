#!/bin/bash
# GPU check, one command, under 8 minutes: the Triton kernels' tests on the GPU; `goft bench --device cuda` per layer
# at d = 768, 4096 and 11008 in fp32 and bf16 (GOFT, qGOFT, the butterfly, LoRA r=8, OFT, BOFT, interleaved, with
# peak memory) and MiniLM's training step; then the training step of a decoder of Llama 3.2 1B's architecture (random
# weights, bf16) for GOFT, LoRA r=8 and OFT with peak memory; the kernels' tile shapes (bench/gpu_tiles.py); and the
# per-layer rows once more on the torch reference path.  Each step has a time limit; together at most 8 minutes.
# Logs and bench output go to $OUT (default ./gpu_out).  Expects python3 with CUDA torch and triton; wheels in .whl/
# (e.g. peft) are installed first.
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
# (the ahead-of-time compile test is for machines without a GPU: here the kernels compile for real)
timeout 120 python3 -m pytest -q tests/ops/test_cuda_triton.py -k "not compile_for_a_gpu" -p no:cacheprovider \
  -p no:warnings 2>&1 | tee "$OUT/test_cuda_triton.log"
timeout 180 python3 -m goft bench --device cuda --dims 768,4096,11008 --tokens 4096 --reps 20 \
  --dtypes float32,bfloat16 --methods goft,qgoft,goft_butterfly,lora_r8,oft,boft --e2e-models minilm \
  --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
timeout 90 python3 -m goft bench --device cuda --no-layers --e2e-models llama-1b --methods goft,lora_r8,oft \
  --reps 10 --no-merge --out "$OUT/bench_llama" 2>&1 | tee "$OUT/bench_llama.log"
timeout 60 python3 bench/gpu_tiles.py 768,4096 5 2>&1 | tee "$OUT/tiles.log"
GOFT_KERNEL=torch timeout 30 python3 -m goft bench --device cuda --dims 768,4096 --tokens 4096 --reps 10 \
  --methods goft,lora_r8 --no-merge --no-e2e --out "$OUT/bench_torch_path" 2>&1 | tee "$OUT/bench_torch_path.log"
