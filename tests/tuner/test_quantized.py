"""GOFT on quantized base layers through PEFT's quantization backends: training needs nothing from the quantizer
(R acts on the input); merge de-quantizes, merges and re-quantizes where the backend can, and otherwise refuses by
naming the layer and the quantizer.  Runs what works on a CPU: bitsandbytes 4-bit (NF4) and 8-bit, torchao int8."""

import copy
import warnings

import pytest
import torch
from peft import get_peft_model
from torch import nn

from goft import GOFTConfig

bnb = pytest.importorskip("bitsandbytes")

X = torch.randn(5, 24, generator=torch.Generator().manual_seed(0))


class TwoLayers(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)))


def float_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 24, generator=g) / 5, torch.randn(8, 16, generator=g) / 4


def bnb_linear(weight: torch.Tensor, bits: int) -> nn.Module:
    out_features, in_features = weight.shape
    if bits == 4:
        layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
    else:
        layer = bnb.nn.Linear8bitLt(in_features, out_features, bias=False, has_fp16_weights=False)
        layer.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False)
    return layer.to("cpu")  # quantizes


def train_a_little(model, steps=3):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        model(X).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("options", [{}, {"quasi": True, "scaling": True}], ids=["goft", "qgoft*"])
def test_bitsandbytes_base_trains_and_merges_by_requantizing(bits, options):
    w1, w2 = float_weights()
    model = get_peft_model(
        TwoLayers(bnb_linear(w1, bits), bnb_linear(w2, bits)),
        GOFTConfig(target_modules=["first", "second"], **options),
    )
    layer = model.base_model.model.first
    assert (layer.in_features, layer.out_features) == (24, 16)  # the logical sizes, not the packed weight's
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        23 + 15 if not options else 23 * 4 + 15 * 4 + 24 + 16
    )
    train_a_little(model)
    rotated = layer.rotate_input(X, "default")
    torch.testing.assert_close(layer(X), layer.get_base_layer()(rotated), atol=0, rtol=0)  # the quantized kernel runs

    # merge = de-quantize, W @ R.T in float, re-quantize: the same as quantizing the exact merged weight afresh
    exact = layer.get_base_weight().float() @ layer.rotation_matrix("default").T
    unmerged_out = model(X)
    merged = copy.deepcopy(model).merge_and_unload()
    assert type(merged.first) is type(layer.get_base_layer())
    fresh = bnb_linear(exact, bits)
    torch.testing.assert_close(merged.first.weight.data, fresh.weight.data, atol=0, rtol=0)
    # and it computes what the adapter computed, up to one more rounding of the weights: no further from it than
    # the quantized base model is from its float original
    float_base = TwoLayers(nn.Linear(24, 16, bias=False), nn.Linear(16, 8, bias=False))
    float_base.first.weight.data, float_base.second.weight.data = w1, w2
    quantization_error = (TwoLayers(bnb_linear(w1, bits), bnb_linear(w2, bits))(X) - float_base(X)).abs().max()
    assert (merged(X) - unmerged_out).abs().max() <= 2 * quantization_error


torchao = pytest.importorskip("torchao")


def test_torchao_int8_base_from_transformers_trains_and_merges(tiny_llama):
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import LlamaForCausalLM, TorchAoConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = LlamaForCausalLM.from_pretrained(
            tiny_llama, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()), device_map="cpu"
        )
    q_proj = base.model.layers[0].self_attn.q_proj
    assert type(q_proj.weight).__name__ == "Int8Tensor"
    model = get_peft_model(base, GOFTConfig(target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    ids = torch.randint(0, base.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    exact = layer.get_base_weight().float() @ layer.rotation_matrix("default").T
    want = model(input_ids=ids).logits
    merged = model.merge_and_unload()
    merged_q = merged.model.layers[0].self_attn.q_proj
    assert type(merged_q.weight).__name__ == "Int8Tensor"  # re-quantized with the model's own recipe
    torch.testing.assert_close(
        merged_q.weight.dequantize().float(), exact, atol=exact.abs().max().item() / 100, rtol=0
    )  # one int8 rounding (per-row scale max/127)
    got = merged(input_ids=ids).logits
    assert (got - want).abs().max().item() < 0.05 * want.abs().max().item()


def test_torchao_quantized_by_hand_trains_but_merge_is_refused_by_name():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    w1, w2 = float_weights()
    base = TwoLayers(nn.Linear(24, 16, bias=False), nn.Linear(16, 8, bias=False))
    with torch.no_grad():
        base.first.weight.copy_(w1)
        base.second.weight.copy_(w2)
    quantize_(base, Int8WeightOnlyConfig())
    model = get_peft_model(base, GOFTConfig(target_modules=["first"]))
    train_a_little(model)
    with pytest.raises(
        ValueError,
        match=r"cannot merge GOFT into layer 'first': its weight is quantized by torchao "
        r"\(quantized outside transformers",
    ):
        model.merge_and_unload()
