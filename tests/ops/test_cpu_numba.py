"""The fused CPU kernels (goft.ops.cpu_numba) against the reference, around their tile of rows."""

import pytest
import torch
from rotations import (
    KERNELS,
    random_quasi,
    random_scale,
    use_kernel,
)

from goft import functional as givens


@pytest.mark.parametrize("rows", [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 95])
def test_row_counts_around_the_kernel_tile(kernel, rows):
    d = 13
    x = torch.randn(rows, d, dtype=torch.float64, requires_grad=True)
    params = random_quasi(d).requires_grad_()
    scale = random_scale(d).requires_grad_()
    g = torch.randn(rows, d, dtype=torch.float64)
    (givens.rotate(x, params, scale) * g).sum().backward()
    r = givens.rotation_matrix(params.detach(), d, scale.detach())
    assert torch.allclose(x.grad, g @ r.T, atol=1e-12, rtol=0)
    if rows == 0:
        assert params.grad.abs().max() == 0 and scale.grad.abs().max() == 0


def test_both_backends_agree_fp32():
    d = 768
    x = torch.randn(40, d, requires_grad=True)
    params = random_quasi(d, torch.float32).requires_grad_()
    g = torch.randn(40, d)
    results = {}
    for name in KERNELS:
        with use_kernel(name):
            x.grad = params.grad = None
            y = givens.rotate(x, params)
            (y * g).sum().backward()
            results[name] = (y.detach(), x.grad.clone(), params.grad.clone())
    for a, b in zip(results["torch"], results[KERNELS[-1]], strict=True):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item(), rtol=0)
