"""The adapter inside PEFT: identity at init, counts, merge/unmerge, save/load, several and per-sample adapters."""

import copy
import json
import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn
from toys import PROMPTS, OneLinear, adapted_llama, make_mlp, tiny_gpt2

import goft
from goft import GOFTConfig, GOFTLayer
from goft import functional as givens

X = torch.randn(6, 12, generator=torch.Generator().manual_seed(1))


CONFIGS = {
    "goft": dict(),
    "qgoft": dict(quasi=True),
    "goft*": dict(scaling=True),
    "qgoft*": dict(quasi=True, scaling=True),
    "goft butterfly": dict(structure="butterfly"),
    "qgoft* butterfly depth 2": dict(quasi=True, scaling=True, structure="butterfly", depth=2),
    "goft tree depth 3": dict(depth=3),
    "goft random pairing": dict(pairing="random"),
    "qgoft* butterfly random pairing": dict(quasi=True, scaling=True, structure="butterfly", pairing="random"),
}


@pytest.mark.parametrize("variant", CONFIGS)
def test_identity_at_init_is_exact(variant):
    base = make_mlp()
    want = base(X)
    model = get_peft_model(copy.deepcopy(base), GOFTConfig(target_modules=["lin0", "lin1"], **CONFIGS[variant]))
    assert torch.equal(model(X), want)


@pytest.mark.parametrize("variant", CONFIGS)
def test_random_init_is_clearly_not_identity(variant):
    base = make_mlp()
    model = get_peft_model(
        copy.deepcopy(base), GOFTConfig(target_modules=["lin0"], init_weights=False, **CONFIGS[variant])
    )
    assert (model(X) - base(X)).abs().max() > 1e-2


@pytest.mark.parametrize(
    "variant, per_layer",
    [
        ("goft", lambda d: d - 1),
        ("qgoft", lambda d: 4 * (d - 1)),
        ("goft*", lambda d: 2 * d - 1),
        ("qgoft*", lambda d: 5 * d - 4),
    ],
)
def test_trainable_parameter_counts(variant, per_layer):
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"], **CONFIGS[variant]))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == per_layer(12) + per_layer(7)
    assert all(".goft_" in n for n in trainable)


def test_modules_to_save_is_the_only_other_trainable_module():
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], modules_to_save=["head"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(n for n in trainable if ".goft_" not in n) == sorted(
        ["base_model.model.head.modules_to_save.default.weight", "base_model.model.head.modules_to_save.default.bias"]
    )


@pytest.mark.parametrize("variant", CONFIGS)
def test_merge_equals_unmerged_and_unmerge_restores_base(variant):
    base = make_mlp()
    model = get_peft_model(
        copy.deepcopy(base), GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, **CONFIGS[variant])
    )
    w0 = base.lin0.weight.detach().clone()
    unmerged = model(X)
    model.merge_adapter()
    assert model.base_model.model.lin0.merged
    assert torch.allclose(model(X), unmerged, atol=1e-6, rtol=0)
    model.unmerge_adapter()
    assert not model.base_model.model.lin0.merged
    assert torch.allclose(model.base_model.model.lin0.base_layer.weight, w0, atol=1e-6, rtol=0)
    assert torch.allclose(model(X), unmerged, atol=1e-6, rtol=0)


def test_merge_is_idempotent_and_merge_and_unload_gives_plain_layers():
    base = make_mlp()
    model = get_peft_model(copy.deepcopy(base), GOFTConfig(target_modules=["lin0"], init_weights=False))
    want = model(X)
    model.merge_adapter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.merge_adapter()  # second merge: nothing to do
    assert torch.allclose(model(X), want, atol=1e-6, rtol=0)
    plain = model.merge_and_unload(safe_merge=True)
    assert type(plain.lin0) is nn.Linear
    assert torch.allclose(plain(X), want, atol=1e-6, rtol=0)


def test_safe_merge_refuses_nan_and_leaves_weights_untouched():
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], init_weights=False))
    layer = model.base_model.model.lin0
    with torch.no_grad():
        layer.goft_theta["default"][3] = float("nan")
    before = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match="safe_merge refused.*untouched"):
        model.merge_and_unload(safe_merge=True)
    assert torch.equal(layer.base_layer.weight, before)
    assert not layer.merged


