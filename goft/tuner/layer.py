"""The GOFT adapter layer: owns the per-adapter parameters, calls :mod:`goft.functional` for all math.

One class serves ``nn.Linear`` (weight ``(out, in)``), transformers' GPT-2-style ``Conv1D`` (weight ``(in, out)``)
and ``nn.Conv1d/2d/3d`` with ``groups=1`` (weight ``(out, in, *kernel)``).  The rotation acts on the input features
(for a convolution, on the channels at every position: x is (N, C, *spatial) and R acts on C), so the forward only
needs to know which input axis holds the features; the merge is ``W <- W @ R.T`` along the weight's input axis,
exact for convolutions too because rotating the channels commutes with padding and with sliding the kernel.
"""

from __future__ import annotations

import math
import warnings
import zlib
from typing import Any, Optional

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from peft.utils import resolve_quantization_backend
from peft.utils.quantization_utils import ForwardOnlyQuantizationBackend, QuantizationBackend
from torch import nn

from .. import functional as givens
from .config import GOFTConfig

try:  # transformers is a dependency of peft, but keep the layer importable without it
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = None

BASE_ADAPTER_NAME = "__base__"  # in a per-sample ``adapter_names`` list: use the base model for that sample

# The saved parameter layout: one tensor per (layer, kind, adapter), named ``<layer>.<kind>.<adapter>`` in the state
# dict (``<layer>.<kind>`` in adapter_model.safetensors).  Beside them, unless the pairing is "index", the layer's
# coordinate order ``goft_order`` (d,) int64, a buffer: data, not a parameter.
ADAPTER_PARAM_KINDS = ("goft_theta", "goft_blocks", "goft_scale")
ORDER_KIND = "goft_order"
UNCALIBRATED = -1  # fills a "task" pairing's order until goft.calibrate_pairing chooses it


class PairingNotCalibratedError(RuntimeError):
    """A ``pairing="task"`` adapter was used before :func:`goft.calibrate_pairing` chose its order."""


def in_features_from_shape(kind: str, shape, structure: str = "tree", depth: int = 1) -> Optional[int]:
    """The layer's ``in_features`` d, read off the shape of one of its saved adapter tensors of ``kind`` (None when
    no d has that many blocks in this pairing)."""
    if kind in ("goft_scale", ORDER_KIND):
        return shape[0]
    return givens.in_features_for_blocks(shape[0], structure, depth)


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
SUPPORTED_LAYERS = (
    "torch.nn.Linear, torch.nn.Conv1d/Conv2d/Conv3d (groups=1), transformers.pytorch_utils.Conv1D "
    "and the quantized linear layers of PEFT's quantization backends (bitsandbytes, HQQ, torchao, "
    "GPTQ, AWQ, ...)"
)


def quantization_backend(base: nn.Module, get_apply_tensor_subclass=None) -> Optional[QuantizationBackend]:
    """PEFT's backend for a quantized base layer (None when it is not quantized): it de-quantizes the weight for a
    merge and re-quantizes the result, or says that it cannot (``supports_merge``).

    The rotation acts on the layer's input, so training needs nothing from the backend; only merge and unmerge do.
    """
    try:
        return resolve_quantization_backend(base, get_apply_tensor_subclass=get_apply_tensor_subclass)
    except ValueError:  # a torchao weight quantized outside transformers: its re-quantization recipe is unknown
        return ForwardOnlyQuantizationBackend(
            "torchao (quantized outside transformers, so the recipe to re-quantize a merged weight is unknown; "
            "load the base with transformers' TorchAoConfig to merge)"
        )


def supported_base_layer(module: nn.Module) -> bool:
    """True for the layer types GOFT can adapt (see ``SUPPORTED_LAYERS``; a grouped convolution is refused later,
    with its own message)."""
    if isinstance(module, (nn.Linear, *CONVOLUTIONS)) or (Conv1D is not None and isinstance(module, Conv1D)):
        return True
    backend = quantization_backend(module)
    return backend is not None and backend.layer_type == "linear"


