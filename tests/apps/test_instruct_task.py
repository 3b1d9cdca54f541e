"""The task polarity-instruct (goft.apps.instruct_task): answer-only labels, answer parsing, greedy generation."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from goft.apps import instruct_task


def test_batches_train_only_on_the_answer(chat_tokenizer):
    p = instruct_task.prompt_ids(chat_tokenizer, "a fine film")
    a = instruct_task.answer_ids(chat_tokenizer, 1)
    assert chat_tokenizer.decode(a) == "positive <|im_end|>"
    batch = instruct_task.build_batch(chat_tokenizer, [(p, a), (p[:-2], instruct_task.answer_ids(chat_tokenizer, 0))])
    labels = batch["labels"]
    assert (labels[0, : len(p)] == -100).all() and labels[0, len(p) : len(p) + 2].tolist() == a
    assert batch["attention_mask"][1].sum() == len(p) - 2 + 2
    assert (labels[1, len(p) - 2 + 2 :] == -100).all()


@pytest.mark.parametrize(
    "reply, want",
    [(" Positive.", 1), ("negative, clearly", 0), ("This review is positive", 1), ("I cannot tell", None), ("", None)],
)
def test_parse_answer(reply, want):
    assert instruct_task.parse_answer(reply) == want


def test_generation_accuracy_runs_on_a_tiny_chat_model(chat_tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(chat_tokenizer),
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=128,
        )
    )
    acc = instruct_task.generation_accuracy(model, chat_tokenizer, ["a fine film", "a film"], [1, 0])
    assert 0.0 <= acc <= 1.0
