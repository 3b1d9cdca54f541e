"""goft: Givens-rotation orthogonal fine-tuning (GOFT) and quasi-Givens (qGOFT) as a native PEFT method.

Importing ``goft`` registers the method with PEFT, so ``peft.get_peft_model(model, goft.GOFTConfig(...))``,
``save_pretrained`` and ``PeftModel.from_pretrained`` work.  A new process must ``import goft`` before
``PeftModel.from_pretrained`` on a GOFT adapter.

Method: Ma et al., "Parameter Efficient Quasi-Orthogonal Fine-Tuning via Givens Rotation", ICML 2024
(arXiv 2404.04316).  The convention is stated once, in :mod:`goft.ops.pairing`; the math's public face is
:mod:`goft.functional`.  The library (``goft.tuner``, ``goft.ops``) never imports the command line (``goft.apps``).
"""

from . import functional
from ._version import installed_version
from .functional import GivensError, SingularBlockError
from .tuner.calibration import CalibrationReport, calibrate_pairing
from .tuner.config import GOFT_PEFT_TYPE, AdapterFileError, GOFTConfig
from .tuner.export import ExportReport, export_lora
from .tuner.hotswap import hotswap_adapter
from .tuner.layer import GOFTLayer, PairingNotCalibratedError
from .tuner.model import GOFTModel, orthogonality_penalty
from .tuner.registration import register_with_peft

__version__ = installed_version()

__all__ = [
    "GOFT_PEFT_TYPE",
    "AdapterFileError",
    "CalibrationReport",
    "ExportReport",
    "GOFTConfig",
    "GOFTLayer",
    "GOFTModel",
    "GivensError",
    "OrthogonalityPenaltyTrainer",
    "PairingNotCalibratedError",
    "SingularBlockError",
    "calibrate_pairing",
    "export_lora",
    "hotswap_adapter",
    "functional",
    "orthogonality_penalty",
]


def __getattr__(name: str):
    # transformers.Trainer takes seconds to import: only users of the Trainer subclass pay for it
    if name == "OrthogonalityPenaltyTrainer":
        from .tuner.trainer import OrthogonalityPenaltyTrainer

        return OrthogonalityPenaltyTrainer
    raise AttributeError(f"module 'goft' has no attribute {name!r}")


register_with_peft()
