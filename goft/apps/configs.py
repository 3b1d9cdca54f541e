"""The options of the training commands, each stated once: a dataclass field holds its default, its help and (in
``__post_init__``) its check; the command line builds its options from these fields (:mod:`goft.apps.parsers`), so
a default is a one-line change here and ``--help`` shows it.

:class:`RunOptions` holds what ``finetune`` and ``instruct`` share; :class:`FinetuneConfig` (``goft finetune`` and
each run of ``goft compare``) and :class:`InstructConfig` (each run of ``goft instruct``) add their own fields and
set their own defaults.  Nothing here needs torch or PEFT: the ``goft`` command checks options with it before they
load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

from ..ops.pairing import PAIRINGS, STRUCTURES
from .errors import OptionError
from .methods import (
    FINETUNE_METHODS,
    INSTRUCT_METHODS,
    METHODS,
    chosen_lr,
    default_lr,
    get_method,
    instruct_default_lr,
)

VAL_FRACTION = 0.1  # of the training split, set aside (stratified, seed-fixed) for validation
TASKS = ("polarity", "hedge")  # the embedded classification tasks (goft.apps.data)
BASE_WEIGHTS = ("fp32", "int8")  # int8: torchao int8 weight-only linear layers, through transformers' TorchAoConfig
DEVICES = ("cpu", "cuda", "cuda:N")
# What goft finetune writes into its --output: a folder holding anything else is the user's, not a run's.
RUN_FILES = frozenset({"adapter", "head.safetensors", "model", "curve.png", "metrics.json", "checkpoint.pt"})


def comma_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; empty -> None."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    return names or None


def check_output(path: Path, option: str = "output") -> None:
    """An output folder (of ``--option``) must be a folder, or not exist yet with no file in the way; checked
    before any work."""
    for place in (path, *path.parents):
        if place.exists() and not place.is_dir():
            where = "is a file" if place == path else f"is inside {place}, which is a file"
            raise OptionError(option, f"{path} {where}: name a folder")


def field_default(config: type, name: str):
    """The default of field ``name`` of the dataclass ``config`` (what its option shows)."""
    return next(f.default for f in fields(config) if f.name == name)


def _entries(folder: Path) -> list[Path]:
    """What a folder holds, hidden files (atomic writes in progress) aside; nothing when it does not exist."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def _written_by_a_run(path: Path) -> bool:
    """Whether ``path``, in an output folder, is what goft finetune writes there (a metrics.json must be goft's)."""
    if path.name not in RUN_FILES:
        return False
    if path.name != "metrics.json":
        return True
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(metrics, dict) and {"method", "config", "curve"} <= metrics.keys()


def option(
    default: Any,
    help: str,
    parse: Optional[Callable[[str], Any]] = None,
    shown: str | Callable[[], str] | None = None,
    flag: Optional[str] = None,
    choices: Optional[Callable[[], tuple]] = None,
):
    """A config field and what its command-line option says: ``help``; ``parse`` turns the option's text into the
    value (default: the default's type, else str); ``shown`` names a default that its value does not say (a callable
    when it is computed); ``flag`` replaces ``--field-name``; ``choices`` gives the allowed values."""
    metadata = {"help": help, "parse": parse, "shown": shown, "flag": flag, "choices": choices}
    return field(default=default, metadata=metadata)


def _finetune_lr_default() -> str:
    rates = [f"{name} {default_lr(name):g}{'*' if chosen_lr(name) is not None else ''}" for name in FINETUNE_METHODS]
    butterfly = f"{default_lr('goft', structure='butterfly'):g}*"
    return f"per method, * chosen on validation: {', '.join(rates)}; goft with --structure butterfly {butterfly}"


