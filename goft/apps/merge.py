"""``goft merge``: fold a saved adapter into its base model and write a plain checkpoint that loads without goft."""

from __future__ import annotations

import os
from pathlib import Path

from peft import PeftModel
from safetensors import safe_open

from ..tuner.config import read_saved_config
from . import io
from .errors import DataError, OutputError
from .methods import is_head_parameter
from .pretrained import MINILM_NAME, quiet_transformers, resolve_model_dir

SUPPORTED_TASKS = ("CAUSAL_LM", "SEQ_CLS")


def merge_adapter_to_directory(adapter_dir: str | os.PathLike, output: str | os.PathLike,
                               base: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Load the base model and a saved GOFT adapter, fold the adapter into the weights (``safe_merge``), and save a
    plain transformers checkpoint (plus the base's tokenizer) that loads without goft.

    The base is ``base`` or the adapter's ``base_model_name_or_path`` (a local directory, or 'minilm' / 'smollm2').
    The checkpoint is staged beside ``output`` and renamed into place.
    """
    adapter_dir, output = Path(adapter_dir), Path(output)
    saved = _read_adapter_config(adapter_dir)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputError(f"--output {str(output)!r} exists and is not empty; choose a new directory or --overwrite")
    base_dir = resolve_model_dir(base if base is not None else saved.get("base_model_name_or_path"), MINILM_NAME)
    model = _load_base(base_dir, adapter_dir, saved.get("task_type"))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload(safe_merge=True)
    with io.staged_directory(output) as staged:
        merged.save_pretrained(staged)
        try:
            with quiet_transformers():
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(base_dir).save_pretrained(staged)
        except (OSError, ValueError):
            pass  # a base without a tokenizer: the merged weights are still complete
    return output


def _read_adapter_config(adapter_dir: Path) -> dict:
    saved = read_saved_config(adapter_dir)
    task = saved.get("task_type")
    if task not in (None, *SUPPORTED_TASKS):
        raise DataError(f"{adapter_dir / 'adapter_config.json'}: task_type {task!r} is not supported by goft merge "
                        f"(supported: {', '.join(SUPPORTED_TASKS)})")
    return saved


def _load_base(base_dir: Path, adapter_dir: Path, task: str | None):
    """The base model for ``task``; a classifier gets as many labels as the saved head has rows."""
    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        if task != "SEQ_CLS":
            return AutoModelForCausalLM.from_pretrained(base_dir)
        with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
            heads = [k for k in f.keys() if is_head_parameter(k) and k.endswith("weight")]
            num_labels = f.get_slice(heads[-1]).get_shape()[0] if heads else 2
        return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels)
