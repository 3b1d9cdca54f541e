"""The public face of goft's Givens-rotation math: pure functions, no ``nn.Module``.

The convention (pairings, parameter order, ``R = P_M ⋯ P_1``, what the method cannot express) is stated once, in
:mod:`goft.ops.pairing`; the functions below are defined in :mod:`goft.ops` and gathered here; the package and the
applications import this module as ``givens`` (``from goft import functional as givens``).
"""

from .ops.autograd import merge_weight, rotate, rotate_inverse, rotate_mixed, unmerge_weight
from .ops.backends import kernel_choice
from .ops.blocks import angles_to_blocks, block_orthogonality_penalty
from .ops.pairing import (
    STRUCTURES,
    GivensError,
    SingularBlockError,
    check_order,
    check_structure,
    givens_levels,
    givens_pairs,
    in_features_for_blocks,
    level_table,
    num_blocks,
    order_from_plane_scores,
    random_order,
)
from .ops.reference import rotation_matrix

__all__ = [
    "STRUCTURES",
    "GivensError",
    "SingularBlockError",
    "angles_to_blocks",
    "block_orthogonality_penalty",
    "check_order",
    "check_structure",
    "givens_levels",
    "givens_pairs",
    "in_features_for_blocks",
    "kernel_choice",
    "level_table",
    "merge_weight",
    "num_blocks",
    "order_from_plane_scores",
    "random_order",
    "rotate",
    "rotate_inverse",
    "rotate_mixed",
    "rotation_matrix",
    "unmerge_weight",
]
