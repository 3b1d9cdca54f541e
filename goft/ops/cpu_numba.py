"""The CPU backend: fused per-row kernels compiled with numba (the convention is in :mod:`goft.ops.pairing`).

Why a per-row loop: a row of a d=768 activation is 3 KiB, so all ``ceil(log2 d)`` levels of one row can run in L1
cache in one pass over memory, with rows in parallel.  The torch path instead makes one or more passes over the whole
activation per level.  Forward: read x, write y.  Backward: recompute the level inputs of a row into a small scratch
(2 values per block), walk the levels back, accumulate the block gradients in per-chunk float64 partial sums.

The pairing is data, so one kernel serves every structure and depth: ``left, right`` (n,) hold block q's coordinates
in parameter order and ``bounds`` (M + 1,) the level boundaries (level m is blocks ``bounds[m] … bounds[m+1] - 1``).
The compiled functions take C-contiguous numpy views of CPU tensors: ``x, y, grad`` (N, d); ``blocks`` (n, 4)
holding ``a, b, c, e`` of each 2×2 block in parameter order; the pairing arrays.  :func:`rotate_rows` and
:func:`rotate_rows_backward` at the bottom wrap them with the torch signature shared by every backend (see
:mod:`goft.ops.reference`); they need fp32 or fp64 rows.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from .blocks import blocks_of, gradient_for
from .pairing import level_table
from .row_tiles import tiles_and_lanes

try:
    from numba import njit, prange
except ImportError:  # numba is optional: the backend choice then falls back to the torch path
    njit = None

AVAILABLE = njit is not None
TAKES_ORDER = True  # rotate_rows and rotate_rows_backward take a coordinate order and apply it while loading tiles

# Rows are processed in tiles of `tile` rows, transposed into a (d, tile) scratch so that every 2×2 block update is a
# contiguous vector operation across the tile's rows (the pairs themselves are strided within a row).  The tile is a
# run-time argument on purpose: with a compile-time constant LLVM unrolls the lane loops fully and leaves them scalar,
# with a run-time trip count its loop vectorizer turns them into SIMD code.
TILE = 32
# The tile transposes walk the tile's rows in groups of ROW_GROUP: only that many source (or destination) rows are in
# flight at a time.  With all 32 rows in flight, row strides that are multiples of 2 KiB (d = 1024, 1536, 4096 fp32)
# map those rows' cache lines to the same few L1 sets, which then evict each other; 8 lines fit any set's
# associativity.
ROW_GROUP = 8
assert TILE % ROW_GROUP == 0, "a full tile is walked in whole row groups"
# In a mixed-adapter batch, runs of fewer rows than this (a decode step's one row per sequence) are packed into
# tiles whose lanes each take their own adapter (_rotate_lanes_mixed) rather than each filling a tile of its own.
SHORT_RUN = 8
# NaN and inf keep their IEEE meaning (no 'nnan'/'ninf'); reassociation lets the tile reductions vectorize.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


if AVAILABLE:

    @njit(inline="always", fastmath=_FASTMATH)
    def _load_tile(src, n0, rows, dst, order, has_order):  # pragma: no cover - compiled
        # r innermost (inside a row group): contiguous stores into the scratch; see ROW_GROUP for the grouping.
        # With an order, scratch row t holds coordinate order[t] (goft.ops.pairing): a gather within rows that are
        # being read anyway, instead of a pass over the whole input.
        d, tile = dst.shape
        if has_order:
            for r0 in range(0, tile, ROW_GROUP):
                for t in range(d):
                    source = order[t]
                    for r in range(r0, r0 + ROW_GROUP):
                        dst[t, r] = src[n0 + r, source] if r < rows else 0.0
        elif rows == tile:
            for r0 in range(0, tile, ROW_GROUP):
                for t in range(d):
                    for r in range(r0, r0 + ROW_GROUP):
                        dst[t, r] = src[n0 + r, t]
        else:  # a short last tile: zero lanes contribute nothing
            for t in range(d):
                for r in range(tile):
                    dst[t, r] = src[n0 + r, t] if r < rows else 0.0

    @njit(inline="always", fastmath=_FASTMATH)
    def _store_tile(src, dst, n0, rows, order, has_order):  # pragma: no cover - compiled
        d, tile = src.shape
        if has_order:
            for r0 in range(0, rows, ROW_GROUP):
                for t in range(d):
                    target = order[t]
                    for r in range(r0, min(rows, r0 + ROW_GROUP)):
                        dst[n0 + r, target] = src[t, r]
        elif rows == tile:
            for r0 in range(0, tile, ROW_GROUP):
                for t in range(d):
                    for r in range(r0, r0 + ROW_GROUP):
                        dst[n0 + r, t] = src[t, r]
        else:
            for t in range(d):
                for r in range(rows):
                    dst[n0 + r, t] = src[t, r]

    @njit(inline="always", fastmath=_FASTMATH)
    def _apply_level(buf, blocks, left, right, first, last, saved, save):  # pragma: no cover - compiled
        """Blocks ``first … last - 1`` (one level) on a (d, tile) scratch: each pair's lanes <- [left, right] @ block;
        with ``save``, first copy the pair's input lanes to ``saved[2q], saved[2q + 1]`` (the backward needs them)."""
        tile = buf.shape[1]
        for q in range(first, last):
            i = left[q]
            j = right[q]
            a, b, c, e = blocks[q, 0], blocks[q, 1], blocks[q, 2], blocks[q, 3]
            if save:
                for r in range(tile):
                    saved[2 * q, r] = buf[i, r]
                    saved[2 * q + 1, r] = buf[j, r]
            for r in range(tile):
                xl = buf[i, r]
                xr = buf[j, r]
                buf[i, r] = a * xl + c * xr
                buf[j, r] = b * xl + e * xr

    @njit(parallel=True, fastmath=_FASTMATH, cache=True)
    def _rotate_rows(  # pragma: no cover - compiled
        x, y, blocks, scale, has_scale, left, right, bounds, tile, top_first, order, has_order
    ):
        """y[n] = x[n] @ P_M ⋯ P_1 (· diag(scale)) for every row n (``top_first``), or x[n] @ P_1 ⋯ P_M (· diag)."""
        n_rows, d = x.shape
        n_levels = bounds.shape[0] - 1
        n_tiles = (n_rows + tile - 1) // tile
        for tile_index in prange(n_tiles):
            n0 = tile_index * tile
            rows = min(tile, n_rows - n0)
            buf = np.empty((d, tile), dtype=x.dtype)
            _load_tile(x, n0, rows, buf, order, has_order)
            no_save = np.empty((0, tile), dtype=x.dtype)
            for li in range(n_levels):
                lev = n_levels - 1 - li if top_first else li
                _apply_level(buf, blocks, left, right, bounds[lev], bounds[lev + 1], no_save, False)
            if has_scale:
                for t in range(d):
                    for r in range(tile):
                        buf[t, r] *= scale[t]
            _store_tile(buf, y, n0, rows, order, has_order)

    @njit(parallel=True, fastmath=_FASTMATH, cache=True)
    def _rotate_rows_backward(
        x, grad, grad_x, blocks, scale, has_scale, left, right, bounds, n_chunks, zero, tile, order, has_order
    ):
        """grad_x = grad @ R^T row by row, and per-chunk partial sums of the block and scale gradients.

        ``zero`` is 0 in x's dtype: the per-tile sums run in that dtype (float32 sums of `tile` products, no
        conversions in the inner loop), the per-chunk partials in float64.  Returns (n_chunks, n, 4) and
        (n_chunks, d) float64 arrays; the caller sums over chunks.
        """  # pragma: no cover - compiled
        n_rows, d = x.shape
        n_levels = bounds.shape[0] - 1
        n_blocks = blocks.shape[0]
        part_blocks = np.zeros((n_chunks, n_blocks, 4))
        part_scale = np.zeros((n_chunks, d))
        n_tiles = (n_rows + tile - 1) // tile
        tiles_per_chunk = (n_tiles + n_chunks - 1) // n_chunks
        for chunk in prange(n_chunks):
            buf = np.empty((d, tile), dtype=x.dtype)
            g = np.empty((d, tile), dtype=x.dtype)
            saved = np.empty((2 * n_blocks + 2, tile), dtype=x.dtype)  # level inputs of the tile, 2 per block
            acc = part_blocks[chunk]
            acc_scale = part_scale[chunk]
            for tile_index in range(chunk * tiles_per_chunk, min(n_tiles, (chunk + 1) * tiles_per_chunk)):
                n0 = tile_index * tile
                rows = min(tile, n_rows - n0)
                _load_tile(x, n0, rows, buf, order, has_order)
                _load_tile(grad, n0, rows, g, order, has_order)
                # recompute the forward, keeping each level's input pairs
                for lev in range(n_levels - 1, -1, -1):
                    _apply_level(buf, blocks, left, right, bounds[lev], bounds[lev + 1], saved, True)
                if has_scale:
                    for t in range(d):
                        sg = zero
                        for r in range(tile):
                            sg += g[t, r] * buf[t, r]
                            g[t, r] *= scale[t]
                        acc_scale[t] += sg
                # walk back: P_1 was applied last
                for lev in range(n_levels):
                    for q in range(bounds[lev], bounds[lev + 1]):
                        i = left[q]
                        j = right[q]
                        a, b, c, e = blocks[q, 0], blocks[q, 1], blocks[q, 2], blocks[q, 3]
                        s00 = zero
                        s01 = zero
                        s10 = zero
                        s11 = zero
                        for r in range(tile):
                            xl = saved[2 * q, r]
                            xr = saved[2 * q + 1, r]
                            gl = g[i, r]
                            gr = g[j, r]
                            s00 += xl * gl
                            s01 += xl * gr
                            s10 += xr * gl
                            s11 += xr * gr
                            g[i, r] = a * gl + b * gr
                            g[j, r] = c * gl + e * gr
                        acc[q, 0] += s00
                        acc[q, 1] += s01
                        acc[q, 2] += s10
                        acc[q, 3] += s11
                _store_tile(g, grad_x, n0, rows, order, has_order)
        return part_blocks, part_scale

    @njit(parallel=True, fastmath=_FASTMATH, cache=True)
    def _rotate_tiles_mixed(x, y, blocks, scales, has_scale, orders, has_order, left, right, bounds, tiles, tile):
        """Mixed adapters, forward only: ``tiles`` (T, 3) lists (first row, rows, adapter) of row tiles that each
        lie inside one adapter's rows; tile k computes ``y[rows] = x[rows] @ R_adapter`` with that adapter's
        ``blocks[adapter]`` (n, 4), ``scales[adapter]`` (d,) and coordinate order ``orders[adapter]`` (d,) (see
        :mod:`goft.ops.pairing`: position t holds coordinate ``order[t]``).  Rows of no tile are not written.
        """  # pragma: no cover - compiled
        d = x.shape[1]
        n_levels = bounds.shape[0] - 1
        for k in prange(tiles.shape[0]):
            n0, rows, adapter = tiles[k, 0], tiles[k, 1], tiles[k, 2]
            # as wide as the tile's rows: a decode step's tiles are often one row each, and lanes past the rows
            # would be computed for nothing
            buf = np.empty((d, rows), dtype=x.dtype)
            order = orders[adapter]
            for t in range(d):
                source = order[t] if has_order else t
                for r in range(rows):
                    buf[t, r] = x[n0 + r, source]
            no_save = np.empty((0, rows), dtype=x.dtype)
            adapter_blocks = blocks[adapter]
            for li in range(n_levels):
                lev = n_levels - 1 - li
                _apply_level(buf, adapter_blocks, left, right, bounds[lev], bounds[lev + 1], no_save, False)
            if has_scale:
                scale = scales[adapter]
                for t in range(d):
                    for r in range(rows):
                        buf[t, r] *= scale[t]
            for t in range(d):
                target = order[t] if has_order else t
                for r in range(rows):
                    y[n0 + r, target] = buf[t, r]

    @njit(parallel=True, fastmath=_FASTMATH, cache=True)
    def _rotate_lanes_mixed(x, y, blocks, scales, has_scale, orders, has_order, left, right, bounds, lanes, tile):
        """Mixed adapters, forward only, for rows whose runs are too short to fill a tile (a decode step: one row
        per sequence): ``lanes`` (R, 2) lists (row, adapter); each group of ``tile`` consecutive entries is one
        (d, tile) scratch whose lane r takes its own adapter's blocks, scale and order, so the lane loops stay as
        wide as a tile whatever the adapters.  Same arguments and result as :func:`_rotate_tiles_mixed`.
        """  # pragma: no cover - compiled
        d = x.shape[1]
        n_levels = bounds.shape[0] - 1
        n_groups = (lanes.shape[0] + tile - 1) // tile
        for k in prange(n_groups):
            first = k * tile
            width = min(tile, lanes.shape[0] - first)
            rows = lanes[first : first + width, 0]
            adapters = lanes[first : first + width, 1]
            buf = np.empty((d, width), dtype=x.dtype)
            for r in range(width):
                row, order = rows[r], orders[adapters[r]]
                for t in range(d):
                    buf[t, r] = x[row, order[t] if has_order else t]
            for li in range(n_levels):
                lev = n_levels - 1 - li
                for q in range(bounds[lev], bounds[lev + 1]):
                    i = left[q]
                    j = right[q]
                    for r in range(width):
                        a = adapters[r]
                        xl = buf[i, r]
                        xr = buf[j, r]
                        buf[i, r] = blocks[a, q, 0] * xl + blocks[a, q, 2] * xr
                        buf[j, r] = blocks[a, q, 1] * xl + blocks[a, q, 3] * xr
            for r in range(width):
                row, order, scale = rows[r], orders[adapters[r]], scales[adapters[r]]
                for t in range(d):
                    y[row, order[t] if has_order else t] = buf[t, r] * scale[t] if has_scale else buf[t, r]


