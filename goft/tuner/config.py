"""``GOFTConfig``: the PEFT configuration of a GOFT / qGOFT adapter."""

from __future__ import annotations

import difflib
import enum
import json
import math
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

from peft.config import PeftConfig
from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import safe_open

from ..ops.pairing import PAIRINGS, STRUCTURES


class _GOFTPeftType(str, enum.Enum):
    """A private ``str``-based enum member that stands in for a ``peft.PeftType`` member.

    peft keys its lookup tables by ``PeftType`` members and calls ``.value`` on ``config.peft_type``; peft's own enum
    cannot be extended, so goft brings a member of its own.  Being a ``str`` enum whose name equals its value, it
    hashes and compares equal to the plain ``"GOFT"`` that ``adapter_config.json`` stores, so the tables find it
    when a saved adapter is loaded back.
    """

    GOFT = "GOFT"


GOFT_PEFT_TYPE = _GOFTPeftType.GOFT

BIAS_CHOICES = ("none", "all", "goft_only")

# Version of what goft writes into adapter_config.json / adapter_model.safetensors.  A newer version on disk is
# refused rather than half-understood.
# Format 2 added ``structure`` and ``depth``; a format-1 adapter is the tree at depth 1.  Format 3 added ``pairing``
# and ``pairing_seed`` (and, unless the pairing is "index", a ``goft_order`` tensor per layer); an older adapter's
# pairing is "index".
FORMAT_VERSION = 3

DEFAULT_ORTH_REG_WEIGHT = 1e-2

# Keys a goft adapter_config.json must have (the rest have safe defaults).
REQUIRED_SAVED_FIELDS = ("peft_type", "goft_format_version", "quasi", "scaling", "target_modules")
REQUIRED_SAVED_FIELDS_SINCE = {2: ("structure", "depth"), 3: ("pairing",)}


class AdapterFileError(ValueError):
    """A saved adapter (config or weights) is missing, corrupted, or from an incompatible version."""


