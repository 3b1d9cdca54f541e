"""The one convention of goft's Givens-rotation math, and the level table that every backend walks.

An adapted linear layer with ``in_features = d`` learns a d×d matrix ``R`` that acts on the layer's *input*::

    y = base(x @ R)            merged:  W <- W @ R.T   (torch layout, W is out × in)

``R`` is a product of 2×2 blocks arranged in levels; inside a level the pairs ``(i, j)``, ``i < j``, are disjoint.
The *structure* says which pairs (``STRUCTURES``):

- ``"tree"`` (the default, the paper's Eq. 3; Ma et al., ICML 2024): ``d - 1`` blocks in ``ceil(log2 d)`` levels,
  a binary tree that carries an unpaired coordinate up to the next level::

      cnt, step = d, 1
      while cnt > 1:
          npairs = cnt // 2
          level pairs: (i, i + step) for i = 0, 2*step, ..., (npairs - 1) * 2*step
          cnt, step = npairs + cnt % 2, step * 2

  The coordinates alive at a level with stride ``step`` are exactly ``0, step, 2*step, ...``, so a tree level is two
  strided views of the last dimension: ``[0 : 2*npairs*step : 2*step]`` and ``[step : 2*npairs*step : 2*step]``.
- ``"butterfly"``: level ``r = 1 … ceil(log2 d)`` pairs every ``i`` whose bit ``r - 1`` is 0 with
  ``j = i + 2^(r-1)`` when ``j < d`` (``d = 2^m``: ``d/2`` pairs per level; ``d = 768``: 3,584 blocks).  Every tree
  pair is a butterfly pair of the same level, so a butterfly whose other blocks are the identity is the tree.

``depth = K`` stacks K such products, each with its own blocks and the same pairing (no permutation between them):
the level list is stack 1's levels 1 … L, then stack 2's, and so on, and everything below runs over that one flat
list of ``M = K·L`` levels.

Parameters are ordered level by level along that list, ascending ``i`` inside a level.  A block ``[[a, b], [c, e]]``
sits at rows and columns ``(i, j)`` of its level matrix ``P_m`` (identity elsewhere), and ``R = P_M ⋯ P_2 P_1``
(for stacks: ``R = R_K ⋯ R_1``).  Strict GOFT blocks
are ``[[cos θ, -sin θ], [sin θ, cos θ]]`` with the angle θ (radians, zero at init) as the parameter; qGOFT blocks are
free.  GOFT* (``scale`` given) is ``R = P_M ⋯ P_1 · diag(s)``.  (The fourth entry is called ``e`` everywhere in the
code, so that ``d`` always means the dimension.)

For a row vector, right-multiplying by a level matrix maps each pair ``(x_i, x_j)`` to
``(a·x_i + c·x_j, b·x_i + e·x_j)``; that one update is the whole kernel.  With ``x @ R = x @ P_M @ ... @ P_1`` the
last level is applied first.

qGOFT's soft orthogonality penalty per block is ``(a·b + c·e)²``, the squared inner product of its two columns.

A coordinate ``order`` (a permutation of ``0 … d-1``, the *pairing* of :class:`goft.GOFTConfig` other than
``"index"``) relabels the coordinates before the structure is laid over them: position ``k`` of the structure is
coordinate ``order[k]``, so a block pairing positions ``(i, j)`` turns coordinates ``(order[i], order[j])`` and scale
entry ``k`` multiplies coordinate ``order[k]``.  With ``Q[order[k], k] = 1`` the rotation is ``Q R Q^T``:
``x @ (Q R Q^T)`` is ``(x[..., order] @ R)`` scattered back to ``order``, and ``R_order[order[a], order[b]] =
R[a, b]``.  It is still the identity when every block is, and the same number of parameters.

What the method can and cannot express: ``d - 1`` angles do not span SO(d), whose dimension is ``d(d-1)/2``.  The
paper's theorem only guarantees that *some* such product maps one given vector onto any other vector of the same norm.
With the tree, an odd coordinate meets one partner, once.  The butterfly (about ``(d/2)·log2 d`` blocks) and stacking
(``K`` times the blocks) are the dials that buy more of SO(d) with more parameters.

Costs: ``rotate`` does O(blocks) work per row (the tree: O(d); level r touches ``d / 2^(r-1)`` coordinates; the
butterfly: O(d log d)), never forms R, and its
autograd saves only its input and parameters (backward recomputes what it needs).  Merge and unmerge are O(d · out)
level updates on W's columns; the unmerge uses closed-form 2×2 inverses, never ``linalg.inv``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # torch is imported where tensors are made: the command line reads STRUCTURES before it loads
    import torch


class GivensError(ValueError):
    """Bad input to the Givens math (wrong shape, dtype or value)."""


class SingularBlockError(GivensError):
    """A qGOFT 2×2 block is (nearly) singular, so the rotation cannot be inverted reliably."""


STRUCTURES = ("tree", "butterfly")
# Which coordinates the structure's positions stand for (GOFTConfig.pairing): "index" is 0 … d-1, the paper's;
# "random" a seeded permutation per layer (a control); "task" one chosen from calibration batches
# (goft.calibrate_pairing).
PAIRINGS = ("index", "random", "task")


def _memoized(fn):
    """``functools.cache`` as a plain Python function: ``torch.compile`` traces through it to a dict lookup, where
    it would warn about (and trace around) lru_cache's C wrapper on every compile."""
    table: dict = {}

    @functools.wraps(fn)
    def cached(*args, **kwargs):
        # typed, so that True is not taken for a cached 1 (and refused as a dimension instead)
        key = tuple((type(a), a) for a in args) + tuple((k, type(v), v) for k, v in sorted(kwargs.items()))
        if key not in table:
            table[key] = fn(*args, **kwargs)
        return table[key]

    return cached


