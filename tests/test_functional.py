"""Invariants of goft.functional over awkward sizes, at tight tolerances."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rotations import (
    EPS32,
    KERNELS,
    SIZES,
    random_angles,
    random_quasi,
    random_scale,
    use_kernel,
    variants,
)

import goft
from goft import functional as givens


@pytest.mark.parametrize("d", SIZES + [4096])
def test_strict_rotation_is_orthogonal_fp32(d, kernel):
    theta = random_angles(d, torch.float32)
    r = givens.rotation_matrix(theta, d)
    err = (r.T @ r - torch.eye(d)).abs().max().item()
    assert err <= 10 * d * EPS32, err
    # the same through rotate (never forming R): rows of I @ R are R's rows
    r_fast = givens.rotate(torch.eye(d), theta)
    err_fast = (r_fast.T @ r_fast - torch.eye(d)).abs().max().item()
    assert err_fast <= 10 * d * EPS32, err_fast


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("lead", [(), (3,), (2, 4)])
def test_rotate_equals_x_at_R(d, lead, kernel):
    x = torch.randn(*lead, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    for name, params, scale in variants(d):
        r = givens.rotation_matrix(params, d, scale)
        got = givens.rotate(x, params, scale)
        assert got.shape == x.shape
        assert torch.allclose(got, x @ r, atol=1e-12 * max(1, math.log2(d)), rtol=0), name


@pytest.mark.parametrize("d", [5, 12, 768])
def test_rotate_fp32_matches_fp64(d, kernel):
    x = torch.randn(16, d, generator=torch.Generator().manual_seed(1))
    for name, params, scale in variants(d):
        want = x.double() @ givens.rotation_matrix(params, d, scale)
        got = givens.rotate(x, params.float(), None if scale is None else scale.float())
        assert got.dtype == torch.float32
        assert (got.double() - want).abs().max().item() <= 20 * math.log2(d) * EPS32 * want.abs().max().item(), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [7, 768])
def test_half_precision_inputs_are_computed_in_fp32(dtype, d, kernel):
    x = torch.randn(8, d, generator=torch.Generator().manual_seed(2)).to(dtype)
    params, scale = random_quasi(d, torch.float32), random_scale(d, torch.float32)
    got = givens.rotate(x, params, scale)
    assert got.dtype == dtype
    want = (x.float() @ givens.rotation_matrix(params, d, scale).float()).to(dtype)
    # one rounding to the half dtype at the end, nothing accumulated in it
    assert torch.allclose(got.float(), want.float(), atol=0, rtol=2 * torch.finfo(dtype).eps)


@pytest.mark.parametrize("d", SIZES)
def test_inverse_round_trip(d, kernel):
    y = torch.randn(4, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for name, params, scale in variants(d):
        back = givens.rotate_inverse(givens.rotate(y, params, scale), params, scale)
        assert torch.allclose(back, y, atol=1e-11, rtol=0), name
        r = givens.rotation_matrix(params, d, scale)
        assert torch.allclose(givens.rotate_inverse(y, params, scale), y @ torch.linalg.inv(r), atol=1e-10, rtol=0), (
            name
        )


def test_strict_inverse_is_rotation_by_negated_angles_in_reverse():
    d = 12
    theta = random_angles(d)
    y = torch.randn(3, d, dtype=torch.float64)
    r = givens.rotation_matrix(theta, d)
    assert torch.allclose(givens.rotate_inverse(y, theta), y @ r.T, atol=1e-13, rtol=0)


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("out", [1, 6])
def test_merge_is_W_at_R_transpose_and_unmerge_restores(d, out, kernel):
    w = torch.randn(out, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x = torch.randn(5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for name, params, scale in variants(d):
        merged = givens.merge_weight(w, params, scale)
        assert torch.allclose(merged, w @ givens.rotation_matrix(params, d, scale).T, atol=1e-12, rtol=0), name
        # merged layer == unmerged layer
        assert torch.allclose(x @ merged.T, givens.rotate(x, params, scale) @ w.T, atol=1e-11, rtol=0), name
        assert torch.allclose(givens.unmerge_weight(merged, params, scale), w, atol=1e-12, rtol=0), name


def test_merge_does_not_modify_its_input_and_keeps_dtype():
    w = torch.randn(4, 8, dtype=torch.bfloat16)
    before = w.clone()
    merged = givens.merge_weight(w, random_angles(8, torch.float32))
    assert torch.equal(w, before) and merged.dtype == torch.bfloat16


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(min_value=1, max_value=80),
    rows=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    quasi=st.booleans(),
    scaled=st.booleans(),
    backend=st.sampled_from(KERNELS),
)
def test_property_rotate_matches_dense_and_inverts(d, rows, seed, quasi, scaled, backend):
    with use_kernel(backend):
        check_rotate_matches_dense_and_inverts(d, rows, seed, quasi, scaled)


def check_rotate_matches_dense_and_inverts(d, rows, seed, quasi, scaled):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d, dtype=torch.float64, generator=g)
    params = random_quasi(d, seed=seed) if quasi else random_angles(d, seed=seed)
    scale = random_scale(d, seed=seed) if scaled else None
    y = givens.rotate(x, params, scale)
    assert torch.allclose(y, x @ givens.rotation_matrix(params, d, scale), atol=1e-12, rtol=0)
    assert torch.allclose(givens.rotate_inverse(y, params, scale), x, atol=1e-10, rtol=0)
    if not quasi and not scaled:  # strict rotations preserve norms
        assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Fuzzing: finite, correct results or a clear error, never a silent wrong answer
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
    y = givens.rotate(x, params, scale)
    assert y.shape == x.shape and y.dtype == x.dtype
    want = x.double() @ givens.rotation_matrix(params.double(), d, None if scale is None else scale.double())
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
        givens.unmerge_weight(torch.randn(3, d), params)
    merged = givens.merge_weight(torch.randn(3, d), params)
    assert not torch.isfinite(merged).all()  # visible to safe_merge, never silently finite