def test_unmerge_of_singular_qgoft_block_leaves_weights_merged():
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], quasi=True))
    layer = model.base_model.model.lin0
    with torch.no_grad():
        layer.goft_blocks["default"][1] = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    model.merge_adapter()
    merged = layer.base_layer.weight.detach().clone()
    with pytest.raises(goft.SingularBlockError, match="cannot unmerge adapter 'default'.*block 1"):
        model.unmerge_adapter()
    assert torch.equal(layer.base_layer.weight, merged) and layer.merged


@pytest.mark.parametrize("variant", CONFIGS)
def test_save_load_round_trip(tmp_path, variant):
    base = make_mlp()
    model = get_peft_model(
        copy.deepcopy(base), GOFTConfig(target_modules=["lin0", "lin1"], init_weights=False, **CONFIGS[variant])
    )
    want = model(X)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "GOFT" and saved["quasi"] == CONFIGS[variant].get("quasi", False)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    # only learned numbers: no base weights, no index buffers
    assert tensors and all(".goft_" in key for key in tensors)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    assert isinstance(loaded.peft_config["default"], GOFTConfig)
    assert torch.equal(loaded(X), want)


def test_conv1d_targets_merge_as_R_times_W():
    base = tiny_gpt2()
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out is corrected for Conv1D with a warning
        model = get_peft_model(copy.deepcopy(base), GOFTConfig(target_modules=["c_attn", "c_fc"], init_weights=False))
    layer = model.base_model.model.h[0].attn.c_attn
    assert isinstance(layer, GOFTLayer) and layer.in_features == 12
    w = layer.base_layer.weight.detach().clone()  # (in, out)
    out = model(input_ids=ids).last_hidden_state
    assert (out - base(input_ids=ids).last_hidden_state).abs().max() > 1e-3
    model.merge_adapter()
    r = layer.rotation_matrix("default")
    assert torch.allclose(layer.base_layer.weight, r @ w, atol=1e-6, rtol=0)
    assert torch.allclose(model(input_ids=ids).last_hidden_state, out, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    assert torch.allclose(layer.base_layer.weight, w, atol=1e-6, rtol=0)


def test_unsupported_target_type_names_module_and_type():
    with pytest.raises(TypeError, match=r"module 'emb' of type torch\.nn\.modules\.sparse\.Embedding"):
        get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0", "emb"]))


@pytest.mark.parametrize("task_type", [None, "SEQ_CLS"])  # peft words the two cases differently
def test_targets_matching_nothing_name_the_targets_and_list_what_exists(task_type):
    with pytest.raises(ValueError, match=r"target_modules \['q_proj'\] matched no module .*'lin0', 'lin1', 'head'"):
        get_peft_model(make_mlp(), GOFTConfig(target_modules=["q_proj"], task_type=task_type))


def two_adapter_model(quasi=False, **other_pairing):
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], init_weights=False, quasi=quasi))
    model.add_adapter(
        "other", GOFTConfig(target_modules=["lin0"], init_weights=False, quasi=quasi, scaling=True, **other_pairing)
    )
    return model


def test_add_set_delete_adapter():
    model = two_adapter_model()
    out_default = model(X)
    model.set_adapter("other")
    out_other = model(X)
    assert (out_default - out_other).abs().max() > 1e-3
    model.delete_adapter("other")
    assert "other" not in model.base_model.model.lin0.goft_theta
    assert "other" not in model.base_model.model.lin0.goft_scale
    assert model.active_adapters == ["default"]
    assert torch.equal(model(X), out_default)


@pytest.mark.parametrize("quasi", [False, True])
def test_two_active_adapters_forward_equals_sequential_merge(quasi):
    model = two_adapter_model(quasi)
    model.base_model.set_adapter(["default", "other"])
    layer = model.base_model.model.lin0
    w = layer.base_layer.weight.detach().clone()
    out = model(X)
    # explicit: merging default then other gives W (R_other R_default)^T
    r = layer.rotation_matrix("other") @ layer.rotation_matrix("default")
    lin0_out = (
        givens.rotate(
            givens.rotate(X, layer.rotation_params("other"), layer.rotation_scale("other")),
            layer.rotation_params("default"),
        )
        @ w.T
        + layer.base_layer.bias
    )
    assert torch.allclose(lin0_out, X @ r @ w.T + layer.base_layer.bias, atol=1e-5, rtol=0)
    model.merge_adapter()
    assert layer.merged_adapters == ["default", "other"]
    assert torch.allclose(layer.base_layer.weight, w @ r.T, atol=1e-5, rtol=0)
    assert torch.allclose(model(X), out, atol=1e-5, rtol=0)
    model.unmerge_adapter()
    assert torch.allclose(layer.base_layer.weight, w, atol=1e-5, rtol=0)


