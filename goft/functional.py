"""All Givens-rotation math of goft, as pure functions (no ``nn.Module`` here).

The one convention
------------------
An adapted linear layer with ``in_features = d`` learns a d×d matrix ``R`` that acts on the layer's *input*::

    y = base(x @ R)            merged:  W <- W @ R.T   (torch layout, W is out × in)

``R`` is a product of ``d - 1`` 2×2 blocks arranged in ``ceil(log2 d)`` levels by a binary-tree pairing that carries
an unpaired coordinate up to the next level (Ma et al., ICML 2024, Eq. 3)::

    cnt, step = d, 1
    while cnt > 1:
        npairs = cnt // 2
        level pairs: (i, i + step) for i = 0, 2*step, ..., (npairs - 1) * 2*step
        cnt, step = npairs + cnt % 2, step * 2

The coordinates alive at a level with stride ``step`` are exactly ``0, step, 2*step, ...`` (``ceil(d / step)`` of
them), so a level is two strided views of the last dimension: ``[0 : 2*npairs*step : 2*step]`` (the left members)
and ``[step : 2*npairs*step : 2*step]`` (the right members).  No index buffer is needed.

Parameters are ordered level by level, ascending ``i`` inside a level.  A block ``[[a, b], [c, d]]`` sits at rows and
columns ``(i, j)`` of its level matrix ``P_r`` (identity elsewhere), and ``R = P_L ⋯ P_2 P_1``.  Strict GOFT blocks
are ``[[cos θ, -sin θ], [sin θ, cos θ]]`` with the angle θ (radians, zero at init) as the parameter; qGOFT blocks are
free.  GOFT* (``scale`` given) is ``R = P_L ⋯ P_1 · diag(s)``.

For a row vector, right-multiplying by a level matrix maps each pair ``(x_i, x_j)`` to
``(a·x_i + c·x_j, b·x_i + d·x_j)``; that one update (``_mix``) is the whole kernel.  With ``x @ R =
x @ P_L @ ... @ P_1`` the top level is applied first.

qGOFT's soft orthogonality penalty per block is ``(a·b + c·d)²``, the squared inner product of its two columns.

What the method can and cannot express: ``d - 1`` angles do not span SO(d), whose dimension is ``d(d-1)/2``.  The
paper's theorem only guarantees that *some* such product maps one given vector onto any other vector of the same norm.

Complexities: ``rotate`` does O(d) work per row (level r touches ``d / 2^(r-1)`` coordinates), never forms R, and
its autograd saves only its input and parameters (backward recomputes what it needs).  ``merge_weight`` /
``unmerge_weight`` are O(d · out) level updates on W's columns; the unmerge uses closed-form 2×2 inverses, never
``linalg.inv``.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from . import kernels

__all__ = [
    "GivensError",
    "SingularBlockError",
    "angles_to_blocks",
    "block_orthogonality_penalty",
    "givens_levels",
    "givens_pairs",
    "merge_weight",
    "num_blocks",
    "rotate",
    "rotate_inverse",
    "rotation_matrix",
    "unmerge_weight",
]


class GivensError(ValueError):
    """Bad input to the Givens math (wrong shape, dtype or value)."""


class SingularBlockError(GivensError):
    """A qGOFT 2×2 block is (nearly) singular, so the rotation cannot be inverted reliably."""


# --------------------------------------------------------------------------------------------------------------------
# The pairing
# --------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def givens_levels(d: int) -> tuple[tuple[int, int, int], ...]:
    """The levels of the binary-tree pairing for dimension ``d``, as ``(step, npairs, offset)`` triples.

    ``offset`` is where the level's blocks start in the ``(d - 1,)`` parameter vector.  ``d = 1`` has no levels.
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise GivensError(f"d must be an integer >= 1, got {d!r}")
    levels = []
    cnt, step, offset = d, 1, 0
    while cnt > 1:
        npairs = cnt // 2
        levels.append((step, npairs, offset))
        offset += npairs
        cnt, step = npairs + cnt % 2, step * 2
    assert offset == d - 1
    return tuple(levels)