# Fixed number of row chunks for the backward's partial sums: results do not depend on the thread count.
BACKWARD_CHUNKS = 16


@functools.cache
def _pairing_arrays(d: int, structure: str, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairing as int64 numpy arrays: left (n,), right (n,), bounds (M + 1,); see the module docstring."""
    levels = level_table(d, structure, depth)
    left = np.array([i for level in levels for i in level.left], dtype=np.int64)
    right = np.array([j for level in levels for j in level.right], dtype=np.int64)
    bounds = np.array([level.offset for level in levels] + [len(left)], dtype=np.int64)
    return left, right, bounds


def _as_numpy(t: Optional[torch.Tensor], dtype: torch.dtype, shape=None) -> np.ndarray:
    """A contiguous numpy view of ``t`` in ``dtype`` (a copy only when needed); an empty array for None."""
    if t is None:
        return np.empty(0, dtype=np.float32 if dtype == torch.float32 else np.float64)
    t = t.detach().to(dtype)
    if shape is not None:
        t = t.reshape(shape)
    return t.contiguous().numpy()


def rotate_rows(
    rows: torch.Tensor,
    params: torch.Tensor,
    scale: Optional[torch.Tensor],
    top_first: bool,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    blocks = blocks_of(params)
    dtype = blocks.dtype
    rows = rows.to(dtype).contiguous()
    out = torch.empty_like(rows)
    _rotate_rows(
        _as_numpy(rows, dtype),
        out.numpy(),
        _as_numpy(blocks, dtype, (-1, 4)),
        _as_numpy(scale, dtype),
        scale is not None,
        *_pairing_arrays(rows.shape[-1], structure, depth),
        TILE,
        top_first,
        *_order_arrays(order),
    )
    return out


def _order_arrays(order: Optional[torch.Tensor]) -> tuple[np.ndarray, bool]:
    """(order as int64 numpy, whether there is one): the kernels gather and scatter rows through it."""
    if order is None:
        return np.zeros(1, dtype=np.int64), False
    return order.detach().cpu().to(torch.int64).contiguous().numpy(), True


def rotate_rows_backward(
    rows,
    grad,
    params,
    scale,
    need_params: bool,
    need_scale: bool,
    structure: str = "tree",
    depth: int = 1,
    order: Optional[torch.Tensor] = None,
):
    blocks = blocks_of(params)
    dtype = blocks.dtype
    rows = rows.to(dtype)
    grad_rows = torch.empty(rows.shape, dtype=dtype)
    n_chunks = max(1, min(rows.shape[0], BACKWARD_CHUNKS))
    zero = np.dtype(np.float32 if dtype == torch.float32 else np.float64).type(0)
    part_blocks, part_scale = _rotate_rows_backward(
        _as_numpy(rows, dtype),
        _as_numpy(grad, dtype),
        grad_rows.numpy(),
        _as_numpy(blocks, dtype, (-1, 4)),
        _as_numpy(scale, dtype),
        scale is not None,
        *_pairing_arrays(rows.shape[-1], structure, depth),
        n_chunks,
        zero,
        TILE,
        *_order_arrays(order),
    )
    grad_params = None
    if need_params:
        grad_params = gradient_for(params, torch.from_numpy(part_blocks.sum(0)).reshape(blocks.shape).to(dtype))
    grad_scale = torch.from_numpy(part_scale.sum(0)).to(dtype) if (need_scale and scale is not None) else None
    return grad_rows, grad_params, grad_scale


@functools.lru_cache(maxsize=8)
def _unused_per_adapter(n_adapters: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(A, 1) stand-ins for absent scales and orders: the kernels index them by adapter but never read them."""
    floats = np.float32 if dtype == torch.float32 else np.float64
    return np.ones((n_adapters, 1), dtype=floats), np.zeros((n_adapters, 1), dtype=np.int64)


def rotate_rows_mixed(
    rows: torch.Tensor,
    params: torch.Tensor,
    scales: Optional[torch.Tensor],
    row_adapter: torch.Tensor,
    orders: Optional[torch.Tensor],
    structure: str = "tree",
    depth: int = 1,
) -> torch.Tensor:
    blocks = blocks_of(params.reshape(-1, *params.shape[2:])).reshape(params.shape[0], -1, 4)
    dtype = blocks.dtype
    rows = rows.to(dtype).contiguous()
    tiles, lanes = tiles_and_lanes(row_adapter, TILE, SHORT_RUN)
    every_row = int(tiles[:, 1].sum()) + len(lanes) == rows.shape[0]
    out = torch.empty_like(rows) if every_row else rows.clone()  # the base's rows (-1) stay as they are
    unused = _unused_per_adapter(params.shape[0], dtype)  # scales and orders when there are none: never read
    arguments = (
        _as_numpy(rows, dtype),
        out.numpy(),
        np.ascontiguousarray(blocks.detach().numpy()),
        unused[0] if scales is None else _as_numpy(scales, dtype),
        scales is not None,
        unused[1] if orders is None else orders.contiguous().numpy(),
        orders is not None,
        *_pairing_arrays(rows.shape[-1], structure, depth),
    )
    if len(tiles):
        _rotate_tiles_mixed(*arguments, tiles, TILE)
    if len(lanes):
        _rotate_lanes_mixed(*arguments, lanes, TILE)
    return out
