"""Tile shapes of the Triton kernels, measured: forward+backward of one rotation (4096 tokens, fp32) at each d, for
rows per program (BM ×½, ×1, ×2 of ``tile_rows``) × backward programs per SM (1, 2, 4, 8), and for 4, 8 or 16
warps, timed with torch.utils.benchmark, interleaved (each new BM or warps compiles the kernels once, first).
Prints the fastest settings first per d, so that ``cuda_triton.planning.tile_rows``, ``Launch.warps`` and
``PROGRAMS_PER_SM`` can be set from a measured table.
Usage (on a GPU): python bench/gpu_tiles.py [dims, default 768,4096] [reps, default 10]"""

import itertools
import statistics
import sys

import torch
from torch.utils import benchmark

from goft import functional as givens
from goft.ops import cuda_triton as T

dims = [int(v) for v in sys.argv[1].split(",")] if len(sys.argv) > 1 else [768, 4096]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
device = torch.device("cuda")
default_tile_rows, default_warps = T.planning.tile_rows, T.Launch.warps
# (BM factor, warps or None for the default, backward programs per SM)
settings = [*itertools.product((0.5, 1, 2), (None,), (1, 2, 4, 8)), *((1, w, 4) for w in (4, 8, 16))]
print(torch.cuda.get_device_name(device), "torch", torch.__version__)
for d, dtype in itertools.product(dims, (torch.float32,)):
    x = torch.randn(4096, d, device=device, dtype=dtype, requires_grad=True)
    theta = torch.randn(givens.num_blocks(d), device=device, requires_grad=True)
    times = {s: [] for s in settings}
    for _ in range(reps):
        for setting in settings:
            factor, warps, per_sm = setting
            T.planning.tile_rows = lambda width, f=factor: max(1, int(default_tile_rows(width) * f))  # noqa: E731
            T.Launch.warps = lambda self, w=warps: w or default_warps(self)
            T.planning.PROGRAMS_PER_SM = per_sm
            T.planning.programs_per_launch.cache_clear()
            timer = benchmark.Timer(
                stmt="givens.rotate(x, theta).sum().backward()", globals={"givens": givens, "x": x, "theta": theta}
            )
            try:
                times[setting].append(timer.timeit(3).median)
            except Exception as error:  # e.g. too many registers for a setting: say so and go on
                times[setting].append(float("inf"))
                print(f"d={d} {dtype} {setting}: {type(error).__name__}: {str(error)[:120]}")
    ranked = sorted(times, key=lambda s: statistics.median(times[s]))
    for setting in ranked[:8]:
        factor, warps, per_sm = setting
        print(
            f"d={d} {str(dtype)[6:]}: BM x{factor} warps {warps or 'default'} programs/SM {per_sm}: "
            f"{statistics.median(times[setting]) * 1e3:.3f} ms [{min(times[setting]) * 1e3:.3f}–"
            f"{max(times[setting]) * 1e3:.3f}]"
        )
    T.planning.tile_rows, T.Launch.warps = default_tile_rows, default_warps
