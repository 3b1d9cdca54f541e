"""Results files: one comparison per file, rewritten atomically, older schemas upgraded on load in one place."""

import json

import pytest

from goft.apps import results
from goft.apps.errors import OptionError, OutputError


def test_schema_1_compare_rows_are_upgraded_to_what_they_did():
    run = {
        "method": "goft",
        "stage": "final",
        "epochs": 3,
        "model": "minilm",
        "batch_size": 32,
        "target_modules": "all-linear",
    }
    swept = [dict(run, method="lora_r8", stage="sweep"), dict(run, method="lora_r8")]
    data = results.upgrade({"runs": [run, *swept]}, "compare")
    assert data["schema"] == results.SCHEMA_VERSION
    assert [r["stage"] for r in data["runs"]] == ["unswept", "sweep", "final"]  # goft had no sweep
    assert {r["device"] for r in data["runs"]} == {"cpu"} and {r["model"] for r in data["runs"]} == {"goft:minilm"}
    # no setup recorded: the first run's options, the others at their defaults then, and the one budget of its runs
    assert data["setup"] == {
        "model": "goft:minilm",
        "task": None,
        "train_file": None,
        "eval_file": None,
        "val_file": None,
        "val_fraction": 0.1,
        "train_size": None,
        "batch_size": 32,
        "max_length": 64,
        "target_modules": "all-linear",
        "epochs": 3,
    }


def test_schema_1_instruct_rows_are_upgraded_to_what_they_did():
    data = results.upgrade({"runs": [{"method": "goft", "train_examples": 512, "eval_examples": 200}]}, "instruct")
    (run,) = data["runs"]
    assert (run["stage"], run["schedule"], run["base_weights"]) == (results.LEGACY_STAGE, "constant", "fp32")
    assert run["val_accuracy"] is None and data["setup"] == {"train_size": 512, "eval_size": 200}


def test_a_current_file_is_left_as_it_is_and_a_newer_one_is_refused():
    current = {"schema": 2, "runs": [{"method": "goft", "stage": "final", "epochs": 3, "model": "minilm"}]}
    assert results.upgrade(json.loads(json.dumps(current)), "compare") == current
    with pytest.raises(OutputError, match="schema 3 is newer"):
        results.upgrade({"schema": 3, "runs": []}, "compare")


def test_a_file_that_is_not_results_names_itself(tmp_path):
    (tmp_path / "r.json").write_text("[1, 2]")
    with pytest.raises(OutputError, match=r"r\.json is not a results file"):
        results.load(tmp_path / "r.json", "compare")
    assert results.load(tmp_path / "missing.json", "compare")["runs"] == []


def test_runs_are_keyed_and_one_setup_per_file(tmp_path):
    runs = results.RunsFile(tmp_path / "r.json", ("method", "seed"), kind="compare")
    runs.check_setup({"batch_size": 32})
    runs.add({"method": "goft", "seed": 0}, "toy")
    again = results.RunsFile(tmp_path / "r.json", ("method", "seed"), kind="compare")
    assert again.has("goft", 0) and not again.has("goft", 1)
    with pytest.raises(OptionError, match=r"^batch_size 16 differs from the runs in .*r\.json \(32\)"):
        again.check_setup({"batch_size": 16})
