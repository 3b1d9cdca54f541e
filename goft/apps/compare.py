"""``goft compare``: methods × seeds on one task, written to ``RESULTS/<task>.json`` with a markdown table and a plot.

Every method gets the same data, epochs and batch size; learning rates are each method's default from
:mod:`goft.apps.methods` unless ``--lr`` sets one for all.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from . import io
from .finetune import FinetuneConfig, finetune
from .methods import METHODS, method_list
from .results import RunsFile, group_runs, markdown_table, mean_std


def run_compare(task: str, methods, seeds, base: FinetuneConfig, results_dir: Path, progress=print) -> dict:
    """Run every (seed, method) not yet in ``results_dir/<task>.json``; returns the results (all runs)."""
    method_list(",".join(methods), tuple(METHODS))
    results = RunsFile(Path(results_dir) / f"{task}.json", key_fields=("method", "seed"))
    for seed in seeds:
        for method in methods:
            if results.has(method, seed):
                progress(f"skip {method} seed {seed}: already in {results.path}")
                continue
            cfg = replace(base, method=method, seed=seed, task=task, output=None, resume=False, save_every=0)
            metrics = finetune(cfg)
            row = {"method": method, "seed": seed, "accuracy": metrics["accuracy"],
                   "trainable_params": metrics["trainable_params"], "adapter_params": metrics["adapter_params"],
                   "seconds": metrics["seconds"], "epochs": cfg.epochs, "lr": cfg.learning_rate,
                   "train_examples": metrics["train_examples"], "eval_examples": metrics["eval_examples"],
                   "eval_accuracy_per_epoch": metrics["curve"]["eval_accuracy"]}
            results.add(row, task)
            progress(f"{method} seed {seed}: accuracy {row['accuracy']:.4f}, {row['adapter_params']:,} adapter "
                     f"params, {row['seconds']:.0f} s")
    write_report(results.data, Path(results_dir) / f"{task}.md", Path(results_dir) / f"{task}.png")
    return results.data


def summarize(results: dict) -> list[dict]:
    """One row per method: accuracy mean ± std over seeds, parameter counts, median seconds, in registry order."""
    rows = []
    for (method,), runs in group_runs(results["runs"], ("method",)).items():
        mean, std = mean_std(r["accuracy"] for r in runs)
        rows.append({"method": method, "n": len(runs), "mean": mean, "std": std,
                     "adapter_params": runs[0]["adapter_params"], "trainable_params": runs[0]["trainable_params"],
                     # median: robust to a run that shared the CPU with other work
                     "seconds": statistics.median(r["seconds"] for r in runs)})
    order = {name: i for i, name in enumerate(METHODS)}
    return sorted(rows, key=lambda r: order.get(r["method"], len(order)))


def results_table(results: dict) -> str:
    header = ("method", "test accuracy (mean ± std)", "seeds", "adapter params", "trainable params (with head)",
              "seconds per run (median)")
    rows = [(r["method"], f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}", str(r["n"]), f"{r['adapter_params']:,}",
             f"{r['trainable_params']:,}", f"{r['seconds']:.0f}") for r in summarize(results)]
    return markdown_table(header, rows)


def write_report(results: dict, md_path: Path, png_path: Path) -> None:
    io.write_text(md_path, results_table(results))
    plt = io.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in summarize(results):
        x = max(r["trainable_params"], 1)
        ax.errorbar([x], [100 * r["mean"]], yerr=[100 * r["std"]], fmt="o", capsize=4, label=r["method"])
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (adapter + classifier head), log scale")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{results.get('task', '')}: accuracy vs trainable parameters (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    io.save_figure(fig, png_path)
