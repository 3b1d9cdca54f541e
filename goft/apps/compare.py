"""``goft compare``: a fair comparison of methods on one task, written to ``RESULTS/<task>.json``, tables and a plot.

The protocol, the same for every method:

1. **Sweep**: train at each rate of a log grid centred on the method's default rate (``LR_FACTORS``: four rates
   spanning 30×) with the first seed, and score each run on the validation split (a fixed 10% of the training
   split); the test split is not read.
2. **Choice**: the rate with the best final-epoch validation accuracy (ties go to the smaller rate).
3. **Final runs**: train at the chosen rate with every seed and score on the test split, once per run.

Every run gets the same data, epochs and batch size.  Each run is recorded as it completes (the file is resumable:
rerunning the command skips what it holds), with its rate, stage, validation accuracy per epoch and, for final runs,
its test accuracy.  A results file holds one comparison: it records the options its runs share (``SETUP_OPTIONS``:
model, data, sizes, batch, targets) and a compare with other ones is refused, since its rows would mix.

A run in progress checkpoints every ``CHECKPOINT_EVERY`` steps under ``RESULTS/unfinished/``; an interrupted compare
(Ctrl-C, a closed session) continues that run from its checkpoint when rerun.  A finished run keeps its row, not its
weights (``goft finetune`` at the chosen rate keeps a model).
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import fields, replace
from pathlib import Path

from . import files, plots
from .errors import OptionError
from .finetune import FinetuneConfig, finetune
from .loop import CHECKPOINT_NAME
from .methods import METHODS, default_lr, method_list
from .pretrained import MINILM_NAME, model_reference
from .results import RunsFile, best_rate_on_validation, markdown_table, mean_std

LR_FACTORS = (1 / 5.5, 1 / 1.8, 1.8, 5.5)  # x the method's default rate: four rates spanning 30x
KEY_FIELDS = ("method", "stage", "seed", "lr", "epochs")
# The options every run of one results file shares (its rows are keyed by KEY_FIELDS alone).
SETUP_OPTIONS = (
    "model",
    "task",
    "train_file",
    "eval_file",
    "val_file",
    "val_fraction",
    "train_size",
    "batch_size",
    "max_length",
    "target_modules",
)
CHECKPOINT_EVERY = 25  # optimizer steps between checkpoints of a run in progress (a MiniLM run has 270)
# Options that change what a method trains: rows are keyed by method name, so each name stands for one setting of
# them, and compare takes only their defaults (option -> the registry's rows that vary it).
FIXED_BY_METHOD_NAME = {
    "structure": "goft_butterfly, qgoft_butterfly and goft_tree_depth2",
    "depth": "goft_tree_depth2",
    "orth_reg_weight": "qgoft_l3 (λ = 1e-3)",
    "lora_r": "lora_r1, lora_r2, lora_r4 and lora_r8",
}


def lr_grid(default_lr: float, factors=LR_FACTORS) -> list[float]:
    """Rates around ``default_lr``, rounded to 3 significant digits (they name runs in the results file)."""
    return [float(f"{default_lr * f:.3g}") for f in factors]


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
    """Sweep, choose and run finals for every method (see the module docstring); returns the results (all runs).

    ``sweep=False`` skips the sweep and runs the finals at each method's default rate, or at ``base.lr`` when set
    (quick looks and demos; the table then says the rate was not chosen on validation)."""
    method_list(",".join(methods), tuple(METHODS))
    defaults = {field.name: field.default for field in fields(FinetuneConfig)}
    for option, rows in FIXED_BY_METHOD_NAME.items():
        if getattr(base, option) != defaults[option]:
            raise OptionError(
                option,
                f"is not taken by compare, whose rows are keyed by method name; compare the registry's {rows} instead",
            )
    base = replace(base, task=task)  # with the user's files the config drops the task: ``task`` only names the file
    results = RunsFile(Path(results_dir) / f"{task}.json", key_fields=KEY_FIELDS)
    results.check_setup(comparison_setup(base), older_setup)
    for method in methods:
        if sweep:
            grid = [base.lr] if base.lr is not None else lr_grid(METHODS[method].lr, lr_factors)
            for lr in grid:
                _run_once(results, task, base, method, "sweep", seeds[0], lr, progress)
            chosen = choose_lr(results.runs, method, base.epochs, grid)
            progress(f"{method}: chose lr {chosen:g} of {[f'{lr:g}' for lr in grid]} by validation accuracy")
        else:
            chosen = base.lr if base.lr is not None else default_lr(method)
        for seed in seeds:
            _run_once(results, task, base, method, "final", seed, chosen, progress)
    write_report(results.data, Path(results_dir) / f"{task}.md", Path(results_dir) / f"{task}.png")
    return results.data


def comparison_setup(base: FinetuneConfig) -> dict:
    """The values of ``SETUP_OPTIONS`` for ``base``, as the results file records them."""
    setup = {name: getattr(base, name) for name in SETUP_OPTIONS}
    setup["model"] = model_reference(base.model, MINILM_NAME)
    setup["target_modules"] = base.target_modules or "all-linear"
    return setup


def older_setup(run: dict) -> dict:
    """The setup options a run recorded before files recorded their setup (the others had their defaults)."""
    return {
        "model": model_reference(run["model"], MINILM_NAME),
        "batch_size": run["batch_size"],
        "target_modules": run["target_modules"],
    }


def _run_once(
    results: RunsFile, task: str, base: FinetuneConfig, method: str, stage: str, seed: int, lr: float, progress
) -> None:
    if results.has(method, stage, seed, lr, base.epochs):
        progress(f"skip {method} {stage} seed {seed} lr {lr:g}: already in {results.path}")
        return
    run_name = f"{method}-{stage}-seed{seed}-lr{lr:g}-epochs{base.epochs}"
    unfinished = results.path.parent / "unfinished" / task / run_name
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
        evaluate_test=stage == "final",
    )
    metrics = finetune(cfg)
    row = {
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
    }
    results.add(row, cfg.data_name)
    shutil.rmtree(unfinished)  # the row is what compare keeps of a finished run
    for folder in (unfinished.parent, unfinished.parent.parent):  # unfinished/<task>/, then unfinished/, once empty
        if not any(folder.iterdir()):
            folder.rmdir()
    test = "" if row["accuracy"] is None else f", test {row['accuracy']:.4f}"
    progress(
        f"{method} {stage} seed {seed} lr {lr:g}: validation {row['val_accuracy']:.4f}{test}, {row['seconds']:.0f} s"
    )


def choose_lr(runs: list[dict], method: str, epochs: int, grid) -> float:
    """The grid rate whose sweep run has the best validation accuracy (ties: the smaller rate)."""
    return best_rate_on_validation(
        (r for r in runs if r["method"] == method and r["stage"] == "sweep" and r["epochs"] == epochs), grid
    )


def summarize(results: dict) -> list[dict]:
    """One row per method with final runs: chosen rate, test accuracy mean ± std over seeds, validation accuracy per
    epoch (mean over seeds), parameter counts, median seconds; in registry order."""
    rows = []
    for method in METHODS:
        finals = [r for r in results["runs"] if r["method"] == method and r["stage"] == "final"]
        if not finals:
            continue
        sweep = sorted(
            (r for r in results["runs"] if r["method"] == method and r["stage"] == "sweep"), key=lambda r: r["lr"]
        )
        mean, std = mean_std(r["accuracy"] for r in finals)
        per_epoch = [
            statistics.fmean(values) for values in zip(*(r["val_accuracy_per_epoch"] for r in finals), strict=True)
        ]
        rows.append(
            {
                "method": method,
                "label": METHODS[method].label,
                "lr": finals[0]["lr"],
                "n": len(finals),
                "mean": mean,
                "std": std,
                "val_per_epoch": per_epoch,
                "epochs": finals[0]["epochs"],
                "sweep": [(r["lr"], r["val_accuracy"]) for r in sweep],
                "adapter_params": finals[0]["adapter_params"],
                "trainable_params": finals[0]["trainable_params"],
                # median: robust to a run that shared the CPU with other work
                "seconds": statistics.median(r["seconds"] for r in finals),
                # runs recorded before rows named their device all trained on the CPU (the only choice then)
                "device": " / ".join(sorted({r.get("device", "cpu") for r in finals})),
            }
        )
    return rows


def setup_line(results: dict) -> str:
    """Model, data, sizes and budget of the final runs, from the runs themselves."""
    finals = [r for r in results["runs"] if r["stage"] == "final"]
    if not finals:
        return ""
    first = finals[0]
    # one name per model: runs recorded before embedded models were named ``goft:<name>`` say ``<name>``
    models = " / ".join(sorted({model_reference(r["model"], r["model"]) for r in finals}))
    return (
        f"Model {models}, task {results.get('task', '?')}: {first['train_examples']} training / "
        f"{first['val_examples']} validation / {first['eval_examples']} test examples, {first['epochs']} "
        f"epoch(s), batch {first['batch_size']}, targets {first['target_modules']}.\n\n"
    )


def _accuracy_cell(row: dict) -> str:
    """Mean ± sample std over seeds; one seed has no spread to show."""
    if row["n"] == 1:
        return f"{100 * row['mean']:.2f} (one seed)"
    return f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}"


def results_table(results: dict) -> str:
    header = (
        "method",
        "test accuracy (mean ± std)",
        "seeds",
        "lr (how chosen)",
        "validation accuracy per epoch",
        "adapter params",
        "trainable (with head)",
        "seconds per run (median), device",
    )
    rows = [
        (
            r["label"],
            _accuracy_cell(r),
            str(r["n"]),
            f"{r['lr']:g} ({'best of ' + str(len(r['sweep'])) + ' on validation' if r['sweep'] else 'not swept'})",
            " → ".join(f"{100 * v:.1f}" for v in r["val_per_epoch"]),
            f"{r['adapter_params']:,}",
            f"{r['trainable_params']:,}",
            f"{r['seconds']:.0f} on {r['device']}",
        )
        for r in summarize(results)
    ]
    return setup_line(results) + markdown_table(header, rows)


def sweep_table(results: dict) -> str:
    """Validation accuracy (first seed, final epoch) of every rate tried, per method; the chosen one in bold."""
    rows = []
    for r in summarize(results):
        if r["sweep"]:
            cells = [
                f"**{lr:g}: {100 * v:.1f}**" if lr == r["lr"] else f"{lr:g}: {100 * v:.1f}" for lr, v in r["sweep"]
            ]
            rows.append((r["label"], ", ".join(cells)))
    if not rows:
        return ""
    return markdown_table(("method", "validation accuracy at each rate tried (chosen in bold)"), rows, align="ll")


def report_text(results: dict) -> str:
    sweeps = sweep_table(results)
    return results_table(results) + ("\n" + sweeps if sweeps else "")


def curve_family(method: str) -> str:
    """Which line of the parameters-vs-accuracy plot a method's point joins: its capacity dial's."""
    entry = METHODS[method]
    if entry.family == "goft" and "orth_reg_weight" not in entry.options:  # a λ variant is not a capacity step
        return "qGOFT" if entry.options.get("quasi") else ("GOFT*" if entry.options.get("scaling") else "GOFT")
    return "LoRA" if entry.family == "lora" else entry.label


def write_report(results: dict, md_path: Path, png_path: Path) -> None:
    """The tables, and one picture of accuracy against adapter parameters: each dial's points (LoRA's ranks, GOFT's
    pairings) joined in order of size, head-only as a horizontal line (it trains no adapter)."""
    files.write_text(md_path, report_text(results))
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves: dict[str, list[dict]] = {}
    labels, unlabelled = [], []
    for r in summarize(results):
        if r["adapter_params"] == 0:
            ax.axhline(100 * r["mean"], color="grey", linestyle="--", linewidth=1, label=f"{r['label']} (no adapter)")
        else:
            curves.setdefault(curve_family(r["method"]), []).append(r)
    for family, points in curves.items():
        points.sort(key=lambda r: r["adapter_params"])
        line = ax.errorbar(
            [r["adapter_params"] for r in points],
            [100 * r["mean"] for r in points],
            yerr=[100 * r["std"] for r in points],
            fmt="o-",
            capsize=3,
            label=family,
        )
        for r in points:  # name the step of the dial: "r=8", "butterfly", "tree, depth 2"
            step = r["label"].removeprefix(family).strip(" ,")
            point = (r["adapter_params"], 100 * r["mean"])
            if step:
                labels.append((*point, step, line[0].get_color()))
            else:
                unlabelled.append(point)
    ax.set_xscale("log")
    ax.set_xlabel("adapter parameters (without the classifier head), log scale")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{results.get('task', '')}: test accuracy at the validated rate (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    plots.label_points(ax, labels, unlabelled)
    plots.save_figure(fig, png_path)
