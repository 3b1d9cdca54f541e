"""How a mixed-adapter batch is cut into row tiles that each belong to one adapter: the kernels of every backend
walk these tiles, one adapter's parameters per tile (:func:`goft.functional.rotate_mixed`)."""

from __future__ import annotations

import numpy as np
import torch

_TILES_KEPT = 16  # row layouts whose tiles are kept: every adapted layer of a model sees the same one per batch
_tiles_cache: dict[tuple, object] = {}


def _cached(key: tuple, make):
    if key not in _tiles_cache:
        if len(_tiles_cache) >= _TILES_KEPT:
            _tiles_cache.pop(next(iter(_tiles_cache)))
        _tiles_cache[key] = make()
    return _tiles_cache[key]


def adapter_tiles(row_adapter: torch.Tensor, tile: int) -> np.ndarray:
    """(T, 3) int64 (first row, rows, adapter) covering every row whose adapter is >= 0: each run of consecutive
    rows with one adapter is cut into tiles of at most ``tile`` rows (rows with -1, the base, are in no tile).
    A batch whose sequences each keep one adapter is a few runs, so no sorting is needed."""
    ids = row_adapter.cpu().numpy().astype(np.int64)
    return _cached(("tiles", ids.tobytes(), tile), lambda: _tiles(ids, tile))


def tiles_and_lanes(row_adapter: torch.Tensor, tile: int, short_run: int) -> tuple[np.ndarray, np.ndarray]:
    """The tiles of :func:`adapter_tiles` for runs of at least ``short_run`` rows, and (R, 2) int64 (row, adapter)
    for every row of the shorter runs (-1 excluded), for kernels that pack those into lanes of their own adapter."""
    ids = row_adapter.cpu().numpy().astype(np.int64)

    def split():
        tiles = _tiles(ids, tile)
        _, lengths = _runs(ids)
        run_length = np.repeat(lengths, lengths)  # per row: the length of the run it is in
        short = (run_length < short_run) & (ids >= 0)
        long_tiles = tiles[run_length[tiles[:, 0]] >= short_run] if len(tiles) else tiles
        rows = np.flatnonzero(short)
        return long_tiles, np.stack([rows, ids[rows]], axis=1).astype(np.int64)

    return _cached(("lanes", ids.tobytes(), tile, short_run), split)


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First row and length of each run of consecutive equal entries of ``ids`` (none for an empty array)."""
    if ids.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return starts, np.diff(np.r_[starts, ids.size])


def _tiles(ids: np.ndarray, tile: int) -> np.ndarray:
    if ids.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    starts, lengths = _runs(ids)
    keep = ids[starts] >= 0
    starts, lengths, adapters = starts[keep], lengths[keep], ids[starts][keep]
    pieces = (lengths + tile - 1) // tile
    run = np.repeat(np.arange(starts.size), pieces)
    offset = (np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * tile
    first = starts[run] + offset
    rows = np.minimum(tile, lengths[run] - offset)
    return np.stack([first, rows, adapters[run]], axis=1).astype(np.int64)
