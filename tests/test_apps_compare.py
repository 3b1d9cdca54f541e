"""`goft compare`: every (method, seed) once, recorded as it completes, skipped when already recorded."""

import json

from goft.apps.compare import run_compare


def test_compare_writes_results_and_resumes(toy_config, tmp_path):
    base = toy_config(epochs=1)
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
