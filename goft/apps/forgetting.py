"""What tuning makes a causal LM forget, measured on held-out text it is not tuned on.

The text: CoNLL-2010 sentences and passages of the long Pang & Lee reviews.  The measures: the mean over tokens of
``KL(p_base ‖ p_tuned)`` between the base and the tuned model's next-token distributions, and both perplexities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import data


def heldout_passages(tokenizer, n: int, tokens: int) -> torch.Tensor:
    """(n, tokens) ids from text the instruct task never shows: CoNLL-2010 sentences and long-review passages."""
    hedge = " ".join(data.load_corpus("hedge").texts)
    reviews = " ".join(data.load_corpus("reviews").texts)
    rows = []
    for source in (hedge, reviews):
        ids = tokenizer(source, add_special_tokens=False)["input_ids"]
        for k in range(n // 2):
            chunk = ids[k * tokens : (k + 1) * tokens]
            if len(chunk) == tokens:
                rows.append(chunk)
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def next_token_logprobs(model, passages: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(passages), batch_size):
        out.append(F.log_softmax(model(input_ids=passages[start : start + batch_size]).logits.float(), dim=-1))
    return torch.cat(out)


def forgetting(base_logprobs: torch.Tensor, tuned_logprobs: torch.Tensor, passages: torch.Tensor) -> dict:
    """Mean token KL(p_base ‖ p_tuned) and the perplexities of both models on the held-out passages."""
    kl = (base_logprobs.exp() * (base_logprobs - tuned_logprobs)).sum(-1)[:, :-1].mean().item()
    targets = passages[:, 1:]

    def perplexity(logprobs):
        nll = -logprobs[:, :-1].gather(-1, targets[..., None]).squeeze(-1).mean().item()
        return math.exp(nll)

    base_ppl, tuned_ppl = perplexity(base_logprobs), perplexity(tuned_logprobs)
    return {
        "kl_base_to_tuned": kl,
        "perplexity_base": base_ppl,
        "perplexity_tuned": tuned_ppl,
        "perplexity_change": tuned_ppl - base_ppl,
    }
