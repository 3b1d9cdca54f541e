"""Invariants of goft.functional over awkward sizes, at tight tolerances."""

import contextlib
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import goft
from goft import functional as givens
from goft.ops import backends

KERNELS = ["torch"] + (["numba"] if backends.numba_backend() is not None else [])


@contextlib.contextmanager
def use_kernel(name):
    old = os.environ.get("GOFT_KERNEL")
    os.environ["GOFT_KERNEL"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["GOFT_KERNEL"]
        else:
            os.environ["GOFT_KERNEL"] = old


@pytest.fixture(params=KERNELS)
def kernel(request):
    with use_kernel(request.param):
        yield request.param


SIZES = [1, 2, 3, 5, 7, 8, 12, 768]


EPS32 = torch.finfo(torch.float32).eps


EPS64 = torch.finfo(torch.float64).eps


def reference_pairs(d):
    """The pairing exactly as DESIGN.md §1 writes it."""
    levels = []
    cnt, step = d, 1
    while cnt > 1:
        npairs = cnt // 2
        levels.append([(i, i + step) for i in range(0, npairs * 2 * step, 2 * step)])
        cnt, step = npairs + cnt % 2, step * 2
    return levels


def random_quasi(d, dtype=torch.float64, noise=0.1, seed=0):
    """Near-orthogonal, well-conditioned quasi blocks: rotations plus noise."""
    g = torch.Generator().manual_seed(seed)
    theta = (torch.rand(d - 1, generator=g, dtype=dtype) * 2 - 1) * math.pi
    return givens.angles_to_blocks(theta) + noise * torch.randn(d - 1, 2, 2, generator=g, dtype=dtype)


def random_angles(d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(d - 1, generator=g, dtype=dtype) * 2 - 1) * math.pi).to(dtype)


def random_scale(d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.5 + torch.rand(d, generator=g, dtype=dtype)


def variants(d, dtype=torch.float64):
    """(name, params, scale) for strict, quasi, strict+scaling, quasi+scaling."""
    return [
        ("strict", random_angles(d, dtype), None),
        ("quasi", random_quasi(d, dtype), None),
        ("strict+scale", random_angles(d, dtype, seed=1), random_scale(d, dtype)),
        ("quasi+scale", random_quasi(d, dtype, seed=2), random_scale(d, dtype, seed=3)),
    ]


@pytest.mark.parametrize("d", SIZES + [4096, 1000, 9])
def test_pairs_match_the_design_pseudocode(d):
    got = [p.tolist() for p in givens.givens_pairs(d)]
    want = [[list(pair) for pair in level] for level in reference_pairs(d)]
    assert got == want
    assert sum(len(level) for level in got) == d - 1
    assert len(got) == (0 if d == 1 else math.ceil(math.log2(d)))
    for level in got:  # pairs of one level are disjoint
        flat = [i for pair in level for i in pair]
        assert len(flat) == len(set(flat))


def test_pairs_d8_and_d768():
    assert [p.tolist() for p in givens.givens_pairs(8)] == [
        [[0, 1], [2, 3], [4, 5], [6, 7]],
        [[0, 2], [4, 6]],
        [[0, 4]],
    ]
    assert len(givens.givens_pairs(768)) == 10 and givens.num_blocks(768) == 767
    assert givens.givens_pairs(1) == []


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_dimension_is_refused(bad):
    with pytest.raises(givens.GivensError, match="d must be an integer >= 1"):
        givens.givens_levels(bad)


def dense_product(params, d, levels, scale=None):
    """R = P_M ⋯ P_1 (· diag(scale)) as a product of dense level matrices, for pairs given level by level; written
    independently of the library."""
    blocks = givens.angles_to_blocks(params) if params.dim() == 1 else params
    r, k = torch.eye(d, dtype=torch.float64), 0
    for level in levels:
        p = torch.eye(d, dtype=torch.float64)
        for i, j in level:
            (a, b), (c, e) = blocks[k].tolist()
            p[i, i], p[i, j], p[j, i], p[j, j] = a, b, c, e
            k += 1
        r = p @ r
    assert k == blocks.shape[0]
    return r if scale is None else r @ torch.diag(scale.to(torch.float64))


def naive_dense(params, d, scale=None):
    """R = P_L ⋯ P_1 from the reference pairing."""
    return dense_product(params, d, reference_pairs(d), scale)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 8, 12, 33])
def test_rotation_matrix_matches_naive_construction(d):
    for _, params, scale in variants(d):
        assert torch.allclose(
            givens.rotation_matrix(params, d, scale), naive_dense(params, d, scale), atol=1e-13, rtol=0
        )


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


def test_unmerge_of_a_singular_quasi_block_is_refused():
    d = 5
    blocks = random_quasi(d)
    blocks[2] = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=torch.float64)  # rank 1
    w = torch.randn(3, d, dtype=torch.float64)
    with pytest.raises(givens.SingularBlockError, match="block 2 is singular"):
        givens.unmerge_weight(w, blocks)
    with pytest.raises(givens.SingularBlockError, match="block 2"):
        givens.rotate_inverse(w, blocks)


def test_near_singular_block_and_zero_scale_are_refused():
    d = 4
    blocks = random_quasi(d, torch.float32)
    blocks[0] = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-7]])
    with pytest.raises(givens.SingularBlockError):
        givens.unmerge_weight(torch.randn(2, d), blocks)
    scale = torch.ones(d)
    scale[3] = 0.0
    with pytest.raises(givens.SingularBlockError, match=r"scale\[3\]"):
        givens.unmerge_weight(torch.randn(2, d), random_angles(d, torch.float32), scale)


