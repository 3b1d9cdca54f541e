"""Data-parallel training under torchrun (2 processes, gloo on CPU) matches a single process over the same batches."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file


def finetune_args(tiny_checkpoint, toy_files, output):
    train, evals = toy_files
    return ["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--eval-file", str(evals),
            "--epochs", "2", "--batch-size", "16", "--method", "qgoft", "--output", str(output), "--no-progress"]


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tiny_checkpoint, toy_files, tmp_path):
    args = finetune_args(tiny_checkpoint, toy_files, tmp_path / "one")
    single = subprocess.run([sys.executable, "-m", "goft", *args], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "goft",
         *finetune_args(tiny_checkpoint, toy_files, tmp_path / "two")],
        capture_output=True, text=True, timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["distributed"] == {"world_size": 2, "max_param_diff_across_ranks": 0.0}
    assert "distributed" not in one
    wa = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= 1e-5, worst
    assert one["curve"]["eval_accuracy"] == two["curve"]["eval_accuracy"]
