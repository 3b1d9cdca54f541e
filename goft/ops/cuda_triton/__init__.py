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

Mixed-adapter batches (inference): the forward kernel takes a table of row tiles, each inside one adapter's rows,
and offsets the parameter, scale and order pointers by the tile's adapter; coordinate orders are applied while a
tile is loaded and stored (rows wider than a tile first go into the order in a launch with no levels).

The package: :mod:`.kernels` (the two Triton kernels, with a glossary of their constexprs), :mod:`.levels` (one
level in registers: the helpers the kernels call), :mod:`.planning` (which
launches walk a row, their constexprs, the scratch size and the pairing table: plain Python and torch, testable
without Triton) and :mod:`.host` (the wrappers that allocate, launch and sum).
"""

from . import levels, planning
from .host import rotate_rows, rotate_rows_backward, rotate_rows_mixed
from .kernels import AVAILABLE
from .planning import MAX_TILE, PROGRAMS_PER_SM, Launch, padded_width, plan_passes, tile_rows, widest_row

__all__ = [
    "AVAILABLE",
    "MAX_TILE",
    "PROGRAMS_PER_SM",
    "Launch",
    "padded_width",
    "plan_passes",
    "levels",
    "planning",
    "rotate_rows",
    "rotate_rows_backward",
    "rotate_rows_mixed",
    "tile_rows",
    "widest_row",
]
