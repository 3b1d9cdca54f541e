"""GOFTConfig validation: wrong types and ranges get errors that name the field, the allowed values and the value."""

import pytest

from goft import GOFTConfig


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


def test_unknown_option_is_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'rank'"):
        GOFTConfig(target_modules=["q"], rank=4)


def test_defaults():
    config = GOFTConfig(target_modules=["q", "v"])
    assert (config.quasi, config.scaling, config.init_weights, config.bias) == (False, False, True, "none")
    assert config.orth_reg_weight == 0.01
    assert config.target_modules == {"q", "v"}


def test_layers_pattern_needs_layers_to_transform():
    with pytest.raises(ValueError, match="layers_pattern needs layers_to_transform"):
        GOFTConfig(target_modules=["q"], layers_pattern="layers")
