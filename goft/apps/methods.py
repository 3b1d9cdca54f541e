"""The one registry of fine-tuning methods the commands know: run name -> label, PEFT config, default learning rates.

``finetune``, ``compare``, ``instruct`` and ``bench`` all read this table; a new method is one entry here.

Learning rates (AdamW, 6% warmup, linear decay), for sequence classification with a MiniLM-sized encoder:
``lr`` is the centre of ``goft compare``'s sweep (kept fixed, so the sweeps recorded in results files stay on the
grid); ``chosen_lr`` is the rate those sweeps chose on validation on both embedded tasks (polarity and hedge, 3
epochs; the README's Results), set only where the two tasks agreed.  :func:`default_lr` gives ``goft finetune``'s
default: the chosen rate of the entry that trains the same thing, else ``lr``.  ``instruct_lr`` is the centre of
``goft instruct``'s sweep on SmolLM2-135M (None: not offered there; kept fixed like ``lr``), and
``instruct_chosen_lr`` the rate that sweep chose on validation (results/smollm2-instruct.json, at instruct's default
LoRA rank 8 and λ 1e-2); :func:`instruct_default_lr` gives ``goft instruct --no-sweep``'s default.  ``budget`` says
what the method's parameter count is meant to match, where it is meant to match something.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import OptionError


@dataclass(frozen=True)
class Method:
    name: str  # the run name: CLI value and results key
    label: str  # for tables and plots
    family: str  # goft | lora | oft | boft | head | full
    lr: float
    instruct_lr: Optional[float] = None
    chosen_lr: Optional[float] = None
    instruct_chosen_lr: Optional[float] = None
    options: dict = field(default_factory=dict)  # fixed options of the family, e.g. {"quasi": True}, {"r": 8}
    budget: str = ""

    @property
    def adapts(self) -> bool:
        """True for PEFT adapters; False for head-only and full fine-tuning."""
        return self.family not in ("head", "full")

    def peft_config(
        self,
        target_modules,
        task_type: Optional[str] = None,
        identity_init: bool = True,
        orth_reg_weight: float = 1e-2,
        lora_r: int = 8,
        structure: str = "tree",
        depth: int = 1,
        pairing: str = "index",
    ):
        """The PEFT config of this method.  ``identity_init=False`` asks for a random, non-identity adapter (bench);
        ``lora_r`` is the rank of the plain ``lora`` method (the ``lora_rN`` runs fix theirs); ``structure`` and
        ``depth`` are GOFT's pairing (entries such as ``goft_butterfly`` fix theirs)."""
        # imported here, not at the top: the command line reads this table to build its --help
        from peft import BOFTConfig, LoraConfig, OFTConfig

        from ..tuner.config import GOFTConfig

        common: dict[str, Any] = {"target_modules": target_modules}
        if task_type is not None:
            common["task_type"] = task_type
        if self.family == "goft":  # an entry's own options (e.g. its λ) win over the caller's defaults
            options = {
                "orth_reg_weight": orth_reg_weight,
                "init_weights": identity_init,
                "structure": structure,
                "depth": depth,
                "pairing": pairing,
                **self.options,
            }
            return GOFTConfig(**options, **common)
        if self.family == "lora":
            r = self.options.get("r", lora_r)
            return LoraConfig(r=r, lora_alpha=2 * r, init_lora_weights=identity_init, **common)
        if self.family == "oft":
            return OFTConfig(init_weights=identity_init, **common)
        if self.family == "boft":
            return BOFTConfig(init_weights=identity_init, **common)
        raise ValueError(f"{self.name} is not a PEFT adapter")


