"""The Triton kernels against the dense reference: on a GPU when there is one, else in Triton's interpreter on CPU.

Skipped where triton is not installed (``make install`` installs it).
"""

import math

import pytest
import torch

from goft import functional as givens

triton = pytest.importorskip("triton")
tl = triton.language
from goft.ops import backends, reference  # noqa: E402
from goft.ops import cuda_triton as T  # noqa: E402  (after the interpreter switch in conftest)
from goft.ops.blocks import as_blocks  # noqa: E402

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
DIMS = [2, 3, 5, 7, 8, 12, 768]


def make_params(d, quasi, seed):
    g = torch.Generator().manual_seed(seed)
    if quasi:  # near-orthogonal free blocks, so products over ~10 levels stay O(1)
        return givens.angles_to_blocks(torch.randn(d - 1, generator=g, dtype=torch.float64)) + 0.3 * torch.randn(
            d - 1, 2, 2, generator=g, dtype=torch.float64
        )
    return torch.randn(d - 1, generator=g, dtype=torch.float64)


def make_scale(d, seed):
    return 0.5 + torch.rand(d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)


def bottom_first_matrix(blocks, d):
    """P_1 ⋯ P_L as a dense matrix (the order merge_weight sweeps in): the transpose of R built from transposed
    blocks, (P_L^T ⋯ P_1^T)^T."""
    return givens.rotation_matrix(blocks.transpose(-1, -2), d).T


def close(got, want, rtol):
    """Max abs error relative to the reference's scale (rows of a product of many levels)."""
    err = (got.double().cpu() - want).abs().max().item() if want.numel() else 0.0
    assert err <= rtol * max(1.0, want.abs().max().item()), err


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("quasi", [False, True])
@pytest.mark.parametrize("with_scale", [False, True])
def test_forward_and_backward_match_the_dense_reference(d, quasi, with_scale):
    dense_check(d, "tree", 1, quasi, with_scale)


@pytest.mark.parametrize("d", [2, 3, 5, 8, 12, 33])
@pytest.mark.parametrize("structure, depth", [("butterfly", 1), ("tree", 2), ("butterfly", 2)])
@pytest.mark.parametrize("quasi, with_scale", [(False, False), (True, True)])
def test_every_pairing_runs_on_the_kernels_and_matches_the_dense_reference(d, structure, depth, quasi, with_scale):
    dense_check(d, structure, depth, quasi, with_scale)


def dense_check(d, structure, depth, quasi, with_scale, n_rows=37, **backward_options):
    """Forward (both directions) and backward of the kernels against autograd through the dense matrix; strict
    params go in as angles (level inputs recovered by transposition, one gradient per angle), quasi as blocks (level
    inputs kept in the scratch).  37 rows: several programs and a short last tile."""
    pairing = {"structure": structure, "depth": depth}
    n_blocks = givens.num_blocks(d, structure, depth)
    g = torch.Generator().manual_seed(d + depth)
    theta = torch.randn(n_blocks, generator=g, dtype=torch.float64)
    params = (
        givens.angles_to_blocks(theta) + 0.3 * torch.randn(n_blocks, 2, 2, generator=g, dtype=torch.float64)
        if quasi
        else theta
    )
    scale = make_scale(d, d) if with_scale else None
    x = torch.randn(n_rows, d, dtype=torch.float64, generator=g)
    grad = torch.randn(n_rows, d, dtype=torch.float64, generator=g)
    params_ref = params.clone().requires_grad_()
    scale_ref = None if scale is None else scale.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()
    y_ref = x_ref @ givens.rotation_matrix(params_ref, d, scale_ref, **pairing)
    y_ref.backward(grad)
    dev = lambda t: None if t is None else t.float().to(DEVICE)  # noqa: E731
    tol = 2e-6 * math.log2(d + 1) * depth
    y = T.rotate_rows(dev(x), dev(params), dev(scale), True, **pairing)
    assert y.dtype == torch.float32 and y.device.type == DEVICE.type
    close(y, y_ref.detach(), tol)
    gx, gp, gs = T.rotate_rows_backward(
        dev(x), dev(grad), dev(params), dev(scale), True, True, **pairing, **backward_options
    )
    assert gp.shape == params.shape
    close(gx, x_ref.grad, tol)
    close(gp, params_ref.grad, 5 * tol)  # sums over the rows
    if with_scale:
        close(gs, scale_ref.grad, 5 * tol)
    else:
        assert gs is None
    blocks = as_blocks(params, d, structure, depth)
    bottom_first = givens.rotation_matrix(blocks.transpose(-1, -2), d, **pairing).T  # P_1 ⋯ P_M
    close(T.rotate_rows(dev(x), dev(params), None, False, **pairing), x @ bottom_first, tol)


