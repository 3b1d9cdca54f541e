"""GOFT on convolutions: R acts on the input channels at every position; merge folds it into the weight's input
axis exactly; a grouped convolution is refused by name."""

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model
from torch import nn

from goft import GOFTConfig, GOFTLayer
from goft import functional as givens

VARIANTS = {
    "goft": {},
    "qgoft": {"quasi": True},
    "goft*": {"scaling": True},
    "qgoft*": {"quasi": True, "scaling": True},
}
CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class OneConv(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x)


def adapted(in_channels, dims=2, padding_mode="zeros", variant="goft", dtype=torch.float64):
    torch.manual_seed(in_channels + dims)
    conv = CONVS[dims](in_channels, 4, kernel_size=3, padding=1, padding_mode=padding_mode).to(dtype)
    model = get_peft_model(OneConv(conv), GOFTConfig(target_modules=["conv"], init_weights=False, **VARIANTS[variant]))
    return model.to(dtype)


def reference(layer: GOFTLayer, x: torch.Tensor) -> torch.Tensor:
    """conv(x') with x'[n, :, p] = x[n, :, p] @ R, R dense from the reference."""
    r = layer.rotation_matrix("default").to(x.dtype)
    rotated = torch.einsum("nc...,cd->nd...", x, r)
    return layer.get_base_layer()(rotated)


@pytest.mark.parametrize("in_channels", [1, 2, 3, 5, 7, 8, 12])
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_rotates_channels_and_merge_is_exact(in_channels, dims, variant):
    model = adapted(in_channels, dims, variant=variant)
    layer = model.base_model.model.conv
    x = torch.randn(2, in_channels, *([5] * dims), dtype=torch.float64)
    out = model(x)
    torch.testing.assert_close(out, reference(layer, x), atol=1e-12, rtol=1e-12)
    weight = layer.get_base_layer().weight.detach().clone()
    layer.merge()
    torch.testing.assert_close(model(x), out, atol=1e-12, rtol=1e-12)
    layer.unmerge()
    torch.testing.assert_close(layer.get_base_layer().weight, weight, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_merge_is_exact_for_every_padding_mode(padding_mode):
    model = adapted(5, padding_mode=padding_mode, variant="qgoft*")
    x = torch.randn(3, 5, 6, 4, dtype=torch.float64)
    out = model(x)
    merged = copy.deepcopy(model).merge_and_unload()
    torch.testing.assert_close(merged(x), out, atol=1e-12, rtol=1e-12)


def test_unbatched_input_rotates_its_channels():
    model = adapted(7, dims=2)
    x = torch.randn(7, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), model(x[None])[0], atol=1e-12, rtol=1e-12)


def test_strict_parameter_count_is_in_channels_minus_one():
    model = adapted(12)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 11


def test_fp32_conv_trains_and_round_trips_through_save_and_load(tmp_path):
    model = adapted(6, dtype=torch.float32, variant="goft*")
    x = torch.randn(4, 6, 5, 5)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    want = model(x)
    model.save_pretrained(tmp_path)
    base = adapted(6, dtype=torch.float32, variant="goft*").base_model.model.conv.get_base_layer()
    loaded = PeftModel.from_pretrained(OneConv(base), tmp_path)
    torch.testing.assert_close(loaded(x), want, atol=1e-6, rtol=1e-6)


def test_a_grouped_convolution_is_refused_by_name():
    model = OneConv(nn.Conv2d(8, 8, 3, groups=4))
    with pytest.raises(ValueError, match=r"GOFT cannot adapt module 'conv': a Conv2d with groups=4 .* groups=1"):
        get_peft_model(model, GOFTConfig(target_modules=["conv"]))


def test_a_transposed_convolution_is_refused_by_type():
    model = OneConv(nn.ConvTranspose2d(4, 4, 3))
    with pytest.raises(TypeError, match=r"'conv' of type torch.nn.modules.conv.ConvTranspose2d.*Conv1d/Conv2d/Conv3d"):
        get_peft_model(model, GOFTConfig(target_modules=["conv"]))


def test_rotate_along_channels_matches_functional():
    model = adapted(5, dims=1)
    layer = model.base_model.model.conv
    x = torch.randn(2, 5, 9, dtype=torch.float64)
    want = givens.rotate(x.transpose(1, 2), layer.rotation_params("default")).transpose(1, 2)
    torch.testing.assert_close(layer.rotate_input(x, "default"), want, atol=0, rtol=0)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_an_adapter_at_init_gives_the_base_output_bit_for_bit_in_either_layout(dims, channels_last):
    """The rotation runs on channels-last rows; the base convolution must still see the layout it was given, or it
    takes another algorithm (fp32 outputs then differ by ~1e-6 even at R = I)."""
    torch.manual_seed(dims)
    conv = CONVS[dims](24, 8, kernel_size=3, padding=1)
    x = torch.randn(2, 24, *(10,) * dims)
    if channels_last and dims > 1:
        x = x.contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    want = conv(x)
    model = get_peft_model(OneConv(conv), GOFTConfig(target_modules=["conv"]))
    layer = model.base_model.model.conv
    assert torch.equal(model(x), want)
    rotated = layer.rotate_input(x, "default")
    assert rotated.stride() == x.stride() and torch.equal(rotated, x)  # the input's layout, and R = I exactly


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_mixed_batch_of_convolution_adapters_equals_each_alone(dims, channels_last):
    conv = CONVS[dims](6, 4, kernel_size=3, padding=1)
    model = get_peft_model(OneConv(conv), GOFTConfig(target_modules=["conv"], init_weights=False))
    model.add_adapter("other", GOFTConfig(target_modules=["conv"], init_weights=False, scaling=True))
    model.eval()
    x = torch.randn(3, 6, *([5] * dims))
    if channels_last and dims == 2:
        x = x.to(memory_format=torch.channels_last)
    names = ["other", "__base__", "default"]
    mixed = model(x, adapter_names=names)
    alone = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        alone[name] = model(x)
    with model.disable_adapter():
        alone["__base__"] = model(x)
    want = torch.stack([alone[name][i] for i, name in enumerate(names)])
    assert torch.allclose(mixed, want, atol=1e-6, rtol=0)
