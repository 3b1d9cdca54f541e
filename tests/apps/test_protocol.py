"""The one comparison protocol: sweep with the first seed on validation, choose, final runs; unswept; resumable."""

import pytest

from goft.apps.protocol import Plan, choose_lr, lr_grid, run_protocol
from goft.apps.results import RunsFile


def make_plan(tmp_path, calls, val_accuracy):
    results = RunsFile(tmp_path / "r.json", ("method", "stage", "seed", "lr"), kind="compare")

    def run_one(method, stage, seed, lr):
        calls.append((method, stage, seed, lr))
        return {"method": method, "stage": stage, "seed": seed, "lr": lr, "val_accuracy": val_accuracy(lr)}

    return Plan(
        results=results,
        data_name="toy",
        key=lambda method, stage, seed, lr: (method, stage, seed, lr),
        run_one=run_one,
        sweep_grid=lambda method: [0.1, 0.2, 0.4],
        unswept_rates=lambda method: [0.3],
        counts_for_choice=lambda row: True,
        describe=lambda row: f"done {row['stage']}",
    )


def test_sweep_then_every_seed_at_the_best_validation_rate_and_a_rerun_skips_all(tmp_path):
    calls, messages = [], []
    plan = make_plan(tmp_path, calls, val_accuracy=lambda lr: {0.1: 0.5, 0.2: 0.9, 0.4: 0.9}[lr])
    data = run_protocol(plan, ["a", "b"], [0, 1, 2], progress=messages.append)
    for method in ("a", "b"):  # ties go to the smaller rate
        sweep = [(method, "sweep", 0, lr) for lr in (0.1, 0.2, 0.4)]
        assert [c for c in calls if c[0] == method] == sweep + [(method, "final", s, 0.2) for s in (0, 1, 2)]
    assert len(data["runs"]) == 12 and "a: chose lr 0.2 of ['0.1', '0.2', '0.4'] by validation accuracy" in messages
    again = make_plan(tmp_path, calls, val_accuracy=lambda lr: 0.0)
    run_protocol(again, ["a", "b"], [0, 1, 2], progress=messages.append)
    assert len(calls) == 12 and sum(m.startswith("skip ") for m in messages) == 12


def test_without_a_sweep_every_seed_runs_at_the_given_rates_as_unswept(tmp_path):
    calls = []
    run_protocol(make_plan(tmp_path, calls, lambda lr: 0.5), ["a"], [0, 1], sweep=False, progress=lambda *_: None)
    assert calls == [("a", "unswept", 0, 0.3), ("a", "unswept", 1, 0.3)]


def test_the_choice_reads_only_sweep_rows_that_count():
    runs = [
        {"method": "a", "stage": "sweep", "lr": 0.1, "val_accuracy": 0.6, "epochs": 3},
        {"method": "a", "stage": "sweep", "lr": 0.2, "val_accuracy": 0.7, "epochs": 3},
        {"method": "a", "stage": "sweep", "lr": 0.1, "val_accuracy": 0.99, "epochs": 1},  # another budget
        {"method": "a", "stage": "final", "lr": 0.2, "val_accuracy": 0.1, "epochs": 3},  # not a sweep row
        {"method": "b", "stage": "sweep", "lr": 0.1, "val_accuracy": 1.0, "epochs": 3},  # another method
    ]
    assert choose_lr(runs, "a", [0.1, 0.2], lambda r: r["epochs"] == 3) == 0.2
    assert choose_lr(runs, "a", [0.1, 0.2]) == 0.1


@pytest.mark.parametrize("centre", [1e-2, 3e-4, 0.00167])
def test_the_grid_spans_30x_geometrically_centred(centre):
    grid = lr_grid(centre)
    assert len(grid) == 4 and grid == sorted(grid)
    assert grid[-1] / grid[0] == pytest.approx(30.25, rel=0.01) and grid[0] * grid[-1] == pytest.approx(
        centre**2, rel=0.01
    )
