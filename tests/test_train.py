"""The Trainer integration adds qGOFT's penalty to the training loss, and only there."""

import torch
from peft import get_peft_model
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

import goft
from goft import OrthogonalityPenaltyTrainer


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=20, max_position_embeddings=16, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # deterministic train mode
    return BertForSequenceClassification(config)


def test_trainer_adds_the_penalty_in_training_only(tmp_path):
    model = get_peft_model(
        tiny_bert(),
        goft.GOFTConfig(target_modules=["query", "value"], quasi=True, init_weights=False, orth_reg_weight=0.5,
                        modules_to_save=["classifier"]),
    )
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2,
                             report_to=[], use_cpu=True, save_strategy="no", learning_rate=1e-2)
    data = [{"input_ids": torch.randint(0, 30, (8,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    trainer = OrthogonalityPenaltyTrainer(model=model, args=args, train_dataset=data)
    batch = {"input_ids": torch.stack([d["input_ids"] for d in data[:4]]),
             "labels": torch.stack([d["labels"] for d in data[:4]])}
    penalty = goft.orthogonality_penalty(model).item()
    assert penalty > 1e-4
    model.train()
    with torch.no_grad():
        task_loss = model(**batch).loss.item()
        assert abs(trainer.compute_loss(model, batch).item() - (task_loss + penalty)) < 1e-5
    model.eval()
    with torch.no_grad():
        assert abs(trainer.compute_loss(model, batch).item() - model(**batch).loss.item()) < 1e-6
    before = model.base_model.model.bert.encoder.layer[0].attention.self.query.goft_blocks["default"].detach().clone()
    trainer.train()
    after = model.base_model.model.bert.encoder.layer[0].attention.self.query.goft_blocks["default"]
    assert not torch.equal(before, after)


# ---------------------------------------------------------------------------------------------------------------------
# The fine-tuning loop, `goft compare` and the CLI on a tiny local model and toy files
# ---------------------------------------------------------------------------------------------------------------------

import json  # noqa: E402

import pytest  # noqa: E402

from goft.apps.cli import main  # noqa: E402
from goft.apps.compare import run_compare  # noqa: E402
from goft.apps.errors import OptionError  # noqa: E402
from goft.apps.finetune import FinetuneConfig, finetune  # noqa: E402


def toy_config(tiny_checkpoint, toy_files, **kw):
    train, evals = toy_files
    values = dict(model=str(tiny_checkpoint), train_file=str(train), eval_file=str(evals), epochs=10,
                  batch_size=16, progress=False)
    values.update(kw)
    return FinetuneConfig(**values)


@pytest.mark.parametrize("method", ["goft", "qgoft"])
def test_training_loop_learns_and_writes_files(tiny_checkpoint, toy_files, tmp_path, method):
    out = tmp_path / "run"
    metrics = finetune(toy_config(tiny_checkpoint, toy_files, method=method, lr=3e-2, output=str(out)))
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


def test_head_only_trains_only_the_classifier(tiny_checkpoint, toy_files):
    metrics = finetune(toy_config(tiny_checkpoint, toy_files, method="head", epochs=1))
    assert metrics["trainable_params"] == 16 * 2 + 2 and metrics["adapter_params"] == 0


def test_bad_finetune_options_are_refused():
    # the library names the config field; the command line names the flag (below)
    with pytest.raises(OptionError, match="^method must be one of goft, goft_scaling, qgoft, lora, .*, full, got 'x'"):
        FinetuneConfig(method="x")
    with pytest.raises(OptionError, match="^epochs must be a positive integer, got 0"):
        FinetuneConfig(epochs=0)
    with pytest.raises(OptionError, match="^train_file and --eval-file go together"):
        FinetuneConfig(train_file="a.csv")


def test_cli_names_the_flag_and_exits_with_a_message(capsys):
    with pytest.raises(SystemExit, match="^goft finetune: --epochs must be a positive integer, got 0$"):
        main(["finetune", "--epochs", "0"])
    with pytest.raises(SystemExit, match="^goft compare: --methods has unknown \\['lora_r9'\\]; allowed: goft, "):
        main(["compare", "--methods", "goft,lora_r9"])


def test_compare_writes_results_and_resumes(tiny_checkpoint, toy_files, tmp_path):
    base = toy_config(tiny_checkpoint, toy_files, epochs=1)
    messages = []
    results = run_compare("toy", ["goft", "lora_r2"], [0, 1], base, tmp_path, progress=messages.append)
    runs = results["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("goft", 0), ("lora_r2", 0), ("goft", 1), ("lora_r2", 1)]
    for r in runs:
        assert {"method", "seed", "accuracy", "trainable_params", "seconds"} <= set(r)
    assert json.loads((tmp_path / "toy.json").read_text()) == results
    table = (tmp_path / "toy.md").read_text()
    assert "| goft |" in table and "| lora_r2 |" in table
    assert (tmp_path / "toy.png").stat().st_size > 0
    again = run_compare("toy", ["goft", "lora_r2"], [0, 1], base, tmp_path, progress=messages.append)
    assert again["runs"] == runs and sum("skip" in m for m in messages) == 4


def test_cli_finetune_and_inspect(tiny_checkpoint, toy_files, tmp_path, capsys):
    train, evals = toy_files
    out = tmp_path / "cli"
    assert main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--eval-file", str(evals),
                 "--epochs", "2", "--method", "goft", "--output", str(out), "--no-progress"]) == 0
    assert "goft on user: test accuracy" in capsys.readouterr().out
    assert main(["inspect", str(out / "adapter")]) == 0
    printed = capsys.readouterr().out
    assert "attention.self.query" in printed and (out / "adapter" / "inspect.png").is_file()
    with pytest.raises(SystemExit, match="--train-file and --eval-file go together"):
        main(["finetune", "--train-file", str(train)])


@pytest.mark.slow
def test_real_polarity_512_examples_one_epoch():
    """The issue's bar: a 512-example, 1-epoch GOFT run on the real data beats 0.6 (its time, about 25 s here, is
    reported by `goft finetune`, not asserted: timings belong in benchmarks)."""
    metrics = finetune(FinetuneConfig(method="goft", task="polarity", train_size=512, epochs=1, progress=False))
    assert metrics["accuracy"] > 0.6, metrics["accuracy"]
