"""`goft compare`: rates swept on validation, one chosen per method, final seeds scored on test; resumable."""

import json

import pytest

from goft.apps import compare, compare_report
from goft.apps.compare import run_compare
from goft.apps.methods import METHODS, default_lr


def test_the_protocol_sweeps_chooses_on_validation_and_runs_every_seed_at_the_choice(toy_config, tmp_path):
    base = toy_config(epochs=1)
    messages = []
    results = run_compare(
        "toy", ["goft", "lora_r2"], [0, 1], base, tmp_path, lr_factors=(0.5, 2.0), progress=messages.append
    )
    runs = results["runs"]
    for method, default in (("goft", 1e-2), ("lora_r2", 2e-3)):
        sweep = [r for r in runs if r["method"] == method and r["stage"] == "sweep"]
        finals = [r for r in runs if r["method"] == method and r["stage"] == "final"]
        assert [r["lr"] for r in sweep] == [default / 2, default * 2] and {r["seed"] for r in sweep} == {0}
        assert all(r["accuracy"] is None and r["eval_examples"] == 0 for r in sweep)  # test split unread
        best = max(r["val_accuracy"] for r in sweep)
        chosen = min(r["lr"] for r in sweep if r["val_accuracy"] == best)
        assert [(r["seed"], r["lr"]) for r in finals] == [(0, chosen), (1, chosen)]
        assert all(0 <= r["accuracy"] <= 1 and r["eval_examples"] == 32 for r in finals)
        assert all(len(r["val_accuracy_per_epoch"]) == 1 and r["val_examples"] == 16 for r in sweep + finals)
    assert json.loads((tmp_path / "toy.json").read_text()) == results
    table = (tmp_path / "toy.md").read_text()
    assert "| GOFT |" in table and "| LoRA r=2 |" in table and "**" in table  # the chosen rate is marked
    assert (tmp_path / "toy.png").stat().st_size > 0
    again = run_compare(
        "toy", ["goft", "lora_r2"], [0, 1], base, tmp_path, lr_factors=(0.5, 2.0), progress=messages.append
    )
    assert again["runs"] == runs and sum("skip" in m for m in messages) == len(runs)


def test_without_a_sweep_every_seed_runs_at_the_default_and_the_table_says_so(toy_config, tmp_path):
    results = run_compare(
        "toy", ["goft", "head"], [0], toy_config(epochs=1), tmp_path, sweep=False, progress=lambda *_: None
    )
    # each method's default: the rate chosen on validation where there is one (GOFT), else the sweep's centre
    chosen = METHODS["goft"].chosen_lr
    assert chosen is not None and METHODS["head"].chosen_lr is None
    assert [(r["method"], r["stage"], r["lr"]) for r in results["runs"]] == [
        ("goft", "unswept", chosen),
        ("head", "unswept", 5e-3),
    ]
    text = compare_report.report_text(results)
    assert "64 training / 16 validation / 32 test examples, 1 epoch(s), batch 16" in text
    assert "| GOFT |" in text and f"{chosen:g} (not swept)" in text and "validation accuracy at each rate" not in text


