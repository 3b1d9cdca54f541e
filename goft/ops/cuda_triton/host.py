"""The host side of the Triton kernels: allocate, launch every planned pass, sum partial gradients."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..row_tiles import adapter_tiles
from . import kernels, planning
from .kernels import triton
from .planning import Launch


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _flat(params: torch.Tensor) -> torch.Tensor:
    """What the kernels read: angles (n,) as they are, blocks (n, 2, 2) as (n, 4)."""
    return params.contiguous() if params.dim() == 1 else params.reshape(-1, 4).contiguous()


def _forward_pass(launch: Launch, src, dst, flat_params, scale, index, per_stack, d, top_first, compact) -> None:
    """dst = src times the pass's levels (then diag(scale)); dst may be src."""
    n_rows = src.shape[0]
    if not launch.every_column:
        if dst is not src:
            dst.copy_(src)
            src = dst
        if scale is not None:  # the scale reaches every column
            _forward_pass(launch, src, dst, flat_params, None, index, per_stack, d, top_first, compact)
            dst.mul_(scale)
            return
    kernels._rotate_kernel[(triton.cdiv(n_rows, planning.tile_rows(launch.tile)), launch.chunks)](
        src,
        dst,
        flat_params,
        flat_params if scale is None else scale,
        index,
        n_rows,
        d,
        src.stride(0),
        dst.stride(0),
        launch.chunk_step,
        index,  # tiles and orders: not read
        index,
        0,
        HAS_SCALE=scale is not None,
        TOP_FIRST=top_first,
        ANGLES=flat_params.dim() == 1,
        MIXED=False,
        LOAD_ORDER=False,
        STORE_ORDER=False,
        **launch.constexprs(per_stack, planning.padded_width(d), compact),
        num_warps=launch.warps(),
    )


def rotate_rows(
    rows: torch.Tensor, params: torch.Tensor, scale, top_first: bool, structure: str = "tree", depth: int = 1
) -> torch.Tensor:
    """A new (N, d) tensor in ``rows``' dtype: every row times all level matrices (P_M first when ``top_first``),
    then ``diag(scale)``.  ``params`` (angles (n,) or blocks (n, 2, 2)) and ``scale`` (d,) are fp32 CUDA
    tensors."""
    n_rows, d = rows.shape
    rows = _rows_view(rows)
    out = torch.empty(rows.shape, dtype=rows.dtype, device=rows.device)
    if n_rows == 0:
        return out
    flat_params = _flat(params)
    scale = None if scale is None else scale.contiguous()
    index, per_stack = planning.pair_index(d, structure, depth, rows.device)
    compact = structure == "tree"
    passes = planning.plan_passes(d, depth, compact, top_first)
    # between passes the rows stay in fp32 (a half-precision buffer would round them at every pass)
    between = out if out.dtype == torch.float32 or len(passes) == 1 else torch.empty(rows.shape, device=rows.device)
    src = rows
    for k, launch in enumerate(passes):
        last = k == len(passes) - 1
        dst = out if last else between
        _forward_pass(launch, src, dst, flat_params, scale if last else None, index, per_stack, d, top_first, compact)
        src = dst
    return out


def rotate_rows_mixed(
    rows: torch.Tensor,
    params: torch.Tensor,
    scales: Optional[torch.Tensor],
    row_adapter: torch.Tensor,
    orders: Optional[torch.Tensor],
    structure: str = "tree",
    depth: int = 1,
) -> torch.Tensor:
    """Forward only: a new (N, d) tensor in ``rows``' dtype, row n times the rotation of adapter ``row_adapter[n]``
    (P_M first, then its scale, through its coordinate order) of the stacks ``params`` (A, n) angles or (A, n, 2, 2)
    blocks, ``scales`` (A, d) and ``orders`` (A, d), all fp32 / int64 CUDA tensors; -1 leaves the row as it is (bit
    for bit).  Each launch walks row tiles of one adapter each (:func:`goft.ops.row_tiles.adapter_tiles`)."""
    n_rows, d = rows.shape
    rows = _rows_view(rows)
    out = rows.clone()  # the base's rows (-1) are in no tile
    n_adapters = params.shape[0]
    flat_params = params.reshape(n_adapters, -1).contiguous()
    angles = params.dim() == 2
    scales = None if scales is None else scales.contiguous()
    orders = None if orders is None else orders.contiguous()
    index, per_stack = planning.pair_index(d, structure, depth, rows.device)
    compact = structure == "tree"
    width = planning.padded_width(d)
    passes = planning.plan_passes(d, depth, compact, top_first=True)
    if len(passes) > 1 and orders is not None:
        # two passes per stack: the rows first go into the adapters' coordinate order (a launch with no levels, on
        # the low pass's tiles), every pass then works in that order, the last one writes back through it
        first = passes[-1]
        passes = [dataclasses.replace(first, kv_first=0, kv_end=0, stack0=0, stacks=0), *passes]
    between = out if len(passes) == 1 else rows.to(torch.float32, copy=True)
    src = rows
    for k, launch in enumerate(passes):
        last = k == len(passes) - 1
        dst = out if last else between
        if not launch.every_column and dst is not src:  # the columns the pass leaves alone are carried over
            dst.copy_(src)
            src = dst
        tiles = adapter_tiles(row_adapter, planning.tile_rows(launch.tile))
        if len(tiles) == 0:
            break
        load_order = orders is not None and k == 0
        store_order = orders is not None and last
        if (load_order or store_order or (last and scales is not None)) and not launch.every_column:
            raise AssertionError("the first and last passes of a forward walk take every column")
        tiles = torch.from_numpy(tiles).to(rows.device, non_blocking=True)
        kernels._rotate_kernel[(tiles.shape[0], launch.chunks)](
            src,
            dst,
            flat_params,
            scales if last and scales is not None else flat_params,
            index,
            n_rows,
            d,
            src.stride(0),
            dst.stride(0),
            launch.chunk_step,
            tiles,
            index if orders is None else orders,
            flat_params.shape[1],
            HAS_SCALE=last and scales is not None,
            TOP_FIRST=True,
            ANGLES=angles,
            MIXED=True,
            LOAD_ORDER=load_order,
            STORE_ORDER=store_order,
            **launch.constexprs(per_stack, width, compact),
            num_warps=launch.warps(),
        )
        src = dst
    return out


