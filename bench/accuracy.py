"""Numerical accuracy of the Givens kernel in fp32: orthogonality of R, rotate vs dense, merge vs unmerged, unmerge.

Prints one JSON line per (d, variant).  Run: ``python bench/accuracy.py [--dims 768 4096]``.
Random angles are uniform in [-pi, pi] (far from the identity, the hard case); quasi blocks are rotations plus
N(0, 0.05) noise.
"""

import argparse
import json
import math
import platform

import torch

from goft import functional as givens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[768, 4096])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    for d in args.dims:
        theta = (torch.rand(d - 1, generator=g) * 2 - 1) * math.pi
        quasi = givens.angles_to_blocks((torch.rand(d - 1, generator=g) * 2 - 1) * math.pi)
        quasi = quasi + 0.05 * torch.randn(d - 1, 2, 2, generator=g)
        x = torch.randn(args.tokens, d, generator=g)
        w = torch.randn(d, d, generator=g) / math.sqrt(d)
        for variant, params in (("goft", theta), ("qgoft", quasi)):
            r64 = givens.rotation_matrix(params.double(), d)
            machine = platform.processor() or platform.machine()
            row = {"d": d, "variant": variant, "dtype": "float32", "machine": machine}
            if variant == "goft":
                r32 = givens.rotation_matrix(params, d)
                row["orth_err_max"] = (r32.T @ r32 - torch.eye(d)).abs().max().item()
                row["orth_err_bound_10d_eps"] = 10 * d * torch.finfo(torch.float32).eps
            y = givens.rotate(x, params)
            row["rotate_vs_fp64_dense_max_rel"] = (
                (y.double() - x.double() @ r64).abs().max() / (x.double() @ r64).abs().max()
            ).item()
            merged = givens.merge_weight(w, params)
            merged_out = x @ merged.T
            unmerged_out = givens.rotate(x, params) @ w.T
            row["merged_vs_unmerged_max_rel"] = (
                (merged_out - unmerged_out).abs().max() / unmerged_out.abs().max()
            ).item()
            restored = givens.unmerge_weight(merged, params)
            row["unmerge_restore_max_rel"] = ((restored - w).abs().max() / w.abs().max()).item()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
