"""Fused CPU kernels for the Givens rotation, compiled with numba when it is installed.

The convention and the reference (pure torch) implementation live in :mod:`goft.functional`; these loops compute the
same thing faster and are used *behind* ``functional.rotate`` when available (``GOFT_KERNEL=torch`` forces the torch
path, ``GOFT_KERNEL=numba`` insists on this one).

Why a per-row loop: a row of a d=768 activation is 3 KiB, so all ``ceil(log2 d)`` levels of one row can run in L1
cache in one pass over memory, with rows in parallel.  The torch path instead makes one or more passes over the whole
activation per level.  Forward: read x, write y.  Backward: recompute the level inputs of a row into a small scratch
(``2 (d - 1)`` values), walk the levels back, accumulate the block gradients in per-thread float64 partial sums.

All arrays are C-contiguous numpy views of CPU tensors: ``x, y, grad`` (N, d); ``blocks`` (d - 1, 4) holding
``a, b, c, d`` of each 2×2 block in the parameter order of :mod:`goft.functional`; ``steps, npairs, offsets`` (L,) the
levels, level 1 first.
"""

from __future__ import annotations

import functools
import os

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # numba is optional: functional.rotate falls back to the torch path
    numba = None

AVAILABLE = numba is not None


KERNEL_CHOICES = ("auto", "numba", "triton", "torch")


def kernel_choice(device_type: str = "cpu") -> str:
    """The rotation kernel for tensors on ``device_type``: 'numba' (CPU), 'triton' (CUDA) or 'torch' (reference).

    From ``GOFT_KERNEL``: ``auto`` (default) takes the compiled kernel for the device when its compiler is installed;
    ``torch`` forces the reference path everywhere; ``numba`` / ``triton`` are ``auto`` that raises ImportError when
    that compiler is missing.
    """
    choice = os.environ.get("GOFT_KERNEL", "auto").lower()
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"GOFT_KERNEL must be one of {', '.join(map(repr, KERNEL_CHOICES))}, got {choice!r}")
    if choice == "numba" and not AVAILABLE:
        raise ImportError("GOFT_KERNEL=numba but numba is not installed (pip install numba)")
    if choice == "triton" and not triton_available():
        raise ImportError("GOFT_KERNEL=triton but triton is not installed (it comes with CUDA builds of torch)")
    if choice == "torch":
        return "torch"
    if device_type == "cpu":
        return "numba" if AVAILABLE else "torch"
    if device_type == "cuda":
        return "triton" if triton_available() else "torch"
    return "torch"


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton can be imported (looked up once: this runs on every CUDA rotation)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


# Rows are processed in tiles of `tile` rows, transposed into a (d, tile) scratch so that every 2×2 block update is a
# contiguous vector operation across the tile's rows (the pairs themselves are strided within a row).  The tile is a
# run-time argument on purpose: with a compile-time constant LLVM unrolls the lane loops fully and leaves them scalar,
# with a run-time trip count its loop vectorizer turns them into SIMD code.
TILE = 32
# The tile transposes walk the tile's rows in groups of ROW_GROUP: only that many source (or destination) rows are in
# flight at a time.  With all 32 rows in flight, row strides that are multiples of 2 KiB (d = 1024, 1536, 4096 fp32)
# map those rows' cache lines to the same few L1 sets, which then evict each other (measured 3x slower per element
# than d = 768 at d = 1024/1536); 8 lines fit any set's associativity.
ROW_GROUP = 8
assert TILE % ROW_GROUP == 0, "a full tile is walked in whole row groups"
# NaN and inf keep their IEEE meaning (no 'nnan'/'ninf'); reassociation lets the tile reductions vectorize.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


