"""The PEFT tuner class for GOFT: replaces the target layers with :class:`goft.tuner.layer.GOFTLayer`."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, get_quantization_kwargs
from torch import nn

from .. import functional as givens
from .config import AdapterFileError, GOFTConfig, form_difference
from .layer import (
    BASE_ADAPTER_NAME,
    ORDER_KIND,
    SUPPORTED_LAYERS,
    Conv1D,
    GOFTLayer,
    in_features_from_shape,
    supported_base_layer,
)


def _inject_adapter_names(module, args, kwargs, adapter_names):
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


class GOFTModel(BaseTuner):
    """Adds GOFT / qGOFT adapters to a model; used through ``peft.get_peft_model(model, GOFTConfig(...))``.

    With ``target_modules=None`` the per-architecture defaults are PEFT's LoRA defaults (e.g. query and value
    projections).
    """

    prefix: str = "goft_"
    tuner_layer_cls = GOFTLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    # qGOFT's penalty joins ``outputs.loss`` in training mode, so that any trainer or loop that uses the model's own
    # loss (transformers' Trainer, TRL, Accelerate, a plain loop) optimises it; set False to add it yourself
    # (see _add_penalty_to_loss).
    penalty_in_loss: bool = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # on the wrapped model itself: PEFT's task wrappers call it directly or through this tuner, depending on the
        # task type, and the penalty must join the loss either way
        self._penalty_hook = self.model.register_forward_hook(self._add_penalty_to_loss, with_kwargs=True)

    def _add_penalty_to_loss(self, module: nn.Module, args: tuple, kwargs: dict, outputs: Any):
        """In training mode, when an active adapter is qGOFT with λ > 0, :func:`orthogonality_penalty` joins what
        the wrapped model returns for a loss to be made of, once per optimizer step:

        - ``outputs.loss`` holds it; with ``num_items_in_batch`` (transformers passes it under gradient
          accumulation) each micro-batch carries the share of the penalty that it holds of the labelled items;
        - per-token ``outputs.log_probs`` (a fused LM head's output, from which TRL's ``SFTTrainer`` makes its
          loss) carry its gradient: see :class:`_PenaltyThroughLogProbs`.
        """
        self._penalty_counted = False
        if isinstance(outputs, torch.Tensor) or not module.training or not self.penalty_in_loss:
            return None
        loss, log_probs = getattr(outputs, "loss", None), getattr(outputs, "log_probs", None)
        through_log_probs = isinstance(log_probs, torch.Tensor) and log_probs.requires_grad
        if (loss is None and not through_log_probs) or not self._penalised():
            return None
        penalty = _penalty_sum(self)
        if through_log_probs:
            outputs.log_probs = _PenaltyThroughLogProbs.apply(log_probs, penalty)
        if loss is not None:
            labels, total = kwargs.get("labels"), kwargs.get("num_items_in_batch")
            if labels is not None and total is not None:
                penalty = penalty * (labels.ne(-100).sum() / total)
            outputs.loss = loss + penalty.to(loss.device, loss.dtype)
        self._penalty_counted = True
        return outputs

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any):
        self._penalty_hook.remove()  # the plain model handed back owes goft nothing
        return super()._unload_and_optionally_merge(*args, **kwargs)

    def _penalised(self) -> bool:
        return any(
            getattr(self.peft_config.get(name), "quasi", False) and self.peft_config[name].orth_reg_weight > 0
            for name in self.active_adapters
        )

    def _create_and_replace(
        self,
        goft_config: GOFTConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        if isinstance(target, GOFTLayer):
            target.update_layer(adapter_name, goft_config)
            return
        if not supported_base_layer(target):
            raise TypeError(
                f"GOFT cannot adapt module {current_key!r} of type {type(target).__module__}.{type(target).__name__}; "
                f"supported types are {SUPPORTED_LAYERS}. Remove it from target_modules (or add it to "
                "exclude_modules)."
            )
        self._check_fan_in_fan_out(goft_config, target, current_key)
        try:
            new_module = GOFTLayer(
                target, adapter_name, goft_config, layer_key=current_key, **get_quantization_kwargs(self.model)
            )
        except ValueError as err:  # a layer of a supported type that GOFT still cannot adapt (a grouped convolution)
            raise ValueError(
                f"GOFT cannot adapt module {current_key!r}: {err}. Remove it from target_modules (or "
                "add it to exclude_modules)."
            ) from None
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    @staticmethod
    def _check_fan_in_fan_out(config: GOFTConfig, target: nn.Module, key: str) -> None:
        """The layer type decides the weight layout; warn (as PEFT's LoRA does) when the config says otherwise."""
        is_in_out = Conv1D is not None and isinstance(target, Conv1D)
        if config.fan_in_fan_out != is_in_out:
            warnings.warn(
                f"fan_in_fan_out={config.fan_in_fan_out} but {key!r} is a {type(target).__name__}, whose weight is "
                f"stored as {'(in, out)' if is_in_out else '(out, in)'}; setting fan_in_fan_out={is_in_out}.",
                stacklevel=2,
            )
            config.fan_in_fan_out = is_in_out

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        except ValueError as err:
            # peft words this two ways: "... not found in the base model" (no task type) and "No modules were
            # targeted for adaptation" (with a task type); neither names the targets or what exists
            if "not found in the base model" not in str(err) and "No modules were targeted" not in str(err):
                raise
            config = self.peft_config[adapter_name]
            linear_names = [name for name, module in model.named_modules() if name and supported_base_layer(module)]
            shown = ", ".join(repr(n) for n in linear_names[:12])
            more = f" (and {len(linear_names) - 12} more)" if len(linear_names) > 12 else ""
            targets = config.target_modules
            targets = sorted(targets) if isinstance(targets, set) else targets
            excluded = f", exclude_modules {config.exclude_modules!r}" if config.exclude_modules else ""
            raise type(err)(
                f"target_modules {targets!r}{excluded} matched no module GOFT can adapt. GOFT can adapt these "
                f"modules of the model: {shown or 'none'}{more}."
            ) from err

    @torch.no_grad()
    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str) -> None:
        """A new adapter ``adapter_name``, the weighted combination of ``adapters`` (as PEFT's LoRA has it).

        Strict GOFT combines each block's angle, ``θ = Σ_k w_k θ_k``: a weighted sum in the Lie algebra of that
        block's rotations, exact for one block (``w = [0.5, 0.5]`` of a rotation and the identity is its half-angle
        rotation); the product of all blocks is *not* the weighted geometric mean of the adapters' rotations, since
        the blocks of different levels do not commute.  The result stays exactly orthogonal.  qGOFT's free blocks
        combine linearly, ``B = Σ_k w_k B_k``, and GOFT*'s scales in log space, ``s = Π_k s_k^{w_k}`` (they must
        be positive).  ``[a]`` with ``[1.0]`` reproduces ``a``, and so does ``a`` twice at 0.5.  The adapters must
        share targets, structure, depth, variant and pairing (for a random or task pairing, the same order in every
        layer); anything else is refused, naming the difference.  ``modules_to_save`` are not combined: the new
        adapter starts with the first adapter's config, and a fresh copy of those modules.
        """
        if not adapters or len(adapters) != len(weights):
            raise ValueError(
                f"add_weighted_adapter needs one weight per adapter, got {len(adapters)} adapter(s) and "
                f"{len(weights)} weight(s)"
            )
        unknown = [a for a in adapters if a not in self.peft_config]
        if unknown:
            raise ValueError(f"add_weighted_adapter: unknown adapter(s) {unknown}; known: {sorted(self.peft_config)}")
        if adapter_name in self.peft_config:
            raise ValueError(f"add_weighted_adapter: an adapter named {adapter_name!r} exists already")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
            raise ValueError(f"add_weighted_adapter: weights must be finite numbers, got {weights!r}")
        configs = [self.peft_config[a] for a in adapters]
        for other_name, other in zip(adapters[1:], configs[1:], strict=True):
            difference = form_difference(configs[0], other)
            if difference is not None:
                field_name, first, second = difference
                raise ValueError(
                    f"add_weighted_adapter: the adapters differ in {field_name} ({adapters[0]}: {first!r}, "
                    f"{other_name}: {second!r}); only adapters of one form combine"
                )
        layers = [m for m in self.model.modules() if isinstance(m, GOFTLayer)]
        for layer in layers:
            orders = [layer.goft_order[a] for a in adapters if a in layer.goft_order]
            if any(not torch.equal(o, orders[0]) for o in orders):
                raise ValueError(
                    f"add_weighted_adapter: layer {layer.layer_key!r} turns other coordinates in each adapter "
                    "(their pairings' orders differ), so their angles do not add up"
                )
            for a in adapters:
                scale = layer.rotation_scale(a) if layer.has_adapter(a) else None
                if scale is not None and not bool((scale > 0).all()):
                    raise ValueError(
                        f"add_weighted_adapter: adapter {a!r} has a scale <= 0 in layer {layer.layer_key!r}; "
                        "scales combine in log space"
                    )
        self.peft_config[adapter_name] = replace(configs[0], init_weights=True)
        self.inject_adapter(self.model, adapter_name)
        for layer in layers:
            if not layer.has_adapter(adapter_name):
                continue
            params = sum(w * layer.rotation_params(a).double() for a, w in zip(adapters, weights, strict=True))
            layer.rotation_params(adapter_name).copy_(params)
            if layer.rotation_scale(adapter_name) is not None:
                log_scale = sum(
                    w * layer.rotation_scale(a).double().log() for a, w in zip(adapters, weights, strict=True)
                )
                layer.rotation_scale(adapter_name).copy_(log_scale.exp())
            if adapter_name in layer.goft_order:
                layer.goft_order[adapter_name].copy_(layer.goft_order[adapters[0]])
                layer._orders_checked.discard(adapter_name)

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        _check_loaded_shapes(model, remapped, adapter_name, config)
        return remapped

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any):
        """Per-sample adapters: ``model(..., adapter_names=[...])`` picks one adapter per batch sample."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("adapter_names can only be passed in eval mode (model.eval()), not while training")
        layers = [m for m in self.modules() if isinstance(m, GOFTLayer)]
        known = set().union(*(set(m.goft_theta) | set(m.goft_blocks) for m in layers)) if layers else set()
        unknown = sorted({n for n in adapter_names if n != BASE_ADAPTER_NAME} - known)
        if unknown:
            raise ValueError(
                f"adapter_names names unknown adapter(s) {unknown}; known: {sorted(known)} and {BASE_ADAPTER_NAME!r}"
            )
        if any(m.merged for m in layers):
            raise ValueError("adapter_names cannot be used while adapters are merged; call unmerge_adapter() first")
        handles = [
            m.register_forward_pre_hook(partial(_inject_adapter_names, adapter_names=adapter_names), with_kwargs=True)
            for m in layers
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _check_loaded_shapes(
    model: nn.Module, state_dict: dict[str, torch.Tensor], adapter_name: str, config: GOFTConfig
) -> None:
    """Refuse a checkpoint whose GOFT tensors do not fit the model, naming the layer and both shapes."""
    pairing = (config.structure, config.depth)
    expected = {name: p.shape for name, p in model.state_dict().items() if ".goft_" in name}
    for key, value in state_dict.items():
        if ".goft_" not in key:
            continue
        target = (
            key if key in expected else f"base_model.model.{key}" if f"base_model.model.{key}" in expected else None
        )
        layer = key.split(".goft_")[0].removeprefix("base_model.model.")
        kind = "goft_" + key.split(".goft_")[1].split(".")[0]
        if target is None:
            raise AdapterFileError(
                f"the checkpoint has {kind} for layer {layer!r}, which the model has no GOFT parameter for "
                "(GOFT and qGOFT mixed up, scaling or a pairing other than 'index' on one side only, or a different "
                "architecture?)"
            )
        if tuple(value.shape) != tuple(expected[target]):
            raise AdapterFileError(
                f"layer {layer!r}: the checkpoint's {kind} has shape {tuple(value.shape)} but this model needs "
                f"{tuple(expected[target])} (in_features {in_features_from_shape(kind, value.shape, *pairing)} saved "
                f"vs {in_features_from_shape(kind, expected[target], *pairing)} here, {config.structure} at depth "
                f"{config.depth})"
            )
        if kind == ORDER_KIND:
            try:
                givens.check_order(value, value.shape[0])
            except givens.GivensError as err:
                raise AdapterFileError(
                    f"layer {layer!r}: the checkpoint's {kind} is not a coordinate order: {err}"
                ) from None
    present = {k if k in expected else f"base_model.model.{k}" for k in state_dict}
    absent = sorted(k for k in expected if k.endswith(f".{adapter_name}") and k not in present)
    if absent:
        raise AdapterFileError(
            f"the checkpoint lacks {len(absent)} GOFT tensor(s) this model needs, e.g. {absent[0]!r} "
            "(GOFT and qGOFT mixed up, scaling on one side only, or a truncated save?)"
        )


class _PenaltyThroughLogProbs(torch.autograd.Function):
    """The identity on per-token log-probabilities (B, T) whose backward also sends the penalty's gradient, weighted
    by ``Σ |∂loss/∂log_prob|``: the weight the loss puts on these log-probs.  For the mean negative log-likelihood
    over a step's labelled tokens (TRL's SFT loss, ``-Σ log_probs / num_items_in_batch``) that weight is exactly
    this micro-batch's share of the labelled tokens, so the penalty counts once per optimizer step, as through
    ``outputs.loss``; for a loss that weighs tokens differently it follows that loss's weights (never negative).
    The log-probs' values are unchanged: a loss logged from them does not show the penalty."""

    @staticmethod
    def forward(ctx, log_probs: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
        ctx.penalty_dtype = penalty.dtype
        return log_probs.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad.abs().sum().to(ctx.penalty_dtype)


def orthogonality_penalty(model: nn.Module, *, counted: bool = False) -> torch.Tensor:
    """qGOFT's soft orthogonality penalty, ``Σ over adapted layers and active adapters of λ Σ_blocks (a·b + c·e)²``,
    as far as the model's loss does not already hold it.

    Returns a differentiable 0-dim tensor, ready to add to the loss (``loss = loss + orthogonality_penalty(model)``);
    exactly 0 for strict GOFT.  λ is each adapter's ``orth_reg_weight``.  A GOFT model adds the penalty to its own
    ``outputs.loss`` in training mode (``GOFTModel.penalty_in_loss``); after such a forward this returns 0, so that
    the penalty is never counted twice.  ``counted=True`` returns the full value regardless (for logging).
    """
    tuners = [m for m in model.modules() if isinstance(m, GOFTModel)]
    if not counted and any(getattr(t, "_penalty_counted", False) for t in tuners):
        param = next(model.parameters(), None)
        return torch.zeros((), device=None if param is None else param.device)
    return _penalty_sum(model)


def _penalty_sum(model: nn.Module) -> torch.Tensor:
    total = None
    for module in model.modules():
        if not isinstance(module, GOFTLayer) or module.disable_adapters:
            continue
        for name in module.active_adapters:
            if module.has_adapter(name):
                term = module.orthogonality_penalty(name)
                total = term if total is None else total + term
    if total is None:
        param = next(model.parameters(), None)
        return torch.zeros((), device=None if param is None else param.device)
    return total