def _feature_layout(base: nn.Module) -> tuple[int, int, int]:
    """(in_features, out_features, the weight's input axis) of a supported base layer."""
    if isinstance(base, CONVOLUTIONS):
        if base.groups != 1:
            raise ValueError(
                f"a {type(base).__name__} with groups={base.groups} mixes channels only within each of its groups, "
                "while GOFT rotates all input channels together, which no grouped weight can absorb on merge; "
                "GOFT adapts convolutions with groups=1"
            )
        return base.in_channels, base.out_channels, 1
    if Conv1D is not None and isinstance(base, Conv1D):
        return base.weight.shape[0], base.weight.shape[1], 0
    if supported_base_layer(base):  # nn.Linear or a quantized linear layer: its logical sizes, not its packed weight's
        return base.in_features, base.out_features, 1
    raise TypeError(f"GOFT can adapt {SUPPORTED_LAYERS}, got {type(base).__name__}")


class GOFTLayer(nn.Module, BaseTunerLayer):
    """Wraps a linear layer as ``base(x @ R_1 ⋯)`` with one rotation per active adapter.

    Parameters live in per-adapter ``ParameterDict``s (so PEFT's dtype casts, device moves and deletes see them):
    ``goft_theta[name]`` (n,) angles in radians for strict GOFT, ``goft_blocks[name]`` (n, 2, 2) for qGOFT (n blocks of
    the adapter's pairing: d − 1 for the tree at depth 1),
    ``goft_scale[name]`` (d,) with ``scaling=True``.  The pairing is derived from ``d`` and the adapter's
    ``(structure, depth)`` (``goft_pairing[name]``) and, unless the config's pairing is "index", a coordinate order
    ``goft_order[name]`` (d,) int64 (a buffer, saved with the adapter; see :mod:`goft.ops.pairing`).
    """

    adapter_layer_names = ADAPTER_PARAM_KINDS
    other_param_names = ("goft_orth_reg_weight", "goft_pairing", ORDER_KIND)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: GOFTConfig, **kwargs: Any) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.goft_theta = nn.ParameterDict({})
        self.goft_blocks = nn.ParameterDict({})
        self.goft_scale = nn.ParameterDict({})
        self.goft_orth_reg_weight: dict[str, float] = {}
        self.goft_pairing: dict[str, dict[str, Any]] = {}  # adapter -> {"structure": ..., "depth": ...}
        self.goft_order = BufferDict({}, persistent=True)
        self._orders_checked: set[str] = set()  # adapters whose order was seen to be a permutation
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self.kwargs = kwargs

        base = self.get_base_layer()
        self.in_features, self.out_features, self.weight_input_axis = _feature_layout(base)
        self.quantization_backend = quantization_backend(base, kwargs.get("get_apply_tensor_subclass"))
        self.layer_key = kwargs.get("layer_key", "")  # the module's name in the model, for messages
        # where the features are in the input: last for linear layers; dim 1 of a batched convolution input
        # (N, C, *spatial), dim 0 of an unbatched one (C, *spatial)
        self.spatial_dims = len(base.kernel_size) if isinstance(base, CONVOLUTIONS) else 0
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    # ---------------------------------------------------------------------------------------------------------------
    # Parameters
    # ---------------------------------------------------------------------------------------------------------------

    def update_layer(self, adapter_name: str, config: GOFTConfig, **kwargs: Any) -> None:
        """Create the parameters of adapter ``adapter_name`` (identity, or random when ``config.init_weights`` is
        False) on the base layer's device."""
        d = self.in_features
        self.goft_pairing[adapter_name] = {"structure": config.structure, "depth": config.depth}
        self._orders_checked.discard(adapter_name)
        if config.pairing == "random":
            # the layer's name enters the seed, so that layers of one width do not share one permutation
            seed = zlib.crc32(f"{config.pairing_seed}:{self.layer_key}".encode())
            self.goft_order[adapter_name] = torch.tensor(givens.random_order(d, seed), dtype=torch.long)
        elif config.pairing == "task":
            self.goft_order[adapter_name] = torch.full((d,), UNCALIBRATED, dtype=torch.long)
        elif adapter_name in self.goft_order:
            del self.goft_order[adapter_name]
        n = givens.num_blocks(d, config.structure, config.depth)
        if config.quasi:
            self.goft_blocks[adapter_name] = nn.Parameter(torch.eye(2).repeat(n, 1, 1))
        else:
            self.goft_theta[adapter_name] = nn.Parameter(torch.zeros(n))
        if config.scaling:
            self.goft_scale[adapter_name] = nn.Parameter(torch.ones(d))
        self.goft_orth_reg_weight[adapter_name] = config.orth_reg_weight
        if not config.init_weights:
            self._randomize(adapter_name)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    @torch.no_grad()
    def _randomize(self, adapter_name: str) -> None:
        """A random, clearly non-identity but well-conditioned adapter (uses torch's global RNG)."""
        if adapter_name in self.goft_theta:
            self.goft_theta[adapter_name].uniform_(-math.pi / 2, math.pi / 2)
        if adapter_name in self.goft_blocks:
            blocks = self.goft_blocks[adapter_name]
            theta = torch.empty(blocks.shape[0]).uniform_(-math.pi / 2, math.pi / 2)
            noise = torch.empty_like(blocks).uniform_(-0.2, 0.2)
            blocks.copy_(givens.angles_to_blocks(theta) + noise)
        if adapter_name in self.goft_scale:
            self.goft_scale[adapter_name].uniform_(0.75, 1.25)

    def has_adapter(self, adapter_name: str) -> bool:
        return adapter_name in self.goft_theta or adapter_name in self.goft_blocks

    def rotation_params(self, adapter_name: str) -> torch.Tensor:
        """The adapter's (n,) angles or (n, 2, 2) quasi blocks (n = d − 1 for the tree at depth 1)."""
        if adapter_name in self.goft_theta:
            return self.goft_theta[adapter_name]
        return self.goft_blocks[adapter_name]

    def rotation_scale(self, adapter_name: str) -> Optional[torch.Tensor]:
        return self.goft_scale[adapter_name] if adapter_name in self.goft_scale else None

    def rotation_order(self, adapter_name: str) -> Optional[torch.Tensor]:
        """The adapter's coordinate order (d,), or None for the "index" pairing.  Checked to be a permutation the
        first time (not under ``torch.compile``, which must not see a data-dependent check)."""
        if adapter_name not in self.goft_order:
            return None
        order = self.goft_order[adapter_name]
        if adapter_name not in self._orders_checked and not torch.compiler.is_compiling():
            if bool((order == UNCALIBRATED).any()):
                raise PairingNotCalibratedError(
                    f"adapter {adapter_name!r} has pairing='task' but no pairing yet (layer {self.layer_key!r}): run "
                    "goft.calibrate_pairing(model, batches) on training batches before the first forward, or load "
                    "a saved adapter"
                )
            givens.check_order(order, self.in_features)
            self._orders_checked.add(adapter_name)
        return order

    def pairing_of(self, adapter_name: str) -> dict[str, Any]:
        """The keyword arguments that say how the adapter's blocks are laid out: structure, depth and order."""
        return {**self.goft_pairing[adapter_name], "order": self.rotation_order(adapter_name)}

    def rotation_matrix(self, adapter_name: str) -> torch.Tensor:
        """The dense d×d R of one adapter (for inspection and checks)."""
        return givens.rotation_matrix(
            self.rotation_params(adapter_name),
            self.in_features,
            self.rotation_scale(adapter_name),
            **self.pairing_of(adapter_name),
        )

    def orthogonality_penalty(self, adapter_name: str) -> torch.Tensor:
        """λ Σ (a·b + c·e)² of this adapter's quasi blocks; 0 for strict GOFT."""
        params = self.rotation_params(adapter_name)
        return self.goft_orth_reg_weight[adapter_name] * givens.block_orthogonality_penalty(params)

    def rotate_input(self, x: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """``x @ R`` over the input features (a convolution's channels, wherever they are)."""
        params, scale = self.rotation_params(adapter_name), self.rotation_scale(adapter_name)
        rotated = givens.rotate(self._features_last(x), params, scale, **self.pairing_of(adapter_name))
        return self._features_back(rotated, x)

    # ---------------------------------------------------------------------------------------------------------------
    # Forward
    # ---------------------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter_names = kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self.base_layer(self._rotate_per_sample(x, adapter_names), *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        # Merging R1 then R2 gives W (R2 R1)^T, i.e. x @ R2 @ R1: apply adapters in the reverse of merge order.
        for name in reversed(self.active_adapters):
            if self.has_adapter(name):
                x = self.rotate_input(x, name)
        return self.base_layer(x, *args, **kwargs)

    def _rotate_per_sample(self, x: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        """Rotate sample ``i`` of the batch (dim 0) by adapter ``adapter_names[i]`` (``"__base__"``: unchanged).

        Adapters that share a pairing and a form (angles or blocks, with or without scale and order) run in one
        pass: their parameters stacked, an adapter index per row (:func:`goft.functional.rotate_mixed`); adapters
        of different forms take one pass per form.
        """
        if self.merged:
            raise ValueError("adapter_names cannot be passed to forward while adapters are merged; unmerge first")
        if len(adapter_names) != x.shape[0]:
            raise ValueError(f"adapter_names has {len(adapter_names)} entries but the batch has {x.shape[0]} samples")
        channels_last = self._features_last(x)
        rows_per_sample = channels_last[0].numel() // self.in_features if x.shape[0] else 0
        out = channels_last
        for blocks, scales, orders, row_adapter, structure, depth in self._stacked_forms(
            adapter_names, rows_per_sample, x.device
        ):
            out = givens.rotate_mixed(out, blocks, scales, row_adapter, structure=structure, depth=depth, order=orders)
        return self._features_back(out, x)

    def _adapter_tensors(
        self, names
    ) -> list[tuple[str, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]]:
        """(name, params, scale or None, order or None) of each of ``names`` this layer has, looked up in the
        containers' own dicts: a serving loop calls this for every layer and every batch."""
        theta = self._modules["goft_theta"]._parameters
        blocks = self._modules["goft_blocks"]._parameters
        scales = self._modules["goft_scale"]._parameters
        orders = self._modules["goft_order"]._buffers
        found = []
        for name in names:
            params = theta.get(name, blocks.get(name))
            if params is not None:
                found.append((name, params, scales.get(name), orders.get(name)))
        return found

    @torch.no_grad()
    def _stacked_forms(self, adapter_names: list[str], rows_per_sample: int, device: torch.device) -> list[tuple]:
        """For each form of adapter in the batch: (blocks (A, n, 2, 2), scales (A, d) or None, orders (A, d) or
        None, the row adapter index (N,), structure, depth).

        Kept from one call to the next while the batch's names and the adapters' numbers stay the same (a serving
        loop's decode steps): the cache holds the tensors it stacked (so none can be freed and another take its
        place unseen) and their version counters, which any in-place change (an optimizer step, a hotswap, a
        load) moves on, and checks that each name still finds the same tensor (or still none) in this layer."""
        compiling = torch.compiler.is_compiling()
        cached = None if compiling else self.__dict__.get("_mixed_cache")
        if (
            cached is not None
            and cached[0] == (tuple(adapter_names), rows_per_sample, device)
            and all(container.get(name) is t and (t is None or t._version == v) for container, name, t, v in cached[1])
        ):
            return cached[2]
        names = dict.fromkeys(n for n in adapter_names if n != BASE_ADAPTER_NAME)
        present = self._adapter_tensors(names)
        forms: dict[tuple, list] = {}
        for entry in present:
            name, params, scale, order = entry
            self.rotation_order(name)  # checks a task pairing was calibrated
            pairing = self.goft_pairing[name]
            form = (pairing["structure"], pairing["depth"], params.dim(), scale is not None, order is not None)
            forms.setdefault(form, []).append(entry)
        stacked = []
        for (structure, depth, *_), entries in forms.items():
            index = {entry[0]: k for k, entry in enumerate(entries)}
            sample_adapter = torch.tensor([index.get(n, -1) for n in adapter_names], device=device)
            stacked.append(
                (
                    torch.stack([givens.angles_to_blocks(p) if p.dim() == 1 else p for _, p, _, _ in entries]),
                    None if entries[0][2] is None else torch.stack([e[2] for e in entries]),
                    None if entries[0][3] is None else torch.stack([e[3] for e in entries]),
                    sample_adapter.repeat_interleave(rows_per_sample),
                    structure,
                    depth,
                )
            )
        if not compiling:
            self.__dict__["_mixed_cache"] = (  # not a buffer: never saved, moved or cast
                (tuple(adapter_names), rows_per_sample, device),
                self._watched(names),
                stacked,
            )
        return stacked

    def _watched(self, names) -> list[tuple[dict, str, Optional[torch.Tensor], int]]:
        """(container, name, tensor or None, version) for every place an adapter of ``names`` keeps its numbers in
        this layer, so that a cached stack sees any of them replaced, added, removed or changed in place."""
        containers = (
            self._modules["goft_theta"]._parameters,
            self._modules["goft_blocks"]._parameters,
            self._modules["goft_scale"]._parameters,
            self._modules["goft_order"]._buffers,
        )
        watched = []
        for name in names:
            for container in containers:
                t = container.get(name)
                watched.append((container, name, t, 0 if t is None else t._version))
        return watched

    def _features_last(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the rotated features on the last axis: itself for a linear layer, a convolution's channels
        moved last (a view)."""
        if not self.spatial_dims:
            return x
        return x.movedim(x.dim() - self.spatial_dims - 1, -1)  # channels: 1 of (N, C, *spatial), 0 unbatched

    def _features_back(self, rotated: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`_features_last` for a result computed from ``x``."""
        if not self.spatial_dims:
            return rotated
        rotated = rotated.movedim(-1, x.dim() - self.spatial_dims - 1)
        # The rotation runs on channels-last rows, so ``rotated`` is laid out channels-last.  Hand the base layer the
        # layout it was given: a channels-first input gets its layout back (else the convolution would take another
        # algorithm, and an adapter at init would not give the base's output bit for bit); a channels-last input
        # keeps the rotation's output as it is, with no copy.
        return rotated.contiguous() if x.is_contiguous() else rotated

    # ---------------------------------------------------------------------------------------------------------------
    # Merge / unmerge: explicit, idempotent, all-or-nothing
    # ---------------------------------------------------------------------------------------------------------------

    def _check_mergeable(self) -> None:
        backend = self.quantization_backend
        if backend is not None and not backend.supports_merge:
            raise ValueError(
                f"cannot merge GOFT into layer {self.layer_key!r}: its weight is quantized by {backend.backend_name}, "
                "which PEFT cannot de-quantize and re-quantize; use the adapter unmerged, or load the base model "
                "unquantized and merge the adapter into that"
            )

    def _weight_rows(self) -> tuple[torch.Tensor, torch.dtype]:
        """The base weight with its input axis last, (out, in) or (out, *kernel, in), in at least fp32 (a view when
        it already is; de-quantized by PEFT's backend for a quantized layer), and the dtype to store it back in."""
        self._check_mergeable()
        weight = self.get_base_weight().movedim(self.weight_input_axis, -1)
        return weight.to(torch.promote_types(weight.dtype, torch.float32)), weight.dtype

    def _store_weight_rows(self, rows: torch.Tensor, dtype: torch.dtype) -> None:
        """Write the weight back (re-quantized by PEFT's backend for a quantized layer)."""
        self.set_base_weight(rows.movedim(-1, self.weight_input_axis).to(dtype).contiguous())

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Fold the (active, or named) adapters into the base weight: ``W <- W @ R.T`` per adapter, in order.

        ``safe_merge=True`` computes on a copy and refuses (``ValueError``, weights untouched) if the result holds
        NaN or inf.  Without it the result is written as computed.
        """
        adapter_names = [n for n in check_adapters_to_merge(self, adapter_names) if self.has_adapter(n)]
        if not adapter_names:
            return
        merged, dtype = self._weight_rows()
        for name in adapter_names:
            merged = givens.merge_weight(
                merged, self.rotation_params(name), self.rotation_scale(name), **self.pairing_of(name)
            )
        if safe_merge and not bool(torch.isfinite(merged).all()):
            raise ValueError(
                f"safe_merge refused: merging adapter(s) {adapter_names} gives NaN/inf weights; "
                "the base weights were left untouched"
            )
        self._store_weight_rows(merged, dtype)
        self.merged_adapters.extend(adapter_names)

    def unmerge(self) -> None:
        """Undo every merge with the exact inverse (closed-form 2×2 inverses, no ``linalg.inv``).

        Raises ``SingularBlockError`` (a ``ValueError``) and leaves the weights and the merged state untouched if a
        merged qGOFT block or scale cannot be inverted.
        """
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        restored, dtype = self._weight_rows()
        for name in reversed(self.merged_adapters):
            try:
                restored = givens.unmerge_weight(
                    restored, self.rotation_params(name), self.rotation_scale(name), **self.pairing_of(name)
                )
            except givens.SingularBlockError as err:
                raise givens.SingularBlockError(
                    f"cannot unmerge adapter {name!r} from this layer: {err}; the weights were left merged"
                ) from err
        self._store_weight_rows(restored, dtype)
        self.merged_adapters.clear()

    def __repr__(self) -> str:
        return "goft." + super().__repr__()
