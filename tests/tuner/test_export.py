"""goft.export_lora: a GOFT adapter as a PEFT LoRA adapter that loads without goft; exact at full rank, its error
reported below it, and what it came from written beside it."""

import copy
import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from toys import make_mlp, tiny_gpt2

import goft
from goft import GOFTConfig

X = torch.randn(6, 12, generator=torch.Generator().manual_seed(2))


def adapted(**options):
    torch.manual_seed(3)
    return get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, **options))


@pytest.mark.parametrize("options", [{}, {"scaling": True}, {"quasi": True}, {"pairing": "random"}])
def test_full_rank_reproduces_the_goft_model(tmp_path, options):
    model = adapted(**options)
    want = model(X)
    report = goft.export_lora(model, tmp_path, rank=12)
    assert [f.rank for f in report.layers] == [7, 5]  # min(out, in) per layer: lin0 12 -> 7, lin1 7 -> 5
    assert report.worst_weight_error < 1e-12
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 12 and config["lora_alpha"] == 12
    loaded = PeftModel.from_pretrained(make_mlp(), tmp_path)
    assert type(loaded.peft_config["default"]).__name__ == "LoraConfig"
    got = loaded(X)
    assert ((got - want).norm() / want.norm()) < 1e-4
    written = json.loads((tmp_path / goft.tuner.export.EXPORT_REPORT).read_text())
    assert written["source"]["peft_type"] == "GOFT" and written["rank"] == 12 and len(written["layers"]) == 2


def test_a_lower_rank_reports_what_it_leaves_out(tmp_path):
    model = adapted()
    full = goft.export_lora(model, tmp_path / "full", rank=7)
    low = goft.export_lora(model, tmp_path / "low", rank=1)
    assert all(f.update_relative_error > 0.05 for f in low.layers)  # a random rotation's update is not rank 1
    assert low.worst_weight_error > full.worst_weight_error
    # the rank-1 export is the best rank-1 approximation: its update error is the discarded singular values
    layer = model.base_model.model.lin0
    w = layer.base_layer.weight.detach().double()
    r = goft.functional.rotation_matrix(layer.rotation_params("default").detach().double(), 12)
    update = w @ r.T - w
    s = torch.linalg.svdvals(update)
    assert low.layers[0].update_relative_error == pytest.approx(float(s[1:].norm() / s.norm()), rel=1e-9)


def test_gpt2_conv1d_layers_export_with_their_layout(tmp_path):
    model = get_peft_model(tiny_gpt2(), GOFTConfig(target_modules=["c_attn", "c_proj"], init_weights=False))
    ids = torch.tensor([[1, 4, 9, 16, 25]])
    want = model(input_ids=ids).last_hidden_state
    goft.export_lora(model, tmp_path, rank=64)
    got = PeftModel.from_pretrained(tiny_gpt2(), tmp_path)(input_ids=ids).last_hidden_state
    assert ((got - want).norm() / want.norm()) < 1e-4


def test_bad_requests_are_refused(tmp_path):
    model = adapted()
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        goft.export_lora(model, tmp_path, rank=0)
    with pytest.raises(ValueError, match="'other' is not a GOFT adapter"):
        goft.export_lora(model, tmp_path, rank=2, adapter_name="other")
    merged = copy.deepcopy(model)
    merged.merge_adapter()
    with pytest.raises(ValueError, match="unmerge"):
        goft.export_lora(merged, tmp_path, rank=2)
