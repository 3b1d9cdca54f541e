"""goft: Givens-rotation orthogonal fine-tuning (GOFT) and quasi-Givens (qGOFT) as a native PEFT method.

Importing ``goft`` registers the method with PEFT, so ``peft.get_peft_model(model, goft.GOFTConfig(...))``,
``save_pretrained`` and ``PeftModel.from_pretrained`` work.  A new process must ``import goft`` before
``PeftModel.from_pretrained`` on a GOFT adapter.

Method: Ma et al., "Parameter Efficient Quasi-Orthogonal Fine-Tuning via Givens Rotation", ICML 2024
(arXiv 2404.04316).  The convention is stated once, in :mod:`goft.functional`.
"""

from . import functional
from .config import GOFT_PEFT_TYPE, GOFTConfig
from .functional import GivensError, SingularBlockError
from .layer import GOFTLayer
from .model import GOFTModel, orthogonality_penalty

__version__ = "0.1.0"

__all__ = [
    "GOFTConfig",
    "GOFTLayer",
    "GOFTModel",
    "GivensError",
    "SingularBlockError",
    "functional",
    "orthogonality_penalty",
]


def _register_with_peft() -> None:
    """Add GOFT to peft's lookup tables (config, tuner, prefix), in place.

    peft's ``register_peft_method`` only accepts names already in its ``PeftType`` enum, which cannot be extended, so
    goft inserts its own str-enum member (:data:`goft.config.GOFT_PEFT_TYPE`) into the same dict objects that every
    peft module holds.  ``tests/test_registration.py`` fails loudly if a peft upgrade moves these tables.
    """
    from peft import mapping

    tables = {
        "PEFT_TYPE_TO_CONFIG_MAPPING": GOFTConfig,
        "PEFT_TYPE_TO_TUNER_MAPPING": GOFTModel,
        "PEFT_TYPE_TO_PREFIX_MAPPING": GOFTModel.prefix,
    }
    for table_name, value in tables.items():
        table = getattr(mapping, table_name, None)
        if not isinstance(table, dict):
            raise ImportError(
                f"goft cannot register with this peft version: peft.mapping.{table_name} is missing or not a dict"
            )
        existing = table.get(GOFT_PEFT_TYPE)
        if existing is not None and existing != value:
            raise ImportError(f"peft.mapping.{table_name} already maps 'GOFT' to {existing!r}")
        table[GOFT_PEFT_TYPE] = value


_register_with_peft()