def _check_dimension(d) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise GivensError(f"d must be an integer >= 1, got {d!r}")


def check_structure(structure, depth) -> None:
    """GivensError naming the argument, the allowed values and the value given."""
    if structure not in STRUCTURES:
        raise GivensError(f"structure must be one of {', '.join(map(repr, STRUCTURES))}, got {structure!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise GivensError(f"depth must be an integer >= 1, got {depth!r}")


@_memoized
def givens_levels(d: int) -> tuple[tuple[int, int, int], ...]:
    """The tree's level table of dimension ``d``: one ``(step, npairs, offset)`` triple per level, level 1 first.

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


@dataclass(frozen=True, eq=False)
class Level:
    """One level of a pairing: its blocks are parameters ``offset … offset + len(left) - 1``; block k pairs
    coordinates ``left[k] < right[k]``.  ``strided`` is ``(start, stride, gap)`` when ``left[k] = start + k·stride``
    and ``right[k] = left[k] + gap`` (every tree level, a butterfly's first and last), else None.

    Compared and hashed by identity: :func:`level_table` makes each level once, and caches keyed by a level (the
    torch path's index tensors) then cost O(1) rather than a hash of its pairs."""

    offset: int
    left: tuple[int, ...]
    right: tuple[int, ...]
    strided: Optional[tuple[int, int, int]]

    @property
    def npairs(self) -> int:
        return len(self.left)


def _level(offset: int, pairs: list[tuple[int, int]]) -> Level:
    left, right = tuple(i for i, _ in pairs), tuple(j for _, j in pairs)
    strided = None
    if len(pairs) == 1:
        strided = (left[0], 1, right[0] - left[0])
    elif pairs:
        stride, gap = left[1] - left[0], right[0] - left[0]
        if all(i == left[0] + k * stride and j - i == gap for k, (i, j) in enumerate(pairs)):
            strided = (left[0], stride, gap)
    return Level(offset, left, right, strided)


def _stack_pairs(d: int, structure: str) -> list[list[tuple[int, int]]]:
    """The pairs of each level of one stack, level 1 first."""
    if structure == "tree":
        return [[(i, i + step) for i in range(0, 2 * step * npairs, 2 * step)] for step, npairs, _ in givens_levels(d)]
    levels, step = [], 1
    while step < d:  # butterfly: every i with bit (r - 1) clear meets i + 2^(r - 1), if that exists
        levels.append([(i, i + step) for i in range(d - step) if not i & step])
        step *= 2
    return levels


@_memoized
def level_table(d: int, structure: str = "tree", depth: int = 1) -> tuple[Level, ...]:
    """Every level of a ``structure`` pairing of dimension ``d`` stacked ``depth`` times, in the order of
    ``R = P_M ⋯ P_1`` (level 1 of stack 1 first).  ``d = 1`` has no levels."""
    _check_dimension(d)
    check_structure(structure, depth)
    table, offset = [], 0
    for _ in range(depth):
        for pairs in _stack_pairs(d, structure):
            table.append(_level(offset, pairs))
            offset += len(pairs)
    return tuple(table)


@_memoized
def num_blocks(d: int, structure: str = "tree", depth: int = 1) -> int:
    """Number of 2×2 blocks (strict GOFT parameters) of a d×d rotation: ``depth · (d - 1)`` for the tree,
    ``depth · Σ_r #{i : bit r-1 of i is 0, i + 2^(r-1) < d}`` for the butterfly."""
    return sum(level.npairs for level in level_table(d, structure, depth))


def in_features_for_blocks(n: int, structure: str = "tree", depth: int = 1) -> Optional[int]:
    """The ``d`` whose pairing has ``n`` blocks (``num_blocks`` grows strictly with ``d`` past 1), or None."""
    check_structure(structure, depth)
    if n < 0:
        return None
    if n == 0:
        return 1
    low, high = 2, 2
    while num_blocks(high, structure, depth) < n:
        low, high = high + 1, 2 * high
    while low < high:
        mid = (low + high) // 2
        if num_blocks(mid, structure, depth) < n:
            low = mid + 1
        else:
            high = mid
    return low if num_blocks(low, structure, depth) == n else None


def givens_pairs(d: int, structure: str = "tree", depth: int = 1) -> list[torch.Tensor]:
    """The pairs of each level, as a list of ``(npairs, 2)`` LongTensors ``[[i, j], ...]``, in the order of
    ``level_table`` (the tree, depth 1: ``[[i, i + step], ...]``, level 1 first)."""
    import torch

    return [
        torch.tensor(list(zip(level.left, level.right, strict=True)), dtype=torch.long).reshape(-1, 2)
        for level in level_table(d, structure, depth)
    ]


def check_order(order, d: int) -> None:
    """GivensError unless ``order`` is a (d,) integer tensor holding each of ``0 … d-1`` once."""
    import torch

    if not isinstance(order, torch.Tensor) or order.dtype not in (torch.int64, torch.int32):
        raise GivensError(f"order must be an int64 tensor (a permutation of 0..{d - 1}), got {order!r:.80}")
    if tuple(order.shape) != (d,):
        raise GivensError(f"order must have shape ({d},) for d = {d}, got {tuple(order.shape)}")
    if not torch.equal(torch.sort(order.cpu()).values, torch.arange(d)):
        raise GivensError(f"order must hold each of 0..{d - 1} exactly once (a permutation)")


def random_order(d: int, seed: int) -> list[int]:
    """A seeded random permutation of ``0 … d-1``: the control that reorders coordinates without looking at data."""
    import torch

    _check_dimension(d)
    return torch.randperm(d, generator=torch.Generator().manual_seed(seed)).tolist()


def order_from_plane_scores(scores) -> list[int]:
    """A coordinate order whose first level pairs the planes that matter most.

    ``scores`` is a (d, d) tensor; entry ``(i, j)``'s magnitude says how much turning plane ``(i, j)`` matters (for
    :func:`goft.calibrate_pairing`, the first-order effect of its angle on the loss; the larger of ``|scores[i, j]|``
    and ``|scores[j, i]|`` is the plane's weight).  A greedy maximum-weight matching picks disjoint pairs, heaviest
    first; the order lists them as ``[i_1, j_1, i_2, j_2, …]`` (heaviest first; an odd coordinate out last), which
    every structure's first level pairs ``(0, 1), (2, 3), …``.  Later levels then meet pairs in rank order: the
    tree's level 2 turns ``(i_1, i_2)``, ``(i_3, i_4)``, ….  Greedy matching is within a factor 2 of the best
    matching's total weight.

    Computed in rounds of *locally dominant* pairs (each the heaviest plane left for both of its coordinates), which
    for distinct weights is exactly the greedy matching, in O(d²) tensor work per round and few rounds; ties go to
    the lower coordinate, so the result is deterministic.
    """
    import torch

    weight = scores.detach().double().abs().cpu()
    d = weight.shape[0]
    _check_dimension(d)
    if tuple(weight.shape) != (d, d):
        raise GivensError(f"scores must be a square (d, d) tensor, got {tuple(weight.shape)}")
    weight = torch.maximum(weight, weight.T)
    weight.fill_diagonal_(-1.0)  # below every real weight (>= 0): a coordinate never pairs with itself
    taken = torch.zeros(d, dtype=torch.bool)
    index = torch.arange(d)
    found: list[tuple[float, int, int]] = []
    while int((~taken).sum()) > 1:
        best = weight.argmax(dim=1)
        mutual = ~taken & (best[best] == index) & (index < best)
        if not bool(mutual.any()):  # only ties can leave no mutual pair: take the single heaviest plane
            flat = int(weight.argmax())
            mutual = torch.zeros(d, dtype=torch.bool)
            mutual[min(flat // d, flat % d)] = True
            best[min(flat // d, flat % d)] = max(flat // d, flat % d)
        left = index[mutual]
        right = best[mutual]
        found += zip(weight[left, right].tolist(), left.tolist(), right.tolist(), strict=True)
        for members in (left, right):
            taken[members] = True
            weight[members, :] = -2.0  # below the diagonal's -1: a taken coordinate is never anyone's best
            weight[:, members] = -2.0
    found.sort(key=lambda pair: (-pair[0], pair[1]))
    order = [c for _, i, j in found for c in (i, j)]
    return order + index[~taken].tolist()
