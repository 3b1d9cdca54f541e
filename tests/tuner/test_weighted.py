"""add_weighted_adapter on a GOFT model: identities, the one-block meaning of the angle sum, orthogonality kept, quasi
and scale rules, other forms refused by name."""

import pytest
import torch
from peft import get_peft_model
from toys import make_mlp

from goft import GOFTConfig
from goft import functional as givens

X = torch.randn(6, 12, generator=torch.Generator().manual_seed(6))


def model_with(*configs):
    torch.manual_seed(0)
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, **configs[0]))
    for k, options in enumerate(configs[1:], start=1):
        model.add_adapter(f"a{k}", GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, **options))
    return model


def output(model, name):
    model.set_adapter(name)
    return model(X)


@pytest.mark.parametrize("options", [{}, {"quasi": True}, {"scaling": True}, {"quasi": True, "scaling": True}])
def test_one_adapter_at_weight_one_and_one_adapter_twice_at_half_reproduce_it(options):
    model = model_with(options, options)
    model.add_weighted_adapter(["default"], [1.0], "same")
    model.add_weighted_adapter(["default", "default"], [0.5, 0.5], "halves")
    want = output(model, "default")
    assert torch.allclose(output(model, "same"), want, atol=1e-6, rtol=0)
    assert torch.allclose(output(model, "halves"), want, atol=1e-6, rtol=0)


def test_strict_combinations_add_angles_and_stay_orthogonal():
    model = model_with({}, {})
    model.add_weighted_adapter(["default", "a1"], [0.3, 0.9], "mix")
    layer = model.base_model.model.lin0
    want = 0.3 * layer.rotation_params("default").double() + 0.9 * layer.rotation_params("a1").double()
    assert torch.allclose(layer.rotation_params("mix").double(), want, atol=1e-6)
    r = layer.rotation_matrix("mix").double()
    assert torch.allclose(r.T @ r, torch.eye(12, dtype=torch.float64), atol=1e-6)


def test_one_block_halfway_to_the_identity_is_the_half_angle_rotation():
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(2, 3)), GOFTConfig(target_modules=["0"]))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.goft_theta["default"].fill_(1.2)
    model.add_adapter("identity", GOFTConfig(target_modules=["0"]))
    model.add_weighted_adapter(["default", "identity"], [0.5, 0.5], "halfway")
    want = givens.rotation_matrix(torch.tensor([0.6], dtype=torch.float64), 2)
    assert torch.allclose(layer.rotation_matrix("halfway").double(), want, atol=1e-7)


def test_scales_combine_in_log_space_and_quasi_blocks_linearly():
    model = model_with({"quasi": True, "scaling": True}, {"quasi": True, "scaling": True})
    model.add_weighted_adapter(["default", "a1"], [0.25, 0.75], "mix")
    layer = model.base_model.model.lin1
    s0, s1 = layer.rotation_scale("default").double(), layer.rotation_scale("a1").double()
    assert torch.allclose(layer.rotation_scale("mix").double(), s0**0.25 * s1**0.75, rtol=1e-6)
    b = 0.25 * layer.rotation_params("default").double() + 0.75 * layer.rotation_params("a1").double()
    assert torch.allclose(layer.rotation_params("mix").double(), b, atol=1e-6)


@pytest.mark.parametrize(
    "other, field",
    [({"quasi": True}, "quasi"), ({"structure": "butterfly"}, "structure"), ({"scaling": True}, "scaling")],
)
def test_adapters_of_another_form_are_refused_by_name(other, field):
    model = model_with({}, other)
    with pytest.raises(ValueError, match=f"differ in {field}"):
        model.add_weighted_adapter(["default", "a1"], [0.5, 0.5], "mix")
    assert "mix" not in model.peft_config


def test_bad_calls_are_refused():
    model = model_with({}, {})
    with pytest.raises(ValueError, match="one weight per adapter"):
        model.add_weighted_adapter(["default", "a1"], [1.0], "mix")
    with pytest.raises(ValueError, match=r"unknown adapter\(s\) \['nope'\]"):
        model.add_weighted_adapter(["nope"], [1.0], "mix")
    with pytest.raises(ValueError, match="exists already"):
        model.add_weighted_adapter(["default"], [1.0], "a1")
