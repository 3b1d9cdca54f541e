"""GOFTConfig's checks, and saved adapters that are refused with an error naming the file, field or layer."""

import json
import shutil
import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from toys import OneLinear

import goft
from goft import GOFTConfig
from goft.tuner.config import FORMAT_VERSION, AdapterFileError


@pytest.mark.parametrize("field", ["quasi", "scaling", "init_weights", "fan_in_fan_out"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bool_fields_refuse_non_bools(field, value):
    with pytest.raises(TypeError, match=rf"GOFTConfig\.{field} must be a bool \(True or False\), got {value!r}"):
        GOFTConfig(target_modules=["q"], **{field: value})


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_orth_reg_weight_range(value):
    with pytest.raises(ValueError, match="orth_reg_weight must be a finite number >= 0"):
        GOFTConfig(target_modules=["q"], orth_reg_weight=value)


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_orth_reg_weight_type(value):
    with pytest.raises(TypeError, match="orth_reg_weight must be a number >= 0"):
        GOFTConfig(target_modules=["q"], orth_reg_weight=value)


def test_bias_choices():
    with pytest.raises(ValueError, match=r"bias must be one of \('none', 'all', 'goft_only'\), got 'lora_only'"):
        GOFTConfig(target_modules=["q"], bias="lora_only")


def test_unknown_option_is_refused_naming_the_closest_field():
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'quassi' \(did you mean 'quasi'\?\)"):
        GOFTConfig(quassi=True)
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'rank'; its options are \[.*'quasi'"):
        GOFTConfig(rank=4)


def test_a_penalty_weight_on_strict_goft_is_warned_about():
    with pytest.warns(UserWarning, match="orth_reg_weight=0.05 has no effect with quasi=False"):
        GOFTConfig(orth_reg_weight=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GOFTConfig(orth_reg_weight=0.05, quasi=True)
        GOFTConfig()


def test_defaults():
    config = GOFTConfig(target_modules=["q", "v"])
    assert (config.quasi, config.scaling, config.init_weights, config.bias) == (False, False, True, "none")
    assert config.orth_reg_weight == 0.01
    assert config.target_modules == {"q", "v"}


def test_layers_pattern_needs_layers_to_transform():
    with pytest.raises(ValueError, match="layers_pattern needs layers_to_transform"):
        GOFTConfig(target_modules=["q"], layers_pattern="layers")


# ---------------------------------------------------------------------------------------------------------------------
# Saved adapters: damaged, edited or mismatched files
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(OneLinear(12), goft.GOFTConfig(target_modules=["lin0"], init_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def edited_copy(src, dst, edit_config=None, edit_weights=None):
    shutil.copytree(src, dst)
    if edit_config:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        edit_config(cfg)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    if edit_weights:
        path = dst / "adapter_model.safetensors"
        path.write_bytes(edit_weights(path.read_bytes()))
    return dst


def test_shape_mismatch_names_layer_and_both_shapes(saved):
    with pytest.raises(
        AdapterFileError,
        match=r"layer 'lin0': .*shape \(11,\) but this model needs \(6,\) "
        r"\(in_features 12 saved vs 7 here, tree at depth 1\)",
    ):
        PeftModel.from_pretrained(OneLinear(7), saved)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c.update(goft_format_version=FORMAT_VERSION + 1),
            f"saved in goft format {FORMAT_VERSION + 1}, newer than the format {FORMAT_VERSION}",
        ),
        (lambda c: c.pop("structure"), r"lacks required field\(s\) \['structure'\]"),
        (lambda c: c.update(structure="star"), "structure must be one of 'tree', 'butterfly', got 'star'"),
        (lambda c: c.update(depth=0), "depth must be an integer >= 1, got 0"),
        (lambda c: c.update(structure="butterfly"), r"shape \(11,\) but this model needs \(20,\)"),
        (lambda c: c.update(rank=4), r"unknown field\(s\) \['rank'\]"),
        (lambda c: c.pop("quasi"), r"lacks required field\(s\) \['quasi'\]"),
        (lambda c: c.update(quasi=True), "GOFT and qGOFT mixed up"),
        (lambda c: c.update(scaling=True), r"lacks 1 GOFT tensor\(s\)"),
        (lambda c: c.update(quasi="yes"), r"quasi must be a bool \(True or False\), got 'yes'"),
    ],
)
def test_bad_adapter_config(saved, tmp_path, edit, message):
    bad = edited_copy(saved, tmp_path / "bad", edit_config=edit)
    with pytest.raises((ValueError, TypeError), match=message):
        PeftModel.from_pretrained(OneLinear(12), bad)


def test_format_1_adapters_load_as_the_tree_at_depth_1(saved, tmp_path):
    def as_format_1(config):
        config.update(goft_format_version=1)
        del config["structure"], config["depth"]

    old = edited_copy(saved, tmp_path / "old", edit_config=as_format_1)
    x = torch.randn(3, 12)
    torch.manual_seed(1)
    expected = PeftModel.from_pretrained(OneLinear(12), saved)(x)
    torch.manual_seed(1)
    loaded = PeftModel.from_pretrained(OneLinear(12), old)
    config = loaded.peft_config["default"]
    assert (config.structure, config.depth) == ("tree", 1)
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"\x00" * 8 + b[8:], lambda b: b""])
def test_corrupted_weights_file(saved, tmp_path, damage):
    bad = edited_copy(saved, tmp_path / "bad", edit_weights=damage)
    with pytest.raises(AdapterFileError, match="adapter_model.safetensors is truncated or corrupted"):
        PeftModel.from_pretrained(OneLinear(12), bad)


def test_config_file_that_is_not_json(saved, tmp_path):
    bad = edited_copy(saved, tmp_path / "bad")
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterFileError, match=r"adapter_config\.json is not valid JSON"):
        goft.GOFTConfig.from_pretrained(bad)
    # through PeftModel, peft reads the file first (to find the method) and raises json's own ValueError
    with pytest.raises(ValueError):
        PeftModel.from_pretrained(OneLinear(12), bad)
