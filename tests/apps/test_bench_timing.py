"""How goft bench measures (goft.apps.bench_timing): the bytes autograd saves."""

import torch

from goft.apps import bench_timing


def test_saved_bytes_counts_distinct_storages_but_not_the_input():
    x = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(32, 32, requires_grad=True)
    # x @ w saves x (excluded) and w (32*32*4 bytes); tanh saves its 64x32 output
    n = bench_timing.saved_bytes(lambda: torch.tanh(x @ w).sum().backward(), exclude=x)
    assert n == 32 * 32 * 4 + 64 * 32 * 4
