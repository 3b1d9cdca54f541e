"""Parameters -> 2×2 blocks, their inverses, and the checks every public op applies to its arguments.

Blocks are (n, 2, 2) tensors ``[[a, b], [c, e]]`` in the parameter order of :mod:`goft.ops.pairing`.
"""

from __future__ import annotations

from typing import Optional

import torch

from .pairing import GivensError, SingularBlockError, num_blocks


def angles_to_blocks(theta: torch.Tensor) -> torch.Tensor:
    """Angles θ (n,) in radians -> rotation blocks (n, 2, 2) ``[[cos θ, -sin θ], [sin θ, cos θ]]`` (differentiable)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*theta.shape, 2, 2)


def blocks_of(params: torch.Tensor) -> torch.Tensor:
    """(n, 2, 2) blocks of validated params: angles (n,) made into rotations, blocks (n, 2, 2) as they are."""
    return angles_to_blocks(params) if params.dim() == 1 else params


def gradient_for(params: torch.Tensor, grad_blocks: torch.Tensor) -> torch.Tensor:
    """The gradient with respect to ``params`` of a loss whose gradient with respect to ``blocks_of(params)`` is
    ``grad_blocks`` (n, 2, 2): for angles, d/dθ of ``[[cos θ, -sin θ], [sin θ, cos θ]]`` contracted with it."""
    if params.dim() != 1:
        return grad_blocks
    g = grad_blocks
    return torch.cos(params) * (g[:, 1, 0] - g[:, 0, 1]) - torch.sin(params) * (g[:, 0, 0] + g[:, 1, 1])


def check_rows(x: torch.Tensor, name: str = "x") -> int:
    """Validate a tensor whose last dimension is rotated; returns that dimension ``d``."""
    if not isinstance(x, torch.Tensor):
        raise GivensError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise GivensError(f"{name} must have at least one dimension (the rotated one), got a 0-dim tensor")
    if not x.dtype.is_floating_point:
        raise GivensError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x.shape[-1]


def as_blocks(params: torch.Tensor, d: int, structure: str = "tree", depth: int = 1) -> torch.Tensor:
    """Validate ``params`` for dimension ``d`` and a pairing, and return (n, 2, 2) blocks (n = ``num_blocks``)."""
    check_params(params, d, structure, depth)
    return blocks_of(params)


def check_params(params: torch.Tensor, d: int, structure: str = "tree", depth: int = 1) -> None:
    """Raise GivensError unless ``params`` are (n,) angles or (n, 2, 2) blocks, n = ``num_blocks(d, ...)``."""
    if not isinstance(params, torch.Tensor):
        raise GivensError(f"params must be a torch.Tensor, got {type(params).__name__}")
    if not params.dtype.is_floating_point:
        raise GivensError(f"params must be a floating-point tensor, got dtype {params.dtype}")
    n = num_blocks(d, structure, depth)
    if params.shape in ((n,), (n, 2, 2)):
        return
    raise GivensError(
        f"params for d={d} ({structure}, depth {depth}) must have shape ({n},) (strict angles in radians) or "
        f"({n}, 2, 2) (quasi blocks), "
        f"got {tuple(params.shape)}"
    )


def check_scale(scale: Optional[torch.Tensor], d: int) -> None:
    if scale is None:
        return
    if not isinstance(scale, torch.Tensor) or not scale.dtype.is_floating_point:
        raise GivensError(f"scale must be a floating-point torch.Tensor of shape ({d},), got {scale!r}")
    if scale.shape != (d,):
        raise GivensError(f"scale must have shape ({d},), got {tuple(scale.shape)}")


def compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """fp32 at least (half and bfloat16 inputs accumulate in fp32); fp64 when any input is fp64."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def transpose_blocks(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.transpose(-1, -2)


def inverse_blocks(params: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """The blocks of R^{-1}'s levels: strict rotations invert by transposition, quasi blocks in closed form.

    Raises SingularBlockError for a (near-)singular or non-finite quasi block: one is refused when
    ``|det| <= 1000 · eps · ‖B‖_F²``, i.e. when its inverse would lose more than about three of the dtype's digits.
    """
    if params.dim() == 1:
        return transpose_blocks(blocks)
    a, b, c, e = blocks[..., 0, 0], blocks[..., 0, 1], blocks[..., 1, 0], blocks[..., 1, 1]
    det = a * e - b * c
    frob2 = a * a + b * b + c * c + e * e
    eps = torch.finfo(blocks.dtype).eps
    bad = ~torch.isfinite(det) | ~torch.isfinite(frob2) | (det.abs() <= 1000 * eps * frob2)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise SingularBlockError(
            f"block {k} is singular or not finite (det={float(det[k]):.3g}, block={blocks[k].tolist()}); "
            f"{int(bad.sum())} of {blocks.shape[0]} blocks cannot be inverted"
        )
    inverse = torch.stack([e, -b, -c, a], dim=-1).reshape(blocks.shape)
    return inverse / det[..., None, None]


def invertible_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``scale`` in ``dtype``, checked to be invertible: SingularBlockError for a zero or non-finite entry."""
    s = scale.to(dtype)
    bad = ~torch.isfinite(s) | (s == 0)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise SingularBlockError(f"scale[{k}] = {float(s[k])} cannot be inverted (zero or not finite)")
    return s


def block_orthogonality_penalty(params: torch.Tensor) -> torch.Tensor:
    """``Σ_k (a_k·b_k + c_k·e_k)²`` over (n, 2, 2) quasi blocks: the squared inner product of each block's columns.

    Strict angles (a 1-dim tensor) are orthogonal by construction and give an exact 0 (kept in the graph's dtype).
    """
    if params.dim() == 1:
        return params.new_zeros(())
    if params.dim() != 3 or params.shape[-2:] != (2, 2):
        raise GivensError(f"quasi blocks must have shape (n, 2, 2), got {tuple(params.shape)}")
    inner = params[:, 0, 0] * params[:, 0, 1] + params[:, 1, 0] * params[:, 1, 1]
    return (inner * inner).sum()
