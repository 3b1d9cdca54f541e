"""Forgetting (goft.apps.forgetting): KL and perplexity of the tuned model against the base on held-out text."""

import math

import pytest
import torch

from goft.apps import forgetting


def test_forgetting_measures():
    torch.manual_seed(0)
    logits = torch.randn(3, 10, 40)
    base = torch.log_softmax(logits, -1)
    passages = torch.randint(0, 40, (3, 10))
    same = forgetting.forgetting(base, base, passages)
    assert same["kl_base_to_tuned"] == pytest.approx(0.0, abs=1e-7) and same["perplexity_change"] == 0.0
    other = forgetting.forgetting(base, torch.log_softmax(logits + torch.randn(3, 10, 40), -1), passages)
    assert other["kl_base_to_tuned"] > 0.01
    nll = -base[:, :-1].gather(-1, passages[:, 1:, None]).mean().item()
    assert same["perplexity_base"] == pytest.approx(math.exp(nll), rel=1e-6)
