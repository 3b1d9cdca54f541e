"""The embedded pretrained MiniLM: loads offline, GOFT is the identity at init on it, and merges exactly."""

import copy

import pytest
import torch
from peft import get_peft_model

import goft
from goft.apps.errors import ModelUnavailableError
from goft.apps.pretrained import load_sequence_classifier


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    return load_sequence_classifier()


def test_embedded_minilm_identity_at_init_and_exact_merge(minilm):
    model, tokenizer = minilm
    model.eval()
    batch = tokenizer(["a fine film", "a dull and tedious film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        base_logits = model(**batch).logits
    config = goft.GOFTConfig(target_modules=["query", "key", "value", "dense"])
    peft_model = get_peft_model(copy.deepcopy(model), config)
    peft_model.eval()
    with torch.no_grad():
        assert torch.equal(peft_model(**batch).logits, base_logits)
    # a non-identity adapter on the real model: merged == unmerged
    random_model = get_peft_model(
        copy.deepcopy(model), goft.GOFTConfig(target_modules=["query", "value"], quasi=True, init_weights=False)
    )
    random_model.eval()
    with torch.no_grad():
        unmerged = random_model(**batch).logits
        assert (unmerged - base_logits).abs().max() > 1e-3
        merged = random_model.merge_and_unload(safe_merge=True)(**batch).logits
    assert torch.allclose(merged, unmerged, atol=1e-5, rtol=0)


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="is not a transformers checkpoint directory"):
        load_sequence_classifier(tmp_path)
