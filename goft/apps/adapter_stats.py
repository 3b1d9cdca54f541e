"""``goft inspect``: what a saved GOFT / qGOFT adapter learned, layer by layer, read straight from its files."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file

from .. import functional as givens
from ..tuner.layer import ADAPTER_PARAM_KINDS, in_features_from_shape
from . import adapter_files, plots
from .errors import DataError


def layer_statistics(adapter_dir: Path) -> list[dict]:
    """One dict per adapted layer: d, angle statistics (strict GOFT), and how far R is from orthogonal, split into
    what qGOFT's penalty controls (the inner products of R's columns, off the diagonal of RᵀR) and what it leaves
    free on purpose (the column norms, also moved by GOFT*'s scale)."""
    config = adapter_files.read_config(adapter_dir)
    if config.get("peft_type") != "GOFT":
        raise DataError(
            f"{adapter_files.config_path(adapter_dir)}: peft_type is {config.get('peft_type')!r}, not 'GOFT'"
        )
    weights_path = adapter_files.weights_path(adapter_dir)
    if not weights_path.is_file():
        raise DataError(f"{weights_path} not found: is {adapter_dir} a saved GOFT adapter?")
    layers: dict[str, dict] = {}
    for key, value in load_file(str(weights_path)).items():
        layer, _, kind = key.rpartition(".")
        if kind in ADAPTER_PARAM_KINDS:
            layers.setdefault(layer, {})[kind] = value.double()
    pairing = {"structure": config.get("structure", "tree"), "depth": config.get("depth", 1)}
    try:
        givens.check_structure(**pairing)
    except givens.GivensError as err:
        raise DataError(f"{adapter_files.config_path(adapter_dir)}: {err}") from None
    rows = []
    for name, parts in layers.items():
        kind = "goft_theta" if "goft_theta" in parts else "goft_blocks"
        params = parts.get(kind)
        if params is None:
            continue
        d = in_features_from_shape(kind, params.shape, **pairing)
        if d is None:
            raise DataError(
                f"{weights_path}: layer {name!r} has {params.shape[0]} blocks, which no in_features gives "
                f"for a {pairing['structure']} pairing at depth {pairing['depth']}"
            )
        scale = parts.get("goft_scale")
        row = {"layer": name, "d": d, "quasi": "goft_blocks" in parts}
        if not row["quasi"]:
            angles = params.abs()
            row.update(
                angle_abs_mean=angles.mean().item() if d > 1 else 0.0,
                angle_abs_max=angles.max().item() if d > 1 else 0.0,
            )
        r = givens.rotation_matrix(params, d, scale, **pairing)
        gram = r.T @ r
        row["orth_deviation_fro"] = (gram - torch.eye(d, dtype=gram.dtype)).norm().item()
        off_diagonal = gram - torch.diag(torch.diagonal(gram))
        row["col_inner_max"] = off_diagonal.abs().max().item()
        norms = r.norm(dim=0)
        row.update(col_norm_min=norms.min().item(), col_norm_max=norms.max().item())
        if scale is not None:
            row.update(scale_min=scale.min().item(), scale_max=scale.max().item())
        rows.append(row)
    return rows


def adapter_kind(config: dict) -> str:
    kind = "qGOFT" if config.get("quasi") else "GOFT"
    structure, depth = config.get("structure", "tree"), config.get("depth", 1)
    if (structure, depth) != ("tree", 1):
        kind += f" ({structure}" + (f", depth {depth})" if depth != 1 else ")")
    return kind + (" with scaling (GOFT*)" if config.get("scaling") else "")


def inspect_adapter(adapter_dir: Path, plot: Path | None = None) -> list[dict]:
    """Print per-layer statistics and draw them; the plot goes to ``plot``, by default beside the adapter directory
    (``<adapter_dir>-inspect.png``), never into it."""
    rows = layer_statistics(adapter_dir)
    kind = adapter_kind(adapter_files.read_config(adapter_dir))
    table = Table(title=f"{kind} adapter {adapter_dir}")
    for col in ("layer", "d", "|angle| mean", "|angle| max", "max |rᵢ·rⱼ|, i≠j", "column norm min", "column norm max"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for r in rows:
        table.add_row(
            r["layer"].removeprefix("base_model.model."),
            str(r["d"]),
            f"{r['angle_abs_mean']:.4f}" if "angle_abs_mean" in r else "—",
            f"{r['angle_abs_max']:.4f}" if "angle_abs_max" in r else "—",
            f"{r['col_inner_max']:.2e}",
            f"{r['col_norm_min']:.4f}",
            f"{r['col_norm_max']:.4f}",
        )
    Console(width=200).print(table)
    print(
        "columns of R: inner products are what qGOFT's penalty drives to 0; norms are left free by qGOFT and "
        "GOFT* (strict GOFT keeps both exact)"
    )
    plot_path = plot or adapter_dir.parent / f"{adapter_dir.name}-inspect.png"
    _plot(rows, plot_path)
    print(f"wrote {plot_path}")
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    plt = plots.pyplot()
    idx = list(range(len(rows)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    if any("angle_abs_mean" in r for r in rows):
        ax1.plot(idx, [r.get("angle_abs_mean", float("nan")) for r in rows], marker="o", label="|angle| mean")
        ax1.plot(idx, [r.get("angle_abs_max", float("nan")) for r in rows], marker="x", label="|angle| max")
        ax1.set_ylabel("radians")
    ax1.plot(idx, [r["col_norm_max"] - 1 for r in rows], marker=".", label="max column norm − 1")
    ax1.set_xlabel("adapted layer (file order)")
    ax1.legend(fontsize=8)
    ax2.semilogy(idx, [max(r["col_inner_max"], 1e-16) for r in rows], marker="o", label="max |rᵢ·rⱼ|, i≠j")
    ax2.semilogy(
        idx,
        [max(abs(r["col_norm_max"] - 1), abs(r["col_norm_min"] - 1), 1e-16) for r in rows],
        marker="x",
        label="max |column norm − 1|",
    )
    ax2.set_xlabel("adapted layer (file order)")
    ax2.set_ylabel("distance from orthogonal")
    ax2.legend(fontsize=8)
    plots.save_figure(fig, path)