@pytest.mark.parametrize("d, max_tile", [(9, 4), (17, 8)])
@pytest.mark.parametrize("structure, depth", [("tree", 1), ("butterfly", 1), ("tree", 2), ("butterfly", 2)])
@pytest.mark.parametrize("quasi, with_scale", [(False, True), (True, True)])
def test_rows_wider_than_a_tile_run_in_two_passes_per_stack(
    d, max_tile, structure, depth, quasi, with_scale, monkeypatch
):
    """Past MAX_TILE columns each stack runs as a low pass (column blocks) and a high pass (across blocks); a tile
    of 4 or 8 columns makes d = 9 and 17 take that path (rows up to MAX_TILE² columns), the high pass with chunks
    of 1 and 2 columns."""
    monkeypatch.setattr(T.planning, "MAX_TILE", max_tile)
    passes = T.plan_passes(d, depth, structure == "tree", top_first=True)
    assert len(passes) == 2 * depth and all(launch.tile <= max_tile for launch in passes)
    dense_check(d, structure, depth, quasi, with_scale)


def test_the_pass_plan_covers_every_level_once():
    for d in (9, 33, 5000, 11008, 14336, 65536):
        for structure in ("tree", "butterfly"):
            width = T.padded_width(d)
            per_stack = width.bit_length() - 1
            for depth in (1, 2):
                for top_first in (True, False):
                    order = (lambda r: reversed(r)) if top_first else (lambda r: r)  # noqa: E731
                    walked = [
                        stack * per_stack + kv + launch.lev_shift
                        for launch in T.plan_passes(d, depth, structure == "tree", top_first)
                        for stack in order(range(launch.stack0, launch.stack0 + launch.stacks))
                        for kv in (
                            reversed(range(launch.kv_first, launch.kv_end))
                            if top_first
                            else range(launch.kv_first, launch.kv_end)
                        )
                    ]
                    want = list(range(per_stack * depth))
                    assert walked == (want[::-1] if top_first else want), (d, structure, depth)
            for launch in T.plan_passes(d, 1, structure == "tree", True):
                assert launch.tile <= T.MAX_TILE and launch.tile == 1 << launch.kv_end
    with pytest.raises(ValueError, match="wider than the kernels take"):
        T.plan_passes(T.widest_row() + 1, 1, False, True)


@pytest.mark.parametrize("structure, quasi", [("tree", False), ("tree", True), ("butterfly", False)])
def test_backward_programs_loop_over_row_tiles(structure, quasi):
    """One program per grid row takes every tile (adding into its sums), with atomics and with partial rows."""
    dense_check(12, structure, 1, quasi, True, n_rows=101, max_programs=1)
    torch.use_deterministic_algorithms(True)
    try:
        dense_check(12, structure, 1, quasi, True, n_rows=101, max_programs=2)
    finally:
        torch.use_deterministic_algorithms(False)


