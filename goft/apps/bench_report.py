"""The tables and the per-layer plot of ``goft bench``'s measurements."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from . import plots


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def plot_layer(rows: list[dict], tokens: int, path: Path, dtype: str = "float32") -> None:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = dict.fromkeys(r["method"] for r in rows if r["bench"] == "layer")  # in the order measured
    for method in methods:
        pts = sorted(
            (r["d"], r["ratio_to_frozen"])
            for r in rows
            if r["bench"] == "layer"
            and r["method"] == method
            and r["tokens"] == tokens
            and r.get("dtype", "float32") == dtype
        )
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=method,
                linewidth=2.5 if method.startswith(("goft", "qgoft")) else 1.2,
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("d (in = out features)")
    ax.set_ylabel("forward+backward time / frozen layer")
    ax.set_title(f"One adapted linear layer, {tokens} tokens, {dtype}")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    plots.save_figure(fig, path, dpi=120)


def _ratio_cell(row: dict, reference: str) -> str:
    low, high = row[f"ratio_to_{reference}_range"]
    return f"{row[f'ratio_to_{reference}']:.2f} [{low:.2f}–{high:.2f}]"


def report(console, rows: list[dict], dims, tokens_list, methods, reps: int, dtypes=("float32",)) -> None:
    """Print the measurements as rich tables (the JSON lines hold everything)."""
    ref_d = dims[min(1, len(dims) - 1)] if dims else None
    with_peak = any(r.get("step_peak_bytes") is not None for r in rows if r["bench"] == "layer")
    for dtype in dtypes if dims else ():
        for tokens in tokens_list:
            table = Table(
                title=f"one linear layer, {tokens} tokens, {dtype}, forward+backward: time / frozen layer, "
                f"median [range of the {reps} interleaved repetitions]"
            )
            columns = ["method", *(f"d={d} ratio" for d in dims), f"saved MiB d={ref_d}"]
            if with_peak:
                columns.append(f"step peak MiB d={ref_d}")
            for col in columns:
                table.add_column(col, justify="left" if col == "method" else "right")
            for method in methods:
                hits = {
                    r["d"]: r
                    for r in rows
                    if r["bench"] == "layer"
                    and r["method"] == method
                    and r["tokens"] == tokens
                    and r.get("dtype", "float32") == dtype
                }
                cells = [_ratio_cell(hits[d], "frozen") if d in hits else "—" for d in dims]
                cells.append(_mib(hits[ref_d]["saved_bytes"]) if ref_d in hits else "—")
                if with_peak:
                    cells.append(_mib(hits[ref_d]["step_peak_bytes"]) if ref_d in hits else "—")
                table.add_row(method, *cells)
            console.print(table)
    for row in rows:
        if row["bench"] == "rotation_scaling":
            console.print(
                f"rotation alone, {row['tokens']} tokens: time ∝ d^{row['fitted_exponent']:.2f} over d={row['dims']}"
            )
        if row["bench"] == "merge":
            console.print(
                f"merge {row['method']} {row['d']}x{row['d']}: {row['merge_seconds']:.3f} s, unmerge "
                f"{row['unmerge_seconds']:.3f} s, restore error {row['unmerge_restore_max_rel']:.1e} after "
                f"one round trip, {row['unmerge_restore_max_rel_after_all_reps']:.1e} after {row['reps']}"
            )
    for model_name in dict.fromkeys(r["model"] for r in rows if r["bench"] == "e2e"):  # in the order measured
        e2e_rows = [r for r in rows if r["bench"] == "e2e" and r["model"] == model_name]
        if not e2e_rows:
            continue
        first = e2e_rows[0]
        table = Table(
            title=f"{model_name} training step ({first['weights']}; batch {first['batch']} x "
            f"{first['seq_len']} tokens, all linear layers adapted), median of {reps} [range of the "
            "per-repetition ratios]"
        )
        for col in ("method", "seconds", "vs LoRA r=8", "peak MiB", "trainable params"):
            table.add_column(col, justify="right")
        for r in e2e_rows:
            ratio = _ratio_cell(r, "lora_r8") if "ratio_to_lora_r8" in r else "—"
            peak = _mib(r["peak_bytes"]) if r.get("peak_bytes") is not None else "—"
            table.add_row(r["method"], f"{r['seconds']:.3f}", ratio, peak, f"{r['trainable_params']:,}")
        console.print(table)


SPREAD_LIMIT = 2.0  # per-repetition ratios further apart than this: the machine was busy, the medians suspect


def spread_warnings(rows: list[dict]) -> list[str]:
    """One line per measurement whose per-repetition ratios to its reference spread more than ``SPREAD_LIMIT``x."""
    lines = []
    for row in rows:
        for key, (low, high) in ((k, v) for k, v in row.items() if k.startswith("ratio_to_") and k.endswith("_range")):
            if low > 0 and high / low > SPREAD_LIMIT:
                what = f"{row['bench']} {row.get('method', '')} d={row.get('d', '-')} tokens={row.get('tokens', '-')}"
                lines.append(
                    f"warning: {what}: per-repetition {key.removesuffix('_range')} spread {low:.2f}-{high:.2f} "
                    f"({high / low:.1f}x): another job was probably using the machine; rerun before trusting it"
                )
    return lines
