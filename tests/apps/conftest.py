"""Fixtures the command-line tests share."""

import pytest


@pytest.fixture
def finetune_args(tiny_checkpoint, toy_files):
    """goft finetune on the tiny BERT and the toy files: 2 epochs, batch 16, no progress bar (no --output)."""
    train, evals = toy_files
    return [
        "finetune",
        "--model",
        str(tiny_checkpoint),
        "--train-file",
        str(train),
        "--eval-file",
        str(evals),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--no-progress",
    ]
