"""The entry points of the math: ``rotate`` (differentiable), its inverse, merge and unmerge.

Each validates its arguments and sweeps rows through two registered operators, ``goft::rotate_rows`` and its backward
``goft::rotate_rows_backward``; inside them :func:`goft.ops.backends.backend_for` picks the backend (numba, Triton or
torch).  Being ``torch.library`` custom operators with fake (shape-only) kernels and a registered autograd formula,
they are single nodes to ``torch.compile``: a GOFT model compiles without graph breaks and the compiled kernels still
run inside.  The convention is in :mod:`goft.ops.pairing`; :mod:`goft.functional` is the public face of these
functions.
"""

from __future__ import annotations

from typing import Optional

import torch

from .backends import backend_for
from .blocks import (
    blocks_of,
    check_params,
    check_rows,
    check_scale,
    compute_dtype,
    inverse_blocks,
    invertible_scale,
    transpose_blocks,
)
from .pairing import GivensError


def _to_order(rows: torch.Tensor, order: Optional[torch.Tensor]) -> torch.Tensor:
    """(N, d) rows with position k holding coordinate ``order[k]`` (``x @ Q``; see :mod:`goft.ops.pairing`)."""
    return rows if order is None else rows.index_select(-1, order)


def _from_order(rows: torch.Tensor, order: Optional[torch.Tensor]) -> torch.Tensor:
    """The inverse of :func:`_to_order` (``z @ Q^T``): coordinate ``order[k]`` gets position k back."""
    return rows if order is None else rows.index_select(-1, torch.argsort(order))


@torch.library.custom_op("goft::rotate_rows", mutates_args=())
def rotate_rows_op(
    rows: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor],
    top_first: bool,
    structure: str,
    depth: int,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """A new (N, d) tensor in ``rows``' dtype: every row right-multiplied by all level matrices of the ``structure``
    pairing stacked ``depth`` times (P_M first when ``top_first``), then by ``diag(scale)``.  ``params`` are the
    blocks, as angles (n,) (strict: the backends turn them into rotations themselves, and may invert a level by
    transposition) or as (n, 2, 2) matrices; they and ``scale`` (d,) are in the compute dtype, in which the backend
    computes.  With an ``order``, the rows are gathered into it first and scattered back after (``Q R Q^T``), inside
    the operator, so that autograd keeps the rows as given rather than a gathered copy.  Differentiable for
    ``top_first=True`` (the layer's direction) only."""
    backend = backend_for(rows, params.dtype)
    if order is not None and getattr(backend, "TAKES_ORDER", False):  # gathered while loading tiles
        return backend.rotate_rows(rows, params, scale, top_first, structure, depth, order=order).to(rows.dtype)
    rotated = backend.rotate_rows(_to_order(rows, order), params, scale, top_first, structure, depth)
    return _from_order(rotated, order).to(rows.dtype)


@rotate_rows_op.register_fake
def _(rows, params, scale, top_first, structure, depth, order=None):
    return torch.empty_like(rows, memory_format=torch.contiguous_format)


