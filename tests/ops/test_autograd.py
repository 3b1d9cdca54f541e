"""The custom operators (goft.ops.autograd): gradients against autograd through the dense R, what backward saves."""

import pytest
import torch
from rotations import (
    random_angles,
    random_quasi,
    random_scale,
    variants,
)

from goft import functional as givens


@pytest.mark.parametrize("d", [2, 3, 5, 8, 12])
def test_gradcheck_all_variants(d, kernel):
    x = torch.randn(3, 2, d, dtype=torch.float64, requires_grad=True)
    for name, params, scale in variants(d):
        params = params.clone().requires_grad_()
        if scale is None:
            assert torch.autograd.gradcheck(givens.rotate, (x, params)), name
        else:
            scale = scale.clone().requires_grad_()
            assert torch.autograd.gradcheck(givens.rotate, (x, params, scale)), name


def test_gradients_match_autograd_through_dense_R(kernel):
    d = 768
    x = torch.randn(6, d, dtype=torch.float64)
    for name, params, scale in variants(d):
        p1 = params.clone().requires_grad_()
        s1 = None if scale is None else scale.clone().requires_grad_()
        x1 = x.clone().requires_grad_()
        g = torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
        (givens.rotate(x1, p1, s1) * g).sum().backward()
        p2 = params.clone().requires_grad_()
        s2 = None if scale is None else scale.clone().requires_grad_()
        x2 = x.clone().requires_grad_()
        (x2 @ givens.rotation_matrix(p2, d, s2) * g).sum().backward()
        assert torch.allclose(x1.grad, x2.grad, atol=1e-11, rtol=0), name
        assert torch.allclose(p1.grad, p2.grad, atol=1e-10, rtol=1e-10), name
        if s1 is not None:
            assert torch.allclose(s1.grad, s2.grad, atol=1e-10, rtol=1e-10), name


@pytest.mark.parametrize("ordered", [False, True])
def test_backward_saves_only_the_input_and_parameters(kernel, ordered):
    """The performance model: no per-level activations are kept between forward and backward, and a coordinate
    order keeps no gathered copy of the input either."""
    d, n = 64, 32
    order = torch.tensor(givens.random_order(d, 0)) if ordered else None
    x = torch.randn(n, d, requires_grad=True)
    params = random_quasi(d, torch.float32).requires_grad_()
    scale = random_scale(d, torch.float32).requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        givens.rotate(x, params, scale, order=order)
    activation_sized = [t for t in saved if t.numel() >= n * d]
    assert len(activation_sized) == 1  # x itself, seen as (N, d) rows: a view, no new memory
    assert activation_sized[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_no_grad_for_frozen_params_still_gives_input_grad(kernel):
    d = 9
    x = torch.randn(2, d, dtype=torch.float64, requires_grad=True)
    params = random_angles(d)  # does not require grad
    givens.rotate(x, params).sum().backward()
    r = givens.rotation_matrix(params, d)
    assert torch.allclose(x.grad, r.sum(1).expand(2, d), atol=1e-13, rtol=0)
