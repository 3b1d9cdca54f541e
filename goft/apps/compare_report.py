"""Tables and the parameters-vs-accuracy plot of ``goft compare``'s results (data of :mod:`goft.apps.results`).

A method is reported by its final runs (rate chosen on validation) or, where it has none, by its unswept runs (a quick
look at a default or given rate; the table says so).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from . import files, plots
from .methods import METHODS
from .results import FINAL, SWEEP, UNSWEPT, markdown_table, mean_std


def reported_runs(results: dict, method: str) -> list[dict]:
    """The runs that stand for ``method`` in the tables: its final runs, else its unswept ones."""
    runs = [r for r in results["runs"] if r["method"] == method]
    return [r for r in runs if r["stage"] == FINAL] or [r for r in runs if r["stage"] == UNSWEPT]


def summarize(results: dict) -> list[dict]:
    """One row per method with final runs: chosen rate, test accuracy mean ± std over seeds, validation accuracy per
    epoch (mean over seeds), parameter counts, median seconds; in registry order."""
    rows = []
    for method in METHODS:
        finals = reported_runs(results, method)
        if not finals:
            continue
        sweep = sorted(
            (r for r in results["runs"] if r["method"] == method and r["stage"] == SWEEP), key=lambda r: r["lr"]
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
                "device": " / ".join(sorted({r["device"] for r in finals})),
                "stage": finals[0]["stage"],
            }
        )
    return rows


def setup_line(results: dict) -> str:
    """Model, data, sizes and budget of the reported runs, from the runs themselves."""
    finals = [r for method in METHODS for r in reported_runs(results, method)]
    if not finals:
        return ""
    first = finals[0]
    models = " / ".join(sorted({r["model"] for r in finals}))
    return (
        f"Model {models}, task {results.get('task', '?')}: {first['train_examples']} training / "
        f"{first['val_examples']} validation / {first['eval_examples']} test examples, {first['epochs']} "
        f"epoch(s), batch {first['batch_size']}, targets {first['target_modules']}.\n\n"
    )


def _how_chosen(row: dict) -> str:
    return f"best of {len(row['sweep'])} on validation" if row["stage"] == FINAL else "not swept"


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
            f"{r['lr']:g} ({_how_chosen(r)})",
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
    """Which line of the parameters-vs-accuracy plot a method's point joins: its capacity dial's. A pairing other
    than the index order is a dial of its own (its tree and butterfly sit at the index dial's sizes)."""
    entry = METHODS[method]
    if entry.family == "goft" and "orth_reg_weight" not in entry.options:  # a λ variant is not a capacity step
        dial = "qGOFT" if entry.options.get("quasi") else ("GOFT*" if entry.options.get("scaling") else "GOFT")
        pairing = entry.options.get("pairing", "index")
        return dial if pairing == "index" else f"{dial}, {pairing} pairing"
    return "LoRA" if entry.family == "lora" else entry.label


def dial_step(label: str, family: str) -> str:
    """The words of a method's label that its dial's name lacks: "r=8" of "LoRA r=8", "butterfly" of "GOFT
    butterfly, task pairing"; "" for the dial's own point."""
    family_words = {w.strip(",") for w in family.split()}
    return " ".join(w for w in label.split() if w.strip(",") not in family_words).strip(" ,")


def write_report(results: dict, md_path: Path, png_path: Path) -> None:
    """The tables, and one picture of accuracy against adapter parameters: each dial's points (LoRA's ranks, GOFT's
    pairings) joined in order of size, head-only as a horizontal line (it trains no adapter). Points of one size
    (the tree in index, task and random order) are spread a few percent apart along the axis so that each shows."""
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
    same_size: dict[int, list[str]] = {}
    for points in curves.values():
        for r in points:
            same_size.setdefault(r["adapter_params"], []).append(r["method"])
    shown_at = {
        m: size * 1.04 ** (i - (len(methods) - 1) / 2)
        for size, methods in same_size.items()
        for i, m in enumerate(methods)
    }
    for family, points in curves.items():
        points.sort(key=lambda r: r["adapter_params"])
        line = ax.errorbar(
            [shown_at[r["method"]] for r in points],
            [100 * r["mean"] for r in points],
            yerr=[100 * r["std"] for r in points],
            fmt="o-",
            capsize=3,
            label=family,
        )
        for r in points:  # name the step of the dial: "r=8", "butterfly", "tree, depth 2"
            step = dial_step(r["label"], family)
            point = (shown_at[r["method"]], 100 * r["mean"])
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
