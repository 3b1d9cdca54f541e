"""Shared fixtures: a tiny, local BERT checkpoint and tiny labelled files, so training tests need no download."""

import csv
import os
import random

import pytest
import torch

# Without a GPU the Triton kernels are tested in Triton's interpreter (on CPU tensors).  It is chosen when the kernels
# are defined, so it must be set before goft.ops.cuda_triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

WORDS = ["good", "great", "fine", "lovely", "bad", "awful", "dull", "poor", "the", "film", "was", "a", "plot"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised 1-layer BERT classifier with a 20-word vocabulary, saved like a real checkpoint."""
    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=2,
                        # larger init and no dropout: a random 1-layer model whose features separate the toy classes
                        initializer_range=0.2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def write_sentiment_csv(path, n, seed):
    """Separable toy data: one positive word -> 1, one negative word -> 0."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(n):
            label = i % 2
            word = rng.choice(WORDS[:4] if label else WORDS[4:8])
            writer.writerow([word, label])
    return path


@pytest.fixture
def toy_files(tmp_path):
    return write_sentiment_csv(tmp_path / "train.csv", 64, 0), write_sentiment_csv(tmp_path / "eval.csv", 32, 1)
