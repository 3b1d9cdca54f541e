"""Probe of the end-to-end MiniLM step on a GPU, stage by stage (each stage's time printed as it ends), so that a slow
compile or a slow step shows where it is.  Usage: python bench/gpu_e2e_probe.py [methods]"""

import sys
import time

import torch

from goft.apps import bench

methods = sys.argv[1].split(",") if len(sys.argv) > 1 else ["lora_r8", "goft", "qgoft", "oft"]
device = torch.device("cuda")
for method in methods:
    start = time.perf_counter()
    rows = bench.bench_e2e(device, reps=10, batch=16, seq_len=128, methods=[method])
    wall = time.perf_counter() - start
    print(f"{method}: {rows[0]['seconds'] * 1e3:.2f} ms per step (median of 10), stage wall {wall:.1f} s", flush=True)
print("interleaved:", flush=True)
for row in bench.bench_e2e(device, reps=20, batch=16, seq_len=128, methods=methods):
    print(f"  {row['method']}: {row['seconds'] * 1e3:.2f} ms, vs LoRA r=8 {row.get('ratio_to_lora_r8')}", flush=True)
