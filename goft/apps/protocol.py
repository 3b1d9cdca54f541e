"""The comparison protocol of ``goft compare`` and ``goft instruct``, written once.

Per method:

1. **Sweep**: a run at each rate of a grid (by default four rates spanning 30× around the method's sweep centre,
   :func:`lr_grid`) with the first seed, scored on the validation split only; the test split is not read.
2. **Choice**: the rate with the best validation accuracy (ties go to the smaller rate).
3. **Final runs**: a run at the chosen rate with every seed, scored on the test split once.

Without a sweep (quick looks and demos) every seed runs at the given rates and is recorded as stage ``unswept``, so
no report takes its rate for one chosen on validation.  Every run is recorded as it completes; a run already in the
results file is skipped, so a rerun continues where an interrupted one stopped.

A command hands the protocol a :class:`Plan`: how to train and score one run (``run_one(method, stage, seed, lr) ->
row``), the results key of a run, its grids, and which recorded sweep runs its choice may use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .results import FINAL, SWEEP, UNSWEPT, RunsFile, best_rate_on_validation

LR_FACTORS = (1 / 5.5, 1 / 1.8, 1.8, 5.5)  # x the sweep centre: four rates spanning 30x


def lr_grid(centre: float, factors: Sequence[float] = LR_FACTORS) -> list[float]:
    """Rates around ``centre``, rounded to 3 significant digits (they name runs in results files)."""
    return [float(f"{centre * f:.3g}") for f in factors]


@dataclass(frozen=True)
class Plan:
    """What one command brings to the protocol.

    ``run_one(method, stage, seed, lr)`` trains and scores one run (on test only for ``final`` and ``unswept``)
    and returns its row; ``key(method, stage, seed, lr)`` is that row's key in ``results``; ``sweep_grid(method)``
    and ``unswept_rates(method)`` the rates of a sweep and of a run without one; ``counts_for_choice(row)`` says
    whether a recorded sweep row was trained like the runs about to be chosen for (same epochs, base, schedule);
    ``describe(row)`` is the progress line of a finished run; ``recorded(method, stage, seed, lr)``, if given, runs
    once the row is safely in the results file (to clear the run's checkpoint)."""

    results: RunsFile
    data_name: str
    key: Callable[[str, str, int, float], tuple]
    run_one: Callable[[str, str, int, float], dict]
    sweep_grid: Callable[[str], list[float]]
    unswept_rates: Callable[[str], list[float]]
    counts_for_choice: Callable[[dict], bool]
    describe: Callable[[dict], str]
    recorded: Callable[[str, str, int, float], None] | None = None


def run_protocol(plan: Plan, methods: Sequence[str], seeds: Sequence[int], sweep: bool = True, progress=print) -> dict:
    """The protocol of the module docstring for every method; returns the results file's data (all runs)."""
    for method in methods:
        if sweep:
            grid = plan.sweep_grid(method)
            for lr in grid:
                _run(plan, method, SWEEP, seeds[0], lr, progress)
            chosen = choose_lr(plan.results.runs, method, grid, plan.counts_for_choice)
            progress(f"{method}: chose lr {chosen:g} of {[f'{lr:g}' for lr in grid]} by validation accuracy")
            rates, stage = [chosen], FINAL
        else:
            rates, stage = plan.unswept_rates(method), UNSWEPT
        for lr in rates:
            for seed in seeds:
                _run(plan, method, stage, seed, lr, progress)
    return plan.results.data


def choose_lr(
    runs: Sequence[dict],
    method: str,
    grid: Sequence[float],
    counts_for_choice: Callable[[dict], bool] = lambda r: True,
) -> float:
    """The grid rate whose sweep run of ``method`` (among ``runs`` that ``counts_for_choice``) has the best validation
    accuracy; ties go to the smaller rate."""
    sweep_rows = (r for r in runs if r["method"] == method and r["stage"] == SWEEP and counts_for_choice(r))
    return best_rate_on_validation(sweep_rows, grid)


def _run(plan: Plan, method: str, stage: str, seed: int, lr: float, progress) -> None:
    if plan.results.has(*plan.key(method, stage, seed, lr)):
        progress(f"skip {method} {stage} seed {seed} lr {lr:g}: already in {plan.results.path}")
        return
    row = plan.run_one(method, stage, seed, lr)
    plan.results.add(row, plan.data_name)
    if plan.recorded is not None:
        plan.recorded(method, stage, seed, lr)
    progress(plan.describe(row))
