"""goft.hotswap_adapter: in place, as a fresh load would give, without recompiling; other forms refused by name."""

import pytest
import torch
from peft import PeftModel, get_peft_model
from toys import make_mlp

import goft
from goft import GOFTConfig

X = torch.randn(6, 12, generator=torch.Generator().manual_seed(5))


def saved(tmp_path, name, seed, **options):
    torch.manual_seed(seed)
    model = get_peft_model(
        make_mlp(),
        GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, modules_to_save=["head"], **options),
    )
    with torch.no_grad():
        model.base_model.model.head.modules_to_save["default"].weight.add_(seed)  # a trained head differs too
    model.save_pretrained(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("options", [{}, {"quasi": True, "scaling": True}, {"pairing": "random"}])
def test_a_swapped_adapter_gives_what_a_fresh_load_gives_without_recompiling(tmp_path, options):
    first, second = saved(tmp_path, "a", 1, **options), saved(tmp_path, "b", 2, **options)
    model = PeftModel.from_pretrained(make_mlp(), first)
    tensors = {n: p for n, p in model.named_parameters()}
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    before = compiled(X)
    compiles = counters["stats"]["unique_graphs"]
    goft.hotswap_adapter(model, second)
    after = compiled(X)
    assert counters["stats"]["unique_graphs"] == compiles  # no recompilation
    fresh = PeftModel.from_pretrained(make_mlp(), second)(X)
    assert torch.allclose(after, fresh, atol=1e-6, rtol=0) and not torch.allclose(after, before)
    assert all(p is tensors[n] for n, p in model.named_parameters())  # in place
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "options, field",
    [
        ({"quasi": True}, "quasi"),
        ({"scaling": True}, "scaling"),
        ({"structure": "butterfly"}, "structure"),
        ({"depth": 2}, "depth"),
        ({"pairing": "random"}, "pairing"),
    ],
)
def test_another_form_is_refused_by_name(tmp_path, options, field):
    model = PeftModel.from_pretrained(make_mlp(), saved(tmp_path, "a", 1))
    before = model(X)
    with pytest.raises(ValueError, match=f"has {field}=.* but adapter 'default' has {field}="):
        goft.hotswap_adapter(model, saved(tmp_path, "b", 2, **options))
    assert torch.equal(model(X), before)  # untouched


def test_other_targets_are_refused(tmp_path):
    model = PeftModel.from_pretrained(make_mlp(), saved(tmp_path, "a", 1))
    other = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], modules_to_save=["head"]))
    other.save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match=r"target_modules=\['lin0'\] but adapter 'default' has target_modules="):
        goft.hotswap_adapter(model, tmp_path / "c")
