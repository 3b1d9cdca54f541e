"""One backend choice for all ops: GOFT_KERNEL is validated; a compiler that cannot be imported counts as missing."""

import importlib

import pytest
import torch

from goft import functional as givens
from goft.ops import autograd, backends, reference


def test_kernel_choice_is_validated(monkeypatch):
    monkeypatch.setenv("GOFT_KERNEL", "fast")
    with pytest.raises(ValueError, match=r"GOFT_KERNEL must be one of 'auto', 'numba', 'triton', 'torch', got 'fast'"):
        givens.rotate(torch.zeros(2, 4), torch.zeros(3))


@pytest.fixture
def broken_compilers(monkeypatch):
    """Importing either compiled backend fails the way a half-installed compiler does (not with ImportError)."""
    real_import = importlib.import_module

    def failing_import(name, *args):
        if name.endswith((".cpu_numba", ".cuda_triton")):
            raise RuntimeError(f"simulated broken install of {name}")
        return real_import(name, *args)

    backends._compiled_backend.cache_clear()
    monkeypatch.setattr(backends.importlib, "import_module", failing_import)
    yield
    backends._compiled_backend.cache_clear()


def test_a_broken_compiler_counts_as_missing(broken_compilers, monkeypatch):
    assert backends.numba_backend() is None and backends.triton_backend() is None
    monkeypatch.setenv("GOFT_KERNEL", "auto")
    assert backends.kernel_choice("cuda") == "torch" and backends.kernel_choice("cpu") == "torch"
    x = torch.randn(3, 6, dtype=torch.float64)
    theta = torch.randn(5, dtype=torch.float64)
    assert torch.allclose(givens.rotate(x, theta), x @ givens.rotation_matrix(theta, 6), atol=1e-12, rtol=0)
    for insisted in ("numba", "triton"):
        monkeypatch.setenv("GOFT_KERNEL", insisted)
        with pytest.raises(ImportError, match=f"GOFT_KERNEL={insisted} but {insisted} cannot be imported"):
            backends.kernel_choice("cpu")


def test_torch_forces_the_reference_path_for_every_dtype(monkeypatch):
    monkeypatch.setenv("GOFT_KERNEL", "torch")
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert backends.backend_for(torch.zeros(2, 5, dtype=dtype), torch.float32) is reference


@pytest.mark.skipif(backends.numba_backend() is None, reason="numba is not installed")
def test_auto_picks_numba_for_cpu_rows_in_fp32_or_fp64(monkeypatch):
    monkeypatch.setenv("GOFT_KERNEL", "auto")
    for dtype in (torch.float16, torch.float32):
        assert backends.backend_for(torch.zeros(2, 5, dtype=dtype), torch.float32) is backends.numba_backend()
    assert backends.backend_for(torch.zeros(2, 5, dtype=torch.float64), torch.float64) is backends.numba_backend()


@pytest.mark.parametrize("choice", ["auto", "torch"])
def test_forward_backward_merge_unmerge_and_inverse_ask_once_and_agree(choice, monkeypatch):
    monkeypatch.setenv("GOFT_KERNEL", choice)
    asked = []

    def recording_backend_for(rows, dtype):
        asked.append(backends.backend_for(rows, dtype))
        return asked[-1]

    monkeypatch.setattr(autograd, "backend_for", recording_backend_for)
    x = torch.randn(4, 9, requires_grad=True)
    blocks = torch.eye(2).repeat(8, 1, 1) + 0.1 * torch.randn(8, 2, 2)
    blocks.requires_grad_()
    givens.rotate(x, blocks).sum().backward()
    w = torch.randn(3, 9)
    givens.unmerge_weight(givens.merge_weight(w, blocks.detach()), blocks.detach())
    givens.rotate_inverse(x.detach(), blocks.detach())
    assert len(asked) == 5 and len(set(asked)) == 1
    assert asked[0] is (reference if choice == "torch" else backends.numba_backend() or reference)
