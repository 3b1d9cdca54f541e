"""The pure-torch backend: level updates on strided views or gathered pairs (see :mod:`goft.ops.pairing`), and the
dense R.

It runs on any device and dtype and is the reference the compiled backends are tested against.  Its rows functions
share one signature with :mod:`goft.ops.cpu_numba` and :mod:`goft.ops.cuda_triton`: ``rows`` (N, d) in any float
dtype; ``params``, the blocks as strict angles (n,) (each block a rotation) or as (n, 2, 2) matrices, and ``scale``
(d,) or None, in the compute dtype, which is also the result's dtype; and the pairing as ``structure, depth``.  A
backward returns the gradient of ``params`` in their own form.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from .blocks import as_blocks, blocks_of, check_scale, compute_dtype, gradient_for, transpose_blocks
from .pairing import Level, check_order, level_table


@functools.cache
def _level_index(level: Level, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A level's left and right coordinates as index tensors on ``device`` (made once per level and device)."""
    return (
        torch.tensor(level.left, dtype=torch.long, device=device),
        torch.tensor(level.right, dtype=torch.long, device=device),
    )


def level_members(buf: torch.Tensor, level: Level) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right members of a level's pairs, (..., npairs) each: strided views of ``buf``'s last dimension
    when the level is strided, gathered copies otherwise (write them back with :func:`store_members`)."""
    if level.strided is not None:
        start, stride, gap = level.strided
        end = start + stride * (level.npairs - 1) + 1
        return buf[..., start:end:stride], buf[..., start + gap : end + gap : stride]
    left, right = _level_index(level, buf.device)
    return buf[..., left], buf[..., right]


def store_members(buf: torch.Tensor, level: Level, left: torch.Tensor, right: torch.Tensor) -> None:
    """Write a non-strided level's updated members back into ``buf`` (strided members are views: nothing to do)."""
    if level.strided is None:
        left_index, right_index = _level_index(level, buf.device)
        buf[..., left_index] = left
        buf[..., right_index] = right


def mix(left: torch.Tensor, right: torch.Tensor, blocks: torch.Tensor) -> None:
    """In place: ``(left, right) <- (a·left + c·right, b·left + e·right)``, i.e. ``[left, right] @ block`` per pair.

    left, right: (..., npairs); blocks: (npairs, 2, 2).
    """
    a, b, c, e = blocks[:, 0, 0], blocks[:, 0, 1], blocks[:, 1, 0], blocks[:, 1, 1]
    new_left = torch.addcmul(left * a, right, c)
    new_right = torch.addcmul(left * b, right, e)
    left.copy_(new_left)
    right.copy_(new_right)


def mix_level(buf: torch.Tensor, level: Level, blocks: torch.Tensor) -> None:
    """Right-multiply the rows of ``buf`` (..., d) by one level matrix, in place; ``blocks`` are all the blocks."""
    left, right = level_members(buf, level)
    mix(left, right, blocks[level.offset : level.offset + level.npairs])
    store_members(buf, level, left, right)


def sweep(buf: torch.Tensor, blocks: torch.Tensor, top_first: bool, structure: str = "tree", depth: int = 1) -> None:
    """Right-multiply the rows of ``buf`` (..., d) by every level matrix, in place.

    ``top_first=True`` applies P_M first (``buf @ P_M @ ... @ P_1``); ``False`` applies P_1 first.
    """
    levels = level_table(buf.shape[-1], structure, depth)
    for level in reversed(levels) if top_first else levels:
        mix_level(buf, level, blocks)


def rotate_rows(
    rows: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor],
    top_first: bool,
    structure: str = "tree",
    depth: int = 1,
) -> torch.Tensor:
    """A new (N, d) tensor: every row times all level matrices (P_M first when ``top_first``), then ``diag(scale)``."""
    blocks = blocks_of(params)
    out = rows.to(blocks.dtype, copy=True)
    sweep(out, blocks, top_first, structure, depth)
    if scale is not None:
        out.mul_(scale)
    return out


