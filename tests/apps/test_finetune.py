"""`goft finetune`'s training on a tiny local model and toy files, its outputs, and its option checks."""

import json

import pytest
import torch

from goft.apps.configs import FinetuneConfig
from goft.apps.errors import OptionError
from goft.apps.finetune import finetune


@pytest.mark.parametrize("method", ["goft", "qgoft"])
def test_training_loop_learns_and_writes_files(toy_config, tmp_path, method):
    out = tmp_path / "run"
    metrics = finetune(toy_config(method=method, lr=3e-2, output=str(out)))
    loss = metrics["curve"]["loss"]
    assert sum(loss[-4:]) / 4 < sum(loss[:4]) / 4  # the loss goes down
    assert metrics["accuracy"] >= 0.9  # separable toy data
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] and saved["config"]["method"] == method
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "curve.png").stat().st_size > 0
    # the adapter holds d - 1 (or 4(d - 1)) numbers per adapted linear layer: hidden 16, intermediate 24
    per = (lambda d: d - 1) if method == "goft" else (lambda d: 4 * (d - 1))
    assert metrics["adapter_params"] == 4 * per(16) + per(16) + per(24) + per(16)  # q,k,v,o; fc1; fc2 (in 24); pooler


def test_a_butterfly_run_saves_its_pairing_and_counts_its_blocks(toy_config, tmp_path):
    from goft import functional as givens

    out = tmp_path / "run"
    metrics = finetune(toy_config(method="goft", structure="butterfly", depth=2, epochs=1, output=str(out)))
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (saved["structure"], saved["depth"]) == ("butterfly", 2)
    written = json.loads((out / "metrics.json").read_text())
    assert written["config"]["structure"] == "butterfly" and written["method_label"] == "goft (butterfly, depth 2)"
    per = lambda d: givens.num_blocks(d, "butterfly", 2)  # noqa: E731
    assert metrics["adapter_params"] == 4 * per(16) + per(16) + per(24) + per(16)


def test_a_task_pairing_run_calibrates_on_training_batches_and_keeps_its_order(toy_config, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    metrics = finetune(toy_config(method="goft", pairing="task", calibration_batches=2, epochs=1, output=str(out)))
    assert metrics["calibration"]["batches"] == 2 and metrics["calibration"]["seconds"] > 0
    assert metrics["method_label"] == "goft (task pairing)"
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["pairing"] == "task"
    orders = {k: v for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items() if "goft_order" in k}
    assert len(orders) == 7 and all(sorted(v.tolist()) == list(range(v.numel())) for v in orders.values())
    # the checkpoint keeps the order too, so that --resume continues with the pairing it started with
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    kept = {k.replace(".default", "").removeprefix("base_model.model."): v for k, v in checkpoint.items()}
    assert all(torch.equal(kept[k.removeprefix("base_model.model.")], v) for k, v in orders.items())
    assert finetune(toy_config(method="goft", epochs=1))["calibration"] is None


def test_head_only_trains_only_the_classifier(toy_config):
    metrics = finetune(toy_config(method="head", epochs=1))
    assert metrics["trainable_params"] == 16 * 2 + 2 and metrics["adapter_params"] == 0


def test_bad_finetune_options_are_refused():
    # the library names the config field; the command line names the flag (below)
    with pytest.raises(OptionError, match="^method must be one of goft, goft_scaling, qgoft, .*, full, got 'x'"):
        FinetuneConfig(method="x")
    with pytest.raises(OptionError, match="^epochs must be a positive integer, got 0"):
        FinetuneConfig(epochs=0)
    with pytest.raises(OptionError, match="^train_file and --eval-file go together"):
        FinetuneConfig(train_file="a.csv")
    with pytest.raises(OptionError, match="^structure must be one of tree, butterfly, got 'ring'"):
        FinetuneConfig(structure="ring")
    with pytest.raises(OptionError, match="^depth must be a positive integer, got 0"):
        FinetuneConfig(depth=0)
    with pytest.raises(OptionError, match=r"^structure shapes GOFT's rotation \(--method goft or qgoft\), not lora"):
        FinetuneConfig(method="lora", structure="butterfly")
    with pytest.raises(OptionError, match=r"^pairing shapes GOFT's rotation \(--method goft or qgoft\), not oft"):
        FinetuneConfig(method="oft", pairing="task")
    with pytest.raises(OptionError, match="^pairing must be one of index, random, task, got 'data'"):
        FinetuneConfig(pairing="data")
    for bad in ("gpu", "tpu:0", "cpu:1", ""):
        with pytest.raises(OptionError, match=f"^device must be one of cpu, cuda, cuda:N, got {bad!r}"):
            FinetuneConfig(device=bad)


def test_a_run_records_the_device_it_trained_on(toy_config):
    metrics = finetune(toy_config(method="goft", epochs=1, device="cpu"))
    assert metrics["device"] == "cpu" and metrics["config"]["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_on_the_gpu_learns_as_on_the_cpu(toy_config):
    on_cpu = finetune(toy_config(method="goft", lr=3e-2, device="cpu"))
    on_gpu = finetune(toy_config(method="goft", lr=3e-2, device="cuda"))
    assert on_gpu["device"].startswith("cuda (") and on_gpu["accuracy"] >= 0.9
    # the same batches, initial adapter and schedule: the curves differ only by float rounding
    assert on_gpu["curve"]["loss"] == pytest.approx(on_cpu["curve"]["loss"], rel=1e-3, abs=1e-4)


@pytest.mark.slow
def test_real_polarity_512_examples_one_epoch():
    """The issue's bar: a 512-example, 1-epoch GOFT run on the real data beats 0.6 (its time, about 25 s here, is
    reported by `goft finetune`, not asserted: timings belong in benchmarks)."""
    metrics = finetune(FinetuneConfig(method="goft", task="polarity", train_size=512, epochs=1, progress=False))
    assert metrics["accuracy"] > 0.6, metrics["accuracy"]


def test_a_run_that_only_chooses_a_rate_never_reads_the_test_split(toy_config, toy_files, monkeypatch):
    from goft.apps import finetune as finetune_module

    real_evaluate, scored = finetune_module.evaluate, []

    def recording_evaluate(model, tokenizer, dataset, **kwargs):
        scored.append(dataset.source)
        return real_evaluate(model, tokenizer, dataset, **kwargs)

    monkeypatch.setattr(finetune_module, "evaluate", recording_evaluate)
    metrics = finetune(toy_config(epochs=2, evaluate_test=False, val_file=None))
    assert metrics["accuracy"] is None and len(metrics["val_accuracy_per_epoch"]) == 2
    assert scored == [f"{toy_files[0]}:val"] * 2  # validation only, carved from the training file
    scored.clear()
    metrics = finetune(toy_config(epochs=1, val_file=None))
    assert scored == [f"{toy_files[0]}:val", str(toy_files[1])]  # the test file once, at the end


def test_validation_comes_from_its_own_file_or_a_fixed_share_of_the_training_data(toy_config):
    metrics = finetune(toy_config(epochs=1))
    assert metrics["val_examples"] == 16 and metrics["train_examples"] == 64
    metrics = finetune(toy_config(epochs=1, val_file=None, val_fraction=0.25))
    assert metrics["val_examples"] == 16 and metrics["train_examples"] == 48
    with pytest.raises(OptionError, match="^val_fraction must be between 0 and 1"):
        toy_config(val_fraction=1.0)