def test_disable_adapter_context_gives_base_output():
    base = make_mlp()
    model = get_peft_model(copy.deepcopy(base), GOFTConfig(target_modules=["lin0"], init_weights=False))
    with model.disable_adapter():
        assert torch.equal(model(X), base(X))
    assert (model(X) - base(X)).abs().max() > 1e-3


@pytest.mark.parametrize("other_pairing", [{}, {"structure": "butterfly", "depth": 2}, {"pairing": "random"}])
def test_per_sample_adapters_match_separate_runs(other_pairing):
    base = make_mlp()
    model = two_adapter_model(**other_pairing)
    model.eval()
    names = ["default", "other", "__base__", "other", "default", "__base__"]
    mixed = model(X, adapter_names=names)
    model.set_adapter("default")
    out_default = model(X)
    model.set_adapter("other")
    out_other = model(X)
    with model.disable_adapter():
        out_base = model(X)
    assert torch.allclose(out_base, base(X))
    want = torch.stack(
        [{"default": out_default, "other": out_other, "__base__": out_base}[n][i] for i, n in enumerate(names)]
    )
    assert torch.allclose(mixed, want, atol=1e-6, rtol=0)


def test_per_sample_adapters_refuse_unknown_names_training_and_merged():
    model = two_adapter_model()
    model.eval()
    with pytest.raises(ValueError, match=r"unknown adapter\(s\) \['nope'\]"):
        model(X, adapter_names=["nope"] * 6)
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        model(X, adapter_names=["default"] * 6)
    model.eval()
    model.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        model(X, adapter_names=["default"] * 6)


def test_orthogonality_penalty_sums_active_quasi_adapters():
    model = get_peft_model(
        make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"], quasi=True, init_weights=False, orth_reg_weight=0.05)
    )
    want = 0.0
    for name in ("lin0", "lin1"):
        b = getattr(model.base_model.model, name).goft_blocks["default"].detach().double()
        want += 0.05 * ((b[:, 0, 0] * b[:, 0, 1] + b[:, 1, 0] * b[:, 1, 1]) ** 2).sum().item()
    penalty = goft.orthogonality_penalty(model)
    assert penalty.dim() == 0 and penalty.item() == pytest.approx(want, rel=1e-5)
    penalty.backward()
    assert model.base_model.model.lin0.goft_blocks["default"].grad.abs().sum() > 0


def test_orthogonality_penalty_is_zero_for_strict_goft_and_at_init():
    strict = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], init_weights=False))
    assert goft.orthogonality_penalty(strict).item() == 0.0
    quasi_init = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], quasi=True))
    assert goft.orthogonality_penalty(quasi_init).item() == 0.0


def test_training_moves_only_adapter_and_strict_stays_orthogonal():
    torch.manual_seed(0)
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    target = torch.randn(6, 2)
    losses = []
    for _ in range(30):
        loss = ((model(X) - target) ** 2).mean() + goft.orthogonality_penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    r = model.base_model.model.lin0.rotation_matrix("default")
    assert (r.T @ r - torch.eye(12)).abs().max() <= 10 * 12 * torch.finfo(torch.float32).eps


def test_bias_goft_only_trains_adapted_biases():
    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], bias="goft_only"))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert "base_model.model.lin0.base_layer.bias" in trainable
    assert "base_model.model.lin1.bias" not in trainable


# ---------------------------------------------------------------------------------------------------------------------
# Half precision and long training
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quasi", [False, True])
def test_half_precision_base_trains_and_merges_finite(dtype, quasi):
    torch.manual_seed(0)
    base = OneLinear(12).to(dtype)
    model = get_peft_model(base, goft.GOFTConfig(target_modules=["lin0"], quasi=quasi, init_weights=False))
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in params)  # PEFT autocasts adapter weights to fp32
    opt = torch.optim.AdamW(params, lr=1e-2)
    x = torch.randn(16, 12).to(dtype)
    for _ in range(20):
        loss = model(x).float().pow(2).mean() + goft.orthogonality_penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    model.merge_adapter()
    assert torch.isfinite(model.base_model.model.lin0.base_layer.weight).all()
    assert torch.allclose(model(x).float(), out.float(), atol=0.05, rtol=0.05)


