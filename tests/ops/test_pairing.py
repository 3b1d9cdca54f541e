"""The pairing convention (goft.ops.pairing): the tree as the paper writes it, bad sizes refused; the other
structures (butterfly, depth) spelled out, and rotate, merge and gradients on them against dense products."""

import functools
import math

import pytest
import torch
from rotations import (
    EPS32,
    SIZES,
    dense_product,
    reference_pairs,
)

from goft import functional as givens


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


# (structure, depth) beyond the paper's tree at depth 1, which tests/test_functional.py covers
DIALS = [("tree", 2), ("butterfly", 1), ("butterfly", 2), ("tree", 3)]


def tree_levels(d):
    """The tree, as DESIGN.md §1 writes it."""
    levels, cnt, step = [], d, 1
    while cnt > 1:
        npairs = cnt // 2
        levels.append([(i, i + step) for i in range(0, npairs * 2 * step, 2 * step)])
        cnt, step = npairs + cnt % 2, step * 2
    return levels


def butterfly_levels(d):
    """The butterfly as the capacity issue words it: level r = 1 … ceil(log2 d) pairs every i whose bit r-1 is 0
    with i + 2^(r-1), where that partner is < d."""
    n_levels = 0 if d == 1 else math.ceil(math.log2(d))
    return [
        [(i, i + 2 ** (r - 1)) for i in range(d) if not (i >> (r - 1)) & 1 and i + 2 ** (r - 1) < d]
        for r in range(1, n_levels + 1)
    ]


def spelled_out(d, structure, depth):
    return (tree_levels if structure == "tree" else butterfly_levels)(d) * depth


@functools.cache
def variants(d, structure, depth, dtype=torch.float64):
    """(name, params, scale): strict, quasi (rotations plus noise), strict with a scale, quasi with a scale."""
    n = givens.num_blocks(d, structure, depth)
    g = torch.Generator().manual_seed(d * 7 + depth)
    theta = ((torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * math.pi).to(dtype)
    quasi = givens.angles_to_blocks(theta.double()) + 0.1 * torch.randn(n, 2, 2, generator=g, dtype=torch.float64)
    scale = 0.5 + torch.rand(d, generator=g, dtype=torch.float64)
    return [
        ("strict", theta, None),
        ("quasi", quasi.to(dtype), None),
        ("strict+scale", theta, scale.to(dtype)),
        ("quasi+scale", quasi.to(dtype), scale.to(dtype)),
    ]


@pytest.mark.parametrize("d", SIZES + [9, 1000, 4096])
@pytest.mark.parametrize("structure, depth", DIALS + [("tree", 1)])
def test_pairs_are_the_spelled_out_ones(d, structure, depth):
    got = [p.tolist() for p in givens.givens_pairs(d, structure, depth)]
    want = [[list(pair) for pair in level] for level in spelled_out(d, structure, depth)]
    assert got == want
    assert givens.num_blocks(d, structure, depth) == sum(map(len, want))
    for level in got:
        flat = [i for pair in level for i in pair]
        assert len(flat) == len(set(flat)) and all(i < j for i, j in level)


def test_butterfly_counts():
    assert givens.num_blocks(768, "butterfly") == 3584
    for m in range(1, 13):
        assert givens.num_blocks(2**m, "butterfly") == 2 ** (m - 1) * m
    assert givens.num_blocks(768, "tree", 2) == 2 * 767


@pytest.mark.parametrize("d", SIZES + [9, 1000])
def test_butterfly_contains_the_tree_level_by_level(d):
    for tree, butterfly in zip(givens.givens_pairs(d), givens.givens_pairs(d, "butterfly"), strict=True):
        assert set(map(tuple, tree.tolist())) <= set(map(tuple, butterfly.tolist()))


@pytest.mark.parametrize("d", [2, 5, 12, 768])
def test_a_butterfly_with_only_tree_blocks_turned_is_the_tree(d, kernel):
    theta_tree = variants(d, "tree", 1)[0][1]
    theta = torch.zeros(givens.num_blocks(d, "butterfly"), dtype=torch.float64)
    for level_tree, level in zip(givens.level_table(d), givens.level_table(d, "butterfly"), strict=True):
        where = {pair: k for k, pair in enumerate(zip(level.left, level.right, strict=True))}
        for k, pair in enumerate(zip(level_tree.left, level_tree.right, strict=True)):
            theta[level.offset + where[pair]] = theta_tree[level_tree.offset + k]
    x = torch.randn(4, d, dtype=torch.float64)
    torch.testing.assert_close(
        givens.rotate(x, theta, structure="butterfly"), givens.rotate(x, theta_tree), rtol=0, atol=1e-13
    )


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 8, 12, 33])
@pytest.mark.parametrize("structure, depth", DIALS)
def test_rotation_matrix_is_the_dense_product(d, structure, depth):
    for name, params, scale in variants(d, structure, depth):
        want = dense_product(params, d, spelled_out(d, structure, depth), scale)
        got = givens.rotation_matrix(params, d, scale, structure=structure, depth=depth)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13, msg=name)


