"""``goft merge`` and ``goft export-lora``: a saved adapter folded into its base model as a plain checkpoint, or
written as a LoRA adapter; both load without goft."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from peft import PeftModel

from . import adapter_files, files
from .errors import DataError, OutputError
from .pretrained import MINILM_NAME, quiet_transformers, resolve_model_dir

SUPPORTED_TASKS = ("CAUSAL_LM", "SEQ_CLS")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")


class MergeResult(NamedTuple):
    output: Path
    base_dir: Path
    tokenizer: bool  # whether the base had a tokenizer to copy


def merge_adapter_to_directory(
    adapter_dir: str | os.PathLike,
    output: str | os.PathLike,
    base: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> MergeResult:
    """Load the base model and a saved GOFT adapter, fold the adapter into the weights (``safe_merge``), and save a
    plain transformers checkpoint (plus the base's tokenizer) that loads without goft.

    The base is ``base`` or the adapter's ``base_model_name_or_path`` (a local directory, or an embedded model's
    name: 'minilm', 'smollm2', 'mpnet', as saved 'goft:minilm').  The checkpoint is staged beside ``output`` and
    renamed into place; the result says where it went, from which base, and whether a tokenizer was copied.
    """
    adapter_dir, output = Path(adapter_dir), Path(output)
    _check_new_output(output, overwrite)
    adapted, base_dir = load_adapted(adapter_dir, base)
    merged = adapted.merge_and_unload(safe_merge=True)
    has_tokenizer = any((base_dir / name).is_file() for name in TOKENIZER_FILES)
    tokenizer = []
    if has_tokenizer:
        with quiet_transformers():
            from transformers import AutoTokenizer

            tokenizer = [AutoTokenizer.from_pretrained(base_dir)]
    files.save_pretrained(merged, output, *tokenizer)
    return MergeResult(output, base_dir, has_tokenizer)


class ExportResult(NamedTuple):
    output: Path
    base_dir: Path
    report: object  # goft.ExportReport


def export_lora_to_directory(
    adapter_dir: str | os.PathLike,
    output: str | os.PathLike,
    rank: int,
    base: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """``goft export-lora``: the saved GOFT adapter as a PEFT LoRA adapter of rank ``rank`` (see
    :func:`goft.export_lora`), its base found as ``goft merge`` finds it."""
    from ..tuner.export import export_lora

    adapter_dir, output = Path(adapter_dir), Path(output)
    _check_new_output(output, overwrite)
    adapted, base_dir = load_adapted(adapter_dir, base)
    return ExportResult(output, base_dir, export_lora(adapted, output, rank))


def _check_new_output(output: Path, overwrite: bool) -> None:
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputError(
            f"--output {str(output)!r} exists and is not empty; choose a new directory, or pass "
            "--overwrite to replace it"
        )


def load_adapted(adapter_dir: Path, base: str | os.PathLike | None):
    """(the base model with the saved adapter loaded, the base's directory): the base is ``base`` or the adapter's
    recorded one."""
    saved = _read_adapter_config(adapter_dir)
    recorded = adapter_files.base_model(adapter_dir)
    if base is None and not recorded:
        raise DataError(
            f"{adapter_files.config_path(adapter_dir)} records no base model (base_model_name_or_path is "
            f"{recorded!r}); pass --base with the base model's directory, or minilm / smollm2 / mpnet"
        )
    base_dir = resolve_model_dir(base if base is not None else recorded, MINILM_NAME)
    model = adapter_files.load_base(base_dir, adapter_dir, saved.get("task_type"))
    return PeftModel.from_pretrained(model, adapter_dir), base_dir


def _read_adapter_config(adapter_dir: Path) -> dict:
    saved = adapter_files.read_config(adapter_dir)
    task = saved.get("task_type")
    if task not in (None, *SUPPORTED_TASKS):
        raise DataError(
            f"{adapter_files.config_path(adapter_dir)}: task_type {task!r} is not supported by goft merge "
            f"(supported: {', '.join(SUPPORTED_TASKS)})"
        )
    return saved
