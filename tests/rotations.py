"""Helpers the rotation tests share: the kernels to run under, sizes, random parameters, dense references written
independently of the library (as toys.py is for models)."""

import contextlib
import math
import os

import torch

from goft import functional as givens
from goft.ops import backends

KERNELS = ["torch"] + (["numba"] if backends.numba_backend() is not None else [])
SIZES = [1, 2, 3, 5, 7, 8, 12, 768]
EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


@contextlib.contextmanager
def use_kernel(name):
    old = os.environ.get("GOFT_KERNEL")
    os.environ["GOFT_KERNEL"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["GOFT_KERNEL"]
        else:
            os.environ["GOFT_KERNEL"] = old


def reference_pairs(d):
    """The pairing exactly as DESIGN.md §1 writes it."""
    levels = []
    cnt, step = d, 1
    while cnt > 1:
        npairs = cnt // 2
        levels.append([(i, i + step) for i in range(0, npairs * 2 * step, 2 * step)])
        cnt, step = npairs + cnt % 2, step * 2
    return levels


def random_quasi(d, dtype=torch.float64, noise=0.1, seed=0):
    """Near-orthogonal, well-conditioned quasi blocks: rotations plus noise."""
    g = torch.Generator().manual_seed(seed)
    theta = (torch.rand(d - 1, generator=g, dtype=dtype) * 2 - 1) * math.pi
    return givens.angles_to_blocks(theta) + noise * torch.randn(d - 1, 2, 2, generator=g, dtype=dtype)


def random_angles(d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(d - 1, generator=g, dtype=dtype) * 2 - 1) * math.pi).to(dtype)


def random_scale(d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + torch.rand(d, generator=g, dtype=dtype)


def variants(d, dtype=torch.float64):
    """(name, params, scale) for strict, quasi, strict+scaling, quasi+scaling."""
    return [
        ("strict", random_angles(d, dtype), None),
        ("quasi", random_quasi(d, dtype), None),
        ("strict+scale", random_angles(d, dtype, seed=1), random_scale(d, dtype)),
        ("quasi+scale", random_quasi(d, dtype, seed=2), random_scale(d, dtype, seed=3)),
    ]


def dense_product(params, d, levels, scale=None):
    """R = P_M ⋯ P_1 (· diag(scale)) as a product of dense level matrices, for pairs given level by level; written
    independently of the library."""
    blocks = givens.angles_to_blocks(params) if params.dim() == 1 else params
    r, k = torch.eye(d, dtype=torch.float64), 0
    for level in levels:
        p = torch.eye(d, dtype=torch.float64)
        for i, j in level:
            (a, b), (c, e) = blocks[k].tolist()
            p[i, i], p[i, j], p[j, i], p[j, j] = a, b, c, e
            k += 1
        r = p @ r
    assert k == blocks.shape[0]
    return r if scale is None else r @ torch.diag(scale.to(torch.float64))


def naive_dense(params, d, scale=None):
    """R = P_L ⋯ P_1 from the reference pairing."""
    return dense_product(params, d, reference_pairs(d), scale)
