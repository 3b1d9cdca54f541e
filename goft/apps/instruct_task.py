"""The task ``polarity-instruct``: Pang & Lee sentences as chat prompts, scored by greedy generation.

Each sentence becomes a chat prompt ("Is this review positive or negative? Answer with one word." + the sentence)
built with the model's chat template; the target is the answer word followed by the end-of-turn token.  The loss
covers only the answer tokens.  Accuracy is measured by greedy generation and parsing the reply.
"""

from __future__ import annotations

from typing import Optional

import torch

TASK = "polarity-instruct"
QUESTION = 'Is this review positive or negative? Answer with one word.\n\n"{text}"'
ANSWERS = ("negative", "positive")


def prompt_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": QUESTION.format(text=text)}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(enc["input_ids"])


def answer_ids(tokenizer, label: int) -> list[int]:
    ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]
    end = tokenizer.eos_token_id
    return list(ids) + ([end] if end is not None else [])


def build_batch(
    tokenizer, examples: list[tuple[list[int], list[int]]], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Right-padded input ids with labels -100 everywhere except the answer tokens, on ``device``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), length), pad, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (p, a) in enumerate(examples):
        seq = p + a
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(a)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def parse_answer(reply: str) -> Optional[int]:
    """The first 'positive' / 'negative' among the words of the (4-token) reply; None when neither appears.

    Looking at every word rather than the first one credits the base model's "This review is positive" too."""
    words = reply.strip().lower().replace(".", " ").replace(",", " ").replace("!", " ").split()
    for word in words:
        if word in ANSWERS:
            return ANSWERS.index(word)
    return None


@torch.no_grad()
def generation_accuracy(model, tokenizer, texts: list[str], labels: list[int], batch_size: int = 16) -> float:
    """Greedy generation (4 new tokens), left-padded batches; a reply without 'positive'/'negative' is wrong."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(texts), batch_size):
        prompts = [prompt_ids(tokenizer, t) for t in texts[start : start + batch_size]]
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, length - len(p) :] = torch.tensor(p)
            mask[row, length - len(p) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=pad,
        )
        for row, label in enumerate(labels[start : start + batch_size]):
            reply = tokenizer.decode(out[row, length:], skip_special_tokens=True)
            correct += int(parse_answer(reply) == label)
    return correct / len(texts)
