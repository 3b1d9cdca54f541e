"""``goft compare``: a fair comparison of methods on one task, written to ``RESULTS/<task>.json``, tables and a plot.

The protocol is :mod:`goft.apps.protocol`'s (sweep on validation, choose, final runs on test), the same for every
method: each sweep is centred on the method's ``lr`` in the registry.  Every run gets the same data, epochs and batch
size, and is recorded as it completes with its rate, stage, validation accuracy per epoch and, for final runs, its
test accuracy.  A results file holds one comparison: it records the options its runs share (``COMPARE_SETUP_OPTIONS``:
model, data, sizes, batch, targets, epochs) and a compare with other ones is refused, since its rows would mix.

A run in progress checkpoints every ``CHECKPOINT_EVERY`` steps under ``RESULTS/unfinished/``; an interrupted compare
(Ctrl-C, a closed session) continues that run from its checkpoint when rerun.  A finished run keeps its row, not its
weights (``goft finetune`` at the chosen rate keeps a model).  Tables and the plot: :mod:`goft.apps.compare_report`.
"""

from __future__ import annotations

import shutil
from dataclasses import fields, replace
from pathlib import Path

from .compare_report import write_report
from .errors import OptionError
from .finetune import FinetuneConfig, finetune
from .loop import CHECKPOINT_NAME
from .methods import METHODS, default_lr, method_list
from .pretrained import MINILM_NAME, model_reference
from .protocol import LR_FACTORS, Plan, lr_grid, run_protocol
from .results import COMPARE_SETUP_OPTIONS, SWEEP, RunsFile

KEY_FIELDS = ("method", "stage", "seed", "lr", "epochs")
CHECKPOINT_EVERY = 25  # optimizer steps between checkpoints of a run in progress (a MiniLM run has 270)
# Options that change what a method trains: rows are keyed by method name, so each name stands for one setting of
# them, and compare takes only their defaults (option -> the registry's rows that vary it).
FIXED_BY_METHOD_NAME = {
    "structure": "goft_butterfly, qgoft_butterfly and goft_tree_depth2",
    "depth": "goft_tree_depth2",
    "orth_reg_weight": "qgoft_l3 (λ = 1e-3)",
    "lora_r": "lora_r1, lora_r2, lora_r4 and lora_r8",
}


def run_compare(
    task: str,
    methods,
    seeds,
    base: FinetuneConfig,
    results_dir: Path,
    lr_factors=LR_FACTORS,
    sweep: bool = True,
    progress=print,
) -> dict:
    """The protocol for every method (see :mod:`goft.apps.protocol`); returns the results (all runs).

    ``base.lr``, when set, replaces each sweep's grid by that one rate.  ``sweep=False`` runs every seed at each
    method's default rate, or at ``base.lr``, as stage ``unswept`` (quick looks and demos; the table says so)."""
    method_list(",".join(methods), tuple(METHODS))
    defaults = {field.name: field.default for field in fields(FinetuneConfig)}
    for option, rows in FIXED_BY_METHOD_NAME.items():
        if getattr(base, option) != defaults[option]:
            raise OptionError(
                option,
                f"is not taken by compare, whose rows are keyed by method name; compare the registry's {rows} instead",
            )
    base = replace(base, task=task)  # with the user's files the config drops the task: ``task`` only names the file
    results_dir = Path(results_dir)
    results = RunsFile(results_dir / f"{task}.json", KEY_FIELDS, kind="compare")
    results.check_setup(comparison_setup(base))

    def unfinished(method: str, stage: str, seed: int, lr: float) -> Path:
        return results_dir / "unfinished" / task / f"{method}-{stage}-seed{seed}-lr{lr:g}-epochs{base.epochs}"

    def run_one(method: str, stage: str, seed: int, lr: float) -> dict:
        return _train_and_score(base, method, stage, seed, lr, unfinished(method, stage, seed, lr), progress)

    def recorded(method: str, stage: str, seed: int, lr: float) -> None:
        _remove_unfinished(unfinished(method, stage, seed, lr))

    plan = Plan(
        results=results,
        data_name=base.data_name,
        key=lambda method, stage, seed, lr: (method, stage, seed, lr, base.epochs),
        run_one=run_one,
        sweep_grid=lambda method: [base.lr] if base.lr is not None else lr_grid(METHODS[method].lr, lr_factors),
        unswept_rates=lambda method: [base.lr if base.lr is not None else default_lr(method)],
        counts_for_choice=lambda row: row["epochs"] == base.epochs,
        describe=describe_run,
        recorded=recorded,
    )
    run_protocol(plan, methods, seeds, sweep=sweep, progress=progress)
    write_report(results.data, results_dir / f"{task}.md", results_dir / f"{task}.png")
    return results.data


def comparison_setup(base: FinetuneConfig) -> dict:
    """The values of ``COMPARE_SETUP_OPTIONS`` for ``base``, as the results file records them."""
    setup = {name: getattr(base, name) for name in COMPARE_SETUP_OPTIONS}
    setup["model"] = model_reference(base.model, MINILM_NAME)
    setup["target_modules"] = base.target_modules or "all-linear"
    return setup


def _train_and_score(
    base: FinetuneConfig, method: str, stage: str, seed: int, lr: float, unfinished: Path, progress
) -> dict:
    """One run with ``goft finetune``, checkpointed in ``unfinished`` (continued from there when it holds a
    checkpoint); the test split is read by final and unswept runs only.  Returns its results row."""
    resume = (unfinished / CHECKPOINT_NAME).is_file()
    if resume:
        progress(f"continue {method} {stage} seed {seed} lr {lr:g} from {unfinished / CHECKPOINT_NAME}")
    cfg = replace(
        base,
        method=method,
        seed=seed,
        lr=lr,
        output=str(unfinished),
        resume=resume,
        save_every=CHECKPOINT_EVERY,
        overwrite=not resume,
        evaluate_test=stage != SWEEP,
    )
    metrics = finetune(cfg)
    calibration = {"calibration": metrics["calibration"]} if metrics["calibration"] else {}
    return {
        "method": method,
        "stage": stage,
        "seed": seed,
        "lr": lr,
        "epochs": cfg.epochs,
        "accuracy": metrics["accuracy"],
        "val_accuracy": metrics["val_accuracy"],
        "val_accuracy_per_epoch": metrics["val_accuracy_per_epoch"],
        "trainable_params": metrics["trainable_params"],
        "adapter_params": metrics["adapter_params"],
        "seconds": metrics["seconds"],
        "batch_size": cfg.batch_size,
        "train_examples": metrics["train_examples"],
        "val_examples": metrics["val_examples"],
        "eval_examples": metrics["eval_examples"],
        "model": metrics["model"],
        "target_modules": cfg.target_modules or "all-linear",
        "device": metrics["device"],
        **calibration,
    }


def _remove_unfinished(unfinished: Path) -> None:
    """The run's checkpoint directory, once its row is recorded (the row is what compare keeps of a finished run),
    and ``unfinished/<task>/`` and ``unfinished/`` once empty."""
    shutil.rmtree(unfinished)
    for folder in (unfinished.parent, unfinished.parent.parent):
        if not any(folder.iterdir()):
            folder.rmdir()


def describe_run(row: dict) -> str:
    test = "" if row["accuracy"] is None else f", test {row['accuracy']:.4f}"
    return (
        f"{row['method']} {row['stage']} seed {row['seed']} lr {row['lr']:g}: validation "
        f"{row['val_accuracy']:.4f}{test}, {row['seconds']:.0f} s"
    )
