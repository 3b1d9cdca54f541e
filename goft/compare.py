"""``goft compare``: methods × seeds on one task, written to ``results/<task>.json`` with a markdown table and a plot.

Parameter budgets: LoRA r=8 is the common default; LoRA r=2 is chosen so that its adapter parameter count is close to
qGOFT's on the same layers (on MiniLM with all linear layers: 84,480 vs 84,332).  The results file is rewritten
atomically after every run, and runs already in it are skipped, so an interrupted comparison continues where it
stopped.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

from .train import FinetuneConfig, finetune, write_json_atomic

# label -> (method, overrides)
RUNS = {
    "goft": ("goft", {}),
    "qgoft": ("qgoft", {}),
    "lora_r8": ("lora", {"lora_r": 8}),
    "lora_r2": ("lora", {"lora_r": 2}),
    "oft": ("oft", {}),
    "boft": ("boft", {}),
    "head": ("head", {}),
    "full": ("full", {}),
}
DEFAULT_RUNS = ("goft", "qgoft", "lora_r8", "lora_r2", "oft", "boft", "head")


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"runs": []}


def run_compare(task: str, labels, seeds, base: FinetuneConfig, results_dir: Path, progress=print) -> dict:
    unknown = sorted(set(labels) - set(RUNS))
    if unknown:
        raise ValueError(f"--methods has unknown {unknown}; allowed: {', '.join(RUNS)}")
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{task}.json"
    results = load_results(path)
    done = {(r["method"], r["seed"]) for r in results["runs"]}
    for seed in seeds:
        for label in labels:
            if (label, seed) in done:
                progress(f"skip {label} seed {seed}: already in {path}")
                continue
            method, overrides = RUNS[label]
            cfg = replace(base, method=method, seed=seed, task=task, output=None, **overrides)
            metrics = finetune(cfg)
            row = {"method": label, "seed": seed, "accuracy": metrics["accuracy"],
                   "trainable_params": metrics["trainable_params"], "adapter_params": metrics["adapter_params"],
                   "seconds": metrics["seconds"], "epochs": cfg.epochs, "lr": cfg.learning_rate,
                   "train_examples": metrics["train_examples"], "eval_examples": metrics["eval_examples"],
                   "eval_accuracy_per_epoch": metrics["curve"]["eval_accuracy"]}
            results["runs"].append(row)
            results["task"] = task
            write_json_atomic(path, results)
            progress(f"{label} seed {seed}: accuracy {row['accuracy']:.4f}, {row['adapter_params']:,} adapter params, "
                     f"{row['seconds']:.0f} s")
    write_report(results, results_dir / f"{task}.md", results_dir / f"{task}.png")
    return results


def summarize(results: dict) -> list[dict]:
    by_method: dict[str, list[dict]] = {}
    for run in results["runs"]:
        by_method.setdefault(run["method"], []).append(run)
    rows = []
    for method, runs in by_method.items():
        acc = [r["accuracy"] for r in runs]
        rows.append({"method": method, "n": len(runs), "mean": statistics.fmean(acc),
                     "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                     "adapter_params": runs[0]["adapter_params"], "trainable_params": runs[0]["trainable_params"],
                     # median: robust to a run that shared the CPU with other work
                     "seconds": statistics.median(r["seconds"] for r in runs)})
    order = {label: i for i, label in enumerate(RUNS)}
    return sorted(rows, key=lambda r: order.get(r["method"], 99))


def markdown_table(results: dict) -> str:
    lines = ["| method | test accuracy (mean ± std) | seeds | adapter params | trainable params (with head) | "
             "seconds per run (median) |", "|---|---|---|---|---|---|"]
    for r in summarize(results):
        lines.append(f"| {r['method']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {r['n']} | "
                     f"{r['adapter_params']:,} | {r['trainable_params']:,} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def write_report(results: dict, md_path: Path, png_path: Path) -> None:
    md_path.write_text(markdown_table(results))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