def test_angles_and_their_rotations_as_blocks_give_one_result():
    """Angles (inputs recovered by transposition, angle gradients) and the same rotations passed as (n, 2, 2)
    blocks (inputs kept, block gradients): equal outputs and input gradients, and the angle gradient is the block
    gradient contracted with d/dθ of the rotation."""
    d = 100
    theta = make_params(d, False, 3).float().to(DEVICE)
    blocks = givens.angles_to_blocks(theta)
    scale = make_scale(d, 3).float().to(DEVICE)
    x = torch.randn(19, d, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    g = torch.randn(19, d, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    close(T.rotate_rows(x, theta, scale, True), T.rotate_rows(x, blocks, scale, True).double().cpu(), 1e-6)
    gx_a, g_theta, gs_a = T.rotate_rows_backward(x, g, theta, scale, True, True)
    gx_b, g_blocks, gs_b = T.rotate_rows_backward(x, g, blocks, scale, True, True)
    close(gx_a, gx_b.double().cpu(), 1e-5)
    close(gs_a, gs_b.double().cpu(), 1e-5)
    cos, sin = torch.cos(theta), torch.sin(theta)
    want = cos * (g_blocks[:, 1, 0] - g_blocks[:, 0, 1]) - sin * (g_blocks[:, 0, 0] + g_blocks[:, 1, 1])
    close(g_theta, want.double().cpu(), 1e-5)


@triton.jit
def sin_cos_kernel(x_ptr, sin_ptr, cos_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < n
    sin, cos = T.levels._sin_cos(tl.load(x_ptr + i, mask=live, other=0.0))
    tl.store(sin_ptr + i, sin, mask=live)
    tl.store(cos_ptr + i, cos, mask=live)


@triton.jit
def scratch_offset_kernel(
    out_ptr,
    STACK_LOCAL: tl.constexpr,
    KV: tl.constexpr,
    KV_FIRST: tl.constexpr,
    KV_END: tl.constexpr,
    BM: tl.constexpr,
    DV: tl.constexpr,
    COMPACT: tl.constexpr,
):
    tl.store(out_ptr, T.levels._scratch_offset(STACK_LOCAL, KV, KV_FIRST, KV_END, BM, DV, COMPACT))


@pytest.mark.parametrize("d, max_tile, depth", [(12, 4096, 1), (768, 4096, 2), (17, 8, 1), (9, 4, 2)])
@pytest.mark.parametrize("compact", [True, False])
def test_the_scratch_size_is_the_kernels_layout(d, max_tile, depth, compact, monkeypatch):
    """planning.scratch_per_program is where the kernel's last level ends: each level's pair inputs (2·BM·G values
    for a tree level, BM·DV otherwise) start where the one before ends, stack after stack, with no gap or overlap."""
    monkeypatch.setattr(T.planning, "MAX_TILE", max_tile)
    for launch in T.plan_passes(d, depth, compact, top_first=True):
        bm = T.tile_rows(launch.tile)
        end = 0
        for stack in range(launch.stacks):
            for kv in range(launch.kv_first, launch.kv_end):
                out = torch.empty(1, dtype=torch.int64, device=DEVICE)
                scratch_offset_kernel[(1,)](out, stack, kv, launch.kv_first, launch.kv_end, bm, launch.tile, compact)
                assert out.item() == end, (launch, stack, kv)
                end += 2 * bm * (launch.tile >> (kv + 1)) if compact else bm * launch.tile
        assert T.planning.scratch_per_program(launch, angles=False, compact=compact) == end
        assert T.planning.scratch_per_program(launch, angles=True, compact=compact) == 0


def test_the_kernels_sine_and_cosine_are_within_about_an_ulp():
    """The kernels form rotations from angles with their own sin / cos (no local-memory slow path): relative error
    within 1.25 fp32 eps of the exact values (torch's fp32 functions: 0.54) over [-10, 10], multiples of π/4,
    tiny angles and |θ| up to 10^6."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.linspace(-10, 10, 20001),
            (torch.rand(20000, generator=g) * 2 - 1) * 1e6,
            torch.tensor([0.0, -0.0, 1e-30, -1e-8]),
            torch.arange(-64, 65) * (math.pi / 4),
        ]
    ).float()
    x = x.to(DEVICE)
    sin, cos = torch.empty_like(x), torch.empty_like(x)
    sin_cos_kernel[(triton.cdiv(x.numel(), 1024),)](x, sin, cos, x.numel(), BLOCK=1024)
    eps = torch.finfo(torch.float32).eps
    for got, want in ((sin, torch.sin(x.double())), (cos, torch.cos(x.double()))):
        relative = (got.double() - want).abs() / want.abs().clamp_min(2.0**-126)
        assert relative.max().item() <= 1.25 * eps, relative.max().item() / eps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_fp32_and_keep_their_dtype(dtype):
    d = 12
    params = make_params(d, False, 0)
    blocks = as_blocks(params, d).float().to(DEVICE)
    x = torch.randn(9, d).to(dtype).to(DEVICE)
    y = T.rotate_rows(x, blocks, None, True)
    assert y.dtype == dtype
    want = x.double().cpu() @ givens.rotation_matrix(params, d)  # the rounding is the output's, once
    close(y, want, 2 * torch.finfo(dtype).eps)
    gx, gb, _ = T.rotate_rows_backward(x, y, blocks, None, True, False)
    assert gx.dtype == dtype and gb.dtype == torch.float32
    # under autocast the output gradient may come in fp32 for half rows: each tensor is read in its own dtype
    g = torch.randn(9, d, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    gx, gb, _ = T.rotate_rows_backward(x, g, blocks, None, True, False)
    want_gx, want_gb, _ = reference.rotate_rows_backward(x.cpu(), g.cpu(), blocks.cpu(), None, True, False)
    assert gx.dtype == dtype
    close(gx, want_gx.double(), 2 * torch.finfo(dtype).eps)
    close(gb, want_gb.double(), 1e-5)


def test_non_finite_inputs_spread_like_the_reference():
    # an inf in a coordinate that a level leaves alone must not turn into NaN elsewhere (0 * inf)
    d = 12
    blocks = as_blocks(make_params(d, False, 1), d).float()
    x = torch.randn(4, d)
    x[0, 3], x[1, 0], x[2, 11] = float("inf"), float("nan"), float("-inf")
    want = reference.rotate_rows(x, blocks, None, top_first=True)  # torch reference on CPU
    got = T.rotate_rows(x.to(DEVICE), blocks.to(DEVICE), None, True).cpu()
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(torch.isinf(got), torch.isinf(want))
    finite = torch.isfinite(want)
    assert torch.allclose(got[finite], want[finite], atol=1e-5)


def test_empty_and_strided_rows():
    d = 7
    blocks = as_blocks(make_params(d, True, 4), d).float().to(DEVICE)
    empty = torch.empty(0, d, device=DEVICE)
    assert T.rotate_rows(empty, blocks, None, True).shape == (0, d)
    gx, gb, _ = T.rotate_rows_backward(empty, empty, blocks, None, True, False)
    assert gx.shape == (0, d) and torch.count_nonzero(gb) == 0
    scale = make_scale(d, 4).float().to(DEVICE)  # an empty batch still owes its scale a (zero) gradient
    theta = make_params(d, False, 4).float().to(DEVICE)
    gx, g_theta, gs = T.rotate_rows_backward(empty, empty, theta, scale, True, True)
    assert g_theta.shape == (d - 1,) and gs.shape == (d,) and not g_theta.any() and not gs.any()
    wide = torch.randn(5, 2 * d, device=DEVICE)
    x = wide[:, ::2]  # last-dim stride 2: copied to unit stride
    want = x.double().cpu() @ givens.rotation_matrix(blocks.double().cpu(), d)
    close(T.rotate_rows(x, blocks, None, True), want, 1e-5)


@pytest.mark.skipif(not ON_GPU, reason="the dispatcher sends only CUDA tensors to the Triton kernels")
@pytest.mark.parametrize("d", [5, 768])
@pytest.mark.parametrize("quasi", [False, True])
def test_public_functions_on_cuda_match_the_cpu_reference(d, quasi, monkeypatch):
    params = make_params(d, quasi, 7).float()
    scale = make_scale(d, 7).float()
    x = torch.randn(3, 11, d)
    monkeypatch.setenv("GOFT_KERNEL", "torch")
    p_cpu, s_cpu = params.clone().requires_grad_(), scale.clone().requires_grad_()
    x_cpu = x.clone().requires_grad_()
    givens.rotate(x_cpu, p_cpu, s_cpu).square().sum().backward()
    w = torch.randn(40, d)
    merged_cpu = givens.merge_weight(w, params, scale)
    monkeypatch.setenv("GOFT_KERNEL", "triton")
    assert backends.backend_for(x.cuda(), torch.float32) is T
    p_gpu, s_gpu = params.cuda().requires_grad_(), scale.cuda().requires_grad_()
    x_gpu = x.cuda().requires_grad_()
    givens.rotate(x_gpu, p_gpu, s_gpu).square().sum().backward()
    merged = givens.merge_weight(w.cuda(), p_gpu.detach(), s_gpu.detach())
    restored = givens.unmerge_weight(merged, p_gpu.detach(), s_gpu.detach())
    rtol = 1e-5 * math.log2(d + 1)
    for got, want in [
        (x_gpu.grad, x_cpu.grad),
        (p_gpu.grad, p_cpu.grad),
        (s_gpu.grad, s_cpu.grad),
        (merged, merged_cpu),
        (restored, w),
    ]:
        close(got, want.double(), rtol * 10)


@pytest.mark.parametrize("quasi", [False, True])
def test_the_custom_op_takes_the_kernels_gradients_as_separate_tensors(quasi, monkeypatch):
    # the kernels add the parameters' and the scale's gradients into one buffer; torch refuses a custom op whose
    # outputs alias one another, so this runs the kernels inside the registered op, as a layer on a GPU does
    from goft.ops import autograd

    monkeypatch.setattr(autograd, "backend_for", lambda rows, dtype: T)
    d = 7
    params = make_params(d, quasi, 3).float().to(DEVICE).requires_grad_()
    scale = make_scale(d, 3).float().to(DEVICE).requires_grad_()
    x = torch.randn(5, d, device=DEVICE, requires_grad=True)
    givens.rotate(x, params, scale).square().sum().backward()
    want_x, want_p, want_s = (t.detach().double().cpu().requires_grad_() for t in (x, params, scale))
    rows = want_x @ givens.rotation_matrix(want_p if quasi else givens.angles_to_blocks(want_p), d) * want_s
    rows.square().sum().backward()
    for got, want in [(x.grad, want_x.grad), (params.grad, want_p.grad), (scale.grad, want_s.grad)]:
        close(got, want, 1e-5)


def test_kernel_choice_per_device(monkeypatch):
    monkeypatch.setenv("GOFT_KERNEL", "auto")
    assert backends.kernel_choice("cuda") == "triton"  # triton is installed here (importorskip above)
    assert backends.kernel_choice("cpu") == ("numba" if backends.numba_backend() is not None else "torch")
    assert backends.backend_for(torch.zeros(2, 4), torch.float32) is not T  # CPU tensors never go to Triton
    monkeypatch.setenv("GOFT_KERNEL", "torch")
    assert backends.kernel_choice("cuda") == "torch" and backends.kernel_choice("cpu") == "torch"
    monkeypatch.setenv("GOFT_KERNEL", "triton")
    assert backends.kernel_choice("cuda") == "triton"


def test_the_kernels_compile_for_a_gpu_without_one():
    """Triton's interpreter runs code its compiler refuses (e.g. returns of different shapes): compile every launch
    for sm_90a on the CPU: one pass of two stacks, and two passes per stack (a tile of 8 columns, d = 33); the tree
    and the general pairing; forward, and backward from angles (with atomics) and from blocks (with a scratch and
    partial rows); bf16 rows.  ptxas must not spill under register pressure.  It does park single values in local
    memory with registers to spare (seen in the SASS: one STL.64 / LDL.64 pair around the barrier of a tile, at 80
    of 255 registers), so up to 8 bytes of spill (one 64-bit value) pass and anything more fails."""
    import os
    import re
    import subprocess
    import sys

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.isfile(ptxas):
        pytest.skip("this Triton has no ptxas (not an NVIDIA-enabled build)")
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "triton_ahead_of_time.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    for args, launches in ((["12", "2"], 2), (["33", "1", "8"], 4)):
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        reports = [line for line in done.stdout.splitlines() if line.startswith("_rotate")]
        assert len(reports) == 4 * launches, done.stdout
        spilled = [int(re.search(r"(\d+) bytes spill stores", line).group(1)) for line in reports]
        assert max(spilled) <= 8, reports


MIXED_RUNS = [(0, 40), (3, 7), (-1, 5), (1, 33), (0, 2), (4, 1), (-1, 3), (2, 3)]  # (adapter, rows)


def mixed_check(d, structure, depth, quasi, with_scale, ordered, dtype=torch.float32):
    """Every row of a mixed batch equals its adapter's rotation by the dense reference; base rows bit for bit."""
    n_adapters = 5
    n_blocks = givens.num_blocks(d, structure, depth)
    g = torch.Generator().manual_seed(d + 10 * depth)
    theta = torch.randn(n_adapters, n_blocks, generator=g, dtype=torch.float64)
    params = (
        givens.angles_to_blocks(theta)
        + 0.3 * torch.randn(n_adapters, n_blocks, 2, 2, generator=g, dtype=torch.float64)
        if quasi
        else theta
    )
    scales = 0.5 + torch.rand(n_adapters, d, generator=g, dtype=torch.float64) if with_scale else None
    orders = torch.stack([torch.tensor(givens.random_order(d, k)) for k in range(n_adapters)]) if ordered else None
    row_adapter = torch.tensor([a for a, rows in MIXED_RUNS for _ in range(rows)])
    x = torch.randn(len(row_adapter), d, generator=g, dtype=torch.float64)
    dev = lambda t: None if t is None else (t if t.dtype == torch.int64 else t.float()).to(DEVICE)  # noqa: E731
    got = T.rotate_rows_mixed(
        dev(x).to(dtype), dev(params), dev(scales), row_adapter.to(DEVICE), dev(orders), structure, depth
    )
    assert got.dtype == dtype and got.shape == x.shape
    tol = 2e-6 * math.log2(d + 1) * depth if dtype == torch.float32 else 1e-2
    for adapter in range(n_adapters):
        r = givens.rotation_matrix(
            params[adapter],
            d,
            None if scales is None else scales[adapter],
            structure,
            depth,
            order=None if orders is None else orders[adapter],
        )
        rows = row_adapter == adapter
        close(got[rows.to(DEVICE)], x[rows].to(dtype).double() @ r, tol)
    base = (row_adapter == -1).to(DEVICE)
    assert torch.equal(got[base], dev(x).to(dtype)[base])


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize(
    "quasi, with_scale, ordered",
    [(False, False, False), (True, True, False), (False, True, True), (True, False, True)],
)
def test_mixed_batches_match_each_adapter_alone(d, quasi, with_scale, ordered):
    mixed_check(d, "tree", 1, quasi, with_scale, ordered)


@pytest.mark.parametrize("structure, depth", [("butterfly", 1), ("tree", 2)])
@pytest.mark.parametrize("ordered", [False, True])
def test_mixed_batches_take_every_pairing(structure, depth, ordered):
    mixed_check(12, structure, depth, True, True, ordered)


@pytest.mark.parametrize("d, max_tile", [(9, 4), (17, 8)])
@pytest.mark.parametrize("structure", ["tree", "butterfly"])
@pytest.mark.parametrize("ordered", [False, True])
def test_mixed_batches_of_rows_wider_than_a_tile(d, max_tile, structure, ordered, monkeypatch):
    """Two passes per stack: the rows go into each adapter's order first (a launch with no levels), every pass
    walks the same tiles, the last writes back through the order."""
    monkeypatch.setattr(T.planning, "MAX_TILE", max_tile)
    mixed_check(d, structure, 2, True, True, ordered)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_batches_of_half_rows_keep_their_dtype(dtype):
    mixed_check(12, "tree", 1, False, True, True, dtype)


def test_a_mixed_batch_of_base_rows_only_is_returned_unchanged():
    x = torch.randn(6, 8, device=DEVICE)
    got = T.rotate_rows_mixed(x, torch.zeros(2, 7, device=DEVICE), None, torch.full((6,), -1, device=DEVICE), None)
    assert torch.equal(got, x) and got.data_ptr() != x.data_ptr()


def test_rotate_mixed_runs_the_mixed_kernel_inside_the_custom_op(monkeypatch):
    """What a layer on a GPU calls: goft.functional.rotate_mixed dispatches to the Triton backend's mixed walk."""
    from goft.ops import autograd

    d = 10
    params = torch.randn(3, d - 1)
    scale = 0.5 + torch.rand(3, d)
    order = torch.stack([torch.tensor(givens.random_order(d, k)) for k in range(3)])
    row_adapter = torch.tensor([2, 2, -1, 0, 0, 0, 1])
    x = torch.randn(7, d)
    want = reference.rotate_rows_mixed(x.double(), params.double(), scale.double(), row_adapter, order)
    called = []
    original = T.rotate_rows_mixed
    monkeypatch.setattr(T, "rotate_rows_mixed", lambda *a: called.append(1) or original(*a))
    monkeypatch.setattr(autograd, "backend_for", lambda rows, dtype: T)
    got = givens.rotate_mixed(
        x.to(DEVICE), params.to(DEVICE), scale.to(DEVICE), row_adapter.to(DEVICE), order=order.to(DEVICE)
    )
    assert called and got.dtype == torch.float32
    close(got, want, 1e-5)
