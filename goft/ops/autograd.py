"""The entry points of the math: ``rotate`` (differentiable), its inverse, merge and unmerge.

Each validates its arguments, picks one backend with :func:`goft.ops.backends.backend_for` and sweeps rows through it.
The convention is in :mod:`goft.ops.pairing`; :mod:`goft.functional` is the public face of these functions.
"""

from __future__ import annotations

from typing import Optional

import torch

from .backends import backend_for
from .blocks import (
    as_blocks,
    check_rows,
    check_scale,
    compute_dtype,
    inverse_blocks,
    invertible_scale,
    transpose_blocks,
)


def sweep_rows(rows: torch.Tensor, blocks: torch.Tensor, top_first: bool,
               scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A new (N, d) tensor: every row right-multiplied by all level matrices, then by ``diag(scale)`` (no autograd).

    ``blocks`` and ``scale`` are in the compute dtype; the result is in the compute dtype, or in ``rows``' dtype when
    the Triton backend read fp16/bf16 rows as they are.
    """
    return backend_for(rows, blocks.dtype).rotate_rows(rows, blocks, scale, top_first)


class RotateFunction(torch.autograd.Function):
    """``x @ (P_L ⋯ P_1 · diag(scale))`` over the last dim.

    Saves only ``x`` (the layer input, already alive in a network), the blocks and the scale; backward recomputes the
    level inputs from ``x`` rather than keeping per-level activations alive between forward and backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
        d = x.shape[-1]
        dtype = compute_dtype(x, blocks, scale)
        scale_c = None if scale is None else scale.to(dtype)
        rows = x.reshape(-1, d)
        out = backend_for(rows, dtype).rotate_rows(rows, blocks.to(dtype), scale_c, top_first=True)  # (N, d)
        ctx.save_for_backward(x, blocks, scale)
        return out.reshape(x.shape).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, blocks, scale = ctx.saved_tensors
        d = x.shape[-1]
        dtype = compute_dtype(x, blocks, scale)
        rows, grad = x.reshape(-1, d), grad_out.reshape(-1, d)
        scale_c = None if scale is None else scale.to(dtype)
        need_blocks, need_scale = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_rows, grad_blocks, grad_scale = backend_for(rows, dtype).rotate_rows_backward(
            rows, grad, blocks.to(dtype), scale_c, need_blocks, need_scale
        )
        grad_x = grad_rows.reshape(x.shape).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_blocks = None if grad_blocks is None else grad_blocks.to(blocks.dtype)
        grad_scale = None if grad_scale is None else grad_scale.to(scale.dtype)
        return grad_x, grad_blocks, grad_scale


def _checked(rows: torch.Tensor, name: str, params: torch.Tensor, scale: Optional[torch.Tensor]):
    """Validate the arguments of a no-grad op; returns (d, blocks, compute dtype)."""
    d = check_rows(rows, name)
    blocks = as_blocks(params, d)
    check_scale(scale, d)
    return d, blocks, compute_dtype(rows, blocks, scale)


def rotate(x: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ R`` over the last dimension of ``x`` (any leading shape), without forming R.

    Args:
        x: (..., d) input; fp16/bf16 inputs are computed in fp32 and returned in their own dtype.
        params: (d - 1,) angles in radians (strict GOFT) or (d - 1, 2, 2) blocks ``[[a, b], [c, e]]`` (qGOFT).
        scale: optional (d,) GOFT* scaling, ``R = P_L ⋯ P_1 · diag(scale)``.

    Differentiable in ``x``, ``params`` and ``scale`` (first order).
    """
    d = check_rows(x)
    blocks = as_blocks(params, d)
    check_scale(scale, d)
    return RotateFunction.apply(x, blocks, scale)


@torch.no_grad()
def rotate_inverse(y: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y @ R^{-1}``, the exact inverse of :func:`rotate` (not differentiable).

    ``R^{-1} = diag(1/scale) · P_1^{-1} ⋯ P_L^{-1}``: strict levels invert by transposition (negated angles), quasi
    blocks by their closed-form 2×2 inverse.  Raises :class:`SingularBlockError` for a (near-)singular block and
    :class:`GivensError` for a zero or non-finite scale.
    """
    d, blocks, dtype = _checked(y, "y", params, scale)
    buf = y.reshape(-1, d).to(dtype)
    if scale is not None:
        buf = buf / invertible_scale(scale, dtype)
    inverse = inverse_blocks(params, blocks.to(dtype))
    return sweep_rows(buf, inverse, top_first=False).reshape(y.shape).to(y.dtype)


@torch.no_grad()
def merge_weight(weight: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``W @ R.T`` for a torch-layout weight W (out, d): the weight that computes ``base(x @ R)`` in one matmul.

    ``W @ R.T = W · diag(s) · P_1^T ⋯ P_L^T``, applied as level updates on W's columns (no d×d product).
    Returns a new tensor in W's dtype (computed in at least fp32); W itself is not modified.
    """
    d, blocks, dtype = _checked(weight, "weight", params, scale)
    buf = weight.reshape(-1, d).to(dtype)
    if scale is not None:
        buf = buf * scale.to(dtype)
    out = sweep_rows(buf, transpose_blocks(blocks.to(dtype)), top_first=False)
    return out.reshape(weight.shape).to(weight.dtype)


@torch.no_grad()
def unmerge_weight(weight: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The exact inverse of :func:`merge_weight`: ``W @ R^{-T} = W · P_L^{-T} ⋯ P_1^{-T} · diag(1/s)``.

    Raises :class:`SingularBlockError` (a ``ValueError``) before computing anything if a block or scale entry cannot
    be inverted.  Returns a new tensor; W is not modified.
    """
    d, blocks, dtype = _checked(weight, "weight", params, scale)
    inv_scale = None if scale is None else 1.0 / invertible_scale(scale, dtype)
    inverse = inverse_blocks(params, blocks.to(dtype))
    out = sweep_rows(weight.reshape(-1, d).to(dtype), transpose_blocks(inverse), top_first=True)
    if inv_scale is not None:
        out.mul_(inv_scale)
    return out.reshape(weight.shape).to(weight.dtype)