@torch.library.custom_op("goft::rotate_rows_backward", mutates_args=())
def rotate_rows_backward_op(
    rows: torch.Tensor,
    grad: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor],
    need_params: bool,
    need_scale: bool,
    structure: str,
    depth: int,
    order: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward of ``rotate_rows_op(rows, params, scale, True, structure, depth, order)`` for the output gradient
    ``grad``: (grad_rows in ``rows``' dtype, grad_params like ``params``, grad_scale like ``scale``); a gradient not
    asked for (or of an absent scale) is an empty (0,) tensor.  Recomputes the level inputs from ``rows``: nothing
    but the layer input and the parameters is kept between forward and backward.  With an ``order``, the rows and
    the gradient are gathered into it and the rows' gradient scattered back (a permutation's transpose is its
    inverse)."""
    backend = backend_for(rows, params.dtype)
    need_scale = need_scale and scale is not None
    if order is not None and getattr(backend, "TAKES_ORDER", False):  # gathered while loading tiles
        grad_rows, grad_params, grad_scale = backend.rotate_rows_backward(
            rows, grad, params, scale, need_params, need_scale, structure, depth, order=order
        )
    else:
        grad_rows, grad_params, grad_scale = backend.rotate_rows_backward(
            _to_order(rows, order), _to_order(grad, order), params, scale, need_params, need_scale, structure, depth
        )
        grad_rows = _from_order(grad_rows, order)
    # outputs may not alias one another: each absent gradient is its own empty
    return (
        grad_rows.to(rows.dtype),
        params.new_empty(0) if grad_params is None else grad_params.to(params.dtype),
        params.new_empty(0) if grad_scale is None else grad_scale.to(params.dtype),
    )


@rotate_rows_backward_op.register_fake
def _(rows, grad, params, scale, need_params, need_scale, structure, depth, order=None):
    return (
        torch.empty_like(rows, memory_format=torch.contiguous_format),
        torch.empty_like(params) if need_params else params.new_empty(0),
        torch.empty_like(scale) if need_scale and scale is not None else params.new_empty(0),
    )


def _save_rotate_inputs(ctx, inputs, output):
    rows, params, scale, top_first, ctx.structure, ctx.depth, order = inputs
    if not top_first:
        raise RuntimeError("goft::rotate_rows is differentiable only with top_first=True")
    ctx.save_for_backward(rows, params, scale, order)


def _rotate_rows_backward(ctx, grad_out):
    rows, params, scale, order = ctx.saved_tensors
    need_rows, need_params, need_scale = ctx.needs_input_grad[:3]
    grad_rows, grad_params, grad_scale = rotate_rows_backward_op(
        rows, grad_out, params, scale, need_params, need_scale, ctx.structure, ctx.depth, order
    )
    return (
        grad_rows if need_rows else None,
        grad_params if need_params else None,
        grad_scale if need_scale else None,
        None,
        None,
        None,
        None,
    )


rotate_rows_op.register_autograd(_rotate_rows_backward, setup_context=_save_rotate_inputs)


def _checked(
    rows: torch.Tensor,
    name: str,
    params: torch.Tensor,
    scale: Optional[torch.Tensor],
    structure: str,
    depth: int,
    order: Optional[torch.Tensor],
):
    """Validate the arguments of an entry point; returns (d, compute dtype).  Only ``order``'s shape and dtype are
    checked here (a full permutation check would synchronise with the device on every call): the layer checks the
    permutation once, where it is made or loaded."""
    d = check_rows(rows, name)
    check_params(params, d, structure, depth)
    check_scale(scale, d)
    if order is not None and (tuple(order.shape) != (d,) or order.dtype != torch.int64):
        raise GivensError(f"order must be a ({d},) int64 permutation, got {tuple(order.shape)} {order.dtype}")
    return d, compute_dtype(rows, params, scale)


def rotate(
    x: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    *,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``x @ R`` over the last dimension of ``x`` (any leading shape), without forming R.

    Args:
        x: (..., d) input; fp16/bf16 inputs are computed in fp32 and returned in their own dtype.
        params: (n,) angles in radians (strict GOFT) or (n, 2, 2) blocks ``[[a, b], [c, e]]`` (qGOFT), n =
            ``num_blocks(d, structure, depth)`` (the tree: d - 1).
        scale: optional (d,) GOFT* scaling, ``R = P_M ⋯ P_1 · diag(scale)``.
        structure, depth: the pairing (see :mod:`goft.ops.pairing`): ``"tree"`` or ``"butterfly"``, stacked
            ``depth`` times.
        order: optional (d,) int64 permutation: the structure's position k is coordinate ``order[k]`` (the
            rotation is ``Q R Q^T``; see :mod:`goft.ops.pairing`).  None is ``0 … d-1``.

    Differentiable in ``x``, ``params`` and ``scale`` (first order).
    """
    d, dtype = _checked(x, "x", params, scale, structure, depth, order)
    scale = None if scale is None else scale.to(dtype)
    # the params go in as they are (angles or blocks): the backends form the rotations, so that autograd needs no
    # separate kernels for cos, sin and their gradients
    return rotate_rows_op(x.reshape(-1, d), params.to(dtype), scale, True, structure, depth, order).reshape(x.shape)