@dataclass
class GOFTConfig(PeftConfig):
    """Configuration of a GOFT (Givens orthogonal) or qGOFT (quasi-Givens) adapter.

    Every adapted layer with ``in_features = d`` gets a rotation ``R`` built from n 2×2 blocks (see
    :mod:`goft.ops.pairing` for the convention) and computes ``base(x @ R)``.  Trainable parameters per layer: n
    angles (GOFT) or ``4 n`` block entries (qGOFT), plus ``d`` scales with ``scaling=True`` (GOFT*); n is ``d - 1``
    for the paper's tree, ``depth`` times that when stacked, about ``(d/2) log2 d`` per stack for the butterfly.

    Args:
        target_modules: names or a regex of the modules to adapt (as in ``LoraConfig``); ``"all-linear"`` adapts every
            linear layer except the output head.  ``None`` uses PEFT's per-architecture LoRA defaults.
        exclude_modules: names or a regex of modules not to adapt.
        quasi: ``False`` for strict GOFT (angles, exactly orthogonal), ``True`` for qGOFT (free 2×2 blocks).
        scaling: learn a per-input-feature scale ``s`` too: ``R = P_M ⋯ P_1 · diag(s)`` (the paper's GOFT*).
        structure: which coordinates the blocks pair: ``"tree"`` (the paper's, ``d - 1`` blocks) or ``"butterfly"``
            (every coordinate meets a partner at every level; d = 768: 3,584 blocks).  The capacity dial, with depth.
        depth: how many such products, each with its own blocks, ``R = R_depth ⋯ R_1``.
        pairing: which coordinates the structure's positions stand for, per layer: ``"index"`` (the paper's,
            coordinate k at position k), ``"random"`` (a seeded random permutation: a control), or ``"task"`` (chosen
            from data by :func:`goft.calibrate_pairing`, which must run before the first forward: the first level
            then turns the planes whose angles move the loss most).  Saved with the adapter; no extra parameters.
        pairing_seed: the seed of ``pairing="random"`` (each layer's permutation also depends on its name).
        orth_reg_weight: λ of qGOFT's soft orthogonality penalty ``λ Σ (a·b + c·e)²``; add
            :func:`goft.orthogonality_penalty` to the loss.  Ignored by strict GOFT.  The paper used 1e-3 … 5e-2.
        init_weights: ``True`` starts at the identity (the adapted model equals the base model exactly); ``False``
            starts at a random, clearly non-identity rotation (for tests).
        layers_to_transform, layers_pattern: restrict adaptation to some layer indices, as in ``LoraConfig``.
        fan_in_fan_out: ``True`` when the target stores its weight as (in, out), like GPT-2's ``Conv1D``; goft sets it
            from the layer type and warns when it disagrees.
        bias: ``"none"``, ``"all"`` or ``"goft_only"``: which biases to train.
        modules_to_save: modules besides the adapted ones to train and save (e.g. a classifier head).
    """

    target_modules: Optional[Union[list[str], str]] = field(
        default=None,
        metadata={"help": "Module names or a regex of the modules to adapt, e.g. ['query', 'value'] or 'all-linear'."},
    )
    exclude_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Module names or a regex of modules not to adapt."}
    )
    quasi: bool = field(default=False, metadata={"help": "qGOFT: free 2x2 blocks instead of rotation angles."})
    structure: str = field(default="tree", metadata={"help": "Pairing of the blocks: 'tree' (paper) or 'butterfly'."})
    depth: int = field(default=1, metadata={"help": "Number of stacked rotations, each with its own blocks."})
    pairing: str = field(
        default="index",
        metadata={"help": "Coordinate order under the structure: 'index' (paper), 'random' (control) or 'task'."},
    )
    pairing_seed: int = field(default=0, metadata={"help": "Seed of pairing='random'."})
    scaling: bool = field(default=False, metadata={"help": "GOFT*: also learn a per-feature scale (d parameters)."})
    orth_reg_weight: float = field(
        default=DEFAULT_ORTH_REG_WEIGHT,
        metadata={"help": "Weight of qGOFT's soft orthogonality penalty (paper: 1e-3 to 5e-2)."},
    )
    init_weights: bool = field(
        default=True, metadata={"help": "True: identity at init. False: random non-identity rotation (tests)."}
    )
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None, metadata={"help": "Layer indices to adapt (with layers_pattern)."}
    )
    layers_pattern: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "Name of the nn.ModuleList holding the layers, e.g. 'layers' or 'h'."}
    )
    fan_in_fan_out: bool = field(
        default=False, metadata={"help": "True if the target stores its weight as (in, out), like GPT-2's Conv1D."}
    )
    bias: str = field(default="none", metadata={"help": "Biases to train: 'none', 'all' or 'goft_only'."})
    modules_to_save: Optional[list[str]] = field(
        default=None, metadata={"help": "Modules besides the adapted ones to train and save, e.g. ['classifier']."}
    )
    goft_format_version: int = field(
        default=FORMAT_VERSION, metadata={"help": "Version of goft's saved adapter format (set by goft)."}
    )

    def __new__(cls, *args, **kwargs):
        # the dataclass __init__ would say only "unexpected keyword argument": name the closest field instead
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            hints = [
                f"{name!r} (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(name, known, 1))
                else repr(name)
                for name in unknown
            ]
            raise TypeError(f"GOFTConfig got unknown option(s) {', '.join(hints)}; its options are {sorted(known)}")
        return super().__new__(cls)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = GOFT_PEFT_TYPE
        version = self.goft_format_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise AdapterFileError(f"GOFTConfig.goft_format_version must be an integer >= 1, got {version!r}")
        if version > FORMAT_VERSION:
            raise AdapterFileError(
                f"this adapter was saved in goft format {version}, newer than the format {FORMAT_VERSION} this goft "
                "reads; upgrade goft to load it"
            )
        for name in ("quasi", "scaling", "init_weights", "fan_in_fan_out"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"GOFTConfig.{name} must be a bool (True or False), got {value!r}")
        if self.structure not in STRUCTURES:
            raise ValueError(
                f"GOFTConfig.structure must be one of {', '.join(map(repr, STRUCTURES))}, got {self.structure!r}"
            )
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"GOFTConfig.depth must be an integer >= 1, got {self.depth!r}")
        if self.pairing not in PAIRINGS:
            raise ValueError(
                f"GOFTConfig.pairing must be one of {', '.join(map(repr, PAIRINGS))}, got {self.pairing!r}"
            )
        if isinstance(self.pairing_seed, bool) or not isinstance(self.pairing_seed, int) or self.pairing_seed < 0:
            raise ValueError(f"GOFTConfig.pairing_seed must be an integer >= 0, got {self.pairing_seed!r}")
        weight = self.orth_reg_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"GOFTConfig.orth_reg_weight must be a number >= 0, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"GOFTConfig.orth_reg_weight must be a finite number >= 0, got {weight!r}")
        self.orth_reg_weight = float(weight)
        if not self.quasi and self.orth_reg_weight != DEFAULT_ORTH_REG_WEIGHT:
            warnings.warn(
                f"GOFTConfig.orth_reg_weight={weight!r} has no effect with quasi=False: strict GOFT's "
                "blocks are rotations, orthogonal by construction, and its penalty is always 0",
                stacklevel=3,
            )
        if self.bias not in BIAS_CHOICES:
            raise ValueError(f"GOFTConfig.bias must be one of {BIAS_CHOICES}, got {self.bias!r}")
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            raise ValueError("GOFTConfig: layers_to_transform cannot be used when target_modules is a regex str")
        if isinstance(self.target_modules, str) and self.layers_pattern is not None:
            raise ValueError("GOFTConfig: layers_pattern cannot be used when target_modules is a regex str")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("GOFTConfig: layers_pattern needs layers_to_transform as well")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, subfolder=None, **kwargs):
        """Load a saved GOFT config, refusing missing or unknown fields, and check the weights file next to it.

        peft's loader would drop unknown fields with a warning and fill missing ones with defaults; for goft a
        silently defaulted ``quasi`` or ``scaling`` means a different model, so both are errors here.
        """
        path = Path(pretrained_model_name_or_path) / (subfolder or "")
        config_file = path / CONFIG_NAME
        if config_file.is_file():
            saved = read_saved_config(path)
            known = {f.name for f in fields(cls)} | {"auto_mapping", "runtime_config"}
            unknown = sorted(set(saved) - known)
            if unknown:
                raise AdapterFileError(
                    f"{config_file} has unknown field(s) {unknown}; a GOFT config has {sorted(known)}"
                )
            version = saved.get("goft_format_version", 1)
            required = list(REQUIRED_SAVED_FIELDS) + [
                name
                for since, names in REQUIRED_SAVED_FIELDS_SINCE.items()
                if isinstance(version, int) and version >= since
                for name in names
            ]
            missing = [k for k in required if k not in saved]
            if missing:
                raise AdapterFileError(f"{config_file} lacks required field(s) {missing}")
            check_weights_file(path / SAFETENSORS_WEIGHTS_NAME)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)


