"""A saved adapter directory, read and written in this module only: PEFT's two files and goft's class names.

``CONFIG_FILE`` and ``WEIGHTS_FILE`` are PEFT's own names (``adapter_config.json``, ``adapter_model.safetensors``),
so a directory written here is one ``PeftModel.from_pretrained`` reads.  ``LABELS_FILE`` (``labels.json``,
``{"id2label": {"0": name, ...}}``) is goft's: the class names of a classifier trained by ``goft finetune``.
"""

from __future__ import annotations

import os
from pathlib import Path

from peft.utils import CONFIG_NAME as CONFIG_FILE
from peft.utils import SAFETENSORS_WEIGHTS_NAME as WEIGHTS_FILE
from safetensors import safe_open

from ..tuner.config import read_saved_config
from . import files
from .errors import DataError
from .methods import is_head_parameter
from .pretrained import EMBEDDED_PREFIX, quiet_transformers

LABELS_FILE = "labels.json"

__all__ = [
    "CONFIG_FILE",
    "LABELS_FILE",
    "WEIGHTS_FILE",
    "read_config",
    "read_labels",
    "saved_classes",
    "write_adapter",
]


def config_path(adapter_dir: str | os.PathLike) -> Path:
    return Path(adapter_dir) / CONFIG_FILE


def weights_path(adapter_dir: str | os.PathLike) -> Path:
    return Path(adapter_dir) / WEIGHTS_FILE


def read_config(adapter_dir: str | os.PathLike) -> dict:
    """The saved adapter config as a dict (an AdapterFileError naming the file when it is missing or malformed)."""
    return read_saved_config(adapter_dir)


def write_adapter(
    model, adapter_dir: str | os.PathLike, labels: list[str] | None = None, base_model: str | None = None
) -> Path:
    """``model.save_pretrained`` into ``adapter_dir`` (replaced whole, normal permissions), then the class names and
    the base's portable name (``goft:minilm``, or a directory), which :func:`base_model` falls back on."""
    files.save_pretrained(model, adapter_dir)
    if labels is not None:
        saved = {"id2label": dict(enumerate(labels)), **({"base_model": base_model} if base_model else {})}
        files.write_json(Path(adapter_dir) / LABELS_FILE, saved)
    return Path(adapter_dir)


def base_model(adapter_dir: str | os.PathLike) -> str | None:
    """Where the adapter's base is: ``base_model_name_or_path`` while it exists on this machine, else the portable
    name saved beside the adapter; None when neither is recorded."""
    recorded = read_config(adapter_dir).get("base_model_name_or_path")
    if recorded and (str(recorded).startswith(EMBEDDED_PREFIX) or Path(recorded).exists()):
        return recorded
    path = Path(adapter_dir) / LABELS_FILE
    portable = files.read_json(path, DataError, "a labels file").get("base_model") if path.is_file() else None
    return portable or recorded


def read_labels(adapter_dir: str | os.PathLike) -> dict[int, str] | None:
    """The class names saved beside the adapter (index -> name), or None when it has none."""
    path = Path(adapter_dir) / LABELS_FILE
    if not path.is_file():
        return None
    saved = files.read_json(path, DataError, "a labels file")
    if not isinstance(saved, dict) or not isinstance(saved.get("id2label"), dict):
        raise DataError(f'{path} must hold {{"id2label": {{"0": name, ...}}}}, got {saved!r:.80}')
    return {int(i): name for i, name in saved["id2label"].items()}


def saved_classes(adapter_dir: str | os.PathLike) -> int | None:
    """How many classes the classifier head saved with the adapter has (its weight's rows), or None without a
    head."""
    with safe_open(str(weights_path(adapter_dir)), framework="pt") as f:
        heads = [k for k in f.keys() if is_head_parameter(k) and k.endswith("weight")]
        return f.get_slice(heads[-1]).get_shape()[0] if heads else None


def load_base(base_dir: Path, adapter_dir: Path, task: str | None):
    """The base model for ``task``; a classifier gets the saved head's number of classes, named as in training."""
    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        if task != "SEQ_CLS":
            return AutoModelForCausalLM.from_pretrained(base_dir)
        num_labels = saved_classes(adapter_dir) or 2
        id2label = read_labels(adapter_dir)
        names = {} if id2label is None else {"id2label": id2label, "label2id": {n: i for i, n in id2label.items()}}
        return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels, **names)
