"""``goft.calibrate_pairing``: choose each layer's coordinate order from the gradients of a few training batches.

For a layer computing ``base(x @ R)``, the derivative of the loss with respect to the angle θ of one Givens rotation
in the plane ``(i, j)``, at ``R = I``, is ``Σ_tokens (x_j·δ_i − x_i·δ_j)``, where δ is the gradient with respect to
the base layer's input: the skew part of ``XᵀΔ`` (X, Δ: (tokens, d)).  One d×d accumulation per layer over the
calibration batches gives it for every plane at once; :func:`goft.functional.order_from_plane_scores` then pairs the
heaviest planes on the structure's first level (see :mod:`goft.ops.pairing` for what an order means).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .. import functional as givens
from .layer import GOFTLayer


@dataclass(frozen=True)
class CalibrationReport:
    layers: int  # layers whose order was chosen
    batches: int
    rows: int  # tokens (or positions) seen per layer, padding included
    seconds: float


def _layers_to_calibrate(model: nn.Module, adapter_name: str) -> list[GOFTLayer]:
    layers = [m for m in model.modules() if isinstance(m, GOFTLayer) and m.has_adapter(adapter_name)]
    if not layers:
        raise ValueError(f"calibrate_pairing: the model has no GOFT layer with an adapter named {adapter_name!r}")
    fixed = [m.layer_key for m in layers if adapter_name not in m.goft_order]
    config = getattr(model, "peft_config", {}).get(adapter_name)
    pairing = getattr(config, "pairing", None)
    if fixed or (pairing is not None and pairing != "task"):
        raise ValueError(
            f"calibrate_pairing chooses the order of a pairing='task' adapter; adapter {adapter_name!r} has pairing="
            f"{pairing!r}" + (f" (layer {fixed[0]!r} has no order to choose)" if fixed else "")
        )
    for layer in layers:
        if not _at_identity(layer, adapter_name):
            raise ValueError(
                f"calibrate_pairing: adapter {adapter_name!r} of layer {layer.layer_key!r} is not the identity; the "
                "pairing is chosen before training (a new order would change what the trained blocks compute)"
            )
    return layers


def _at_identity(layer: GOFTLayer, adapter_name: str) -> bool:
    params, scale = layer.rotation_params(adapter_name), layer.rotation_scale(adapter_name)
    eye = givens.angles_to_blocks(torch.zeros(params.shape[0], dtype=params.dtype, device=params.device))
    identity = bool((params == 0).all()) if params.dim() == 1 else torch.equal(params, eye)
    return identity and (scale is None or bool((scale == 1).all()))


def _feature_rows(layer: GOFTLayer, x: torch.Tensor) -> torch.Tensor:
    """(rows, d): the features the rotation acts on, one row per token or position."""
    if layer.spatial_dims:
        x = x.movedim(x.dim() - layer.spatial_dims - 1, -1)
    return x.reshape(-1, layer.in_features)


def plane_scores(
    model: nn.Module,
    batches: Iterable[Any],
    adapter_name: str,
    num_batches: Optional[int] = None,
    loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None,
) -> tuple[dict[GOFTLayer, torch.Tensor], int, int]:
    """Per layer of the adapter, the (d, d) float64 ``S[i, j] = Σ_tokens (x_j·δ_i − x_i·δ_j)`` over the batches: at
    ``R = I`` the derivative of the summed batch losses with respect to the angle of a block turning coordinates
    ``(i, j)``.  Returns (scores, batches used, rows seen per layer).  The model runs in eval mode; parameters'
    ``.grad`` are left untouched."""
    layers = [m for m in model.modules() if isinstance(m, GOFTLayer) and m.has_adapter(adapter_name)]
    scores = {layer: torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64) for layer in layers}
    rows_seen = 0

    def watch(layer: GOFTLayer, leaves: list):
        def pre_hook(module, args, kwargs):
            nonlocal rows_seen
            x = args[0]
            # x + 0 with a leaf that needs a gradient: the base layer's input then has a gradient δ even where
            # nothing upstream is trained, and the rest of the graph is unchanged
            leaf = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
            leaves.append(leaf)
            watched = x + leaf
            rows = _feature_rows(layer, x.detach())
            if layer is layers[0]:
                rows_seen += rows.shape[0]

            def accumulate(grad):
                delta = _feature_rows(layer, grad)
                # rows the loss does not see (padding, most tokens of a classifier's last layers) add nothing
                seen = delta.abs().amax(dim=1) > 0
                x_seen, delta = (rows, delta) if bool(seen.all()) else (rows[seen], delta[seen])
                # Σ x_j δ_i at (j, i), in fp32 (or the input's dtype if wider): only the ranking of planes is used
                xt_delta = (x_seen.T @ delta).double().cpu()
                scores[layer].add_(xt_delta.T - xt_delta)  # (i, j): Σ x_j δ_i − x_i δ_j

            watched.register_hook(accumulate)
            return (watched, *args[1:]), kwargs

        return pre_hook

    was_training = model.training
    handles, used = [], 0
    try:
        model.eval()
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            leaves: list = []
            handles = [
                layer.get_base_layer().register_forward_pre_hook(watch(layer, leaves), with_kwargs=True)
                for layer in layers
            ]
            with torch.enable_grad():
                outputs = model(**batch) if isinstance(batch, dict) else model(batch)
                loss = loss_fn(outputs, batch) if loss_fn is not None else getattr(outputs, "loss", None)
                if loss is None:
                    raise ValueError(
                        "calibrate_pairing needs a loss: the model's outputs.loss is None (give batches with labels, "
                        "or pass loss_fn(outputs, batch))"
                    )
                torch.autograd.grad(loss, leaves, allow_unused=True)
            for handle in handles:
                handle.remove()
            handles = []
            used += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return scores, used, rows_seen


def calibrate_pairing(
    model: nn.Module,
    batches: Iterable[Any],
    adapter_name: Optional[str] = None,
    num_batches: Optional[int] = None,
    loss_fn: Optional[Callable[[Any, Any], torch.Tensor]] = None,
) -> CalibrationReport:
    """Choose the coordinate order of every layer of a ``GOFTConfig(pairing="task")`` adapter from training data.

    Call it after ``get_peft_model`` and before training, on batches of the *training* split (never validation or
    test data).  Each batch is passed to the model as keyword arguments (a dict, as a ``DataLoader`` over a tokenized
    dataset yields), or positionally otherwise; the loss is ``outputs.loss`` unless ``loss_fn(outputs, batch)`` is
    given.  The model runs in eval mode (no dropout) and its parameters' ``.grad`` are left untouched; nothing is
    trained.  The adapter must still be the identity, which it stays: only which coordinates its blocks will turn
    changes.

    Args:
        model: a PEFT model (or any module) holding GOFT layers with the adapter.
        batches: an iterable of batches (e.g. a ``DataLoader``); ``num_batches`` of them are used (all by default).
        adapter_name: the adapter to calibrate (the model's active adapter by default).

    Returns a :class:`CalibrationReport` (layers, batches, rows, seconds).
    """
    start = time.perf_counter()
    if adapter_name is None:
        adapter_name = getattr(model, "active_adapter", "default")
    layers = _layers_to_calibrate(model, adapter_name)
    for layer in layers:
        # the adapter is the identity whatever the order; a valid one lets the forward run
        order = layer.goft_order[adapter_name]
        order.copy_(torch.arange(layer.in_features, device=order.device))
        layer._orders_checked.discard(adapter_name)
    scores, used, rows = plane_scores(model, batches, adapter_name, num_batches, loss_fn)
    if used == 0:
        raise ValueError("calibrate_pairing got no batches")
    for layer in layers:
        order = torch.tensor(givens.order_from_plane_scores(scores[layer]), dtype=torch.long)
        layer.goft_order[adapter_name].copy_(order)
        layer._orders_checked.discard(adapter_name)
    return CalibrationReport(len(layers), used, rows, time.perf_counter() - start)
