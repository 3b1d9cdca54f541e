"""The authors' dense approach (goft.apps.dense_baseline), goft bench's baseline, rotates as GOFT does."""

import torch

from goft.apps import dense_baseline


def test_dense_reference_matches_goft_rotation():
    torch.manual_seed(0)
    base = torch.nn.Linear(12, 5)
    dense = dense_baseline.DenseGivensLinear(base)
    x = torch.randn(3, 12)
    theta = torch.pi * torch.tanh(dense.phi.detach())
    from goft import functional as givens

    assert torch.allclose(dense(x), base(givens.rotate(x, theta)), atol=1e-5)
