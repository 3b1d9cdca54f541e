"""Shared fixtures, built from the toy models of ``toys.py``: a tiny local BERT and Llama checkpoint, tiny labelled
files and a ``FinetuneConfig`` on them, so training tests need no download."""

import os

import pytest
import torch

# Without a GPU the Triton kernels are tested in Triton's interpreter (on CPU tensors).  It is chosen when the kernels
# are defined, so it must be set before goft.ops.cuda_triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from rotations import KERNELS, use_kernel
from toys import WORDS, write_sentiment_csv
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer, LlamaConfig, LlamaForCausalLM


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised 1-layer BERT classifier with a 20-word vocabulary, saved like a real checkpoint."""
    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
        num_labels=2,
        # larger init and no dropout: a random 1-layer model whose features separate the toy classes
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A randomly initialised 2-layer Llama (vocabulary 40, grouped-query attention), saved like a real checkpoint."""
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=24,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture
def toy_files(tmp_path):
    """(train, test) toy files of 64 and 32 sentences."""
    return write_sentiment_csv(tmp_path / "train.csv", 64, 0), write_sentiment_csv(tmp_path / "eval.csv", 32, 1)


@pytest.fixture
def toy_val_file(tmp_path):
    return write_sentiment_csv(tmp_path / "val.csv", 16, 2)


@pytest.fixture
def toy_config(tiny_checkpoint, toy_files, toy_val_file):
    """``toy_config(**overrides)``: a FinetuneConfig on the tiny BERT and the toy files, with a validation file of its
    own (10 epochs, batch 16)."""
    from goft.apps.configs import FinetuneConfig

    def make(**overrides):
        train, evals = toy_files
        values = dict(
            model=str(tiny_checkpoint),
            train_file=str(train),
            eval_file=str(evals),
            val_file=str(toy_val_file),
            epochs=10,
            batch_size=16,
            progress=False,
        )
        return FinetuneConfig(**{**values, **overrides})

    return make


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A word-level tokenizer with a chat template, over the words of the instruct prompt and the toy sentences; its
    ids fit the tiny Llama's vocabulary of 40."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "<pad>",
        "<unk>",
        "<|im_start|>",
        "<|im_end|>",
        "user",
        "assistant",
        "is",
        "this",
        "review",
        "positive",
        "or",
        "negative",
        "?",
        "answer",
        "with",
        "one",
        "word",
        ".",
        '"',
        "a",
        "fine",
        "film",
        "dull",
        "plot",
        "great",
        "cast",
        "bad",
        "good",
        "show",
        "poor",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
        "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    return fast


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Each CPU backend in turn (GOFT_KERNEL): the torch reference and, where numba imports, the fused kernels."""
    with use_kernel(request.param):
        yield request.param
