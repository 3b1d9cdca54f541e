"""Parameters to 2x2 blocks (goft.ops.blocks): the penalty; bad parameters, scales and singular blocks refused."""

import pytest
import torch
from rotations import (
    random_angles,
    random_quasi,
)

from goft import functional as givens


def test_unmerge_of_a_singular_quasi_block_is_refused():
    d = 5
    blocks = random_quasi(d)
    blocks[2] = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)  # rank 1
    w = torch.randn(3, d, dtype=torch.float64)
    with pytest.raises(givens.SingularBlockError, match="block 2 is singular"):
        givens.unmerge_weight(w, blocks)
    with pytest.raises(givens.SingularBlockError, match="block 2"):
        givens.rotate_inverse(w, blocks)


def test_near_singular_block_and_zero_scale_are_refused():
    d = 4
    blocks = random_quasi(d, torch.float32)
    blocks[0] = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-7]])
    with pytest.raises(givens.SingularBlockError):
        givens.unmerge_weight(torch.randn(2, d), blocks)
    scale = torch.ones(d)
    scale[3] = 0.0
    with pytest.raises(givens.SingularBlockError, match=r"scale\[3\]"):
        givens.unmerge_weight(torch.randn(2, d), random_angles(d, torch.float32), scale)


def test_penalty_formula():
    blocks = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.25]]], dtype=torch.float64)
    want = (1 * 2 + 3 * 4) ** 2 + (0.5 * -1.0 + 2.0 * 0.25) ** 2
    assert givens.block_orthogonality_penalty(blocks).item() == pytest.approx(want, rel=1e-15)
    rotations = givens.angles_to_blocks(random_angles(50))
    assert givens.block_orthogonality_penalty(rotations).item() <= 1e-28
    assert givens.block_orthogonality_penalty(random_angles(50)).item() == 0.0


def test_penalty_is_differentiable():
    blocks = random_quasi(6).requires_grad_()
    givens.block_orthogonality_penalty(blocks).backward()
    a, b, c, d = blocks.detach()[:, 0, 0], blocks.detach()[:, 0, 1], blocks.detach()[:, 1, 0], blocks.detach()[:, 1, 1]
    inner = a * b + c * d
    assert torch.allclose(blocks.grad[:, 0, 0], 2 * inner * b)
    assert torch.allclose(blocks.grad[:, 1, 1], 2 * inner * c)


@pytest.mark.parametrize(
    "params, message",
    [
        (torch.zeros(6), r"shape \(7,\) \(strict angles in radians\) or \(7, 2, 2\)"),
        (torch.zeros(7, 3, 3), r"got \(7, 3, 3\)"),
        (torch.zeros(7, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_params_name_the_allowed_shapes(params, message):
    with pytest.raises(givens.GivensError, match=message):
        givens.rotate(torch.zeros(2, 8), params)


def test_bad_scale_and_input():
    with pytest.raises(givens.GivensError, match=r"scale must have shape \(8,\)"):
        givens.rotate(torch.zeros(2, 8), torch.zeros(7), torch.ones(7))
    with pytest.raises(givens.GivensError, match="floating-point"):
        givens.rotate(torch.zeros(2, 8, dtype=torch.long), torch.zeros(7))
