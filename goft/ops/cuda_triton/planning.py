"""Which launches walk a row, with which constexprs, and what they need: plain Python (and torch for the pairing
table), testable without Triton.  The walk itself is described in :mod:`goft.ops.cuda_triton`."""

from __future__ import annotations

import dataclasses
import functools

import torch

from ..pairing import level_table

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


@dataclasses.dataclass(frozen=True)
class Launch:
    """One launch's share of the walk (its fields become the kernels' constexprs, glossary in :mod:`.kernels`):
    stacks ``stack0`` .. ``stack0 + stacks - 1``, tile levels ``kv_first`` .. ``kv_end - 1`` (row level ``+
    lev_shift``) of each, on tiles of ``tile`` columns, ``chunk`` consecutive columns every ``period``; ``chunks``
    programs per row tile, the k-th starting at column ``k·chunk_step``.  ``every_column``: false for the tree's
    high pass, which reads and writes only the columns its levels touch (the caller carries the others over)."""

    stack0: int
    stacks: int
    kv_first: int
    kv_end: int
    lev_shift: int
    tile: int
    chunk: int
    period: int
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
            "W": self.period,
            "BM": tile_rows(self.tile),
            "COMPACT": compact,
        }

    def warps(self) -> int:
        return 4 if tile_rows(self.tile) * self.tile <= 4096 else 8


def _log2(n: int) -> int:
    return n.bit_length() - 1


def plan_passes(d: int, depth: int, compact: bool, top_first: bool) -> list[Launch]:
    """The launches that apply every level in order (P_M first when ``top_first``): one while a padded row fits a
    tile, else a low and a high pass per stack."""
    width = padded_width(d)
    per_stack = _log2(width)
    if width > widest_row():
        raise ValueError(f"rows of {d} columns are wider than the kernels take ({widest_row()})")
    if width <= MAX_TILE:
        return [Launch(0, depth, 0, per_stack, 0, width, width, width, 0, 1)]
    low_levels = _log2(MAX_TILE)
    high = width // MAX_TILE
    chunk = 1 if compact else MAX_TILE // high  # the tree's high levels touch only column 0 of each block
    passes = []
    for stack in reversed(range(depth)) if top_first else range(depth):
        low = Launch(stack, 1, 0, low_levels, 0, MAX_TILE, MAX_TILE, MAX_TILE, MAX_TILE, -(-d // MAX_TILE))
        top = Launch(
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


def scratch_per_program(launch: Launch, angles: bool, compact: bool) -> int:
    """fp32 values of scratch one backward program of ``launch`` needs: none for angles (level inputs are recovered
    by transposition); for blocks, every level's pair inputs of every stack, laid out as the kernel's
    ``_scratch_offset`` reads them.  A tree level (``compact``) at tile level ``kv`` keeps only its ``s = 0`` pairs,
    ``2·BM·(DV >> (kv + 1))`` values; any other level the whole ``BM·DV`` tile."""
    bm = tile_rows(launch.tile)
    if angles:
        return 0
    if compact:
        return launch.stacks * 2 * bm * ((launch.tile >> launch.kv_first) - (launch.tile >> launch.kv_end))
    return launch.stacks * (launch.kv_end - launch.kv_first) * bm * launch.tile


@functools.cache
def pair_index(d: int, structure: str, depth: int, device: torch.device) -> tuple[torch.Tensor, int]:
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


@functools.cache
def programs_per_launch(device: torch.device) -> int:
    """How many backward programs run at once: PROGRAMS_PER_SM per multiprocessor (4 on CPU tensors, which only
    Triton's interpreter takes)."""
    if device.type != "cuda":
        return 4
    return PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
