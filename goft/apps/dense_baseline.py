"""The authors' dense approach to a Givens layer, kept only as ``goft bench``'s baseline."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional as givens


class DenseGivensLinear(nn.Module):
    """The authors' first approach: angles ``π·tanh(φ)``; each level built as a dense d×d matrix, the levels
    multiplied into R every step, then ``base(x @ R)``.  Only for benchmarking."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        d = base.in_features
        self.phi = nn.Parameter(torch.randn(d - 1) * 0.1)
        pairs = givens.givens_pairs(d)
        empty = torch.zeros(0, dtype=torch.long)
        self.register_buffer("rows_i", torch.cat([p[:, 0] for p in pairs]) if pairs else empty)
        self.register_buffer("rows_j", torch.cat([p[:, 1] for p in pairs]) if pairs else empty.clone())
        self.level_sizes = [len(p) for p in pairs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.base.in_features
        theta = math.pi * torch.tanh(self.phi)
        cos, sin = torch.cos(theta), torch.sin(theta)
        eye = torch.eye(d, device=x.device, dtype=x.dtype)
        r = eye
        start = 0
        for size in self.level_sizes:
            i, j = self.rows_i[start : start + size], self.rows_j[start : start + size]
            c, s = cos[start : start + size], sin[start : start + size]
            level = eye.index_put((i, i), c).index_put((j, j), c).index_put((i, j), -s).index_put((j, i), s)
            r = level @ r
            start += size
        return self.base(x @ r)


# "frozen" (the base layer alone) and "authors_dense" are bench-only; the others are run names of the registry.
