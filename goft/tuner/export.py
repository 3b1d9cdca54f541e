"""``goft.export_lora``: a GOFT adapter as a PEFT LoRA adapter, for engines and tools that load LoRA only.

Per adapted layer the GOFT update is ``ΔW = W·Rᵀ − W = W·(Rᵀ − I)`` (torch layout, W is out × in; GOFT*'s scale
included), which :func:`goft.functional.merge_weight` computes without forming R.  Its truncated SVD at rank r,
``ΔW ≈ U_r Σ_r V_rᵀ``, is written as ``lora_B = U_r Σ_r^½`` (out × r) and ``lora_A = Σ_r^½ V_rᵀ`` (r × in) with
``lora_alpha = r`` (LoRA's scale 1).  At full rank (min(out, in)) the export reproduces the GOFT model up to the
SVD's rounding; below it, the error is the discarded singular values: whether GOFT's update is low-rank is measured,
not assumed (the report gives each layer's relative error).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .. import functional as givens
from .layer import Conv1D, GOFTLayer

EXPORT_REPORT = "goft_export.json"  # written beside the LoRA adapter: where it came from and how close it is


@dataclass(frozen=True)
class LayerFidelity:
    layer: str
    rank: int  # kept (min of the asked rank and the layer's full rank)
    full_rank: int
    update_relative_error: float  # ‖ΔW − B·A‖ / ‖ΔW‖ (Frobenius)
    weight_relative_error: float  # ‖W·Rᵀ − (W + B·A)‖ / ‖W·Rᵀ‖


@dataclass(frozen=True)
class ExportReport:
    output_dir: str
    rank: int
    source: dict  # the GOFT adapter's config (and base model) the export came from
    layers: list[LayerFidelity]

    @property
    def worst_weight_error(self) -> float:
        return max((layer.weight_relative_error for layer in self.layers), default=0.0)


def _low_rank(update: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (out, r), A (r, in)) with B·A the best rank-r approximation of ``update`` (out, in), in float64."""
    u, s, vh = torch.linalg.svd(update, full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def lora_factors(layer: GOFTLayer, adapter_name: str, rank: int) -> tuple[torch.Tensor, torch.Tensor, LayerFidelity]:
    """One layer's LoRA factors (float64, torch layout: B (out, r), A (r, in)) and their fidelity."""
    if isinstance(layer.get_base_layer(), nn.modules.conv._ConvNd):
        raise ValueError(
            f"export_lora handles linear layers; {layer.layer_key!r} is a {type(layer.get_base_layer()).__name__}"
        )
    weight = layer.get_base_weight().detach().movedim(layer.weight_input_axis, -1).double()  # (out, in)
    merged = givens.merge_weight(
        weight,
        layer.rotation_params(adapter_name).detach().double(),
        None if layer.rotation_scale(adapter_name) is None else layer.rotation_scale(adapter_name).detach().double(),
        **layer.pairing_of(adapter_name),
    )
    update = merged - weight
    full = min(update.shape)
    kept = min(rank, full)
    b, a = _low_rank(update, kept)
    approx = b @ a
    fidelity = LayerFidelity(
        layer=layer.layer_key,
        rank=kept,
        full_rank=full,
        update_relative_error=float((update - approx).norm() / update.norm().clamp_min(1e-300)),
        weight_relative_error=float((merged - weight - approx).norm() / merged.norm().clamp_min(1e-300)),
    )
    return b, a, fidelity


@torch.no_grad()
def export_lora(peft_model, output_dir: str | os.PathLike, rank: int, adapter_name: str = "default") -> ExportReport:
    """Write the GOFT adapter ``adapter_name`` of ``peft_model`` as a PEFT LoRA adapter of rank ``rank`` to
    ``output_dir`` (``adapter_config.json``, ``adapter_model.safetensors``; loads with ``PeftModel.from_pretrained``
    without goft), plus ``goft_export.json`` naming the source and each layer's error.

    ``modules_to_save`` (e.g. a classifier head) are carried over as they are.  Linear and GPT-2 ``Conv1D`` layers
    are exported; a convolution is refused by name.  ``peft_model`` itself is not changed.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    config = peft_model.peft_config.get(adapter_name)
    if config is None or getattr(config, "peft_type", None) != "GOFT":
        raise ValueError(f"export_lora: {adapter_name!r} is not a GOFT adapter of this model")
    layers = {m.layer_key: m for m in peft_model.modules() if isinstance(m, GOFTLayer) and m.has_adapter(adapter_name)}
    if any(m.merged for m in layers.values()):
        raise ValueError("export_lora: unmerge the adapters first (unmerge_adapter()): the update is read off W")
    factors = {key: lora_factors(layer, adapter_name, rank) for key, layer in layers.items()}

    base = copy.deepcopy(peft_model).unload()  # the base model, GOFT layers replaced by their base layers
    fan_in_fan_out = any(Conv1D is not None and isinstance(m.get_base_layer(), Conv1D) for m in layers.values())
    lora_config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=sorted(layers),
        modules_to_save=config.modules_to_save,
        task_type=config.task_type,
        fan_in_fan_out=fan_in_fan_out,
        base_model_name_or_path=config.base_model_name_or_path,
        rank_pattern={key: f.rank for key, (_, _, f) in factors.items() if f.rank != rank},
        alpha_pattern={key: f.rank for key, (_, _, f) in factors.items() if f.rank != rank},
    )
    lora = get_peft_model(base, lora_config)
    for name, module in lora.named_modules():
        key = name.removeprefix("base_model.model.")
        if key in factors:
            b, a, _ = factors[key]
            module.lora_A["default"].weight.copy_(a)
            module.lora_B["default"].weight.copy_(b)
    _copy_modules_to_save(peft_model, lora, adapter_name)
    output = Path(output_dir)
    lora.save_pretrained(output)
    report = ExportReport(
        str(output),
        rank,
        {**config.to_dict(), "peft_type": "GOFT", "adapter_name": adapter_name},
        [f for _, _, f in factors.values()],
    )
    payload = {**asdict(report), "worst_weight_relative_error": report.worst_weight_error}
    (output / EXPORT_REPORT).write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return report


def _copy_modules_to_save(source, target, adapter_name: str) -> None:
    """The trained copies of ``modules_to_save`` (a classifier head): ``source``'s for ``adapter_name`` into
    ``target``'s ``default``."""
    from peft.utils import ModulesToSaveWrapper

    wrappers = {n: m for n, m in source.named_modules() if isinstance(m, ModulesToSaveWrapper)}
    for name, module in target.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and name in wrappers:
            trained = wrappers[name].modules_to_save[adapter_name]
            module.modules_to_save["default"].load_state_dict(trained.state_dict())
