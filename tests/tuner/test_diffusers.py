"""GOFT in a diffusers UNet, the way diffusers users attach PEFT adapters: ``unet.add_adapter(GOFTConfig(...))``, the
adapter's state dict out and back in with PEFT's functions, and fusing into the weights."""

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer

import goft

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    ).eval()


INPUTS = (torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3]))
CONTEXT = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(2))


def run(unet):
    with torch.no_grad():
        return unet(*INPUTS, CONTEXT).sample


def test_a_unet_takes_goft_saves_loads_and_fuses():
    unet = tiny_unet()
    base = run(unet)
    unet.add_adapter(goft.GOFTConfig(target_modules=TARGETS, init_weights=False, scaling=True))
    adapted = run(unet)
    assert (adapted - base).abs().max() > 1e-3
    state = get_peft_model_state_dict(unet)
    assert state and all(".goft_" in key for key in state)

    other = tiny_unet()
    other.add_adapter(goft.GOFTConfig(target_modules=TARGETS, scaling=True))  # the identity until loaded
    assert torch.allclose(run(other), base, atol=1e-6)
    result = set_peft_model_state_dict(other, state)
    assert not [k for k in result.unexpected_keys if "goft" in k]
    assert torch.allclose(run(other), adapted, atol=1e-6)

    layers = [m for m in other.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.merge()  # what fusing does for each PEFT layer
    assert all(layer.merged for layer in layers)
    assert torch.allclose(run(other), adapted, atol=1e-5)