if AVAILABLE:

    @njit(inline="always", fastmath=_FASTMATH)
    def _load_tile(src, n0, rows, dst):  # pragma: no cover - compiled
        # r innermost (inside a row group): contiguous stores into the scratch; see ROW_GROUP for the grouping
        d, tile = dst.shape
        if rows == tile:
            for r0 in range(0, tile, ROW_GROUP):
                for t in range(d):
                    for r in range(r0, r0 + ROW_GROUP):
                        dst[t, r] = src[n0 + r, t]
        else:  # a short last tile: zero lanes contribute nothing
            for t in range(d):
                for r in range(tile):
                    dst[t, r] = src[n0 + r, t] if r < rows else 0.0

    @njit(inline="always", fastmath=_FASTMATH)
    def _store_tile(src, dst, n0, rows):  # pragma: no cover - compiled
        d, tile = src.shape
        if rows == tile:
            for r0 in range(0, tile, ROW_GROUP):
                for t in range(d):
                    for r in range(r0, r0 + ROW_GROUP):
                        dst[n0 + r, t] = src[t, r]
        else:
            for t in range(d):
                for r in range(rows):
                    dst[n0 + r, t] = src[t, r]

    @njit(inline="always", fastmath=_FASTMATH)
    def _apply_level(buf, blocks, step, npairs, offset, saved, save):  # pragma: no cover - compiled
        """One level on a (d, tile) scratch: each pair's lanes <- [left, right] @ block; with ``save``, first copy
        the pair's input lanes to ``saved[2q], saved[2q + 1]`` (the backward needs them)."""
        tile = buf.shape[1]
        for k in range(npairs):
            i = 2 * k * step
            j = i + step
            q = offset + k
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
    def rotate_rows(x, y, blocks, scale, has_scale, steps, npairs, offsets, tile, top_first):  # pragma: no cover
        """y[n] = x[n] @ P_L ⋯ P_1 (· diag(scale)) for every row n (``top_first``), or x[n] @ P_1 ⋯ P_L (· diag)."""
        n_rows, d = x.shape
        n_levels = steps.shape[0]
        n_tiles = (n_rows + tile - 1) // tile
        for tile_index in prange(n_tiles):
            n0 = tile_index * tile
            rows = min(tile, n_rows - n0)
            buf = np.empty((d, tile), dtype=x.dtype)
            _load_tile(x, n0, rows, buf)
            no_save = np.empty((0, tile), dtype=x.dtype)
            for li in range(n_levels):
                lev = n_levels - 1 - li if top_first else li
                _apply_level(buf, blocks, steps[lev], npairs[lev], offsets[lev], no_save, False)
            if has_scale:
                for t in range(d):
                    for r in range(tile):
                        buf[t, r] *= scale[t]
            _store_tile(buf, y, n0, rows)

    @njit(parallel=True, fastmath=_FASTMATH, cache=True)
    def rotate_rows_backward(x, grad, grad_x, blocks, scale, has_scale, steps, npairs, offsets, n_chunks, zero, tile):
        """grad_x = grad @ R^T row by row, and per-chunk partial sums of the block and scale gradients.

        ``zero`` is 0 in x's dtype: the per-tile sums run in that dtype (float32 sums of `tile` products, no
        conversions in the inner loop), the per-chunk partials in float64.  Returns (n_chunks, d - 1, 4) and
        (n_chunks, d) float64 arrays; the caller sums over chunks.
        """  # pragma: no cover - compiled
        n_rows, d = x.shape
        n_levels = steps.shape[0]
        n_blocks = blocks.shape[0]
        part_blocks = np.zeros((n_chunks, n_blocks, 4))
        part_scale = np.zeros((n_chunks, d))
        n_tiles = (n_rows + tile - 1) // tile
        tiles_per_chunk = (n_tiles + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            buf = np.empty((d, tile), dtype=x.dtype)
            g = np.empty((d, tile), dtype=x.dtype)
            saved = np.empty((2 * n_blocks + 2, tile), dtype=x.dtype)  # level inputs of the tile, 2 per block
            acc = part_blocks[c]
            acc_scale = part_scale[c]
            for tile_index in range(c * tiles_per_chunk, min(n_tiles, (c + 1) * tiles_per_chunk)):
                n0 = tile_index * tile
                rows = min(tile, n_rows - n0)
                _load_tile(x, n0, rows, buf)
                _load_tile(grad, n0, rows, g)
                # recompute the forward, keeping each level's input pairs
                for lev in range(n_levels - 1, -1, -1):
                    _apply_level(buf, blocks, steps[lev], npairs[lev], offsets[lev], saved, True)
                if has_scale:
                    for t in range(d):
                        sg = zero
                        for r in range(tile):
                            sg += g[t, r] * buf[t, r]
                            g[t, r] *= scale[t]
                        acc_scale[t] += sg
                # walk back: P_1 was applied last
                for lev in range(n_levels):
                    s = steps[lev]
                    off = offsets[lev]
                    for k in range(npairs[lev]):
                        i = 2 * k * s
                        j = i + s
                        q = off + k
                        a, b, cc, e = blocks[q, 0], blocks[q, 1], blocks[q, 2], blocks[q, 3]
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
                            g[j, r] = cc * gl + e * gr
                        acc[q, 0] += s00
                        acc[q, 1] += s01
                        acc[q, 2] += s10
                        acc[q, 3] += s11
                _store_tile(g, grad_x, n0, rows)
        return part_blocks, part_scale
