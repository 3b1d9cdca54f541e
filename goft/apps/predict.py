"""``goft predict``: classify text with what ``goft finetune`` trained (an adapter or a run folder) or with a merged
checkpoint, and write each text's label with its probability."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from . import adapter_files, files
from .data import read_records
from .errors import ModelUnavailableError
from .pretrained import MINILM_NAME, quiet_transformers, resolve_model_dir


def classifier_dir(path: str | Path) -> Path:
    """The adapter or checkpoint in ``path``: itself, or a ``goft finetune`` run folder's ``adapter/`` or
    ``model/``."""
    path = Path(path)
    for candidate in (path, path / "adapter", path / "model"):
        if (candidate / adapter_files.CONFIG_FILE).is_file() or (candidate / "config.json").is_file():
            return candidate
    raise ModelUnavailableError(
        f"{path} holds no adapter ({adapter_files.CONFIG_FILE}) and no checkpoint (config.json); name an adapter, "
        "a merged checkpoint (goft merge) or a goft finetune --output folder"
    )


def load_classifier(path: str | Path):
    """(model, tokenizer) in eval mode: an adapter on its base (classes named as in training), or a checkpoint."""
    import goft  # noqa: F401  (registers GOFT with PEFT before an adapter is read)

    path = classifier_dir(path)
    with quiet_transformers():
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if (path / adapter_files.CONFIG_FILE).is_file():
            base_dir = resolve_model_dir(adapter_files.base_model(path), MINILM_NAME)
            model = PeftModel.from_pretrained(adapter_files.load_base(base_dir, path, "SEQ_CLS"), path)
            tokenizer = AutoTokenizer.from_pretrained(base_dir)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def read_texts(path: str | Path) -> list[str]:
    """Texts from a file: .csv/.tsv (a ``text`` column) or .jsonl (a ``text`` field), read as ``goft finetune``
    reads its files; anything else, one text per line."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        return [str(record["text"]) for _, record in read_records(path, columns=("text",))]
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> list[dict]:
    """Per text: its label (the most probable class), that class's probability and every class's."""
    names = model.config.id2label
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        probabilities = model(**batch).logits.float().softmax(-1)
        for text, p in zip(chunk, probabilities.tolist(), strict=True):
            best = max(range(len(p)), key=p.__getitem__)
            rows.append(
                {
                    "text": text,
                    "label": names[best],
                    "probability": p[best],
                    "probabilities": {names[i]: q for i, q in enumerate(p)},
                }
            )
    return rows


def write_predictions(rows: Iterable[dict], output: str | Path | None) -> None:
    """To ``output`` (.jsonl: every field; .csv/.tsv: text, label, probability) or, without one, to stdout as
    tab-separated label, probability, text."""
    rows = list(rows)
    if output is None:
        for row in rows:
            sys.stdout.write(f"{row['label']}\t{row['probability']:.4f}\t{row['text']}\n")
        return
    output = Path(output)
    if output.suffix == ".jsonl":
        files.write_text(output, "".join(json.dumps(row) + "\n" for row in rows))
        return
    delimiter = "\t" if output.suffix == ".tsv" else ","

    def write(f):
        text_file = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text_file, delimiter=delimiter)
        writer.writerow(["text", "label", "probability"])
        writer.writerows([row["text"], row["label"], f"{row['probability']:.6f}"] for row in rows)
        text_file.flush()
        text_file.detach()

    files.write_atomic(output, write)
