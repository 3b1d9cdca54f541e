"""Mixed-adapter batches (goft.functional.rotate_mixed): every row equals its own adapter run alone, base rows are
untouched bit for bit, under both CPU kernels, for every form of adapter and awkward run lengths."""

import numpy as np
import pytest
import torch
from rotations import SIZES, use_kernel

from goft import functional as givens
from goft.ops import row_tiles

RUNS = [(0, 40), (3, 7), (-1, 5), (1, 33), (0, 2), (4, 1), (-1, 3), (2, 64)]  # (adapter, rows): awkward lengths


def stacks(d, adapters, quasi, scaled, ordered, structure="tree", seed=0):
    g = torch.Generator().manual_seed(seed)
    n = givens.num_blocks(d, structure)
    theta = (torch.rand(adapters, n, generator=g) * 2 - 1) * 3
    params = givens.angles_to_blocks(theta) + 0.1 * torch.randn(adapters, n, 2, 2, generator=g) if quasi else theta
    scale = 0.5 + torch.rand(adapters, d, generator=g) if scaled else None
    order = torch.stack([torch.tensor(givens.random_order(d, k)) for k in range(adapters)]) if ordered else None
    return params, scale, order


@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("quasi", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("ordered", [False, True])
def test_each_row_equals_its_adapter_alone(kernel, d, quasi, scaled, ordered):
    params, scale, order = stacks(d, 5, quasi, scaled, ordered, seed=d)
    row_adapter = torch.tensor([a for a, rows in RUNS for _ in range(rows)])
    x = torch.randn(len(row_adapter), d, generator=torch.Generator().manual_seed(1))
    with use_kernel(kernel):
        mixed = givens.rotate_mixed(x, params, scale, row_adapter, order=order)
        for adapter in range(5):
            rows = row_adapter == adapter
            alone = givens.rotate(
                x[rows],
                params[adapter],
                None if scale is None else scale[adapter],
                order=None if order is None else order[adapter],
            )
            assert torch.allclose(mixed[rows], alone, atol=4e-6, rtol=0), adapter
    assert torch.equal(mixed[row_adapter == -1], x[row_adapter == -1])


@pytest.mark.parametrize("d", [2, 7, 768])
@pytest.mark.parametrize("quasi, scaled, ordered", [(False, False, False), (True, True, True), (False, True, True)])
def test_a_decode_step_of_one_row_per_sequence_equals_each_adapter_alone(kernel, d, quasi, scaled, ordered):
    """70 rows, each its own sequence with an adapter drawn at random among 9 (base included): short runs, packed
    into tiles whose lanes each take their own adapter, several such tiles."""
    params, scale, order = stacks(d, 9, quasi, scaled, ordered, seed=d + 1)
    row_adapter = torch.randint(-1, 9, (70,), generator=torch.Generator().manual_seed(d))
    x = torch.randn(70, d, generator=torch.Generator().manual_seed(2))
    with use_kernel(kernel):
        mixed = givens.rotate_mixed(x, params, scale, row_adapter, order=order)
        for n, adapter in enumerate(row_adapter.tolist()):
            if adapter < 0:
                assert torch.equal(mixed[n], x[n])
                continue
            alone = givens.rotate(
                x[n : n + 1],
                params[adapter],
                None if scale is None else scale[adapter],
                order=None if order is None else order[adapter],
            )
            assert torch.allclose(mixed[n : n + 1], alone, atol=4e-6, rtol=0), n


@pytest.mark.parametrize("structure", ["butterfly"])
def test_other_structures_and_leading_shapes(kernel, structure):
    params, scale, _ = stacks(12, 3, False, True, False, structure)
    x = torch.randn(4, 5, 12)
    row_adapter = torch.tensor([2] * 5 + [-1] * 5 + [0] * 5 + [2] * 5)
    with use_kernel(kernel):
        mixed = givens.rotate_mixed(x, params, scale, row_adapter, structure=structure)
        want = torch.stack(
            [x[0] @ givens.rotation_matrix(params[2], 12, scale[2], structure).float(), x[1]]
            + [x[2] @ givens.rotation_matrix(params[0], 12, scale[0], structure).float()]
            + [x[3] @ givens.rotation_matrix(params[2], 12, scale[2], structure).float()]
        )
    assert mixed.shape == x.shape and torch.allclose(mixed, want, atol=1e-5, rtol=0)


def test_tiles_cover_every_adapted_row_once_within_one_run():
    row_adapter = torch.tensor([a for a, rows in RUNS for _ in range(rows)])
    tiles = row_tiles.adapter_tiles(row_adapter, tile=32)
    covered = np.full(len(row_adapter), -1)
    for first, rows, adapter in tiles.tolist():
        assert 1 <= rows <= 32 and (covered[first : first + rows] == -1).all()
        covered[first : first + rows] = adapter
    assert covered.tolist() == row_adapter.tolist()
    assert row_tiles.adapter_tiles(torch.full((7,), -1), 32).shape == (0, 3)
    assert row_tiles.adapter_tiles(torch.zeros(0, dtype=torch.long), 32).shape == (0, 3)


def test_short_runs_go_to_lanes_and_long_runs_to_tiles():
    row_adapter = torch.tensor([a for a, rows in RUNS for _ in range(rows)])
    tiles, lanes = row_tiles.tiles_and_lanes(row_adapter, 32, 8)
    covered = np.full(len(row_adapter), -1)
    for first, rows, adapter in tiles.tolist():
        assert rows >= 1 and (covered[first : first + rows] == -1).all()
        covered[first : first + rows] = adapter
    for row, adapter in lanes.tolist():
        assert covered[row] == -1
        covered[row] = adapter
    assert covered.tolist() == row_adapter.tolist()
    starts = np.cumsum([0] + [rows for _, rows in RUNS])[:-1]
    short_rows = [
        n for (a, rows), s in zip(RUNS, starts, strict=True) if a >= 0 and rows < 8 for n in range(s, s + rows)
    ]
    assert lanes[:, 0].tolist() == short_rows  # the runs of 7, 2 and 1 rows


def test_bad_stacks_are_refused():
    with pytest.raises(givens.GivensError, match="stacked"):
        givens.rotate_mixed(torch.randn(2, 4), torch.zeros(3), None, torch.zeros(2, dtype=torch.long))
    with pytest.raises(givens.GivensError, match="one entry per row"):
        givens.rotate_mixed(torch.randn(2, 4), torch.zeros(1, 3), None, torch.zeros(3, dtype=torch.long))
    with pytest.raises(
        givens.GivensError, match=r"-1 \(the base\) or an adapter index 0\.\.0, got values from 0 to 1"
    ):
        givens.rotate_mixed(torch.randn(2, 4), torch.zeros(1, 3), None, torch.tensor([0, 1]))
    with pytest.raises(givens.GivensError, match="got values from -2 to 0"):
        givens.rotate_mixed(torch.randn(2, 4), torch.zeros(1, 3), None, torch.tensor([-2, 0]))
    with pytest.raises(givens.GivensError, match=r"order must be \(1, 4\)"):
        givens.rotate_mixed(
            torch.randn(2, 4), torch.zeros(1, 3), None, torch.zeros(2, dtype=torch.long), order=torch.arange(4)
        )


def test_a_mixed_batch_compiles_in_one_graph_and_still_refuses_a_bad_index():
    x, params = torch.randn(6, 8), 0.3 * torch.randn(2, 7)
    row_adapter = torch.tensor([0, 0, 1, -1, 1, 0])
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, p, ra: givens.rotate_mixed(x, p, None, ra), backend="aot_eager", fullgraph=True
    )  # fullgraph: reading the indices while tracing would raise
    assert torch.equal(compiled(x, params, row_adapter), givens.rotate_mixed(x, params, None, row_adapter))
    with pytest.raises(givens.GivensError, match="got values from -1 to 2"):
        compiled(x, params, torch.tensor([0, 0, 2, -1, 1, 0]))
