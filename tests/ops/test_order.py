"""Coordinate orders (goft.ops.pairing's ``order``): the structure laid over permuted coordinates, checked against a
dense ``Q R Q^T`` written here, on every entry point and under both kernels; the greedy matching that chooses an order
from plane scores, against a plain greedy written here."""

import pytest
import torch
from rotations import SIZES, dense_product, random_scale, use_kernel

from goft import functional as givens
from goft.ops.pairing import STRUCTURES


def permutation_matrix(order):
    """Q with Q[order[k], k] = 1, so that x @ Q = x[..., order]."""
    d = len(order)
    q = torch.zeros(d, d, dtype=torch.float64)
    q[torch.tensor(order), torch.arange(d)] = 1
    return q


def random_params(d, structure, quasi, seed):
    g = torch.Generator().manual_seed(seed)
    n = givens.num_blocks(d, structure)
    theta = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * 3
    if not quasi:
        return theta
    return givens.angles_to_blocks(theta) + 0.1 * torch.randn(n, 2, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("quasi", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_an_order_conjugates_the_structure_by_its_permutation(kernel, d, structure, quasi, scaled):
    params = random_params(d, structure, quasi, seed=d)
    scale = random_scale(d) if scaled else None
    order = givens.random_order(d, seed=7)
    q = permutation_matrix(order)
    pairs = [p.tolist() for p in givens.givens_pairs(d, structure)]
    want = q @ dense_product(params, d, pairs, scale) @ q.T
    order_t = torch.tensor(order)
    kwargs = {"structure": structure, "order": order_t}
    x = torch.randn(5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(4, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with use_kernel(kernel):
        assert torch.allclose(givens.rotation_matrix(params, d, scale, structure, 1, order_t), want, atol=1e-12)
        y = givens.rotate(x, params, scale, **kwargs)
        assert torch.allclose(y, x @ want, atol=1e-11, rtol=0)
        assert torch.allclose(givens.rotate_inverse(y, params, scale, **kwargs), x, atol=1e-9, rtol=0)
        merged = givens.merge_weight(w, params, scale, **kwargs)
        assert torch.allclose(merged, w @ want.T, atol=1e-11, rtol=0)
        assert torch.allclose(givens.unmerge_weight(merged, params, scale, **kwargs), w, atol=1e-9, rtol=0)


def test_the_first_level_turns_the_ordered_coordinates():
    # d = 4, the tree: level 1 pairs positions (0, 1) and (2, 3); with order [3, 0, 1, 2] those are coordinates
    # (3, 0) and (1, 2), and level 2 pairs positions (0, 2): coordinates (3, 1)
    theta = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)
    r = givens.rotation_matrix(theta, 4, order=torch.tensor([3, 0, 1, 2]))
    c, s = torch.cos(torch.tensor(0.3, dtype=torch.float64)), torch.sin(torch.tensor(0.3, dtype=torch.float64))
    want = torch.eye(4, dtype=torch.float64)
    want[3, 3], want[3, 0], want[0, 3], want[0, 0] = c, -s, s, c
    assert torch.allclose(r, want, atol=1e-15)


def test_gradients_flow_through_an_order(kernel):
    d = 7
    order = torch.tensor(givens.random_order(d, seed=3))
    params = random_params(d, "tree", False, seed=0).requires_grad_()
    scale = random_scale(d).requires_grad_()
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    with use_kernel(kernel):
        assert torch.autograd.gradcheck(lambda a, b, c: givens.rotate(a, b, c, order=order), (x, params, scale))


@pytest.mark.parametrize(
    "order, message",
    [
        (torch.tensor([0, 1, 1]), "exactly once"),
        (torch.tensor([0, 1]), r"shape \(3,\)"),
        (torch.tensor([0.0, 1.0, 2.0]), "int64"),
    ],
)
def test_a_bad_order_is_refused(order, message):
    with pytest.raises(givens.GivensError, match=message):
        givens.check_order(order, 3)


def test_rotate_refuses_an_order_of_another_width():
    with pytest.raises(givens.GivensError, match=r"\(5,\) int64"):
        givens.rotate(torch.randn(2, 5), torch.zeros(4), order=torch.arange(4))


def plain_greedy(scores):
    """Pairs by decreasing weight, each coordinate once: the textbook greedy matching."""
    w = scores.abs()
    w = torch.maximum(w, w.T)
    d = w.shape[0]
    candidates = sorted(((w[i, j].item(), i, j) for i in range(d) for j in range(i + 1, d)), key=lambda t: -t[0])
    free, order = set(range(d)), []
    for _, i, j in candidates:
        if i in free and j in free:
            free -= {i, j}
            order += [i, j]
    return order + sorted(free)


@pytest.mark.parametrize("d", SIZES[:-1] + [40])
def test_the_order_from_scores_is_the_greedy_matching(d):
    scores = torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    scores = scores - scores.T
    order = givens.order_from_plane_scores(scores)
    assert sorted(order) == list(range(d))
    assert order == plain_greedy(scores)


def test_the_heaviest_plane_comes_first_and_ties_are_deterministic():
    scores = torch.zeros(6, 6)
    scores[2, 5], scores[5, 2] = 3.0, -3.0
    scores[3, 4] = 2.0  # one-sided entries count by their magnitude
    scores[0, 1], scores[1, 0] = 1.0, -1.0
    assert givens.order_from_plane_scores(scores) == [2, 5, 3, 4, 0, 1]
    assert givens.order_from_plane_scores(torch.zeros(5, 5)) == [0, 1, 2, 3, 4]


def test_random_orders_are_seeded_permutations():
    assert givens.random_order(768, 1) == givens.random_order(768, 1)
    assert givens.random_order(768, 1) != givens.random_order(768, 2)
    assert sorted(givens.random_order(768, 1)) == list(range(768))