# The fields that fix an adapter's form: which blocks exist, in which layers, and what they turn.  Adapters that
# differ in one cannot take each other's numbers (hotswap_adapter) or be combined (add_weighted_adapter).
FORM_FIELDS = ("structure", "depth", "quasi", "scaling", "pairing", "target_modules")


def form_difference(a: GOFTConfig, b: GOFTConfig, names: tuple[str, ...] = FORM_FIELDS):
    """The first of ``names`` in which two configs differ, as (name, a's value, b's value), or None; module lists
    compare as sets and are shown sorted."""

    def comparable(value):
        return sorted(value) if isinstance(value, (set, list, tuple)) else value

    for name in names:
        have, other = comparable(getattr(a, name)), comparable(getattr(b, name))
        if have != other:
            return name, have, other
    return None


def read_saved_config(adapter_dir: str | Path) -> dict:
    """The JSON object in ``adapter_dir/adapter_config.json``; AdapterFileError naming the file when it is missing,
    not JSON, or not an object."""
    config_file = Path(adapter_dir) / CONFIG_NAME
    if not config_file.is_file():
        raise AdapterFileError(f"{config_file} not found: is {adapter_dir} a saved adapter?")
    try:
        saved = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise AdapterFileError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(saved, dict):
        raise AdapterFileError(f"{config_file} must hold a JSON object, got {type(saved).__name__}")
    return saved


def check_weights_file(path: Path) -> None:
    """Read every tensor of a saved adapter once: a truncated or corrupted file becomes an AdapterFileError."""
    if not path.is_file():
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except Exception as err:  # safetensors raises its own SafetensorError (not a ValueError) for damaged files
        raise AdapterFileError(f"{path} is truncated or corrupted: {err}") from err
