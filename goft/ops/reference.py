"""The pure-torch backend: level updates on strided views (see :mod:`goft.ops.pairing`), and the dense R.

It runs on any device and dtype and is the reference the compiled backends are tested against.  Its rows functions
share one signature with :mod:`goft.ops.cpu_numba` and :mod:`goft.ops.cuda_triton`: ``rows`` (N, d) in any float
dtype, ``blocks`` (d - 1, 2, 2) and ``scale`` (d,) or None in the compute dtype, which is also the result's dtype.
"""

from __future__ import annotations

from typing import Optional

import torch

from .blocks import as_blocks, check_scale, compute_dtype, transpose_blocks
from .pairing import givens_levels, givens_pairs


def level_views(buf: torch.Tensor, step: int, npairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right members of a level's pairs: two strided views (..., npairs) of ``buf``'s last dimension."""
    end = 2 * npairs * step
    return buf[..., 0:end:2 * step], buf[..., step:end:2 * step]


def mix(left: torch.Tensor, right: torch.Tensor, blocks: torch.Tensor) -> None:
    """In place: ``(left, right) <- (a·left + c·right, b·left + e·right)``, i.e. ``[left, right] @ block`` per pair.

    left, right: (..., npairs) views; blocks: (npairs, 2, 2).
    """
    a, b, c, e = blocks[:, 0, 0], blocks[:, 0, 1], blocks[:, 1, 0], blocks[:, 1, 1]
    new_left = torch.addcmul(left * a, right, c)
    new_right = torch.addcmul(left * b, right, e)
    left.copy_(new_left)
    right.copy_(new_right)


def sweep(buf: torch.Tensor, blocks: torch.Tensor, top_first: bool) -> None:
    """Right-multiply the rows of ``buf`` (..., d) by every level matrix, in place.

    ``top_first=True`` applies P_L first (``buf @ P_L @ ... @ P_1``); ``False`` applies P_1 first.
    """
    levels = givens_levels(buf.shape[-1])
    for step, npairs, offset in reversed(levels) if top_first else levels:
        left, right = level_views(buf, step, npairs)
        mix(left, right, blocks[offset:offset + npairs])


def rotate_rows(rows: torch.Tensor, blocks: torch.Tensor, scale: Optional[torch.Tensor],
                top_first: bool) -> torch.Tensor:
    """A new (N, d) tensor: every row times all level matrices (P_L first when ``top_first``), then ``diag(scale)``."""
    out = rows.to(blocks.dtype, copy=True)
    sweep(out, blocks, top_first=top_first)
    if scale is not None:
        out.mul_(scale)
    return out


def rotate_rows_backward(rows, grad, blocks, scale, need_blocks: bool, need_scale: bool):
    """The backward of ``rotate_rows(rows, blocks, scale, top_first=True)`` for the output gradient ``grad`` (N, d).

    Recomputes the forward keeping each level's input pairs (transient: ≈ 2 copies of the touched coordinates), then
    walks the levels back.  Returns (grad_rows, grad_blocks or None, grad_scale or None) in the compute dtype.
    """
    levels = givens_levels(rows.shape[-1])
    buf = rows.to(blocks.dtype, copy=True)
    level_inputs = []
    for step, npairs, offset in reversed(levels):
        left, right = level_views(buf, step, npairs)
        if need_blocks:
            level_inputs.append((left.clone(), right.clone()))
        mix(left, right, blocks[offset:offset + npairs])

    grad = grad.to(blocks.dtype, copy=True)  # becomes the input gradient, in place
    grad_scale = None
    if scale is not None:
        if need_scale:
            grad_scale = (grad * buf).sum(0)
        grad.mul_(scale)

    grad_blocks = torch.zeros_like(blocks) if need_blocks else None
    for step, npairs, offset in levels:  # P_1 was applied last: walk back from it
        g_left, g_right = level_views(grad, step, npairs)
        if need_blocks:
            in_left, in_right = level_inputs.pop()
            # out_q = sum_p in_p B_pq, so dB_pq = sum over rows of in_p * g_q
            gb = grad_blocks[offset:offset + npairs]
            gb[:, 0, 0] = torch.linalg.vecdot(in_left, g_left, dim=0)
            gb[:, 0, 1] = torch.linalg.vecdot(in_left, g_right, dim=0)
            gb[:, 1, 0] = torch.linalg.vecdot(in_right, g_left, dim=0)
            gb[:, 1, 1] = torch.linalg.vecdot(in_right, g_right, dim=0)
        mix(g_left, g_right, transpose_blocks(blocks[offset:offset + npairs]))  # level input grad: g @ B^T
    return grad, grad_blocks, grad_scale


def rotation_matrix(params: torch.Tensor, d: int, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The dense d×d ``R = P_L ⋯ P_1 (· diag(scale))``, built level by level.  For tests and checks, not training."""
    blocks = as_blocks(params, d)
    check_scale(scale, d)
    dtype = compute_dtype(blocks, scale)
    eye = torch.eye(d, dtype=dtype, device=blocks.device)
    r = eye
    for (_step, npairs, offset), pairs in zip(givens_levels(d), givens_pairs(d), strict=True):
        i, j = pairs[:, 0].to(blocks.device), pairs[:, 1].to(blocks.device)
        block = blocks[offset:offset + npairs].to(dtype)
        p = eye.clone()
        p[i, i], p[i, j], p[j, i], p[j, j] = block[:, 0, 0], block[:, 0, 1], block[:, 1, 0], block[:, 1, 1]
        r = p @ r  # R = P_L ⋯ P_1: each new level multiplies from the left
    if scale is not None:
        r = r * scale.to(dtype)[None, :]
    return r
