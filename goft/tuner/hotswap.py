"""``goft.hotswap_adapter``: another saved adapter's numbers copied into a loaded adapter's tensors, in place.

The tensors keep their identity, shapes and dtypes, so a ``torch.compile``d model runs the new adapter without
recompiling, and whatever holds them (an optimizer, a mixed-batch cache) sees the change.  Only an adapter of the
same form can be swapped in: the same targets, structure, depth, variant (GOFT or qGOFT, with or without scale) and
pairing; anything else is refused, naming the difference.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import SAFETENSORS_WEIGHTS_NAME, set_peft_model_state_dict
from safetensors.torch import load_file

from .config import FORM_FIELDS, AdapterFileError, GOFTConfig, form_difference


# What must agree between the loaded adapter and the one swapped in (each changes which tensors exist or what they
# mean); targets are compared as sets.
@torch.no_grad()
def hotswap_adapter(model: PeftModel, adapter_dir: str | os.PathLike, adapter_name: str = "default") -> None:
    """Replace the numbers of the loaded GOFT adapter ``adapter_name`` with those saved in ``adapter_dir``, in place.

    Equivalent to loading ``adapter_dir`` afresh (same outputs), without new tensors and without recompiling a
    compiled model.  Raises ``ValueError`` naming the field when the saved adapter differs in form (targets,
    structure, depth, GOFT/qGOFT, scale, pairing, modules_to_save), and :class:`goft.AdapterFileError` when its
    files are missing or damaged.
    """
    current = model.peft_config.get(adapter_name)
    if not isinstance(current, GOFTConfig):
        raise ValueError(f"hotswap_adapter: the model has no GOFT adapter named {adapter_name!r}")
    incoming = GOFTConfig.from_pretrained(adapter_dir)  # checks the config and the weights file
    difference = form_difference(current, incoming, (*FORM_FIELDS, "modules_to_save"))
    if difference is not None:
        name, have, new = difference
        raise ValueError(
            f"hotswap_adapter: {adapter_dir} has {name}={new!r} but adapter {adapter_name!r} has {name}={have!r}; "
            "only an adapter of the same form can be swapped in (load it with load_adapter instead)"
        )
    weights = Path(adapter_dir) / SAFETENSORS_WEIGHTS_NAME
    if not weights.is_file():
        raise AdapterFileError(f"{weights} not found: is {adapter_dir} a saved adapter?")
    result = set_peft_model_state_dict(model, load_file(str(weights)), adapter_name=adapter_name)
    missing = [key for key in result.missing_keys if f".{adapter_name}" in key and ".goft_" in key]
    if missing or result.unexpected_keys:
        raise AdapterFileError(
            f"{weights} does not fit adapter {adapter_name!r}: missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}"
        )
