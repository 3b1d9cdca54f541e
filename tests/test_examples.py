"""The examples run as documented (at a smoke size here; their real runs write results/)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about a minute: a CNN pre-trained, then 45 short adaptations
def test_conv_digits_follows_its_protocol(tmp_path):
    pytest.importorskip("sklearn")
    conv_digits = load_example("conv_digits")
    result = conv_digits.run(tmp_path, train_per_class=5, epochs=2)
    saved = json.loads((tmp_path / "conv-digits.json").read_text())
    assert saved["sizes"] == {"source": 901, "train": 25, "val": 150, "test": 721}
    assert [row["method"] for row in saved["rows"]] == list(conv_digits.METHODS)
    for row in result["rows"]:
        sweep = {float(lr): acc for lr, acc in row["sweep_val_accuracy"].items()}
        assert set(sweep) == set(conv_digits.LEARNING_RATES)
        assert sweep[row["lr"]] == max(sweep.values())  # chosen on validation
        assert len(row["test_accuracy"]) == len(conv_digits.SEEDS)
    params = {row["method"]: row["trainable_params"] for row in result["rows"]}
    head = 32 * 5 + 5
    assert params["goft"] == head + (16 - 1) + (32 - 1)  # in_channels - 1 angles per adapted convolution
    assert params["head"] == head
    report = (tmp_path / "conv-digits.md").read_text()
    assert all(f"| {method} |" in report for method in conv_digits.METHODS)


def test_the_python_api_quickstart_trains_merges_and_checks():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.rstrip().endswith("ok") and "merged vs unmerged logits" in result.stdout
