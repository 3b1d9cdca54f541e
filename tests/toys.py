"""The toy models and data every test file shares (fixtures built from them live in conftest.py)."""

import csv
import random

import torch
from peft import get_peft_model
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2Model, LlamaForCausalLM

import goft

WORDS = ["good", "great", "fine", "lovely", "bad", "awful", "dull", "poor", "the", "film", "was", "a", "plot"]
PROMPTS = torch.tensor([[1, 5, 9, 13, 2], [1, 7, 7, 21, 30]])  # token ids for the tiny Llama (vocabulary 40)


class OneLinear(nn.Module):
    """A single ``Linear(d, 5)`` named ``lin0``."""

    def __init__(self, d=12):
        super().__init__()
        self.lin0 = nn.Linear(d, 5)

    def forward(self, x):
        return self.lin0(x)


class MLP(nn.Module):
    """Two adaptable linear layers of different widths (12 -> 7 -> 5), a head and an unused embedding."""

    def __init__(self, d_in=12, d_hidden=7, d_out=5):
        super().__init__()
        self.lin0 = nn.Linear(d_in, d_hidden)
        self.act = nn.Tanh()
        self.lin1 = nn.Linear(d_hidden, d_out)
        self.head = nn.Linear(d_out, 2)
        self.emb = nn.Embedding(4, d_in)

    def forward(self, x):
        return self.head(self.lin1(self.act(self.lin0(x))))


def make_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP()


def tiny_gpt2(seed=0):
    """GPT-2 with transformers' Conv1D layers (weights stored (in, out))."""
    torch.manual_seed(seed)
    return GPT2Model(GPT2Config(n_embd=12, n_layer=2, n_head=2, n_positions=16, vocab_size=50)).eval()


def tiny_bert():
    """An in-memory 1-layer BERT classifier without dropout (deterministic train mode)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30,
        hidden_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def adapted_llama(checkpoint, **config):
    """The tiny Llama checkpoint (fixture ``tiny_llama``) with the same random GOFT adapter on q, k, v, o each call."""
    torch.manual_seed(1)
    model = LlamaForCausalLM.from_pretrained(checkpoint)
    goft_config = goft.GOFTConfig(
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM", init_weights=False, **config
    )
    return get_peft_model(model, goft_config)


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