def rotate_rows_backward(
    rows, grad, params, scale, need_params: bool, need_scale: bool, structure: str = "tree", depth: int = 1
):
    """The backward of ``rotate_rows(rows, params, scale, top_first=True)`` for the output gradient ``grad`` (N, d).

    Recomputes the forward keeping each level's input pairs (transient: 2 values per block per row), then walks the
    levels back.  Returns (grad_rows, grad_params or None, grad_scale or None) in the compute dtype.
    """
    blocks = blocks_of(params)
    levels = level_table(rows.shape[-1], structure, depth)
    buf = rows.to(blocks.dtype, copy=True)
    level_inputs = []
    for level in reversed(levels):
        left, right = level_members(buf, level)
        if need_params:
            level_inputs.append((left.clone(), right.clone()))
        mix(left, right, blocks[level.offset : level.offset + level.npairs])
        store_members(buf, level, left, right)

    grad = grad.to(blocks.dtype, copy=True)  # becomes the input gradient, in place
    grad_scale = None
    if scale is not None:
        if need_scale:
            grad_scale = (grad * buf).sum(0)
        grad.mul_(scale)

    grad_blocks = torch.zeros_like(blocks) if need_params else None
    for level in levels:  # P_1 was applied last: walk back from it
        g_left, g_right = level_members(grad, level)
        level_blocks = blocks[level.offset : level.offset + level.npairs]
        if need_params:
            in_left, in_right = level_inputs.pop()
            # out_q = sum_p in_p B_pq, so dB_pq = sum over rows of in_p * g_q
            gb = grad_blocks[level.offset : level.offset + level.npairs]
            gb[:, 0, 0] = torch.linalg.vecdot(in_left, g_left, dim=0)
            gb[:, 0, 1] = torch.linalg.vecdot(in_left, g_right, dim=0)
            gb[:, 1, 0] = torch.linalg.vecdot(in_right, g_left, dim=0)
            gb[:, 1, 1] = torch.linalg.vecdot(in_right, g_right, dim=0)
        mix(g_left, g_right, transpose_blocks(level_blocks))  # level input grad: g @ B^T
        store_members(grad, level, g_left, g_right)
    return grad, None if grad_blocks is None else gradient_for(params, grad_blocks), grad_scale


@torch.no_grad()
def rotate_rows_mixed(
    rows: torch.Tensor,
    params: torch.Tensor,
    scales: Optional[torch.Tensor],
    row_adapter: torch.Tensor,
    orders: Optional[torch.Tensor],
    structure: str = "tree",
    depth: int = 1,
) -> torch.Tensor:
    """Forward only: row n rotated by adapter ``row_adapter[n]`` of the stacks ``params`` (A, n[, 2, 2]), ``scales``
    (A, d) and ``orders`` (A, d); -1 leaves the row as it is.  One gather, rotation and scatter per adapter present."""
    out = rows.to(params.dtype).clone()
    for adapter in torch.unique(row_adapter[row_adapter >= 0]).tolist():
        index = torch.nonzero(row_adapter == adapter).squeeze(1)
        chosen = out.index_select(0, index)
        if orders is not None:
            chosen = chosen.index_select(1, orders[adapter])
        scale = None if scales is None else scales[adapter]
        chosen = rotate_rows(chosen, params[adapter], scale, True, structure, depth)
        if orders is not None:
            chosen = chosen.index_select(1, torch.argsort(orders[adapter]))
        out.index_copy_(0, index, chosen)
    return out


def rotation_matrix(
    params: torch.Tensor,
    d: int,
    scale: Optional[torch.Tensor] = None,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The dense d×d ``R = P_M ⋯ P_1 (· diag(scale))``, built level by level.  For tests and checks, not training.

    Built by left-multiplying with each level matrix, i.e. mixing *rows* of R (``R_i, R_j <- a·R_i + b·R_j,
    c·R_i + e·R_j``), where the kernels mix columns of x: the two only agree if both follow the convention.
    O(blocks · d), never a d×d product.  ``order``: the coordinate order (see :mod:`goft.ops.pairing`).
    """
    blocks = as_blocks(params, d, structure, depth)
    check_scale(scale, d)
    dtype = compute_dtype(blocks, scale)
    r = torch.eye(d, dtype=dtype, device=blocks.device)
    for level in level_table(d, structure, depth):
        i, j = _level_index(level, blocks.device)
        block = blocks[level.offset : level.offset + level.npairs].to(dtype)
        row_i, row_j = r[i], r[j]
        r[i] = block[:, 0, 0, None] * row_i + block[:, 0, 1, None] * row_j
        r[j] = block[:, 1, 0, None] * row_i + block[:, 1, 1, None] * row_j
    if scale is not None:
        r = r * scale.to(dtype)[None, :]
    if order is None:
        return r
    check_order(order, d)
    inverse = torch.argsort(order.to(blocks.device))  # R_order[order[a], order[b]] = R[a, b]
    return r[inverse][:, inverse]
