"""goft inspect's statistics (goft.apps.adapter_stats): per-layer numbers of GOFT and qGOFT adapters."""

import pytest
import torch
from peft import get_peft_model

from goft import GOFTConfig
from goft.apps.cli import main


def test_inspect_reads_a_butterfly_adapter(tmp_path, capsys):
    from toys import make_mlp

    from goft.apps.adapter_stats import layer_statistics

    model = get_peft_model(
        make_mlp(), GOFTConfig(target_modules=["lin0", "lin1"], structure="butterfly", depth=2, init_weights=False)
    )
    model.save_pretrained(tmp_path / "adapter")
    assert main(["inspect", str(tmp_path / "adapter")]) == 0
    assert "GOFT (butterfly, depth 2) adapter" in capsys.readouterr().out
    rows = layer_statistics(tmp_path / "adapter")
    assert sorted(r["d"] for r in rows) == [7, 12]
    assert max(r["col_inner_max"] for r in rows) < 1e-12  # strict: R is orthogonal


def test_inspect_names_qgoft_and_separates_what_its_penalty_controls(tmp_path, capsys):
    from toys import make_mlp

    from goft.apps.adapter_stats import layer_statistics

    model = get_peft_model(make_mlp(), GOFTConfig(target_modules=["lin0"], quasi=True, init_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    assert main(["inspect", str(tmp_path / "adapter")]) == 0
    assert "qGOFT adapter" in capsys.readouterr().out and (tmp_path / "adapter-inspect.png").is_file()
    (row,) = layer_statistics(tmp_path / "adapter")
    r = model.base_model.model.lin0.rotation_matrix("default").double()
    gram = r.T @ r
    assert row["col_inner_max"] == pytest.approx((gram - torch.diag(torch.diagonal(gram))).abs().max().item())
    assert row["col_norm_max"] == pytest.approx(r.norm(dim=0).max().item())
