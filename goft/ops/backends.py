"""Which backend runs a rotation: the one place that reads ``GOFT_KERNEL`` and asks whether numba or Triton work.

Backends (each a module with ``rotate_rows``, ``rotate_rows_backward`` and ``rotate_rows_mixed`` of one shared
signature, see :mod:`goft.ops.reference`):

- ``numba`` (:mod:`goft.ops.cpu_numba`): CPU rows computed in fp32 or fp64;
- ``triton`` (:mod:`goft.ops.cuda_triton`): CUDA rows in fp32, fp16 or bf16 computed in fp32, ``2 <= d <= 2^24``;
- ``torch`` (:mod:`goft.ops.reference`): everything else.

``GOFT_KERNEL``: ``auto`` (default) takes the compiled backend for the device when its compiler works; ``torch``
forces the reference path everywhere; ``numba`` / ``triton`` are ``auto`` that raise ImportError when that compiler is
missing.  The compiled backends are imported lazily (numba compiles on first use; Triton starts slowly): ``import
goft`` stays light.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

from . import reference

KERNEL_CHOICES = ("auto", "numba", "triton", "torch")


@functools.cache
def _compiled_backend(module_name: str) -> ModuleType | None:
    """The backend module ``goft.ops.<module_name>``, or None when its compiler cannot be imported (asked once)."""
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except Exception:  # a broken install counts as missing, rather than failing at the first rotation
        return None
    return module if module.AVAILABLE else None


def numba_backend() -> ModuleType | None:
    return _compiled_backend("cpu_numba")


def triton_backend() -> ModuleType | None:
    return _compiled_backend("cuda_triton")


def kernel_choice(device_type: str = "cpu") -> str:
    """The backend for tensors on ``device_type``: 'numba' (CPU), 'triton' (CUDA) or 'torch' (reference)."""
    choice = os.environ.get("GOFT_KERNEL", "auto").lower()
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"GOFT_KERNEL must be one of {', '.join(map(repr, KERNEL_CHOICES))}, got {choice!r}")
    if choice == "numba" and numba_backend() is None:
        raise ImportError("GOFT_KERNEL=numba but numba cannot be imported (pip install numba)")
    if choice == "triton" and triton_backend() is None:
        raise ImportError("GOFT_KERNEL=triton but triton cannot be imported (it comes with CUDA builds of torch)")
    if choice == "torch":
        return "torch"
    if device_type == "cpu":
        return "numba" if numba_backend() is not None else "torch"
    if device_type == "cuda":
        return "triton" if triton_backend() is not None else "torch"
    return "torch"


def backend_for(rows: torch.Tensor, compute_dtype: torch.dtype) -> ModuleType:
    """The backend that rotates ``rows`` (N, d) in ``compute_dtype`` (every backend takes every pairing); forward,
    backward, merge and unmerge all ask here, so they always agree."""
    kind = kernel_choice(rows.device.type)
    if kind == "numba" and compute_dtype in (torch.float32, torch.float64):
        return numba_backend()
    if (
        kind == "triton"
        and compute_dtype == torch.float32
        and rows.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and 2 <= rows.shape[-1] <= triton_backend().widest_row()
    ):
        return triton_backend()
    return reference