def test_strict_goft_stays_orthogonal_after_many_large_steps():
    torch.manual_seed(0)
    model = get_peft_model(OneLinear(12), goft.GOFTConfig(target_modules=["lin0"]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
    x = torch.randn(32, 12)
    for _ in range(300):
        loss = -model(x).pow(2).mean()  # pushes the angles far and fast
        opt.zero_grad()
        loss.backward()
        opt.step()
    layer = model.base_model.model.lin0
    assert layer.goft_theta["default"].abs().max() > 1.0
    r = layer.rotation_matrix("default")
    assert (r.T @ r - torch.eye(12)).abs().max() < 1e-5


# ---------------------------------------------------------------------------------------------------------------------
# Decoder LMs: generation and gradient checkpointing with the adapter attached
# ---------------------------------------------------------------------------------------------------------------------


def test_generate_with_adapter_attached(tiny_llama):
    model = adapted_llama(tiny_llama).eval()
    out = model.generate(input_ids=PROMPTS, max_new_tokens=6, do_sample=False)
    assert out.shape == (2, 11)
    with model.disable_adapter():
        base = model.generate(input_ids=PROMPTS, max_new_tokens=6, do_sample=False)
    assert not torch.equal(out, base)  # the random adapter changes what is generated


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama):
    grads = []
    for checkpointing in (False, True):
        model = adapted_llama(tiny_llama, quasi=True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        loss = model(input_ids=PROMPTS, labels=PROMPTS).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5), name


def test_generate_with_one_adapter_per_prompt_equals_each_alone(tiny_llama):
    model = adapted_llama(tiny_llama).eval()
    model.add_adapter("other", goft.GOFTConfig(target_modules=["q_proj", "v_proj"], init_weights=False, quasi=True))
    prompts = torch.cat([PROMPTS, PROMPTS])
    names = ["default", "other", "__base__", "default"]
    mixed = model.generate(input_ids=prompts, max_new_tokens=6, do_sample=False, adapter_names=names)
    alone = {}
    for name in ("default", "other"):
        model.set_adapter(name)
        alone[name] = model.generate(input_ids=prompts, max_new_tokens=6, do_sample=False)
    with model.disable_adapter():
        alone["__base__"] = model.generate(input_ids=prompts, max_new_tokens=6, do_sample=False)
    assert torch.equal(mixed, torch.stack([alone[name][i] for i, name in enumerate(names)]))
    assert not torch.equal(alone["default"], alone["other"])  # the adapters differ: the check is not vacuous


def test_a_mixed_batch_sees_every_change_to_the_adapters_it_stacks():
    model = two_adapter_model()
    model.eval()
    names = ["default", "other", "default", "__base__", "other", "default"]
    before = model(X, adapter_names=names)
    assert torch.equal(model(X, adapter_names=names), before)  # the stacked adapters are reused
    with torch.no_grad():
        model.base_model.model.lin0.goft_theta["other"].add_(0.3)  # in place, as a hotswap or an optimizer step
    changed = model(X, adapter_names=names)
    model.set_adapter("other")
    assert torch.allclose(changed[[1, 4]], model(X)[[1, 4]], atol=1e-6, rtol=0)
    assert not torch.allclose(changed[[1, 4]], before[[1, 4]])
    model.delete_adapter("other")
    model.add_adapter("other", GOFTConfig(target_modules=["lin0"], init_weights=False, scaling=True))
    model.set_adapter("other")
    assert torch.allclose(model(X, adapter_names=names)[[1, 4]], model(X)[[1, 4]], atol=1e-6, rtol=0)


def test_a_mixed_batch_sees_an_adapters_tensor_replaced():
    model = two_adapter_model()
    model.eval()
    names = ["other", "default", "__base__"]
    before = model(X[:3], adapter_names=names)
    layer = model.base_model.model.lin0
    replaced = torch.nn.Parameter(layer.goft_theta["other"].detach() + 0.3)
    layer.goft_theta["other"] = replaced  # a new tensor object, its version counter at 0 like a fresh one
    after = model(X[:3], adapter_names=names)
    model.set_adapter("other")
    assert not torch.allclose(after[0], before[0])
    assert torch.allclose(after[0], model(X[:1])[0], atol=1e-6, rtol=0)
