"""The one convention of goft's Givens-rotation math, and the level table that every backend walks.

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

Parameters are ordered level by level, ascending ``i`` inside a level.  A block ``[[a, b], [c, e]]`` sits at rows and
columns ``(i, j)`` of its level matrix ``P_r`` (identity elsewhere), and ``R = P_L ⋯ P_2 P_1``.  Strict GOFT blocks
are ``[[cos θ, -sin θ], [sin θ, cos θ]]`` with the angle θ (radians, zero at init) as the parameter; qGOFT blocks are
free.  GOFT* (``scale`` given) is ``R = P_L ⋯ P_1 · diag(s)``.  (The fourth entry is called ``e`` everywhere in the
code, so that ``d`` always means the dimension.)

For a row vector, right-multiplying by a level matrix maps each pair ``(x_i, x_j)`` to
``(a·x_i + c·x_j, b·x_i + e·x_j)``; that one update is the whole kernel.  With ``x @ R = x @ P_L @ ... @ P_1`` the
top level is applied first.

qGOFT's soft orthogonality penalty per block is ``(a·b + c·e)²``, the squared inner product of its two columns.

What the method can and cannot express: ``d - 1`` angles do not span SO(d), whose dimension is ``d(d-1)/2``.  The
paper's theorem only guarantees that *some* such product maps one given vector onto any other vector of the same norm.

Costs: ``rotate`` does O(d) work per row (level r touches ``d / 2^(r-1)`` coordinates), never forms R, and its
autograd saves only its input and parameters (backward recomputes what it needs).  Merge and unmerge are O(d · out)
level updates on W's columns; the unmerge uses closed-form 2×2 inverses, never ``linalg.inv``.
"""

from __future__ import annotations

import functools

import torch


class GivensError(ValueError):
    """Bad input to the Givens math (wrong shape, dtype or value)."""


class SingularBlockError(GivensError):
    """A qGOFT 2×2 block is (nearly) singular, so the rotation cannot be inverted reliably."""


def _check_dimension(d) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise GivensError(f"d must be an integer >= 1, got {d!r}")


@functools.cache
def givens_levels(d: int) -> tuple[tuple[int, int, int], ...]:
    """The level table of dimension ``d``: one ``(step, npairs, offset)`` triple per level, level 1 first.

    ``offset`` is where the level's blocks start in the ``(d - 1,)`` parameter vector.  ``d = 1`` has no levels.
    """
    _check_dimension(d)
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
    _check_dimension(d)
    return d - 1


def givens_pairs(d: int) -> list[torch.Tensor]:
    """The pairs of each level, as a list of ``(npairs, 2)`` LongTensors ``[[i, i + step], ...]``, level 1 first."""
    out = []
    for step, npairs, _ in givens_levels(d):
        left = torch.arange(npairs, dtype=torch.long) * (2 * step)
        out.append(torch.stack([left, left + step], dim=1))
    return out
