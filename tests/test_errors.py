"""Bad input at the boundary gets a clear error naming the argument / file / layer; nothing is left half-changed."""

import json
import math
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel, get_peft_model
from torch import nn

import goft
from goft import functional as F
from goft.tuner.config import AdapterFileError


class Tiny(nn.Module):
    def __init__(self, d=12):
        super().__init__()
        self.lin0 = nn.Linear(d, 5)

    def forward(self, x):
        return self.lin0(x)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(Tiny(12), goft.GOFTConfig(target_modules=["lin0"], init_weights=False))
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
    with pytest.raises(AdapterFileError, match=r"layer 'lin0': .*shape \(11,\) but this model needs \(6,\) "
                                               r"\(in_features 12 saved vs 7 here\)"):
        PeftModel.from_pretrained(Tiny(7), saved)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(goft_format_version=2), "saved in goft format 2, newer than the format 1"),
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
        PeftModel.from_pretrained(Tiny(12), bad)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"\x00" * 8 + b[8:], lambda b: b""])
def test_corrupted_weights_file(saved, tmp_path, damage):
    bad = edited_copy(saved, tmp_path / "bad", edit_weights=damage)
    with pytest.raises(AdapterFileError, match="adapter_model.safetensors is truncated or corrupted"):
        PeftModel.from_pretrained(Tiny(12), bad)


def test_config_file_that_is_not_json(saved, tmp_path):
    bad = edited_copy(saved, tmp_path / "bad")
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterFileError, match=r"adapter_config\.json is not valid JSON"):
        goft.GOFTConfig.from_pretrained(bad)
    # through PeftModel, peft reads the file first (to find the method) and raises json's own ValueError
    with pytest.raises(ValueError):
        PeftModel.from_pretrained(Tiny(12), bad)


# ---------------------------------------------------------------------------------------------------------------------
# Half precision
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quasi", [False, True])
def test_half_precision_base_trains_and_merges_finite(dtype, quasi):
    torch.manual_seed(0)
    base = Tiny(12).to(dtype)
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
    model = get_peft_model(Tiny(12), goft.GOFTConfig(target_modules=["lin0"]))
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
# Fuzzing the math: finite, correct results or a clear error, never a silent wrong answer
# ---------------------------------------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    d=st.integers(1, 40),
    lead=st.lists(st.integers(0, 3), min_size=0, max_size=2),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    quasi=st.booleans(),
    scaled=st.booleans(),
    poison=st.sampled_from([None, math.nan, math.inf, -math.inf]),
    seed=st.integers(0, 10_000),
)
def test_fuzz_rotate(d, lead, dtype, quasi, scaled, poison, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, d, generator=g).to(dtype)
    params = torch.randn(d - 1, 2, 2, generator=g) * 0.3 + torch.eye(2) if quasi else torch.randn(d - 1, generator=g)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32  # parameters in the compute dtype
    params = params.to(pdtype)
    scale = (0.5 + torch.rand(d, generator=g)).to(pdtype) if scaled else None
    if poison is not None and x.numel():
        x.view(-1)[seed % x.numel()] = poison
    y = F.rotate(x, params, scale)
    assert y.shape == x.shape and y.dtype == x.dtype
    want = x.double() @ F.rotation_matrix(params.double(), d, None if scale is None else scale.double())
    finite = torch.isfinite(want)
    # where the exact answer is finite, ours matches it to the dtype's precision; non-finite inputs stay non-finite
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype]
    scale = want[finite].abs().max().item() if finite.any() else 1.0
    assert torch.allclose(y.double()[finite], want[finite], atol=tol * max(1.0, scale) * math.log2(d + 1), rtol=0)
    if poison is not None and x.numel():
        assert not torch.isfinite(y).all()


@settings(max_examples=40, deadline=None)
@given(d=st.integers(2, 30), bad=st.sampled_from([math.nan, math.inf]), seed=st.integers(0, 1000))
def test_fuzz_non_finite_parameters_are_caught_where_it_matters(d, bad, seed):
    params = torch.randn(d - 1, 2, 2, generator=torch.Generator().manual_seed(seed))
    params[seed % (d - 1), 1, 0] = bad
    with pytest.raises(goft.SingularBlockError):
        F.unmerge_weight(torch.randn(3, d), params)
    merged = F.merge_weight(torch.randn(3, d), params)
    assert not torch.isfinite(merged).all()  # visible to safe_merge, never silently finite
