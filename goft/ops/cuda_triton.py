"""The GPU backend: fused kernels for the Givens rotation, written in Triton, for CUDA tensors.

The convention is in :mod:`goft.ops.pairing`, the reference implementation in :mod:`goft.ops.reference`.  On a GPU
the reference path launches several small kernels per level (``ceil(log2 d)`` levels), so its cost is kernel launches
and passes over the activation; here one program keeps a tile of ``BM`` rows in registers and walks all levels,
reading ``x`` once and writing ``y`` once.

How a level runs in registers: pad a row to ``D = 2^L >= d`` columns and view the program's tile of ``DV`` columns
as ``(DV / 2S, 2, S)`` for the level's stride ``S`` in the tile.  Then ``[g, 0, s]`` and ``[g, 1, s]`` are a pair:
the tree uses ``s = 0`` of its first groups, the butterfly every position whose partner is ``< d`` (see
:mod:`goft.ops.pairing`).  Which block sits at each position is data, ``index`` (M, D / 2) int32 (-1: no block), so
one kernel serves every structure and depth.  Positions without a block are passed through with ``where`` (never
multiplied by an identity coefficient, so an inf elsewhere in the row cannot turn into a NaN).  Padded columns stay
zero and never mix into real ones.

Any width: while ``D <= MAX_TILE`` a tile holds whole rows and one launch walks every level (``DV = D``).  Wider
rows split each stack's levels in two passes.  The low pass (level strides ``< W = MAX_TILE``) tiles the columns
into blocks of ``W``: its pairs never leave a block.  The high pass (strides ``>= W``) sees column
``hi·W + lo`` as ``(hi, lo)``: its pairs differ in ``hi`` only, so a program takes every ``hi`` for a chunk of
``C`` consecutive ``lo`` (``DV = (D / W)·C`` columns, coalesced in ``lo``); the tree, whose high levels touch only
the columns with ``lo = 0``, takes ``C = 1``.  In a tile, column ``v`` is real column ``(v // C)·W + lo0 + v % C``
(``C = W``: ``lo0 + v``), and a level of tile stride ``S`` is real level ``log2 S + LEV_SHIFT``.

Backward: recompute the forward in registers, then walk the levels back, applying the transposed blocks to the
gradient.  Strict blocks (angles) recover each level's input from its output by the transposed block as well, so
nothing is stored, and add one gradient per angle; free (qGOFT) blocks keep the level inputs in a transient
per-program scratch (the tree: only its ``s = 0`` pairs).  Programs loop over row tiles (at most a few per
multiprocessor run at once), so the scratch does not grow with the rows, and add their gradients into the result
with atomics, or, under ``torch.use_deterministic_algorithms``, into one partial row per program that the host sums.

Arrays: ``x, y, g`` (N, d) with unit stride in the last dim, any of fp32 / fp16 / bf16 (computed in fp32);
``blocks`` (the kernels' ``blocks_ptr``), fp32 in parameter order: strict angles (n,), whose rotations
``[[cos, -sin], [sin, cos]]`` the kernels form themselves (no separate launches for them or their gradient), or
(n, 4) holding ``a, b, c, e`` of ``[[a, b], [c, e]]``; ``index`` as above.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from .pairing import level_table

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional: CUDA tensors then take the torch reference path
    triton = None

AVAILABLE = triton is not None

# Widest tile a program holds in registers (columns); wider rows run in two passes per stack (module docstring).
MAX_TILE = 4096
# Backward programs resident per multiprocessor: each loops over row tiles, so the grid is this times the SM count.
PROGRAMS_PER_SM = 4


def widest_row() -> int:
    """The widest row the kernels take: two passes per stack reach MAX_TILE² columns (2^24)."""
    return MAX_TILE * MAX_TILE


def padded_width(d: int) -> int:
    return 1 << max(0, (d - 1).bit_length())


def tile_rows(width: int) -> int:
    """Rows per program: about 8K fp32 values in registers per program."""
    return max(1, min(32, 8192 // width))


if AVAILABLE:

    @triton.jit
    def _pairs(h, BM: tl.constexpr, DV: tl.constexpr, S: tl.constexpr):
        """(BM, DV) -> left, right members (BM, DV / 2S, S) of the pairs at tile stride S."""
        G: tl.constexpr = DV // (2 * S)
        h4 = tl.permute(tl.reshape(h, (BM, G, 2, S)), (0, 1, 3, 2))
        return tl.split(h4)

    @triton.jit
    def _unpairs(left, right, BM: tl.constexpr, DV: tl.constexpr):
        return tl.reshape(tl.permute(tl.join(left, right), (0, 1, 3, 2)), (BM, DV))

    @triton.jit
    def _real_columns(v, lo0, C: tl.constexpr, W: tl.constexpr):
        """Tile column v -> column of the row (see the module docstring)."""
        return (v // C) * W + lo0 + v % C

    @triton.jit
    def _level_index(
        index_ptr,
        lo0,
        STACK: tl.constexpr,
        KV: tl.constexpr,
        L: tl.constexpr,
        LEV_SHIFT: tl.constexpr,
        D: tl.constexpr,
        DV: tl.constexpr,
        C: tl.constexpr,
        W: tl.constexpr,
        COMPACT: tl.constexpr,
    ):
        """The parameter index of the level at tile stride 2^KV of stack STACK at each pair position of the tile,
        -1 where no block: (G, S), or (G, 1) for COMPACT (a tree level, whose blocks sit only at s = 0)."""
        S: tl.constexpr = 1 << KV
        G: tl.constexpr = DV // (2 * S)
        R: tl.constexpr = KV + LEV_SHIFT  # the level in the row: pairs (i, i + 2^R)
        if COMPACT:  # one return statement: the compiler refuses returns of different shapes
            v = (tl.arange(0, G) * (2 * S))[:, None]
        else:
            v = tl.arange(0, G)[:, None] * (2 * S) + tl.arange(0, S)[None, :]
        i = _real_columns(v, lo0, C, W)
        position = ((i >> (R + 1)) << R) + (i & ((1 << R) - 1))
        return tl.load(index_ptr + (STACK * L + R) * (D // 2) + position)

    @triton.jit
    def _sin_cos(theta):
        """sin and cos of fp32 angles, within about an ulp of the correctly rounded values for |θ| < 10^6.
        Written out rather than libdevice's sinf / cosf, whose path for huge arguments keeps an array in local
        memory (a stack frame and spills in every kernel that calls them): the quadrant and the remainder
        |r| <= π/4 are found in fp64, then r goes through the minimax polynomials of Cephes' sinf / cosf in fp32."""
        t = theta.to(tl.float64)
        k = tl.math.floor(t * 0.6366197723675814 + 0.5)  # nearest multiple of π/2
        r = ((t - k * 1.5707963267341256) - k * 6.077100506506192e-11).to(tl.float32)  # π/2 in two parts (fdlibm)
        r2 = r * r
        s = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4))
        c = (
            1.0
            - 0.5 * r2
            + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5))
        )
        quadrant = k.to(tl.int32) & 3
        sin = tl.where(quadrant == 0, s, tl.where(quadrant == 1, c, tl.where(quadrant == 2, -s, -c)))
        cos = tl.where(quadrant == 0, c, tl.where(quadrant == 1, -s, tl.where(quadrant == 2, -c, s)))
        return sin, cos

    @triton.jit
    def _coefficients(params_ptr, q, live, ANGLES: tl.constexpr):
        """The blocks ``[[a, b], [c, e]]`` at parameter indices q (identity where not live): from angles
        (``[[cos, -sin], [sin, cos]]``, computed here) or from stored (n, 4) blocks."""
        if ANGLES:
            sin, cos = _sin_cos(tl.load(params_ptr + q, mask=live, other=0.0))
            a = cos
            b = -sin
            c = sin
            e = cos
        else:
            a = tl.load(params_ptr + 4 * q + 0, mask=live, other=1.0)
            b = tl.load(params_ptr + 4 * q + 1, mask=live, other=0.0)
            c = tl.load(params_ptr + 4 * q + 2, mask=live, other=0.0)
            e = tl.load(params_ptr + 4 * q + 3, mask=live, other=1.0)
        return a, b, c, e

    @triton.jit
    def _level_blocks(
        blocks_ptr,
        index_ptr,
        lo0,
        STACK: tl.constexpr,
        KV: tl.constexpr,
        L: tl.constexpr,
        LEV_SHIFT: tl.constexpr,
        D: tl.constexpr,
        DV: tl.constexpr,
        C: tl.constexpr,
        W: tl.constexpr,
        COMPACT: tl.constexpr,
        ANGLES: tl.constexpr,
    ):
        """One level's parameter indices q (0 where no block), where a block sits (``live``, like q; ``active``,
        (G, S)), and its coefficients a, b, c, e (like q: (G, S), or (G, 1) for COMPACT)."""
        S: tl.constexpr = 1 << KV
        q = _level_index(index_ptr, lo0, STACK, KV, L, LEV_SHIFT, D, DV, C, W, COMPACT)
        live = q >= 0
        q = tl.where(live, q, 0)
        a, b, c, e = _coefficients(blocks_ptr, q, live, ANGLES)
        if COMPACT:  # (G, 1) -> (G, S): only s = 0 holds a block (static branches, no `and` on constexprs)
            if S == 1:
                active = live
            else:
                active = live & (tl.arange(0, S) == 0)[None, :]
        else:
            active = live
        return q, live, active, a, b, c, e

    @triton.jit
    def _mix(h, a, b, c, e, active, KV: tl.constexpr, BM: tl.constexpr, DV: tl.constexpr, TRANSPOSE: tl.constexpr):
        """Right-multiply the rows of h (BM, DV) by one level's matrix (or its transpose), given its blocks."""
        left, right = _pairs(h, BM, DV, 1 << KV)
        if TRANSPOSE:
            new_left = a[None] * left + b[None] * right
            new_right = c[None] * left + e[None] * right
        else:
            new_left = a[None] * left + c[None] * right
            new_right = b[None] * left + e[None] * right
        new_left = tl.where(active[None], new_left, left)
        new_right = tl.where(active[None], new_right, right)
        return _unpairs(new_left, new_right, BM, DV)

    @triton.jit
    def _apply_level(
        h,
        blocks_ptr,
        index_ptr,
        lo0,
        STACK: tl.constexpr,
        KV: tl.constexpr,
        L: tl.constexpr,
        LEV_SHIFT: tl.constexpr,
        D: tl.constexpr,
        DV: tl.constexpr,
        C: tl.constexpr,
        W: tl.constexpr,
        BM: tl.constexpr,
        TRANSPOSE: tl.constexpr,
        COMPACT: tl.constexpr,
        ANGLES: tl.constexpr,
    ):
        """Right-multiply the rows of h (BM, DV) by one level's matrix (or by its transpose)."""
        q, live, active, a, b, c, e = _level_blocks(
            blocks_ptr, index_ptr, lo0, STACK, KV, L, LEV_SHIFT, D, DV, C, W, COMPACT, ANGLES
        )
        return _mix(h, a, b, c, e, active, KV, BM, DV, TRANSPOSE)

    @triton.jit
    def _compact(t, S: tl.constexpr):
        """(BM, G, S) -> (BM, G): the s = 0 entries (the only ones a tree level's pairs use)."""
        if S == 1:
            return tl.sum(t, axis=2)
        first = (tl.arange(0, S) == 0)[None, None, :]
        return tl.sum(tl.where(first, t, 0.0), axis=2)

    @triton.jit
    def _level_pairs(h, BM: tl.constexpr, DV: tl.constexpr, S: tl.constexpr, COMPACT: tl.constexpr):
        """The level's pair members of h: (BM, G, S), or (BM, G) for COMPACT."""
        left, right = _pairs(h, BM, DV, S)
        if COMPACT:
            left = _compact(left, S)
            right = _compact(right, S)
        return left, right

    @triton.jit
    def _scratch_offset(
        STACK_LOCAL: tl.constexpr,
        KV: tl.constexpr,
        KV_FIRST: tl.constexpr,
        KV_END: tl.constexpr,
        BM: tl.constexpr,
        DV: tl.constexpr,
        COMPACT: tl.constexpr,
    ):
        """Where a level's pair inputs start in a program's scratch (the launch's STACK_LOCAL-th stack, tile level
        KV).  COMPACT (the tree): a level keeps its s = 0 pairs, 2 BM DV / 2^(KV+1) values, so levels KV_FIRST ..
        KV - 1 of a stack take 2 BM ((DV >> KV_FIRST) - (DV >> KV)); otherwise every level keeps all BM DV values."""
        if COMPACT:
            return 2 * BM * (STACK_LOCAL * ((DV >> KV_FIRST) - (DV >> KV_END)) + (DV >> KV_FIRST) - (DV >> KV))
        return (STACK_LOCAL * (KV_END - KV_FIRST) + KV - KV_FIRST) * BM * DV

    @triton.jit
    def _scratch_index(KV: tl.constexpr, BM: tl.constexpr, DV: tl.constexpr, COMPACT: tl.constexpr):
        """Offsets of a level's left and right members from its start in the scratch: (BM, G) each for COMPACT,
        else (BM, G, S)."""
        S: tl.constexpr = 1 << KV
        G: tl.constexpr = DV // (2 * S)
        if COMPACT:
            left = tl.arange(0, BM)[:, None] * G + tl.arange(0, G)[None, :]
            right = left + BM * G
        else:
            left = (
                tl.arange(0, BM)[:, None, None] * (DV // 2)
                + tl.arange(0, G)[None, :, None] * S
                + tl.arange(0, S)[None, None, :]
            )
            right = left + BM * (DV // 2)
        return left, right

    @triton.jit
    def _add_gradient(ptr, value, mask, accumulate, ATOMIC: tl.constexpr):
        """ptr += value where mask: an atomic add, or (one program owning ptr) a load, add and store, the load
        skipped on the program's first tile (``accumulate`` false)."""
        if ATOMIC:
            tl.atomic_add(ptr, value, mask=mask)
        else:
            tl.store(ptr, tl.load(ptr, mask=mask & accumulate, other=0.0) + value, mask=mask)

    @triton.jit
    def _rotate_kernel(
        x_ptr,
        y_ptr,
        blocks_ptr,
        scale_ptr,
        index_ptr,
        n_rows,
        d,
        stride_x,
        stride_y,
        chunk_step,
        HAS_SCALE: tl.constexpr,
        TOP_FIRST: tl.constexpr,
        L: tl.constexpr,
        STACK0: tl.constexpr,
        NS: tl.constexpr,
        KV_FIRST: tl.constexpr,
        KV_END: tl.constexpr,
        LEV_SHIFT: tl.constexpr,
        D: tl.constexpr,
        DV: tl.constexpr,
        C: tl.constexpr,
        W: tl.constexpr,
        BM: tl.constexpr,
        COMPACT: tl.constexpr,
        ANGLES: tl.constexpr,
    ):
        """Stacks STACK0 .. STACK0 + NS - 1, tile levels KV_FIRST .. KV_END - 1 of each, on a (BM, DV) tile.
        ANGLES: ``blocks_ptr`` holds angles (n,), else (n, 4) blocks."""
        rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)  # int64: N * d may pass 2^31
        lo0 = tl.program_id(1) * chunk_step
        cols = _real_columns(tl.arange(0, DV), lo0, C, W)
        mask = (rows[:, None] < n_rows) & (cols[None, :] < d)
        h = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        # (no constexpr assignments inside static loops: Triton refuses to rebind them on the next iteration)
        if TOP_FIRST:
            for si in tl.static_range(NS):
                for j in tl.static_range(KV_END - KV_FIRST):
                    h = _apply_level(
                        h,
                        blocks_ptr,
                        index_ptr,
                        lo0,
                        STACK0 + NS - 1 - si,
                        KV_END - 1 - j,
                        L,
                        LEV_SHIFT,
                        D,
                        DV,
                        C,
                        W,
                        BM,
                        False,
                        COMPACT,
                        ANGLES,
                    )
        else:
            for si in tl.static_range(NS):
                for j in tl.static_range(KV_END - KV_FIRST):
                    h = _apply_level(
                        h,
                        blocks_ptr,
                        index_ptr,
                        lo0,
                        STACK0 + si,
                        KV_FIRST + j,
                        L,
                        LEV_SHIFT,
                        D,
                        DV,
                        C,
                        W,
                        BM,
                        False,
                        COMPACT,
                        ANGLES,
                    )
        if HAS_SCALE:
            h = h * tl.load(scale_ptr + cols, mask=cols < d, other=0.0)[None, :]
        tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], h.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _rotate_backward_kernel(
        x_ptr,
        g_ptr,
        gx_ptr,
        blocks_ptr,
        scale_ptr,
        index_ptr,
        scratch_ptr,
        grad_ptr,
        grad_row,
        n_rows,
        tiles_per_program,
        n_programs,
        d,
        n_blocks,
        scratch_per_program,
        stride_x,
        stride_g,
        stride_gx,
        chunk_step,
        HAS_SCALE: tl.constexpr,
        L: tl.constexpr,
        STACK0: tl.constexpr,
        NS: tl.constexpr,
        KV_FIRST: tl.constexpr,
        KV_END: tl.constexpr,
        LEV_SHIFT: tl.constexpr,
        D: tl.constexpr,
        DV: tl.constexpr,
        C: tl.constexpr,
        W: tl.constexpr,
        BM: tl.constexpr,
        COMPACT: tl.constexpr,
        ANGLES: tl.constexpr,
        ATOMIC: tl.constexpr,
        CHUNKS: tl.constexpr,
    ):
        """The backward of ``_rotate_kernel`` (TOP_FIRST) on the same launch parameters, looping over row tiles.
        ANGLES: the blocks are rotations, so a level's input is its output times the transposed level, and the
        gradient is one value per angle; otherwise level inputs go through the scratch and the gradient is (n, 4).
        ``grad_ptr``: the parameters' gradient followed by the scale's (d, if any), or one such row of ``grad_row``
        values per program."""
        GRAD_WIDTH: tl.constexpr = 1 if ANGLES else 4
        pid = tl.program_id(0)  # n_programs: the grid's first dimension; program pid takes tiles pid + k n_programs
        lo0 = tl.program_id(1) * chunk_step
        cols = _real_columns(tl.arange(0, DV), lo0, C, W)
        col_mask = cols < d
        scratch = scratch_ptr + (pid * CHUNKS + tl.program_id(1)).to(tl.int64) * scratch_per_program
        if ATOMIC:  # every program adds into the result
            part_blocks = grad_ptr
        else:  # a row of partial sums per program (chunks of one row own disjoint blocks and columns)
            part_blocks = grad_ptr + pid.to(tl.int64) * grad_row
        # (a while loop: Triton's interpreter cannot take a runtime bound in range(); a tile past the last row
        # loads zeros and adds nothing)
        k = 0
        while k < tiles_per_program:
            accumulate = k > 0
            tile = pid + k * n_programs
            rows = tile.to(tl.int64) * BM + tl.arange(0, BM)
            mask = (rows[:, None] < n_rows) & col_mask[None, :]
            h = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            # forward recompute (the top level first), keeping the level inputs unless they can be recovered
            for si in tl.static_range(NS):
                for j in tl.static_range(KV_END - KV_FIRST):
                    if not ANGLES:
                        left, right = _level_pairs(h, BM, DV, 1 << (KV_END - 1 - j), COMPACT)
                        base = scratch + _scratch_offset(
                            NS - 1 - si, KV_END - 1 - j, KV_FIRST, KV_END, BM, DV, COMPACT
                        )
                        at_left, at_right = _scratch_index(KV_END - 1 - j, BM, DV, COMPACT)
                        tl.store(base + at_left, left)
                        tl.store(base + at_right, right)
                    h = _apply_level(
                        h,
                        blocks_ptr,
                        index_ptr,
                        lo0,
                        STACK0 + NS - 1 - si,
                        KV_END - 1 - j,
                        L,
                        LEV_SHIFT,
                        D,
                        DV,
                        C,
                        W,
                        BM,
                        False,
                        COMPACT,
                        ANGLES,
                    )
            tl.debug_barrier()  # the scratch is read back below by other threads of this program
            g = tl.load(g_ptr + rows[:, None] * stride_g + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            if HAS_SCALE:
                _add_gradient(
                    part_blocks + GRAD_WIDTH * n_blocks + cols, tl.sum(g * h, axis=0), col_mask, accumulate, ATOMIC
                )
                g = g * tl.load(scale_ptr + cols, mask=col_mask, other=0.0)[None, :]
            # walk back: the bottom level was applied last
            for si in tl.static_range(NS):
                for j in tl.static_range(KV_END - KV_FIRST):
                    q, live, active, a, b, c, e = _level_blocks(
                        blocks_ptr,
                        index_ptr,
                        lo0,
                        STACK0 + si,
                        KV_FIRST + j,
                        L,
                        LEV_SHIFT,
                        D,
                        DV,
                        C,
                        W,
                        COMPACT,
                        ANGLES,
                    )
                    if ANGLES:  # h: this level's output -> its input
                        h = _mix(h, a, b, c, e, active, KV_FIRST + j, BM, DV, True)
                        in_left, in_right = _level_pairs(h, BM, DV, 1 << (KV_FIRST + j), COMPACT)
                    else:
                        base = scratch + _scratch_offset(si, KV_FIRST + j, KV_FIRST, KV_END, BM, DV, COMPACT)
                        at_left, at_right = _scratch_index(KV_FIRST + j, BM, DV, COMPACT)
                        in_left = tl.load(base + at_left)
                        in_right = tl.load(base + at_right)
                    g_left, g_right = _level_pairs(g, BM, DV, 1 << (KV_FIRST + j), COMPACT)
                    # out_q = sum_p in_p B_pq, so dB_pq = sum over rows of in_p * g_q
                    d00 = tl.sum(in_left * g_left, axis=0)
                    d01 = tl.sum(in_left * g_right, axis=0)
                    d10 = tl.sum(in_right * g_left, axis=0)
                    d11 = tl.sum(in_right * g_right, axis=0)
                    if COMPACT:  # the sums are (G,): one per s = 0 pair
                        q = tl.reshape(q, (DV // (2 << (KV_FIRST + j)),))
                        live = tl.reshape(live, (DV // (2 << (KV_FIRST + j)),))
                        cos = tl.reshape(a, (DV // (2 << (KV_FIRST + j)),))
                        sin = tl.reshape(c, (DV // (2 << (KV_FIRST + j)),))
                    else:
                        cos = a
                        sin = c
                    if ANGLES:  # B = [[cos, -sin], [sin, cos]]: dθ = cos θ (d10 - d01) - sin θ (d00 + d11)
                        _add_gradient(part_blocks + q, cos * (d10 - d01) - sin * (d00 + d11), live, accumulate, ATOMIC)
                    else:
                        out = part_blocks + 4 * q
                        _add_gradient(out + 0, d00, live, accumulate, ATOMIC)
                        _add_gradient(out + 1, d01, live, accumulate, ATOMIC)
                        _add_gradient(out + 2, d10, live, accumulate, ATOMIC)
                        _add_gradient(out + 3, d11, live, accumulate, ATOMIC)
                    g = _mix(g, a, b, c, e, active, KV_FIRST + j, BM, DV, True)
            tl.store(gx_ptr + rows[:, None] * stride_gx + cols[None, :], g.to(gx_ptr.dtype.element_ty), mask=mask)
            tl.debug_barrier()  # the next tile overwrites the scratch and reads back the partial sums
            k += 1


@functools.cache
def _pair_index(d: int, structure: str, depth: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """The pairing as the kernels read it: (M, D / 2) int32, level m's block at pair position ``g·S + s`` (left
    coordinate ``g·2S + s``, right ``+ S``, ``S = 2^(m mod L)``), -1 where the level has no block; and L, the levels
    of one stack (``log2 D``).  Every tree and butterfly level is of this form; anything else is refused."""
    levels = level_table(d, structure, depth)
    per_stack = len(levels) // depth
    width = padded_width(d)
    if 1 << per_stack != width:
        raise ValueError(f"the {structure} pairing of d={d} has {per_stack} levels per stack, not log2({width})")
    index = torch.full((len(levels), width // 2), -1, dtype=torch.int32)
    for m, level in enumerate(levels):
        stride = 1 << (m % per_stack)
        for k, (i, j) in enumerate(zip(level.left, level.right, strict=True)):
            if j - i != stride:
                raise ValueError(
                    f"level {m} of the {structure} pairing (d={d}) pairs ({i}, {j}), not at stride {stride}"
                )
            index[m, (i // (2 * stride)) * stride + i % (2 * stride)] = level.offset + k
    return index.to(device), per_stack


@dataclasses.dataclass(frozen=True)
class _Pass:
    """One launch's share of the walk (the kernels' constexprs, see the module docstring): stacks ``stack0`` ..
    ``stack0 + stacks - 1``, tile levels ``kv_first`` .. ``kv_end - 1`` (row level ``+ lev_shift``) of each, on
    tiles of ``tile`` columns, ``chunk`` consecutive columns every ``step``; ``chunks`` programs per row tile, the
    k-th starting at column ``k·chunk_step``.  ``every_column``: false for the tree's high pass, which reads and
    writes only the columns its levels touch (the caller carries the others over)."""

    stack0: int
    stacks: int
    kv_first: int
    kv_end: int
    lev_shift: int
    tile: int
    chunk: int
    step: int
    chunk_step: int
    chunks: int
    every_column: bool = True

    def constexprs(self, per_stack: int, width: int, compact: bool) -> dict:
        return {
            "L": per_stack,
            "STACK0": self.stack0,
            "NS": self.stacks,
            "KV_FIRST": self.kv_first,
            "KV_END": self.kv_end,
            "LEV_SHIFT": self.lev_shift,
            "D": width,
            "DV": self.tile,
            "C": self.chunk,
            "W": self.step,
            "BM": tile_rows(self.tile),
            "COMPACT": compact,
        }

    def warps(self) -> int:
        return 4 if tile_rows(self.tile) * self.tile <= 4096 else 8


def _log2(n: int) -> int:
    return n.bit_length() - 1


def plan_passes(d: int, depth: int, compact: bool, top_first: bool) -> list[_Pass]:
    """The launches that apply every level in order (P_M first when ``top_first``): one while a padded row fits a
    tile, else a low and a high pass per stack."""
    width = padded_width(d)
    per_stack = _log2(width)
    if width > widest_row():
        raise ValueError(f"rows of {d} columns are wider than the kernels take ({widest_row()})")
    if width <= MAX_TILE:
        return [_Pass(0, depth, 0, per_stack, 0, width, width, width, 0, 1)]
    low_levels = _log2(MAX_TILE)
    high = width // MAX_TILE
    chunk = 1 if compact else MAX_TILE // high  # the tree's high levels touch only column 0 of each block
    passes = []
    for stack in reversed(range(depth)) if top_first else range(depth):
        low = _Pass(stack, 1, 0, low_levels, 0, MAX_TILE, MAX_TILE, MAX_TILE, MAX_TILE, -(-d // MAX_TILE))
        top = _Pass(
            stack,
            1,
            _log2(chunk),
            _log2(chunk * high),
            low_levels - _log2(chunk),
            chunk * high,
            chunk,
            MAX_TILE,
            chunk,
            1 if compact else MAX_TILE // chunk,
            every_column=not compact,
        )
        passes += [top, low] if top_first else [low, top]
    return passes


@functools.cache
def _programs_per_launch(device: torch.device) -> int:
    """How many backward programs run at once: PROGRAMS_PER_SM per multiprocessor (4 on CPU tensors, which only
    Triton's interpreter takes)."""
    if device.type != "cuda":
        return 4
    return PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _flat(params: torch.Tensor) -> torch.Tensor:
    """What the kernels read: angles (n,) as they are, blocks (n, 2, 2) as (n, 4)."""
    return params.contiguous() if params.dim() == 1 else params.reshape(-1, 4).contiguous()


def _forward_pass(step: _Pass, src, dst, flat_params, scale, index, per_stack, d, top_first, compact) -> None:
    """dst = src times the pass's levels (then diag(scale)); dst may be src."""
    n_rows = src.shape[0]
    if not step.every_column:
        if dst is not src:
            dst.copy_(src)
            src = dst
        if scale is not None:  # the scale reaches every column
            _forward_pass(step, src, dst, flat_params, None, index, per_stack, d, top_first, compact)
            dst.mul_(scale)
            return
    _rotate_kernel[(triton.cdiv(n_rows, tile_rows(step.tile)), step.chunks)](
        src,
        dst,
        flat_params,
        flat_params if scale is None else scale,
        index,
        n_rows,
        d,
        src.stride(0),
        dst.stride(0),
        step.chunk_step,
        HAS_SCALE=scale is not None,
        TOP_FIRST=top_first,
        ANGLES=flat_params.dim() == 1,
        **step.constexprs(per_stack, padded_width(d), compact),
        num_warps=step.warps(),
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
    index, per_stack = _pair_index(d, structure, depth, rows.device)
    compact = structure == "tree"
    passes = plan_passes(d, depth, compact, top_first)
    # between passes the rows stay in fp32 (a half-precision buffer would round them at every pass)
    between = out if out.dtype == torch.float32 or len(passes) == 1 else torch.empty(rows.shape, device=rows.device)
    src = rows
    for k, step in enumerate(passes):
        last = k == len(passes) - 1
        dst = out if last else between
        _forward_pass(step, src, dst, flat_params, scale if last else None, index, per_stack, d, top_first, compact)
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
    index, per_stack = _pair_index(d, structure, depth, device)
    width = padded_width(d)
    compact = structure == "tree"
    passes = plan_passes(d, depth, compact, top_first=True)
    # the parameters' gradient and the scale's in one buffer: one fill
    n_grad = flat_params.numel() + (d if scale is not None else 0)
    grads = torch.zeros(n_grad, dtype=torch.float32, device=device)
    grad_params = grads[: flat_params.numel()].view(flat_params.shape)
    grad_scale = grads[flat_params.numel() :] if scale is not None else None
    if n_rows == 0:  # zero gradients (of the scale too, when asked: an empty batch still has a scale)
        return _backward_result(grad_rows, grad_params, grad_scale, params.shape, need_params, need_scale)
    inputs = [rows]  # each pass's input: the forward of the passes before it, transient, in fp32
    for step in passes[:-1]:
        inputs.append(torch.empty(rows.shape, dtype=torch.float32, device=device))
        _forward_pass(step, inputs[-2], inputs[-1], flat_params, None, index, per_stack, d, True, compact)
    atomic = not torch.are_deterministic_algorithms_enabled()
    cap = max_programs or _programs_per_launch(device)
    g = grad
    for k in reversed(range(len(passes))):
        step = passes[k]
        has_scale = scale is not None and k == len(passes) - 1
        bm = tile_rows(step.tile)
        n_tiles = triton.cdiv(n_rows, bm)
        n_programs = max(1, min(n_tiles, cap // step.chunks))
        levels = step.kv_end - step.kv_first
        if angles:
            scratch_per_program = 0
        elif compact:
            scratch_per_program = step.stacks * 2 * bm * ((step.tile >> step.kv_first) - (step.tile >> step.kv_end))
        else:
            scratch_per_program = step.stacks * levels * bm * step.tile
        scratch = torch.empty(
            max(1, n_programs * step.chunks * scratch_per_program), dtype=torch.float32, device=device
        )
        # partial rows (deterministic): one per program, laid out like ``grads`` (rows no program reaches stay zero)
        part = grads if atomic else torch.zeros((n_programs, n_grad), dtype=torch.float32, device=device)
        g_in = grad_rows if k == 0 else torch.empty(rows.shape, dtype=torch.float32, device=device)
        if not step.every_column:  # the columns the pass leaves alone keep their gradient
            g_in.copy_(g)
        _rotate_backward_kernel[(n_programs, step.chunks)](
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
            step.chunk_step,
            HAS_SCALE=has_scale,
            ANGLES=angles,
            ATOMIC=atomic,
            CHUNKS=step.chunks,
            **step.constexprs(per_stack, width, compact),
            num_warps=step.warps(),
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