def num_blocks(d: int) -> int:
    """Number of 2×2 blocks (strict GOFT parameters) of a d×d rotation: ``d - 1``."""
    givens_levels(d)  # validates d
    return d - 1


def givens_pairs(d: int) -> list[torch.Tensor]:
    """The pairs of each level, as a list of ``(npairs, 2)`` LongTensors ``[[i, i + step], ...]``, level 1 first."""
    out = []
    for step, npairs, _ in givens_levels(d):
        left = torch.arange(npairs, dtype=torch.long) * (2 * step)
        out.append(torch.stack([left, left + step], dim=1))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Parameters -> blocks
# --------------------------------------------------------------------------------------------------------------------


def angles_to_blocks(theta: torch.Tensor) -> torch.Tensor:
    """Angles θ (n,) in radians -> rotation blocks (n, 2, 2) ``[[cos θ, -sin θ], [sin θ, cos θ]]`` (differentiable)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*theta.shape, 2, 2)


def _as_blocks(params: torch.Tensor, d: int) -> torch.Tensor:
    """Validate ``params`` for dimension ``d`` and return (d - 1, 2, 2) blocks."""
    if not isinstance(params, torch.Tensor):
        raise GivensError(f"params must be a torch.Tensor, got {type(params).__name__}")
    if not params.dtype.is_floating_point:
        raise GivensError(f"params must be a floating-point tensor, got dtype {params.dtype}")
    n = num_blocks(d)
    if params.shape == (n,):
        return angles_to_blocks(params)
    if params.shape == (n, 2, 2):
        return params
    raise GivensError(
        f"params for d={d} must have shape ({n},) (strict angles in radians) or ({n}, 2, 2) (quasi blocks), "
        f"got {tuple(params.shape)}"
    )


def _check_scale(scale: Optional[torch.Tensor], d: int) -> None:
    if scale is None:
        return
    if not isinstance(scale, torch.Tensor) or not scale.dtype.is_floating_point:
        raise GivensError(f"scale must be a floating-point torch.Tensor of shape ({d},), got {scale!r}")
    if scale.shape != (d,):
        raise GivensError(f"scale must have shape ({d},), got {tuple(scale.shape)}")


def _compute_dtype(*tensors: Optional[torch.Tensor]) -> torch.dtype:
    """fp32 at least (half and bfloat16 inputs accumulate in fp32); fp64 when any input is fp64."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _transpose_blocks(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.transpose(-1, -2)


def _invert_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """Closed-form inverses of (n, 2, 2) blocks; raises SingularBlockError for a (near-)singular or non-finite block.

    A block is refused when ``|det| <= 1000 · eps · ‖B‖_F²``, i.e. when its condition number is so large that the
    inverse would lose more than about three of the compute dtype's digits.
    """
    a, b, c, d = blocks[..., 0, 0], blocks[..., 0, 1], blocks[..., 1, 0], blocks[..., 1, 1]
    det = a * d - b * c
    frob2 = a * a + b * b + c * c + d * d
    eps = torch.finfo(blocks.dtype).eps
    bad = ~torch.isfinite(det) | ~torch.isfinite(frob2) | (det.abs() <= 1000 * eps * frob2)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise SingularBlockError(
            f"block {k} is singular or not finite (det={float(det[k]):.3g}, block={blocks[k].tolist()}); "
            f"{int(bad.sum())} of {blocks.shape[0]} blocks cannot be inverted"
        )
    inv = torch.stack([d, -b, -c, a], dim=-1).reshape(blocks.shape)
    return inv / det[..., None, None]


# --------------------------------------------------------------------------------------------------------------------
# The kernel: level updates on strided views, in place
# --------------------------------------------------------------------------------------------------------------------