def rotate_rows_backward(
    rows,
    grad,
    params,
    scale,
    need_params: bool,
    need_scale: bool,
    structure: str = "tree",
    depth: int = 1,
    max_programs: int | None = None,
):
    """grad_rows = grad @ R^T (in ``rows``' dtype) and the fp32 gradients of ``params`` (angles or blocks, in their
    form) and ``scale`` (or None) of the forward ``rotate_rows(rows, params, scale, top_first=True)``.  Angles'
    level inputs are recovered by transposition; blocks' are kept in a scratch.  ``max_programs``: at most this
    many programs per row of the grid (default: PROGRAMS_PER_SM per multiprocessor)."""
    n_rows, d = rows.shape
    rows, grad = _rows_view(rows), _rows_view(grad)
    device = rows.device
    grad_rows = torch.empty(rows.shape, dtype=rows.dtype, device=device)
    flat_params = _flat(params)
    angles = flat_params.dim() == 1
    scale = None if scale is None else scale.contiguous()
    n_blocks = flat_params.shape[0]
    index, per_stack = planning.pair_index(d, structure, depth, device)
    width = planning.padded_width(d)
    compact = structure == "tree"
    passes = planning.plan_passes(d, depth, compact, top_first=True)
    # the parameters' gradient and the scale's in one buffer: one fill
    n_grad = flat_params.numel() + (d if scale is not None else 0)
    grads = torch.zeros(n_grad, dtype=torch.float32, device=device)
    grad_params = grads[: flat_params.numel()].view(flat_params.shape)
    grad_scale = grads[flat_params.numel() :] if scale is not None else None
    if n_rows == 0:  # zero gradients (of the scale too, when asked: an empty batch still has a scale)
        return _backward_result(grad_rows, grad_params, grad_scale, params.shape, need_params, need_scale)
    inputs = [rows]  # each pass's input: the forward of the passes before it, transient, in fp32
    for launch in passes[:-1]:
        inputs.append(torch.empty(rows.shape, dtype=torch.float32, device=device))
        _forward_pass(launch, inputs[-2], inputs[-1], flat_params, None, index, per_stack, d, True, compact)
    atomic = not torch.are_deterministic_algorithms_enabled()
    cap = max_programs or planning.programs_per_launch(device)
    g = grad
    for k in reversed(range(len(passes))):
        launch = passes[k]
        has_scale = scale is not None and k == len(passes) - 1
        bm = planning.tile_rows(launch.tile)
        n_tiles = triton.cdiv(n_rows, bm)
        n_programs = max(1, min(n_tiles, cap // launch.chunks))
        scratch_per_program = planning.scratch_per_program(launch, angles, compact)
        scratch = torch.empty(
            max(1, n_programs * launch.chunks * scratch_per_program), dtype=torch.float32, device=device
        )
        # partial rows (deterministic): one per program, laid out like ``grads`` (rows no program reaches stay zero)
        part = grads if atomic else torch.zeros((n_programs, n_grad), dtype=torch.float32, device=device)
        g_in = grad_rows if k == 0 else torch.empty(rows.shape, dtype=torch.float32, device=device)
        if not launch.every_column:  # the columns the pass leaves alone keep their gradient
            g_in.copy_(g)
        kernels._rotate_backward_kernel[(n_programs, launch.chunks)](
            inputs[k],
            g,
            g_in,
            flat_params,
            scale if has_scale else flat_params,
            index,
            scratch,
            part,
            n_grad,
            n_rows,
            triton.cdiv(n_tiles, n_programs),
            n_programs,
            d,
            n_blocks,
            scratch_per_program,
            inputs[k].stride(0),
            g.stride(0),
            g_in.stride(0),
            launch.chunk_step,
            HAS_SCALE=has_scale,
            ANGLES=angles,
            ATOMIC=atomic,
            CHUNKS=launch.chunks,
            **launch.constexprs(per_stack, width, compact),
            num_warps=launch.warps(),
        )
        if not atomic:
            grads += part.sum(0)
        g = g_in
    return _backward_result(grad_rows, grad_params, grad_scale, params.shape, need_params, need_scale)


def _backward_result(grad_rows, grad_params, grad_scale, params_shape, need_params: bool, need_scale: bool):
    """The backward's outputs.  The parameters' and the scale's gradients are views of one buffer; the custom op's
    outputs may not alias one another, so the scale's (d numbers) is copied out when both are returned."""
    if need_params and need_scale and grad_scale is not None:
        grad_scale = grad_scale.clone()
    return (grad_rows, grad_params.reshape(params_shape) if need_params else None, grad_scale if need_scale else None)
