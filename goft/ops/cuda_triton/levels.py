"""One level of the walk in a program's registers, for the kernels of :mod:`.kernels` (constexprs: its
glossary): pair views of a tile, the level's blocks and their coefficients, mixing a level in, the scratch layout of
the backward, and gradient sums."""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional: CUDA tensors then take the torch reference path
    triton = None

AVAILABLE = triton is not None

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
        KV - 1 of a stack take 2 BM ((DV >> KV_FIRST) - (DV >> KV)); otherwise every level keeps all BM DV values.
        The host sizes the scratch with planning.scratch_per_program, which a test holds to this layout."""
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