@torch.no_grad()
def rotate_inverse(
    y: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    *,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``y @ R^{-1}``, the exact inverse of :func:`rotate` (not differentiable).

    ``R^{-1} = diag(1/scale) · P_1^{-1} ⋯ P_M^{-1}``: strict levels invert by transposition (negated angles), quasi
    blocks by their closed-form 2×2 inverse.  Raises :class:`SingularBlockError` for a (near-)singular block and
    :class:`GivensError` for a zero or non-finite scale.
    """
    d, dtype = _checked(y, "y", params, scale, structure, depth, order)
    buf = _to_order(y.reshape(-1, d).to(dtype), order)
    if scale is not None:
        buf = buf / invertible_scale(scale, dtype)
    inverse = inverse_blocks(params, blocks_of(params).to(dtype))
    rows = rotate_rows_op(buf, inverse, None, False, structure, depth)
    return _from_order(rows, order).reshape(y.shape).to(y.dtype)


@torch.no_grad()
def merge_weight(
    weight: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    *,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``W @ R.T`` for a torch-layout weight W (out, d): the weight that computes ``base(x @ R)`` in one matmul.

    ``W @ R.T = W · diag(s) · P_1^T ⋯ P_M^T``, applied as level updates on W's columns (no d×d product).
    Returns a new tensor in W's dtype (computed in at least fp32); W itself is not modified.
    """
    d, dtype = _checked(weight, "weight", params, scale, structure, depth, order)
    buf = _to_order(weight.reshape(-1, d).to(dtype), order)
    if scale is not None:
        buf = buf * scale.to(dtype)
    out = rotate_rows_op(buf, transpose_blocks(blocks_of(params).to(dtype)), None, False, structure, depth)
    return _from_order(out, order).reshape(weight.shape).to(weight.dtype)


@torch.no_grad()
def unmerge_weight(
    weight: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor] = None,
    *,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The exact inverse of :func:`merge_weight`: ``W @ R^{-T} = W · P_M^{-T} ⋯ P_1^{-T} · diag(1/s)``.

    Raises :class:`SingularBlockError` (a ``ValueError``) before computing anything if a block or scale entry cannot
    be inverted.  Returns a new tensor; W is not modified.
    """
    d, dtype = _checked(weight, "weight", params, scale, structure, depth, order)
    inv_scale = None if scale is None else 1.0 / invertible_scale(scale, dtype)
    inverse = inverse_blocks(params, blocks_of(params).to(dtype))
    buf = _to_order(weight.reshape(-1, d).to(dtype), order)
    out = rotate_rows_op(buf, transpose_blocks(inverse), inv_scale, True, structure, depth)
    return _from_order(out, order).reshape(weight.shape).to(weight.dtype)


def _rotate_rows_mixed(
    rows: torch.Tensor,
    params: torch.Tensor,
    scales: Optional[torch.Tensor],
    row_adapter: torch.Tensor,
    orders: Optional[torch.Tensor],
    structure: str,
    depth: int,
) -> torch.Tensor:
    """Forward only: a new (N, d) tensor in ``rows``' dtype, row n rotated by adapter ``row_adapter[n]`` (-1: the
    row unchanged) of the stacked ``params`` (A, n) or (A, n, 2, 2), ``scales`` (A, d), ``orders`` (A, d).

    The adapter indices are checked here, where they are real tensors on every path (eager, and inside a compiled
    graph's operator), not in :func:`rotate_mixed`, where reading them would break a traced graph."""
    if row_adapter.numel():  # the kernels would read outside the stacks
        low, high = torch.stack(torch.aminmax(row_adapter)).tolist()
        if not -1 <= low <= high < params.shape[0]:
            raise GivensError(
                f"row_adapter must hold -1 (the base) or an adapter index 0..{params.shape[0] - 1}, got values from "
                f"{low} to {high}"
            )
    backend = backend_for(rows, params.dtype)
    return backend.rotate_rows_mixed(rows, params, scales, row_adapter, orders, structure, depth).to(rows.dtype)


rotate_rows_mixed_op = torch.library.custom_op("goft::rotate_rows_mixed", mutates_args=())(_rotate_rows_mixed)


@rotate_rows_mixed_op.register_fake
def _(rows, params, scales, row_adapter, orders, structure, depth):
    return torch.empty_like(rows, memory_format=torch.contiguous_format)


@torch.no_grad()
def rotate_mixed(
    x: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor],
    row_adapter: torch.Tensor,
    *,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Several adapters in one pass (inference): row n of ``x`` (..., d), flattened to (N, d), is rotated by
    adapter ``row_adapter[n]`` of stacks of A adapters that share one pairing, or left as it is where the index
    is -1 (the base model).

    Args:
        params: (A, n) angles or (A, n, 2, 2) blocks, one adapter per leading index.
        scale: None, or (A, d): every adapter's GOFT* scale.
        row_adapter: (N,) int64 in ``-1 … A-1``.  Runs of consecutive rows with one adapter are processed
            together (each run in tiles), so a batch whose sequences each keep one adapter needs no sorting.
        order: None, or (A, d) int64: every adapter's coordinate order.

    Row n of the result equals ``rotate(x_n, params[a], scale[a], order=order[a])`` for ``a = row_adapter[n]``.
    Not differentiable (serving many adapters is inference).
    """
    if params.dim() not in (2, 4):
        raise GivensError(f"params must be stacked (A, n) angles or (A, n, 2, 2) blocks, got {tuple(params.shape)}")
    d, dtype = _checked(x, "x", params[0], None if scale is None else scale[0], structure, depth, None)
    rows = x.reshape(-1, d)
    if tuple(row_adapter.shape) != (rows.shape[0],):
        raise GivensError(f"row_adapter must have one entry per row ({rows.shape[0]}), got {tuple(row_adapter.shape)}")
    if order is not None and (tuple(order.shape) != (params.shape[0], d) or order.dtype != torch.int64):
        raise GivensError(f"order must be ({params.shape[0]}, {d}) int64, got {tuple(order.shape)} {order.dtype}")
    scale = None if scale is None else scale.to(dtype)
    # the registered operator where torch traces (compile, export, fake tensors); eager calls on plain tensors skip
    # its dispatch, which costs as much as a decode step's rotation
    eager = type(x) is torch.Tensor and not torch.compiler.is_compiling()
    mixed = _rotate_rows_mixed if eager else rotate_rows_mixed_op
    out = mixed(rows, params.to(dtype), scale, row_adapter.to(torch.int64), order, structure, depth)
    return out.reshape(x.shape)