METHODS = {
    m.name: m
    for m in (
        Method("goft", "GOFT", "goft", lr=1e-2, instruct_lr=3e-3, chosen_lr=0.018, instruct_chosen_lr=0.00167),
        Method("goft_scaling", "GOFT* (scaling)", "goft", lr=1e-2, chosen_lr=0.018, options={"scaling": True}),
        Method(
            "qgoft", "qGOFT", "goft", lr=1e-2, instruct_lr=5e-3, instruct_chosen_lr=0.000909, options={"quasi": True}
        ),
        Method("qgoft_l3", "qGOFT λ=1e-3", "goft", lr=1e-2, options={"quasi": True, "orth_reg_weight": 1e-3}),
        Method(
            "goft_butterfly", "GOFT butterfly", "goft", lr=1e-2, chosen_lr=0.00556, options={"structure": "butterfly"}
        ),
        Method("goft_tree_depth2", "GOFT tree, depth 2", "goft", lr=1e-2, options={"depth": 2}),
        Method("goft_task", "GOFT, task pairing", "goft", lr=1e-2, options={"pairing": "task"}),
        Method(
            "goft_butterfly_task",
            "GOFT butterfly, task pairing",
            "goft",
            lr=1e-2,
            chosen_lr=0.00182,
            options={"structure": "butterfly", "pairing": "task"},
        ),
        Method(
            "goft_random", "GOFT, random pairing", "goft", lr=1e-2, chosen_lr=0.00556, options={"pairing": "random"}
        ),
        Method(
            "qgoft_butterfly", "qGOFT butterfly", "goft", lr=1e-2, options={"quasi": True, "structure": "butterfly"}
        ),
        Method("lora", "LoRA (rank --lora-r)", "lora", lr=2e-3, instruct_lr=1e-3, instruct_chosen_lr=0.000182),
        Method("lora_r8", "LoRA r=8", "lora", lr=2e-3, chosen_lr=0.00111, options={"r": 8}),
        Method(
            "lora_r2",
            "LoRA r=2",
            "lora",
            lr=2e-3,
            chosen_lr=0.0036,
            options={"r": 2},
            budget="qGOFT's parameter count",
        ),
        Method("lora_r1", "LoRA r=1", "lora", lr=2e-3, chosen_lr=0.00111, options={"r": 1}),
        Method("lora_r4", "LoRA r=4", "lora", lr=2e-3, chosen_lr=0.00111, options={"r": 4}),
        Method("oft", "OFT (PEFT, block 32)", "oft", lr=5e-3, instruct_lr=3e-4, instruct_chosen_lr=0.000167),
        Method("boft", "BOFT (PEFT)", "boft", lr=5e-3),
        Method("head", "head only", "head", lr=5e-3),
        Method("full", "full fine-tuning", "full", lr=5e-5),
    )
}

FINETUNE_METHODS = ("goft", "qgoft", "lora", "oft", "boft", "head", "full")
COMPARE_DEFAULT = ("goft", "goft_scaling", "qgoft", "qgoft_l3", "lora_r8", "lora_r2", "oft", "boft", "head")
INSTRUCT_METHODS = tuple(name for name, m in METHODS.items() if m.instruct_lr is not None)


# The options a family's entries leave at their defaults: GOFTConfig's, and LoRA's rank in goft's commands (a test
# checks them against those classes, which are not imported here: the command line reads this module for --help).
FAMILY_DEFAULTS = {
    "goft": {
        "structure": "tree",
        "depth": 1,
        "pairing": "index",
        "quasi": False,
        "scaling": False,
        "orth_reg_weight": 1e-2,
    },
    "lora": {"r": 8},
}


def _trains(entry: Method, **setting) -> tuple:
    """What an entry trains with the caller's ``setting`` applied (the entry's own options win, as in peft_config)."""
    return entry.family, sorted({**FAMILY_DEFAULTS.get(entry.family, {}), **setting, **entry.options}.items())


def chosen_lr(name: str, **setting) -> Optional[float]:
    """The rate chosen on validation for the entry ``name`` with ``setting`` (GOFT's structure, depth and λ, LoRA's
    r): the ``chosen_lr`` of an entry that trains the same thing (``lora`` with r=2 takes ``lora_r2``'s, ``goft``
    with structure="butterfly" takes ``goft_butterfly``'s); None where no sweep chose one."""
    wanted = _trains(METHODS[name], **setting)
    return next((m.chosen_lr for m in METHODS.values() if m.chosen_lr is not None and _trains(m) == wanted), None)


def default_lr(name: str, **setting) -> float:
    """``goft finetune``'s default rate: :func:`chosen_lr`, else the entry's ``lr``."""
    chosen = chosen_lr(name, **setting)
    return METHODS[name].lr if chosen is None else chosen


def instruct_default_lr(name: str) -> float:
    """``goft instruct``'s rate without a sweep: the rate its validation sweep chose, else the sweep's centre."""
    entry = METHODS[name]
    return entry.instruct_lr if entry.instruct_chosen_lr is None else entry.instruct_chosen_lr


def get_method(name: str, allowed=None, option: str = "method") -> Method:
    """The registry entry ``name``; an OptionError naming ``option``, the allowed names and ``name`` otherwise."""
    allowed = tuple(METHODS) if allowed is None else tuple(allowed)
    if name not in allowed:
        raise OptionError(option, f"must be one of {', '.join(allowed)}, got {name!r}")
    return METHODS[name]


def method_list(text: str, allowed, option: str = "methods") -> list[str]:
    """A comma-separated list of run names, each checked against ``allowed``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise OptionError(option, f"needs at least one of {', '.join(allowed)}")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise OptionError(option, f"has unknown {unknown}; allowed: {', '.join(allowed)}")
    return names


def wrap(model, config):
    """``peft.get_peft_model`` without the warnings PEFT's baselines print on CPU (e.g. BOFT's missing CUDA kernel)."""
    from peft import get_peft_model  # lazily, as in Method.peft_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def is_head_parameter(name: str) -> bool:
    """True for a classifier head's parameters: transformers names them ``classifier`` or ``score``."""
    parts = name.split(".")
    return "classifier" in parts or "score" in parts


def count_parameters(model, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def adapter_parameters(model) -> int:
    """Trainable parameters outside the classifier head."""
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not is_head_parameter(n))
