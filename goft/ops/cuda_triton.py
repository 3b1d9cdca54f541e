"""The GPU backend: fused kernels for the Givens rotation, written in Triton, for CUDA tensors.

The convention is in :mod:`goft.ops.pairing`, the reference implementation in :mod:`goft.ops.reference`.  On a GPU
the reference path launches several small kernels per level (``ceil(log2 d)`` levels), so its cost is kernel launches
and passes over the activation; here one program keeps a tile of ``BM`` rows in registers and walks all levels,
reading ``x`` once and writing ``y`` once.

How a level runs in registers: pad a row to ``D = 2^L >= d`` columns and view it as ``(D / 2S, 2, S)`` for the
level's stride ``S`` (level m of the flat list has ``S = 2^(m mod L)``, L levels per stack).  Then ``[g, 0, s]`` and
``[g, 1, s]`` are the pair ``(g·2S + s, g·2S + s + S)``: the tree uses ``s = 0`` of its first groups, the butterfly
every position whose partner is ``< d`` (see :mod:`goft.ops.pairing`).  Which position holds which block is data,
``index`` (M, D / 2) int32 (-1: no block there), so one kernel serves every structure and depth.  Positions without a
block are passed through with ``where`` (never multiplied by an identity coefficient, so an inf elsewhere in the row
cannot turn into a NaN).  Padded columns stay zero and never mix into real ones.

Backward: recompute the forward, writing the level inputs to a transient scratch (the tree: only its ``s = 0``
pairs, about ``2 d`` values per row and stack; other pairings: all ``D`` per level), then walk the levels back,
applying the transposed blocks to the gradient and writing per-program partial sums of the block (and scale)
gradients, which the host sums (deterministic, no atomics).

Arrays: ``x, y, g`` (N, d) with unit stride in the last dim, any of fp32 / fp16 / bf16 (computed in fp32);
``blocks`` (n, 4) fp32 holding ``a, b, c, e`` of ``[[a, b], [c, e]]`` in parameter order; ``index`` as above.
"""

from __future__ import annotations

import functools

import torch

from .pairing import level_table

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional: CUDA tensors then take the torch reference path
    triton = None

AVAILABLE = triton is not None

# Widest row the kernels take: a program holds its rows in registers (the README says which widths were checked on
# a GPU).  Wider layers use the torch path.
MAX_D = 4096


def padded_width(d: int) -> int:
    return 1 << max(0, (d - 1).bit_length())