@dataclass
class RunOptions:
    """What every training run takes; the options that decide what is trained are part of its checkpoint's
    identity (:func:`goft.apps.loop.run_identity`)."""

    method: str = option("goft", "a run name of the method registry (goft.apps.methods.METHODS)")
    model: Optional[str] = option(None, "local transformers checkpoint directory, or an embedded model's name")
    target_modules: Optional[list[str]] = option(
        None, "comma-separated module names to adapt", parse=comma_list, shown="all linear layers of the encoder"
    )
    train_size: Optional[int] = option(None, "use only this many training examples (seeded)", parse=int)
    epochs: int = option(3, "training epochs")
    batch_size: int = option(32, "batch size")
    lr: Optional[float] = option(None, "AdamW learning rate", parse=float, shown="the method's")
    seed: int = option(0, "random seed")
    orth_reg_weight: float = option(1e-2, "qGOFT penalty weight λ")
    lora_r: int = option(8, "LoRA rank for --method lora")
    output: Optional[str] = option(None, "directory for what the run writes; None keeps nothing")
    save_every: int = option(0, "also checkpoint every N optimizer steps (it is always written at epoch ends)")
    resume: bool = option(False, "continue an interrupted run from its checkpoint (same options and seed)")
    overwrite: bool = option(False, "replace an earlier run's checkpoint in --output instead of refusing")
    progress: bool = option(True, "no progress bar", flag="--no-progress")
    # False for runs that only choose a learning rate: the test split stays unread (set by the protocol, no option)
    evaluate_test: bool = True
    device: str = option("cpu", "where to train: cpu, cuda or cuda:N; under torchrun, cuda is each process's own GPU")

    ALLOWED_METHODS: ClassVar[tuple] = tuple(METHODS)
    POSITIVE: ClassVar[tuple] = ("epochs", "batch_size", "lora_r")  # positive integers
    HELP: ClassVar[dict] = {}  # a command's own wording of a shared option

    def __post_init__(self):
        get_method(self.method, self.ALLOWED_METHODS)
        for name in self.POSITIVE:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionError(name, f"must be a positive integer, got {value!r}")
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise OptionError("save_every", f"must be an integer >= 0, got {self.save_every!r}")
        if (self.save_every or self.resume) and not self.output:
            raise OptionError("output", "is needed by --save-every and --resume (where the checkpoint lives)")
        if self.lr is not None and not (self.lr > 0):
            raise OptionError("lr", f"must be a positive number, got {self.lr!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise OptionError("device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.output is not None:
            check_output(Path(self.output))
        # (whether this machine has the device is asked of torch when the run starts: goft.apps.devices)


@dataclass
class FinetuneConfig(RunOptions):
    """One ``goft finetune`` run (and each run of ``goft compare``): a sequence classifier on a task or files."""

    method: str = option(
        "goft",
        "goft, qgoft, lora, oft, boft (PEFT), head (classifier only), full, or any run name of goft compare",
        choices=lambda: tuple(METHODS),
    )
    task: Optional[str] = option("polarity", "embedded task: polarity or hedge")
    train_file: Optional[str] = option(None, "your own training data: .csv/.tsv (header text,label) or .jsonl")
    eval_file: Optional[str] = option(None, "your own test data, same format (with --train-file)")
    val_file: Optional[str] = option(
        None, "your own validation data, same format", shown="set --val-fraction of --train-file aside"
    )
    val_fraction: float = option(
        VAL_FRACTION, "share of the training data set aside, stratified and seed-fixed, for validation"
    )
    max_length: int = option(64, "max tokens per example")
    structure: str = option(
        "tree",
        "GOFT's pairing for --method goft/qgoft: tree (the paper's, d-1 blocks) or butterfly "
        "(about (d/2)·log2 d blocks)",
    )
    depth: int = option(1, "stacked GOFT rotations, each with its own blocks")
    pairing: str = option(
        "index",
        "which coordinates GOFT's blocks turn: index (the paper's order), random (a seeded permutation per layer, "
        "a control) or task (chosen per layer from --calibration-batches training batches before training)",
        choices=lambda: PAIRINGS,
    )
    calibration_batches: int = option(8, "training batches that choose --pairing task's coordinate order")

    POSITIVE: ClassVar[tuple] = ("epochs", "batch_size", "max_length", "lora_r", "depth", "calibration_batches")
    HELP: ClassVar[dict] = {
        "model": ("local transformers checkpoint directory, or minilm", "the embedded MiniLM"),
        "lr": ("AdamW learning rate (compare without it sweeps four rates per method)", _finetune_lr_default),
        "output": (
            "directory for the adapter (or head, or model), metrics.json, curve.png and checkpoint.pt",
            "a new runs/METHOD-TASK-YYYYmmdd-HHMMSS",
        ),
        "save_every": ("also write OUTPUT/checkpoint.pt every N steps (it is always written at epoch ends)", None),
        "resume": ("continue an interrupted run from OUTPUT/checkpoint.pt (same options and seed)", None),
        "overwrite": ("start over in an --output that holds an earlier run's checkpoint, replacing it", None),
    }

    def __post_init__(self):
        super().__post_init__()
        if self.train_file is not None:
            self.task = None  # the data are the user's files: no embedded task is involved
        if self.structure not in STRUCTURES:
            raise OptionError("structure", f"must be one of {', '.join(STRUCTURES)}, got {self.structure!r}")
        family = METHODS[self.method].family
        for name, shapes in (("lora_r", "lora"), ("orth_reg_weight", "goft")):  # a setting another method ignores
            if getattr(self, name) != field_default(type(self), name) and family != shapes:
                what = "LoRA's rank (--method lora)" if shapes == "lora" else "qGOFT's penalty (--method qgoft)"
                raise OptionError(name, f"sets {what}, not {self.method}'s")
        if self.pairing not in PAIRINGS:
            raise OptionError("pairing", f"must be one of {', '.join(PAIRINGS)}, got {self.pairing!r}")
        shaping = {"structure": "tree", "depth": 1, "pairing": "index"}
        changed = [name for name, default in shaping.items() if getattr(self, name) != default]
        if changed and METHODS[self.method].family != "goft":
            raise OptionError(changed[0], f"shapes GOFT's rotation (--method goft or qgoft), not {self.method}")
        if self.train_size is not None and self.train_size < 2:
            raise OptionError("train_size", f"must be at least 2, got {self.train_size}")
        if (self.train_file is None) != (self.eval_file is None):
            raise OptionError("train_file", "and --eval-file go together: give both or neither")
        if self.val_file is not None and self.train_file is None:
            raise OptionError("val_file", "goes with --train-file and --eval-file (embedded tasks carve their own)")
        if not 0 < self.val_fraction < 1:
            raise OptionError("val_fraction", f"must be between 0 and 1 (exclusive), got {self.val_fraction!r}")
        if self.task is not None and self.task not in TASKS:
            raise OptionError("task", f"must be one of {', '.join(TASKS)}, got {self.task!r}")
        for name in ("train_file", "eval_file", "val_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise OptionError(name, f"names no file: {path}")
        if self.output is not None and not (self.overwrite or self.resume):
            foreign = sorted(p.name for p in _entries(Path(self.output)) if not _written_by_a_run(p))
            if foreign:
                raise OptionError(
                    "output",
                    f"{self.output} holds files that are not a goft run's ({', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}): choose a new or empty folder, or pass --overwrite",
                )

    @property
    def learning_rate(self) -> float:
        """``lr``, or the method's default for this setting (see :func:`goft.apps.methods.default_lr`)."""
        return self.lr if self.lr is not None else default_lr(self.method, **self.method_setting)

    @property
    def method_setting(self) -> dict:
        """The options of this config that shape the method's adapter (its family's, not the others')."""
        entry = METHODS[self.method]
        if entry.family == "goft":  # λ only weighs qGOFT's penalty: strict GOFT trains the same thing at any λ
            setting = {"structure": self.structure, "depth": self.depth, "pairing": self.pairing}
            return {**setting, "orth_reg_weight": self.orth_reg_weight} if entry.options.get("quasi") else setting
        return {"r": self.lora_r} if entry.family == "lora" else {}

    @property
    def method_label(self) -> str:
        """The method, with GOFT's pairing when it is not the paper's tree: ``goft (butterfly, depth 2, task)``."""
        parts = [self.structure] if self.structure != "tree" else []
        parts += [f"depth {self.depth}"] if self.depth != 1 else []
        parts += [f"{self.pairing} pairing"] if self.pairing != "index" else []
        return f"{self.method} ({', '.join(parts)})" if parts else self.method

    @property
    def data_name(self) -> str:
        """What the run learns from: the embedded task's name, or ``user:<training file>``."""
        return self.task if self.train_file is None else f"user:{self.train_file}"


@dataclass
class InstructConfig(RunOptions):
    """One ``goft instruct`` run: a causal LM tuned on polarity-instruct, scored by generation and forgetting."""

    base_weights: str = option(
        "fp32",
        "fp32, or int8: quantize the base's linear layers on load (torchao int8 weight-only, through transformers) "
        "and tune on that; the results name it",
    )
    train_size: int = option(512, "training sentences")
    eval_size: int = option(200, "test sentences")
    val_size: int = option(
        100, "validation prompts that choose the rate, from the 10% of the training split set aside"
    )
    epochs: int = option(1, "epochs")
    batch_size: int = option(8, "batch size")
    forget_passages: int = option(48, "held-out passages that measure forgetting")
    forget_tokens: int = option(128, "tokens per held-out passage")

    ALLOWED_METHODS: ClassVar[tuple] = INSTRUCT_METHODS
    POSITIVE: ClassVar[tuple] = ("train_size", "eval_size", "val_size", "epochs", "batch_size", "lora_r")
    HELP: ClassVar[dict] = {
        "model": ("local causal-LM directory, or smollm2", "embedded SmolLM2"),
        "output": ("keep each run's checkpoint and adapter in OUTPUT/<method>-seed<N>-lr<rate>[-sweep]/", "none"),
        "save_every": (
            "also write OUTPUT/<run>/checkpoint.pt every N steps (it is always written at epoch ends)",
            None,
        ),
        "resume": ("continue an interrupted run from OUTPUT/<run>/checkpoint.pt (same options and seed)", None),
        "overwrite": ("start a run over when OUTPUT/<run>/ holds an unfinished run's checkpoint, replacing it", None),
    }

    def __post_init__(self):
        super().__post_init__()
        if self.base_weights not in BASE_WEIGHTS:
            raise OptionError("base_weights", f"must be one of {', '.join(BASE_WEIGHTS)}, got {self.base_weights!r}")
        if self.device != "cpu" and self.base_weights != "fp32":
            raise OptionError(
                "base_weights",
                f"{self.base_weights} loads the base for the CPU (torchao weight-only); "
                "use --device cpu with it, or fp32 on a GPU",
            )

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else instruct_default_lr(self.method)

    @property
    def run_dir(self) -> Optional[Path]:
        """This run's directory under ``output``: one per (method, base weights, seed, learning rate, and whether it
        is a sweep run, which never reads the test sentences)."""
        if self.output is None:
            return None
        quantized = "" if self.base_weights == "fp32" else f"-{self.base_weights}"
        sweep = "" if self.evaluate_test else "-sweep"
        return Path(self.output) / f"{self.method}{quantized}-seed{self.seed}-lr{self.learning_rate:g}{sweep}"
