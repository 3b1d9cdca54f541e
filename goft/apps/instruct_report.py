"""Tables and the accuracy-vs-forgetting plot of ``goft instruct``'s results (data of :mod:`goft.apps.results`)."""

from __future__ import annotations

from . import files, plots
from .results import INSTRUCT_SCHEDULE, LEGACY_STAGE, group_runs, markdown_table, mean_std


def write_report(results: dict, md_path, png_path) -> None:
    """The table and the plot of a results file."""
    plot_accuracy_vs_forgetting(results, png_path)
    files.write_text(md_path, instruct_table(results))


def summarize_instruct(results: dict) -> list[dict]:
    """One row per (method, base weights, learning rate, schedule, stage): means and sample standard deviations over
    the recorded seeds (test accuracy only over runs that read the test sentences; validation accuracy over runs that
    have it); a method on a quantized base is labelled as such (e.g. ``goft on int8``)."""
    groups = group_runs(results["runs"], SUMMARY_FIELDS)

    def stats(runs, field):
        values = [r[field] for r in runs if r[field] is not None]
        return mean_std(values) if values else None

    return [
        {
            "method": method,
            "base_weights": weights,
            "lr": lr,
            "schedule": schedule,
            "stage": stage,
            "seeds": len(runs),
            "label": method if weights == "fp32" else f"{method} on {weights}",
            "params": runs[0]["trainable_params"],
            "accuracy": stats(runs, "accuracy"),
            "val_accuracy": stats(runs, "val_accuracy"),
            "kl": mean_std(r["kl_base_to_tuned"] for r in runs),
            "perplexity_change": mean_std(r["perplexity_change"] for r in runs),
        }
        for (method, weights, lr, schedule, stage), runs in sorted(groups.items())
    ]


SUMMARY_FIELDS = ("method", "base_weights", "lr", "schedule", "stage")


def _percent(stat) -> str:
    return "–" if stat is None else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def instruct_table(results: dict) -> str:
    """A markdown table of :func:`summarize_instruct` (accuracy in %, mean ± std over seeds)."""
    header = (
        "method",
        "lr",
        "stage",
        "schedule",
        "seeds",
        "trainable params",
        "validation accuracy (%)",
        "test accuracy (%)",
        "KL(base ‖ tuned)",
        "perplexity change",
    )
    rows = []
    for (weights,), runs in group_runs(results["runs"], ("base_weights",)).items():
        sizes = [r["base_weight_mib"] for r in runs if "base_weight_mib" in r]  # recorded since --base-weights
        name = "base model" if not sizes else f"base model, {weights} ({sizes[0]:.0f} MiB of weights)"
        test = next((r["base_accuracy"] for r in runs if r["base_accuracy"] is not None), None)
        val = next((r["base_val_accuracy"] for r in runs if r["base_val_accuracy"] is not None), None)
        rows.append(
            (
                name,
                "–",
                "–",
                "–",
                "–",
                "0",
                "–" if val is None else f"{100 * val:.1f}",
                "–" if test is None else f"{100 * test:.1f}",
                "0",
                "0",
            )
        )
    for r in summarize_instruct(results):
        (kl, kl_sd), (dp, dp_sd) = r["kl"], r["perplexity_change"]
        rows.append(
            (
                r["label"],
                f"{r['lr']:g}",
                r["stage"],
                r["schedule"],
                str(r["seeds"]),
                f"{r['params']:,}",
                _percent(r["val_accuracy"]),
                _percent(r["accuracy"]),
                f"{kl:.4f} ± {kl_sd:.4f}",
                f"{dp:+.2f} ± {dp_sd:.2f}",
            )
        )
    return markdown_table(header, rows)


def plot_accuracy_vs_forgetting(results: dict, path) -> None:
    """Accuracy against forgetting, one curve per (method, base weights, schedule, stage) of :func:`plotted_curves`
    joined in order of rate: sweep curves plot validation accuracy (the frontier over the grid), the others test
    accuracy."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = plotted_curves(results)
    several_schedules = len({key[2] for key, _ in curves}) > 1
    runs_of = group_runs(results["runs"], CURVE_FIELDS)
    colours = {}  # one colour per (method, base weights): its sweep and its finals side by side
    labels = []
    for key, rows in curves:
        colour = colours.setdefault(key[:2], len(colours))
        field = "val_accuracy" if key[3] == "sweep" else "accuracy"
        runs = [r for r in runs_of[key] if r[field] is not None]
        rows = [r for r in rows if r[field] is not None]
        if not rows:
            continue
        # each seed faint, the means over seeds joined in order of learning rate
        ax.scatter(
            [r["kl_base_to_tuned"] for r in runs], [100 * r[field] for r in runs], s=14, alpha=0.35, color=f"C{colour}"
        )
        xs, ys = [r["kl"][0] for r in rows], [100 * r[field][0] for r in rows]
        label = rows[0]["label"] + (f", {key[2]}" if several_schedules else "")
        sweep = key[3] == "sweep"
        label += ", sweep (validation)" if sweep else f", {key[3]} (test)"
        ax.plot(
            xs, ys, marker="o" if sweep else "s", color=f"C{colour}", label=label, linestyle="--" if sweep else "-"
        )
        labels += [(x, y, f"{r['lr']:g}", f"C{colour}") for r, x, y in zip(rows, xs, ys, strict=True)]
    base_test = next((r["base_accuracy"] for r in results["runs"] if r["base_accuracy"] is not None), None)
    if base_test is not None:
        ax.axhline(100 * base_test, color="grey", linestyle="--", label="base model (test)")
    ax.set_xscale("log")  # KL spans orders of magnitude across methods and rates
    ax.set_xlabel("forgetting: mean token KL(p_base ‖ p_tuned) on held-out text (log)")
    ax.set_ylabel("generation accuracy (%): test; sweeps: validation")
    ax.set_title("SmolLM2-135M-Instruct, polarity-instruct (labels: learning rate)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    plots.label_points(ax, labels)
    plots.save_figure(fig, path)


CURVE_FIELDS = ("method", "base_weights", "schedule", "stage")


def plotted_curves(results: dict) -> list[tuple[tuple, list[dict]]]:
    """The curves of today's protocol (this schedule, stages other than the legacy test-scored one): the superseded
    runs stay in the table, labelled, but mixing rates chosen on test into the frontier would mislead.  A file that
    holds only superseded runs plots them all."""
    curves = _curves(summarize_instruct(results))
    current = [(key, rows) for key, rows in curves if key[2] == INSTRUCT_SCHEDULE and key[3] != LEGACY_STAGE]
    return current or curves


def _curves(summary: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """The summary rows of each (method, base weights, schedule, stage), in order of learning rate."""
    keys = sorted({tuple(r[f] for f in CURVE_FIELDS) for r in summary})
    return [
        (key, sorted((r for r in summary if tuple(r[f] for f in CURVE_FIELDS) == key), key=lambda r: r["lr"]))
        for key in keys
    ]