def tile_rows(width: int) -> int:
    """Rows per program: about 8K fp32 values in registers per program."""
    return max(1, min(32, 8192 // width))


if AVAILABLE:

    @triton.jit
    def _pairs(h, BM: tl.constexpr, D: tl.constexpr, S: tl.constexpr):
        """(BM, D) -> left, right members (BM, D / 2S, S) of the pairs at stride S."""
        G: tl.constexpr = D // (2 * S)
        h4 = tl.permute(tl.reshape(h, (BM, G, 2, S)), (0, 1, 3, 2))
        return tl.split(h4)

    @triton.jit
    def _unpairs(left, right, BM: tl.constexpr, D: tl.constexpr):
        return tl.reshape(tl.permute(tl.join(left, right), (0, 1, 3, 2)), (BM, D))

    @triton.jit
    def _level_index(index_ptr, M_IDX: tl.constexpr, LEV: tl.constexpr, D: tl.constexpr, COMPACT: tl.constexpr):
        """The parameter index of level M_IDX (stride S = 2^LEV) at each pair position, -1 where no block: (G, S),
        or (G, 1) for COMPACT (a tree level, whose blocks sit only at s = 0: G loads rather than D / 2)."""
        S: tl.constexpr = 1 << LEV
        G: tl.constexpr = D // (2 * S)
        if COMPACT:  # one return statement: the compiler refuses returns of different shapes
            q = tl.load(index_ptr + M_IDX * (D // 2) + tl.arange(0, G) * S)[:, None]
        else:
            q = tl.load(index_ptr + M_IDX * (D // 2) + tl.arange(0, G)[:, None] * S + tl.arange(0, S)[None, :])
        return q

    @triton.jit
    def _apply_level(h, blocks_ptr, index_ptr, M_IDX: tl.constexpr, LEV: tl.constexpr, BM: tl.constexpr,
                     D: tl.constexpr, TRANSPOSE: tl.constexpr, COMPACT: tl.constexpr):
        """Right-multiply the rows of h (BM, D) by level M_IDX's matrix (or by its transpose)."""
        S: tl.constexpr = 1 << LEV
        q = _level_index(index_ptr, M_IDX, LEV, D, COMPACT)
        live = q >= 0
        q = tl.where(live, q, 0)
        a = tl.load(blocks_ptr + 4 * q + 0, mask=live, other=1.0)[None]
        b = tl.load(blocks_ptr + 4 * q + 1, mask=live, other=0.0)[None]
        c = tl.load(blocks_ptr + 4 * q + 2, mask=live, other=0.0)[None]
        e = tl.load(blocks_ptr + 4 * q + 3, mask=live, other=1.0)[None]
        if COMPACT:  # (G, 1) -> (G, S): only s = 0 holds a block (static branches, no `and` on constexprs)
            if S == 1:
                active = live
            else:
                active = live & (tl.arange(0, S) == 0)[None, :]
        else:
            active = live
        left, right = _pairs(h, BM, D, S)
        if TRANSPOSE:
            new_left = a * left + b * right
            new_right = c * left + e * right
        else:
            new_left = a * left + c * right
            new_right = b * left + e * right
        new_left = tl.where(active[None], new_left, left)
        new_right = tl.where(active[None], new_right, right)
        return _unpairs(new_left, new_right, BM, D)

    @triton.jit
    def _compact(t, S: tl.constexpr):
        """(BM, G, S) -> (BM, G): the s = 0 entries (the only ones a tree level's pairs use)."""
        if S == 1:
            return tl.sum(t, axis=2)
        first = (tl.arange(0, S) == 0)[None, None, :]
        return tl.sum(tl.where(first, t, 0.0), axis=2)

    @triton.jit
    def _scratch_offset(M_IDX: tl.constexpr, LEV: tl.constexpr, L: tl.constexpr, BM: tl.constexpr,
                        D: tl.constexpr, COMPACT: tl.constexpr):
        """Where level M_IDX's pair inputs start in a program's scratch.  COMPACT (the tree): a stack's level l
        keeps 2 BM D / 2^(l+1) values (only s = 0 pairs); otherwise every level keeps all BM D of its pairs."""
        if COMPACT:
            return (M_IDX // L) * (2 * BM * (D - (D >> L))) + 2 * BM * (D - (D >> LEV))
        return M_IDX * BM * D

    @triton.jit
    def _save_level_inputs(h, scratch, M_IDX: tl.constexpr, LEV: tl.constexpr, L: tl.constexpr,
                           BM: tl.constexpr, D: tl.constexpr, COMPACT: tl.constexpr):
        S: tl.constexpr = 1 << LEV
        G: tl.constexpr = D // (2 * S)
        base = scratch + _scratch_offset(M_IDX, LEV, L, BM, D, COMPACT)
        left, right = _pairs(h, BM, D, S)
        if COMPACT:
            idx = tl.arange(0, BM)[:, None] * G + tl.arange(0, G)[None, :]
            tl.store(base + idx, _compact(left, S))
            tl.store(base + BM * G + idx, _compact(right, S))
        else:
            idx = (tl.arange(0, BM)[:, None, None] * (D // 2) + tl.arange(0, G)[None, :, None] * S
                   + tl.arange(0, S)[None, None, :])
            tl.store(base + idx, left)
            tl.store(base + BM * (D // 2) + idx, right)

    @triton.jit
    def _store_level_gradients(g, scratch, part_ptr, index_ptr, M_IDX: tl.constexpr, LEV: tl.constexpr,
                               L: tl.constexpr, BM: tl.constexpr, D: tl.constexpr, COMPACT: tl.constexpr):
        """This program's partial sums of the level's block gradients, from the level's output gradient g."""
        S: tl.constexpr = 1 << LEV
        G: tl.constexpr = D // (2 * S)
        base = scratch + _scratch_offset(M_IDX, LEV, L, BM, D, COMPACT)
        q = _level_index(index_ptr, M_IDX, LEV, D, COMPACT)
        g_left, g_right = _pairs(g, BM, D, S)
        # out_q = sum_p in_p B_pq, so dB_pq = sum over rows of in_p * g_q
        if COMPACT:
            q = tl.reshape(q, (G,))
            idx = tl.arange(0, BM)[:, None] * G + tl.arange(0, G)[None, :]
            in_left = tl.load(base + idx)
            in_right = tl.load(base + BM * G + idx)
            g_left = _compact(g_left, S)
            g_right = _compact(g_right, S)
        else:
            idx = (tl.arange(0, BM)[:, None, None] * (D // 2) + tl.arange(0, G)[None, :, None] * S
                   + tl.arange(0, S)[None, None, :])
            in_left = tl.load(base + idx)
            in_right = tl.load(base + BM * (D // 2) + idx)
        live = q >= 0
        out = part_ptr + 4 * tl.where(live, q, 0)
        tl.store(out + 0, tl.sum(in_left * g_left, axis=0), mask=live)
        tl.store(out + 1, tl.sum(in_left * g_right, axis=0), mask=live)
        tl.store(out + 2, tl.sum(in_right * g_left, axis=0), mask=live)
        tl.store(out + 3, tl.sum(in_right * g_right, axis=0), mask=live)

    @triton.jit
    def _rotate_kernel(x_ptr, y_ptr, blocks_ptr, scale_ptr, index_ptr, n_rows, d, stride_x, stride_y,
                       HAS_SCALE: tl.constexpr, TOP_FIRST: tl.constexpr, L: tl.constexpr, M: tl.constexpr,
                       D: tl.constexpr, BM: tl.constexpr, COMPACT: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)  # int64: N * d may pass 2^31
        cols = tl.arange(0, D)
        mask = (rows[:, None] < n_rows) & (cols[None, :] < d)
        h = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        # (no constexpr assignments inside static loops: Triton refuses to rebind them on the next iteration)
        if TOP_FIRST:
            for i in tl.static_range(M):
                h = _apply_level(h, blocks_ptr, index_ptr, M - 1 - i, (M - 1 - i) % L, BM, D, False, COMPACT)
        else:
            for i in tl.static_range(M):
                h = _apply_level(h, blocks_ptr, index_ptr, i, i % L, BM, D, False, COMPACT)
        if HAS_SCALE:
            h = h * tl.load(scale_ptr + cols, mask=cols < d, other=0.0)[None, :]
        tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], h.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _rotate_backward_kernel(x_ptr, g_ptr, gx_ptr, blocks_ptr, scale_ptr, index_ptr, scratch_ptr,
                                part_blocks_ptr, part_scale_ptr, n_rows, d, n_blocks, scratch_per_program,
                                stride_x, stride_g, stride_gx, HAS_SCALE: tl.constexpr, L: tl.constexpr,
                                M: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, COMPACT: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        rows = pid * BM + tl.arange(0, BM)
        cols = tl.arange(0, D)
        mask = (rows[:, None] < n_rows) & (cols[None, :] < d)
        h = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        scratch = scratch_ptr + pid * scratch_per_program
        # forward recompute (P_M first), keeping each level's pair inputs in this program's scratch
        for i in tl.static_range(M):
            _save_level_inputs(h, scratch, M - 1 - i, (M - 1 - i) % L, L, BM, D, COMPACT)
            h = _apply_level(h, blocks_ptr, index_ptr, M - 1 - i, (M - 1 - i) % L, BM, D, False, COMPACT)
        tl.debug_barrier()  # the scratch is read back below by other threads of this program
        g = tl.load(g_ptr + rows[:, None] * stride_g + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_SCALE:
            tl.store(part_scale_ptr + pid * d + cols, tl.sum(g * h, axis=0), mask=cols < d)
            g = g * tl.load(scale_ptr + cols, mask=cols < d, other=0.0)[None, :]
        # walk back: P_1 was applied last
        for m in tl.static_range(M):
            _store_level_gradients(g, scratch, part_blocks_ptr + pid * (4 * n_blocks), index_ptr, m, m % L, L, BM,
                                   D, COMPACT)
            g = _apply_level(g, blocks_ptr, index_ptr, m, m % L, BM, D, True, COMPACT)
        tl.store(gx_ptr + rows[:, None] * stride_gx + cols[None, :], g.to(gx_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _pair_index(d: int, structure: str, depth: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """The pairing as the kernels read it: (M, D / 2) int32, level m's block at pair position ``g·S + s`` (left
    coordinate ``g·2S + s``, right ``+ S``, ``S = 2^(m mod L)``), -1 where the level has no block; and L, the levels
    of one stack.  Every tree and butterfly level is of this form; anything else is refused."""
    levels = level_table(d, structure, depth)
    per_stack = len(levels) // depth
    width = padded_width(d)
    index = torch.full((len(levels), width // 2), -1, dtype=torch.int32)
    for m, level in enumerate(levels):
        stride = 1 << (m % per_stack)
        for k, (i, j) in enumerate(zip(level.left, level.right, strict=True)):
            if j - i != stride:
                raise ValueError(f"level {m} of the {structure} pairing (d={d}) pairs ({i}, {j}), not at stride "
                                 f"{stride}")
            index[m, (i // (2 * stride)) * stride + i % (2 * stride)] = level.offset + k
    return index.to(device), per_stack


def _launch_shape(d: int):
    width = padded_width(d)
    bm = tile_rows(width)
    return width, bm, (4 if bm * width <= 4096 else 8)


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def rotate_rows(rows: torch.Tensor, blocks: torch.Tensor, scale, top_first: bool, structure: str = "tree",
                depth: int = 1) -> torch.Tensor:
    """A new (N, d) tensor in ``rows``' dtype: every row times all level matrices (P_M first when ``top_first``),
    then ``diag(scale)``.  ``blocks`` (n, 2, 2) and ``scale`` (d,) are fp32 CUDA tensors."""
    n_rows, d = rows.shape
    rows = _rows_view(rows)
    out = torch.empty(rows.shape, dtype=rows.dtype, device=rows.device)
    if n_rows == 0:
        return out
    width, bm, warps = _launch_shape(d)
    flat_blocks = blocks.reshape(-1, 4).contiguous()
    index, per_stack = _pair_index(d, structure, depth, rows.device)
    scale_arg = scale.contiguous() if scale is not None else flat_blocks
    _rotate_kernel[(triton.cdiv(n_rows, bm),)](
        rows, out, flat_blocks, scale_arg, index, n_rows, d, rows.stride(0), out.stride(0),
        HAS_SCALE=scale is not None, TOP_FIRST=top_first, L=per_stack, M=index.shape[0], D=width, BM=bm,
        COMPACT=structure == "tree", num_warps=warps,
    )
    return out


def rotate_rows_backward(rows, grad, blocks, scale, need_blocks: bool, need_scale: bool, structure: str = "tree",
                         depth: int = 1):
    """grad_rows = grad @ R^T (in ``rows``' dtype) and the fp32 block / scale gradients (or None) of the forward
    ``rotate_rows(rows, blocks, scale, top_first=True)``."""
    n_rows, d = rows.shape
    rows, grad = _rows_view(rows), _rows_view(grad)
    width, bm, warps = _launch_shape(d)
    n_programs = max(1, triton.cdiv(n_rows, bm))  # one program on no rows: zero partial sums, nothing stored
    device = rows.device
    grad_rows = torch.empty(rows.shape, dtype=rows.dtype, device=device)
    flat_blocks = blocks.reshape(-1, 4).contiguous()
    index, per_stack = _pair_index(d, structure, depth, device)
    compact = structure == "tree"  # a tree level uses only the s = 0 pair of each group: keep just those
    scratch_per_program = 2 * bm * width * depth if compact else bm * width * index.shape[0]
    scratch = torch.empty(n_programs * scratch_per_program, dtype=torch.float32, device=device)
    n_blocks = flat_blocks.shape[0]
    part_blocks = torch.empty((n_programs, n_blocks, 4), dtype=torch.float32, device=device)
    part_scale = torch.empty((n_programs, d) if scale is not None else (1,), dtype=torch.float32, device=device)
    scale_arg = scale.contiguous() if scale is not None else flat_blocks
    _rotate_backward_kernel[(n_programs,)](
        rows, grad, grad_rows, flat_blocks, scale_arg, index, scratch, part_blocks, part_scale, n_rows, d, n_blocks,
        scratch_per_program, rows.stride(0), grad.stride(0), grad_rows.stride(0), HAS_SCALE=scale is not None,
        L=per_stack, M=index.shape[0], D=width, BM=bm, COMPACT=compact, num_warps=warps,
    )
    grad_blocks = part_blocks.sum(0).reshape(blocks.shape) if need_blocks else None
    grad_scale = part_scale.sum(0) if (need_scale and scale is not None) else None
    return grad_rows, grad_blocks, grad_scale
