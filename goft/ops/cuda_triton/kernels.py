"""The Triton kernels of the Givens rotation (the walk: :mod:`goft.ops.cuda_triton`).

Glossary of the constexprs (set per launch from a :class:`~.planning.Launch` by ``Launch.constexprs``):

``BM``        rows per program (a row tile), ``planning.tile_rows``
``D``         the padded row width, ``2^L >= d``
``L``         levels of one stack, ``log2 D``
``DV``        columns of the program's tile (``D`` in one pass; ``(D / W)·C`` in a high pass)
``W``         columns per block of a two-pass walk (``MAX_TILE``); ``D`` in one pass
``C``         consecutive columns of each block a program takes (``W`` in a low pass, 1 for the tree's high pass)
``KV``        a level's tile stride as its log2: the pairs are ``S = 2^KV`` columns apart in the tile
``KV_FIRST``, ``KV_END``  the launch's tile levels ``KV_FIRST .. KV_END - 1``
``LEV_SHIFT`` tile level + ``LEV_SHIFT`` = level in the row
``STACK0``, ``NS``  the launch's stacks ``STACK0 .. STACK0 + NS - 1`` (depth > 1 stacks rotations)
``STACK``     one stack; ``STACK_LOCAL`` its place among the launch's stacks (in the scratch)
``COMPACT``   a tree level: blocks only at the ``s = 0`` pair of each group, so (G, 1) coefficients and scratch
``ANGLES``    the parameters are angles (n,) (strict GOFT), else (n, 4) blocks (qGOFT)
``HAS_SCALE`` multiply by ``diag(scale)`` after the last level (GOFT*)
``TOP_FIRST`` apply the stacks' levels from the top (``P_M`` first) down
``MIXED``     rows in tiles of one adapter each, parameters stacked per adapter (a mixed-adapter batch)
``LOAD_ORDER``, ``STORE_ORDER``  read / write the row's coordinates through the adapter's coordinate order
``ATOMIC``    add gradients with atomics, else into one partial row per program (deterministic mode)
``CHUNKS``    programs per row tile (the grid's second dimension)
``G``, ``S``  a level's groups and the pairs per group: ``(G, 2, S)`` views of a ``DV``-column tile, ``G = DV / 2S``
"""

from __future__ import annotations

from .levels import AVAILABLE, triton

if AVAILABLE:
    import triton.language as tl

    from .levels import (
        _add_gradient,
        _apply_level,
        _level_blocks,
        _level_pairs,
        _mix,
        _real_columns,
        _scratch_index,
        _scratch_offset,
    )

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
        tiles_ptr,
        order_ptr,
        params_stride,
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
        MIXED: tl.constexpr,
        LOAD_ORDER: tl.constexpr,
        STORE_ORDER: tl.constexpr,
    ):
        """Stacks STACK0 .. STACK0 + NS - 1, tile levels KV_FIRST .. KV_END - 1 of each, on a (BM, DV) tile.
        ANGLES: ``blocks_ptr`` holds angles (n,), else (n, 4) blocks.

        MIXED: program k takes row tile k of ``tiles_ptr`` (T, 3) int64 (first row, rows <= BM, adapter), whose
        adapter's parameters start ``adapter * params_stride`` values into ``blocks_ptr``, its scale and coordinate
        order ``adapter * d`` into ``scale_ptr`` and ``order_ptr``; rows of no tile are not touched.  LOAD_ORDER:
        tile position t reads the row's coordinate ``order[t]``; STORE_ORDER: it is written there."""
        lo0 = tl.program_id(1) * chunk_step
        cols = _real_columns(tl.arange(0, DV), lo0, C, W)
        col_mask = cols < d
        if MIXED:
            tile = tiles_ptr + 3 * tl.program_id(0).to(tl.int64)
            adapter = tl.load(tile + 2)
            rows = tl.load(tile) + tl.arange(0, BM)
            row_mask = tl.arange(0, BM) < tl.load(tile + 1)
            blocks_ptr += adapter * params_stride
            scale_ptr += adapter * d
            order_ptr += adapter * d
        else:
            rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)  # int64: N * d may pass 2^31
            row_mask = rows < n_rows
        mask = row_mask[:, None] & col_mask[None, :]
        source = tl.load(order_ptr + cols, mask=col_mask, other=0) if LOAD_ORDER else cols
        h = tl.load(x_ptr + rows[:, None] * stride_x + source[None, :], mask=mask, other=0.0).to(tl.float32)
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
            h = h * tl.load(scale_ptr + cols, mask=col_mask, other=0.0)[None, :]
        target = tl.load(order_ptr + cols, mask=col_mask, other=0) if STORE_ORDER else cols
        tl.store(y_ptr + rows[:, None] * stride_y + target[None, :], h.to(y_ptr.dtype.element_ty), mask=mask)

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