def _level_views(buf: torch.Tensor, step: int, npairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right members of a level's pairs: two strided views (..., npairs) of ``buf``'s last dimension."""
    end = 2 * npairs * step
    return buf[..., 0:end:2 * step], buf[..., step:end:2 * step]


def _mix(left: torch.Tensor, right: torch.Tensor, blocks: torch.Tensor) -> None:
    """In place: ``(left, right) <- (a·left + c·right, b·left + d·right)``, i.e. ``[left, right] @ block`` per pair.

    left, right: (..., npairs) views; blocks: (npairs, 2, 2).
    """
    a, b, c, d = blocks[:, 0, 0], blocks[:, 0, 1], blocks[:, 1, 0], blocks[:, 1, 1]
    new_left = torch.addcmul(left * a, right, c)
    new_right = torch.addcmul(left * b, right, d)
    left.copy_(new_left)
    right.copy_(new_right)


def _sweep(buf: torch.Tensor, blocks: torch.Tensor, d: int, top_first: bool) -> None:
    """Right-multiply the rows of ``buf`` (..., d) by every level matrix, in place.

    ``top_first=True`` applies P_L first (``buf @ P_L @ ... @ P_1``); ``False`` applies P_1 first.
    """
    levels = givens_levels(d)
    for step, npairs, offset in reversed(levels) if top_first else levels:
        left, right = _level_views(buf, step, npairs)
        _mix(left, right, blocks[offset:offset + npairs])


def _rotate_rows_backward_torch(rows, grad, blocks, scale, need_blocks, need_scale):
    """Reference path of the backward, on (N, d) rows and (N, d) output gradients in the compute dtype.

    Recomputes the forward keeping each level's input pairs (transient: ≈ 2 copies of the touched coordinates), then
    walks the levels back.  Returns (grad_rows, grad_blocks or None, grad_scale or None).
    """
    d = rows.shape[-1]
    levels = givens_levels(d)
    buf = rows.clone()
    level_inputs = []
    for step, npairs, offset in reversed(levels):
        left, right = _level_views(buf, step, npairs)
        if need_blocks:
            level_inputs.append((left.clone(), right.clone()))
        _mix(left, right, blocks[offset:offset + npairs])

    grad = grad.clone()  # becomes the input gradient, in place
    grad_scale = None
    if scale is not None:
        if need_scale:
            grad_scale = (grad * buf).sum(0)
        grad.mul_(scale)

    grad_blocks = torch.zeros_like(blocks) if need_blocks else None
    for step, npairs, offset in levels:  # P_1 was applied last: walk back from it
        g_left, g_right = _level_views(grad, step, npairs)
        if need_blocks:
            in_left, in_right = level_inputs.pop()
            # out_q = sum_p in_p B_pq, so dB_pq = sum over rows of in_p * g_q
            gb = grad_blocks[offset:offset + npairs]
            gb[:, 0, 0] = torch.linalg.vecdot(in_left, g_left, dim=0)
            gb[:, 0, 1] = torch.linalg.vecdot(in_left, g_right, dim=0)
            gb[:, 1, 0] = torch.linalg.vecdot(in_right, g_left, dim=0)
            gb[:, 1, 1] = torch.linalg.vecdot(in_right, g_right, dim=0)
        _mix(g_left, g_right, _transpose_blocks(blocks[offset:offset + npairs]))  # level input grad: g @ B^T
    return grad, grad_blocks, grad_scale


@functools.lru_cache(maxsize=None)
def _level_arrays(d: int):
    """The levels of ``d`` as three int64 numpy arrays (steps, npairs, offsets), for the compiled kernels."""
    levels = givens_levels(d)
    return tuple(np.array([lv[i] for lv in levels], dtype=np.int64) for i in range(3))


# Fixed number of row chunks for the compiled backward's partial sums: results do not depend on the thread count.
_BACKWARD_CHUNKS = 16


def _use_compiled(x: torch.Tensor, cdt: torch.dtype) -> bool:
    return x.device.type == "cpu" and cdt in (torch.float32, torch.float64) and kernels.kernel_choice() == "numba"


def _use_triton(x: torch.Tensor, cdt: torch.dtype) -> bool:
    """CUDA rows in fp32/fp16/bf16 computed in fp32, 2 <= d <= MAX_D, with triton installed (GOFT_KERNEL)."""
    if x.device.type != "cuda" or cdt != torch.float32 or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    if kernels.kernel_choice("cuda") != "triton":
        return False
    from . import triton_kernels

    return 2 <= x.shape[-1] <= triton_kernels.MAX_D


def _np(t: Optional[torch.Tensor], cdt: torch.dtype, shape=None):
    """A contiguous numpy view of ``t`` in ``cdt`` (a copy only when needed); an empty array for None."""
    if t is None:
        return np.empty(0, dtype=np.float32 if cdt == torch.float32 else np.float64)
    t = t.detach().to(cdt)
    if shape is not None:
        t = t.reshape(shape)
    return t.contiguous().numpy()


def _rotate_rows_compiled(rows, blocks, scale, top_first=True):
    cdt = rows.dtype
    out = torch.empty_like(rows)
    kernels.rotate_rows(
        _np(rows, cdt), out.numpy(), _np(blocks, cdt, (-1, 4)), _np(scale, cdt), scale is not None,
        *_level_arrays(rows.shape[-1]), kernels.TILE, top_first,
    )
    return out


def _sweep_rows(rows: torch.Tensor, blocks: torch.Tensor, top_first: bool,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A new (N, d) tensor: every row right-multiplied by all level matrices, then by ``diag(scale)`` (no autograd).

    ``blocks`` and ``scale`` are in the compute dtype; ``rows`` too, except that fp16/bf16 CUDA rows may come as they
    are (the Triton kernel reads them and computes in fp32) and the result is then in their dtype.  The compiled
    kernels run where they can; the torch reference path (level updates on strided views) everywhere else.
    """
    cdt = blocks.dtype
    if _use_triton(rows, cdt):
        from . import triton_kernels

        return triton_kernels.rotate_rows(rows, blocks, scale, top_first)
    rows = rows.to(cdt)
    if _use_compiled(rows, rows.dtype):
        return _rotate_rows_compiled(rows.contiguous(), blocks, scale, top_first)
    out = rows.clone()
    _sweep(out, blocks, rows.shape[-1], top_first=top_first)
    if scale is not None:
        out.mul_(scale)
    return out


def _rotate_rows_backward_compiled(rows, grad, blocks, scale, need_blocks, need_scale):
    cdt = rows.dtype
    grad_rows = torch.empty_like(rows)
    n_chunks = max(1, min(rows.shape[0], _BACKWARD_CHUNKS))
    part_blocks, part_scale = kernels.rotate_rows_backward(
        _np(rows, cdt), _np(grad, cdt), grad_rows.numpy(), _np(blocks, cdt, (-1, 4)), _np(scale, cdt),
        scale is not None, *_level_arrays(rows.shape[-1]), n_chunks, _np(rows[:0, 0], cdt).dtype.type(0), kernels.TILE,
    )
    grad_blocks = torch.from_numpy(part_blocks.sum(0)).reshape(blocks.shape).to(cdt) if need_blocks else None
    grad_scale = torch.from_numpy(part_scale.sum(0)).to(cdt) if (need_scale and scale is not None) else None
    return grad_rows, grad_blocks, grad_scale


class _RotateFunction(torch.autograd.Function):
    """``x @ (P_L ⋯ P_1 · diag(scale))`` over the last dim.

    Saves only ``x`` (the layer input, already alive in a network), the blocks and the scale; backward recomputes the
    level inputs from ``x`` rather than keeping per-level activations alive between forward and backward.  On CPU
    with numba installed the fused per-row kernels of :mod:`goft.kernels` run, for CUDA tensors with triton installed
    those of :mod:`goft.triton_kernels`; elsewhere the torch reference path (``GOFT_KERNEL`` chooses, see
    :func:`goft.kernels.kernel_choice`).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: torch.Tensor, scale: Optional[torch.Tensor]) -> torch.Tensor:
        d = x.shape[-1]
        cdt = _compute_dtype(x, blocks, scale)
        blocks_c = blocks.to(cdt)
        scale_c = None if scale is None else scale.to(cdt)
        out = _sweep_rows(x.reshape(-1, d), blocks_c, top_first=True, scale=scale_c)  # (N, d)
        ctx.save_for_backward(x, blocks, scale)
        return out.reshape(x.shape).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, blocks, scale = ctx.saved_tensors
        d = x.shape[-1]
        cdt = _compute_dtype(x, blocks, scale)
        rows, grad = x.reshape(-1, d), grad_out.reshape(-1, d)
        blocks_c = blocks.to(cdt)
        scale_c = None if scale is None else scale.to(cdt)
        need_blocks, need_scale = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if _use_triton(x, cdt) and grad.dtype == x.dtype:  # reads x and grad in their dtype
            from . import triton_kernels

            backward = triton_kernels.rotate_rows_backward
        else:
            rows, grad = rows.to(cdt), grad.to(cdt)
            backward = _rotate_rows_backward_compiled if _use_compiled(x, cdt) else _rotate_rows_backward_torch
        grad_rows, grad_blocks, grad_scale = backward(rows, grad, blocks_c, scale_c, need_blocks, need_scale)
        grad_x = grad_rows.reshape(x.shape).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_blocks = None if grad_blocks is None else grad_blocks.to(blocks.dtype)
        grad_scale = None if grad_scale is None else grad_scale.to(scale.dtype)
        return grad_x, grad_blocks, grad_scale


# --------------------------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------------------------


def _check_x(x: torch.Tensor, name: str = "x") -> int:
    if not isinstance(x, torch.Tensor):
        raise GivensError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1:
        raise GivensError(f"{name} must have at least one dimension (the rotated one), got a 0-dim tensor")
    if not x.dtype.is_floating_point:
        raise GivensError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x.shape[-1]


def rotate(x: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ R`` over the last dimension of ``x`` (any leading shape), without forming R.

    Args:
        x: (..., d) input; fp16/bf16 inputs are computed in fp32 and returned in their own dtype.
        params: (d - 1,) angles in radians (strict GOFT) or (d - 1, 2, 2) blocks ``[[a, b], [c, d]]`` (qGOFT).
        scale: optional (d,) GOFT* scaling, ``R = P_L ⋯ P_1 · diag(scale)``.

    Differentiable in ``x``, ``params`` and ``scale`` (first order).
    """
    d = _check_x(x)
    blocks = _as_blocks(params, d)
    _check_scale(scale, d)
    return _RotateFunction.apply(x, blocks, scale)


@torch.no_grad()
def rotate_inverse(y: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y @ R^{-1}``, the exact inverse of :func:`rotate` (not differentiable).

    ``R^{-1} = diag(1/scale) · P_1^{-1} ⋯ P_L^{-1}``: strict levels invert by transposition (negated angles), quasi
    blocks by their closed-form 2×2 inverse.  Raises :class:`SingularBlockError` for a (near-)singular block and
    :class:`GivensError` for a zero or non-finite scale.
    """
    d = _check_x(y, "y")
    blocks = _as_blocks(params, d)
    _check_scale(scale, d)
    cdt = _compute_dtype(y, blocks, scale)
    buf = y.reshape(-1, d).to(cdt)
    if scale is not None:
        buf = buf / _checked_scale(scale, cdt)
    inverse = _transpose_blocks(blocks.to(cdt)) if params.dim() == 1 else _invert_blocks(blocks.to(cdt))
    return _sweep_rows(buf, inverse, top_first=False).reshape(y.shape).to(y.dtype)


def _checked_scale(scale: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    s = scale.to(cdt)
    bad = ~torch.isfinite(s) | (s == 0)
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0, 0])
        raise SingularBlockError(f"scale[{k}] = {float(s[k])} cannot be inverted (zero or not finite)")
    return s


def rotation_matrix(params: torch.Tensor, d: int, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The dense d×d ``R = P_L ⋯ P_1 (· diag(scale))``, built level by level.  For tests and checks, not training."""
    blocks = _as_blocks(params, d)
    _check_scale(scale, d)
    cdt = _compute_dtype(blocks, scale)
    eye = torch.eye(d, dtype=cdt, device=blocks.device)
    r = eye
    for (_step, npairs, offset), pairs in zip(givens_levels(d), givens_pairs(d)):
        i, j = pairs[:, 0].to(blocks.device), pairs[:, 1].to(blocks.device)
        blk = blocks[offset:offset + npairs].to(cdt)
        p = eye.clone()
        p[i, i], p[i, j], p[j, i], p[j, j] = blk[:, 0, 0], blk[:, 0, 1], blk[:, 1, 0], blk[:, 1, 1]
        r = p @ r  # R = P_L ⋯ P_1: each new level multiplies from the left
    if scale is not None:
        r = r * scale.to(cdt)[None, :]
    return r


@torch.no_grad()
def merge_weight(weight: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``W @ R.T`` for a torch-layout weight W (out, d): the weight that computes ``base(x @ R)`` in one matmul.

    ``W @ R.T = W · diag(s) · P_1^T ⋯ P_L^T``, applied as level updates on W's columns (no d×d product).
    Returns a new tensor in W's dtype (computed in at least fp32); W itself is not modified.
    """
    d = _check_x(weight, "weight")
    blocks = _as_blocks(params, d)
    _check_scale(scale, d)
    cdt = _compute_dtype(weight, blocks, scale)
    buf = weight.reshape(-1, d).to(cdt)
    if scale is not None:
        buf = buf * scale.to(cdt)
    out = _sweep_rows(buf, _transpose_blocks(blocks.to(cdt)), top_first=False)
    return out.reshape(weight.shape).to(weight.dtype)


@torch.no_grad()
def unmerge_weight(weight: torch.Tensor, params: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The exact inverse of :func:`merge_weight`: ``W @ R^{-T} = W · P_L^{-T} ⋯ P_1^{-T} · diag(1/s)``.

    Raises :class:`SingularBlockError` (a ``ValueError``) before computing anything if a block or scale entry cannot
    be inverted.  Returns a new tensor; W is not modified.
    """
    d = _check_x(weight, "weight")
    blocks = _as_blocks(params, d)
    _check_scale(scale, d)
    cdt = _compute_dtype(weight, blocks, scale)
    inv_scale = None if scale is None else 1.0 / _checked_scale(scale, cdt)
    inverse = _transpose_blocks(blocks.to(cdt)) if params.dim() == 1 else _invert_blocks(blocks.to(cdt))
    out = _sweep_rows(weight.reshape(-1, d).to(cdt), _transpose_blocks(inverse), top_first=True)
    if inv_scale is not None:
        out.mul_(inv_scale)
    return out.reshape(weight.shape).to(weight.dtype)


def block_orthogonality_penalty(params: torch.Tensor) -> torch.Tensor:
    """``Σ_k (a_k·b_k + c_k·d_k)²`` over (n, 2, 2) quasi blocks: the squared inner product of each block's columns.

    Strict angles (a 1-dim tensor) are orthogonal by construction and give an exact 0 (kept in the graph's dtype).
    """
    if params.dim() == 1:
        return params.new_zeros(())
    if params.dim() != 3 or params.shape[-2:] != (2, 2):
        raise GivensError(f"quasi blocks must have shape (n, 2, 2), got {tuple(params.shape)}")
    inner = params[:, 0, 0] * params[:, 0, 1] + params[:, 1, 0] * params[:, 1, 1]
    return (inner * inner).sum()