def check_orthogonal_fp32(d, structure, depth):
    theta = variants(d, structure, depth, torch.float32)[0][1]
    eye = torch.eye(d)
    for r in (
        givens.rotation_matrix(theta, d, structure=structure, depth=depth),
        givens.rotate(eye, theta, structure=structure, depth=depth),
    ):  # rows of I @ R are R's rows
        err = (r.T @ r - eye).abs().max().item()
        assert err <= 10 * d * EPS32, err


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("structure, depth", DIALS)
def test_strict_is_orthogonal_in_fp32(d, structure, depth, kernel):
    check_orthogonal_fp32(d, structure, depth)


@pytest.mark.parametrize("structure, depth", [("tree", 2), ("butterfly", 1), ("butterfly", 2)])
def test_strict_is_orthogonal_in_fp32_at_4096(structure, depth):
    check_orthogonal_fp32(4096, structure, depth)  # with the default kernel: R's construction dominates the time


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("structure, depth", DIALS)
def test_rotate_merge_unmerge_inverse(d, structure, depth, kernel):
    pairing = {"structure": structure, "depth": depth}
    g = torch.Generator().manual_seed(d)
    x = torch.randn(2, 3, d, dtype=torch.float64, generator=g)
    w = torch.randn(5, d, dtype=torch.float64, generator=g)
    tol = 1e-12 * max(1, math.log2(d)) * depth
    for name, params, scale in variants(d, structure, depth):
        r = givens.rotation_matrix(params, d, scale, **pairing)
        y = givens.rotate(x, params, scale, **pairing)
        torch.testing.assert_close(y, x @ r, rtol=0, atol=tol, msg=name)
        merged = givens.merge_weight(w, params, scale, **pairing)
        torch.testing.assert_close(merged, w @ r.T, rtol=0, atol=tol, msg=name)
        torch.testing.assert_close(x @ merged.T, y @ w.T, rtol=0, atol=10 * tol, msg=name)  # merged == unmerged
        torch.testing.assert_close(
            givens.unmerge_weight(merged, params, scale, **pairing), w, rtol=0, atol=1e-10, msg=name
        )
        torch.testing.assert_close(givens.rotate_inverse(y, params, scale, **pairing), x, rtol=0, atol=1e-10, msg=name)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 12])
@pytest.mark.parametrize("structure, depth", DIALS)
def test_gradcheck(d, structure, depth, kernel):
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)

    def rotate(x, params, scale=None):
        return givens.rotate(x, params, scale, structure=structure, depth=depth)

    for name, params, scale in variants(d, structure, depth):
        inputs = (x, params.clone().requires_grad_()) + (() if scale is None else (scale.clone().requires_grad_(),))
        assert torch.autograd.gradcheck(rotate, inputs), name


def test_gradients_at_768_match_autograd_through_dense_R(kernel):
    d, structure, depth = 768, "butterfly", 2
    x = torch.randn(6, d, dtype=torch.float64)
    g = torch.randn(6, d, dtype=torch.float64)
    for name, params, scale in variants(d, structure, depth):
        grads = []
        for through_dense in (False, True):
            p = params.clone().requires_grad_()
            s = None if scale is None else scale.clone().requires_grad_()
            xx = x.clone().requires_grad_()
            out = (
                xx @ givens.rotation_matrix(p, d, s, structure=structure, depth=depth)
                if through_dense
                else givens.rotate(xx, p, s, structure=structure, depth=depth)
            )
            (out * g).sum().backward()
            grads.append([t.grad for t in (xx, p, s) if t is not None])
        for fast, slow in zip(*grads, strict=True):
            torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10 * slow.abs().max().item(), msg=name)


@pytest.mark.parametrize(
    "structure, depth, message",
    [
        ("star", 1, "structure must be one of 'tree', 'butterfly', got 'star'"),
        ("tree", 0, "depth must be an integer >= 1, got 0"),
        ("butterfly", 1.5, "depth must be an integer >= 1, got 1.5"),
    ],
)
def test_bad_pairings_are_refused(structure, depth, message):
    with pytest.raises(givens.GivensError, match=message):
        givens.rotate(torch.randn(2, 8), torch.zeros(7), structure=structure, depth=depth)


def test_params_of_another_pairing_are_refused_naming_it():
    with pytest.raises(givens.GivensError, match=r"params for d=8 \(butterfly, depth 1\) must have shape \(12,\)"):
        givens.rotate(torch.randn(2, 8), torch.zeros(7), structure="butterfly")


@pytest.mark.parametrize("structure, depth", DIALS + [("tree", 1)])
def test_in_features_is_recovered_from_the_block_count(structure, depth):
    for d in SIZES + [9, 1000, 4096]:
        assert givens.in_features_for_blocks(givens.num_blocks(d, structure, depth), structure, depth) == d
    for d in range(2, 40):  # a count between two sizes' counts belongs to no size
        for n in range(givens.num_blocks(d, structure, depth) + 1, givens.num_blocks(d + 1, structure, depth)):
            assert givens.in_features_for_blocks(n, structure, depth) is None