def test_an_interrupted_compare_continues_its_run_from_the_checkpoint(toy_config, tmp_path, monkeypatch):
    import os
    import signal

    import torch

    from goft.apps.errors import Interrupted

    real_step, steps = torch.optim.AdamW.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C after the third step
        return result

    monkeypatch.setattr(compare, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    base = toy_config(epochs=2)  # 64 examples, batch 16: 8 steps
    with pytest.raises(Interrupted) as stopped:
        run_compare("toy", ["goft"], [0], base, tmp_path / "cut", sweep=False, progress=lambda *_: None)
    run = f"goft-unswept-seed0-lr{default_lr('goft'):g}-epochs2"
    checkpoint = tmp_path / "cut" / "unfinished" / "toy" / run / "checkpoint.pt"
    assert stopped.value.checkpoint == checkpoint and checkpoint.is_file()
    assert not (tmp_path / "cut" / "toy.json").exists()  # nothing finished, nothing recorded
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    messages = []
    resumed = run_compare("toy", ["goft"], [0], base, tmp_path / "cut", sweep=False, progress=messages.append)
    assert any(m.startswith("continue goft unswept seed 0") for m in messages)
    assert not (tmp_path / "cut" / "unfinished").exists()  # a finished run keeps its row, not its checkpoint
    whole = run_compare("toy", ["goft"], [0], base, tmp_path / "whole", sweep=False, progress=lambda *_: None)
    same = ("accuracy", "val_accuracy_per_epoch", "adapter_params")
    assert [{k: r[k] for k in same} for r in resumed["runs"]] == [{k: r[k] for k in same} for r in whole["runs"]]


def test_a_results_file_holds_one_comparison(toy_config, tmp_path):
    from goft.apps.errors import OptionError

    base = toy_config(epochs=1)
    run_compare("toy", ["head"], [0], base, tmp_path, sweep=False, progress=lambda *_: None)
    assert json.loads((tmp_path / "toy.json").read_text())["setup"] == compare.comparison_setup(base)
    for changed, option in (
        (dict(batch_size=8), "batch_size"),
        (dict(max_length=16), "max_length"),
        (dict(train_size=32), "train_size"),
        (dict(train_file=base.val_file), "train_file"),
    ):
        with pytest.raises(OptionError, match=rf"^{option} .* differs from the runs in .*toy.json.*another --results"):
            run_compare(
                "toy", ["head"], [0], toy_config(epochs=1, **changed), tmp_path, sweep=False, progress=lambda *_: None
            )
    # a file from before the setup was recorded is judged by what its runs recorded
    legacy = json.loads((tmp_path / "toy.json").read_text())
    del legacy["setup"], legacy["schema"]  # as files were written before schema 2
    legacy["runs"][0]["model"] = "goft:minilm"
    (tmp_path / "toy.json").write_text(json.dumps(legacy))
    with pytest.raises(OptionError, match=r"^model .* differs .*\('goft:minilm'\)"):
        run_compare("toy", ["head"], [0], base, tmp_path, sweep=False, progress=lambda *_: None)


def test_the_default_results_folder_is_not_the_repositorys(tmp_path):
    from goft.apps.parsers import build_parser

    assert build_parser().parse_args(["compare"]).results == "runs/compare"


def test_a_committed_results_file_refuses_another_setup_untouched(tmp_path, monkeypatch):
    """Run from a clone into results/, a quick look with other sizes is refused before any training, and the file
    keeps every byte (it once took the row, was stamped with the new setup, then crashed)."""
    from pathlib import Path

    from goft.apps import finetune as finetune_module
    from goft.apps.cli import main

    committed = Path(__file__).resolve().parents[2] / "results" / "polarity.json"
    (tmp_path / "polarity.json").write_bytes(committed.read_bytes())
    monkeypatch.setattr(finetune_module, "finetune", lambda cfg: pytest.fail("trained despite the refusal"))
    quick = ["--task", "polarity", "--methods", "goft", "--seeds", "1", "--no-sweep", "--results", str(tmp_path)]
    for extra, refused in ((["--train-size", "256"], "--train-size 256 differs"), (["--epochs", "1"], "--epochs 1")):
        with pytest.raises(SystemExit, match=f"^goft compare: {refused}"):
            main(["compare", *quick, *extra])
        assert (tmp_path / "polarity.json").read_bytes() == committed.read_bytes()


def test_another_budget_in_the_same_folder_is_refused_not_crashed(toy_config, tmp_path):
    from goft.apps.errors import OptionError

    run_compare("toy", ["head"], [0], toy_config(epochs=1), tmp_path, sweep=False, progress=lambda *_: None)
    before = (tmp_path / "toy.json").read_bytes()
    with pytest.raises(OptionError, match=r"^epochs 2 differs from the runs in .*toy\.json \(1\)"):
        run_compare("toy", ["head"], [0], toy_config(epochs=2), tmp_path, sweep=False, progress=lambda *_: None)
    assert (tmp_path / "toy.json").read_bytes() == before
