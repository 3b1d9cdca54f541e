"""The public face of goft's Givens-rotation math: pure functions, no ``nn.Module``.

The convention (pairing, parameter order, ``R = P_L ⋯ P_1``, what the method cannot express) is stated once, in
:mod:`goft.ops.pairing`; the functions below are defined in :mod:`goft.ops` and gathered here.
"""

from .ops.autograd import merge_weight, rotate, rotate_inverse, unmerge_weight
from .ops.blocks import angles_to_blocks, block_orthogonality_penalty
from .ops.pairing import GivensError, SingularBlockError, givens_levels, givens_pairs, num_blocks
from .ops.reference import rotation_matrix

__all__ = [
    "GivensError",
    "SingularBlockError",
    "angles_to_blocks",
    "block_orthogonality_penalty",
    "givens_levels",
    "givens_pairs",
    "merge_weight",
    "num_blocks",
    "rotate",
    "rotate_inverse",
    "rotation_matrix",
    "unmerge_weight",
]