@pytest.mark.parametrize("d", [2, 3, 5, 8, 12])
def test_gradcheck_all_variants(d, kernel):
    x = torch.randn(3, 2, d, dtype=torch.float64, requires_grad=True)
    for name, params, scale in variants(d):
        params = params.clone().requires_grad_()
        if scale is None:
            assert torch.autograd.gradcheck(givens.rotate, (x, params)), name
        else:
            scale = scale.clone().requires_grad_()
            assert torch.autograd.gradcheck(givens.rotate, (x, params, scale)), name


def test_gradients_match_autograd_through_dense_R(kernel):
    d = 768
    x = torch.randn(6, d, dtype=torch.float64)
    for name, params, scale in variants(d):
        p1 = params.clone().requires_grad_()
        s1 = None if scale is None else scale.clone().requires_grad_()
        x1 = x.clone().requires_grad_()
        g = torch.randn(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
        (givens.rotate(x1, p1, s1) * g).sum().backward()
        p2 = params.clone().requires_grad_()
        s2 = None if scale is None else scale.clone().requires_grad_()
        x2 = x.clone().requires_grad_()
        (x2 @ givens.rotation_matrix(p2, d, s2) * g).sum().backward()
        assert torch.allclose(x1.grad, x2.grad, atol=1e-11, rtol=0), name
        assert torch.allclose(p1.grad, p2.grad, atol=1e-10, rtol=1e-10), name
        if s1 is not None:
            assert torch.allclose(s1.grad, s2.grad, atol=1e-10, rtol=1e-10), name


def test_backward_saves_only_the_input_and_parameters(kernel):
    """The performance model: no per-level activations are kept between forward and backward."""
    d, n = 64, 32
    x = torch.randn(n, d, requires_grad=True)
    params = random_quasi(d, torch.float32).requires_grad_()
    scale = random_scale(d, torch.float32).requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        givens.rotate(x, params, scale)
    activation_sized = [t for t in saved if t.numel() >= n * d]
    assert len(activation_sized) == 1  # x itself, seen as (N, d) rows: a view, no new memory
    assert activation_sized[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


def test_no_grad_for_frozen_params_still_gives_input_grad(kernel):
    d = 9
    x = torch.randn(2, d, dtype=torch.float64, requires_grad=True)
    params = random_angles(d)  # does not require grad
    givens.rotate(x, params).sum().backward()
    r = givens.rotation_matrix(params, d)
    assert torch.allclose(x.grad, r.sum(1).expand(2, d), atol=1e-13, rtol=0)


def test_penalty_formula():
    blocks = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.25]]], dtype=torch.float64)
    want = (1 * 2 + 3 * 4) ** 2 + (0.5 * -1.0 + 2.0 * 0.25) ** 2
    assert givens.block_orthogonality_penalty(blocks).item() == pytest.approx(want, rel=1e-15)
    rotations = givens.angles_to_blocks(random_angles(50))
    assert givens.block_orthogonality_penalty(rotations).item() <= 1e-28
    assert givens.block_orthogonality_penalty(random_angles(50)).item() == 0.0


def test_penalty_is_differentiable():
    blocks = random_quasi(6).requires_grad_()
    givens.block_orthogonality_penalty(blocks).backward()
    a, b, c, d = blocks.detach()[:, 0, 0], blocks.detach()[:, 0, 1], blocks.detach()[:, 1, 0], blocks.detach()[:, 1, 1]
    inner = a * b + c * d
    assert torch.allclose(blocks.grad[:, 0, 0], 2 * inner * b)
    assert torch.allclose(blocks.grad[:, 1, 1], 2 * inner * c)


@pytest.mark.parametrize(
    "params, message",
    [
        (torch.zeros(6), r"shape \(7,\) \(strict angles in radians\) or \(7, 2, 2\)"),
        (torch.zeros(7, 3, 3), r"got \(7, 3, 3\)"),
        (torch.zeros(7, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_params_name_the_allowed_shapes(params, message):
    with pytest.raises(givens.GivensError, match=message):
        givens.rotate(torch.zeros(2, 8), params)


def test_bad_scale_and_input():
    with pytest.raises(givens.GivensError, match=r"scale must have shape \(8,\)"):
        givens.rotate(torch.zeros(2, 8), torch.zeros(7), torch.ones(7))
    with pytest.raises(givens.GivensError, match="floating-point"):
        givens.rotate(torch.zeros(2, 8, dtype=torch.long), torch.zeros(7))


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


@pytest.mark.parametrize("rows", [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 95])
def test_row_counts_around_the_kernel_tile(kernel, rows):
    d = 13
    x = torch.randn(rows, d, dtype=torch.float64, requires_grad=True)
    params = random_quasi(d).requires_grad_()
    scale = random_scale(d).requires_grad_()
    g = torch.randn(rows, d, dtype=torch.float64)
    (givens.rotate(x, params, scale) * g).sum().backward()
    r = givens.rotation_matrix(params.detach(), d, scale.detach())
    assert torch.allclose(x.grad, g @ r.T, atol=1e-12, rtol=0)
    if rows == 0:
        assert params.grad.abs().max() == 0 and scale.grad.abs().max() == 0


def test_both_backends_agree_fp32():
    d = 768
    x = torch.randn(40, d, requires_grad=True)
    params = random_quasi(d, torch.float32).requires_grad_()
    g = torch.randn(40, d)
    results = {}
    for name in KERNELS:
        with use_kernel(name):
            x.grad = params.grad = None
            y = givens.rotate(x, params)
            (y * g).sum().backward()
            results[name] = (y.detach(), x.grad.clone(), params.grad.clone())
    for a, b in zip(results["torch"], results[KERNELS[-1]], strict=True):
        assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item(), rtol=0)


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
