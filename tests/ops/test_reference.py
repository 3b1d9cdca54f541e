"""The pure-torch reference (goft.ops.reference): the dense R against a construction written independently."""

import pytest
import torch
from rotations import (
    naive_dense,
    variants,
)

from goft import functional as givens


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 8, 12, 33])
def test_rotation_matrix_matches_naive_construction(d):
    for _, params, scale in variants(d):
        assert torch.allclose(
            givens.rotation_matrix(params, d, scale), naive_dense(params, d, scale), atol=1e-13, rtol=0
        )
