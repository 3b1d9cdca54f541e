"""The device a run trains on, from ``--device``: checked before any data or model is loaded, and named in results."""

from __future__ import annotations

import os

import torch

from .configs import DEVICES
from .errors import OptionError


def training_device(name: str) -> torch.device:
    """The device named by ``--device``: ``cpu``, ``cuda`` or ``cuda:N``; under torchrun, ``cuda`` is each process's
    own GPU (``LOCAL_RANK``).  Refuses a device this PyTorch cannot use, naming the option."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise OptionError("device", f"must be one of {', '.join(DEVICES)}, got {name!r}") from None
    if device.type == "cpu" and device.index is None:
        return device
    if device.type != "cuda":
        raise OptionError("device", f"must be one of {', '.join(DEVICES)}, got {name!r}")
    if not torch.cuda.is_available():
        raise OptionError(
            "device", f"is {name!r}, but this PyTorch ({torch.__version__}) sees no CUDA device; use --device cpu"
        )
    if device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.index >= torch.cuda.device_count():
        raise OptionError("device", f"is {name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def use_device(name: str) -> torch.device:
    """:func:`training_device`, made the current CUDA device when it is one: NCCL under torchrun talks through the
    current device, which must be each process's own GPU."""
    device = training_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def device_description(device: torch.device) -> str:
    """What a results row records of the device a run trained on: ``cpu``, or ``cuda (NVIDIA H100 80GB HBM3)``."""
    return "cpu" if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})"
