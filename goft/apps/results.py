"""Results files of ``goft compare`` and ``goft instruct``: one JSON of runs, resumable, upgraded on load.

A results file is ``{"schema": 2, "task": ..., "setup": {...}, "runs": [{...}, ...]}``.  Each run is identified by
the values of the file's key fields (e.g. method, stage, seed, rate); a run already recorded is skipped on the next
invocation, and the file is rewritten atomically after every run, so an interrupted comparison continues where it
stopped.  ``setup`` holds the options every run of the file shares (model, data, sizes): runs of another setup are
refused, since their rows would be taken for these.

Files of an earlier schema are upgraded when they are read (:func:`upgrade`, the one place that knows old rows), so
the commands and the reports see every run in today's form; the upgraded rows are written back with the next run.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path

from . import files
from .configs import FinetuneConfig
from .errors import OptionError, OutputError
from .pretrained import MINILM_NAME, model_reference

SCHEMA_VERSION = 2
KINDS = ("compare", "instruct")  # goft compare's files (a classifier per run), goft instruct's (a causal LM)

# The options every run of one results file shares (its rows are keyed by the command's key fields alone): a file
# holds one comparison, of one model, data and budget.
COMPARE_SETUP_OPTIONS = (
    "model",
    "task",
    "train_file",
    "eval_file",
    "val_file",
    "val_fraction",
    "train_size",
    "batch_size",
    "max_length",
    "target_modules",
    "epochs",
)
INSTRUCT_SETUP_OPTIONS = (
    "model",
    "target_modules",
    "train_size",
    "eval_size",
    "val_size",
    "epochs",
    "batch_size",
    "orth_reg_weight",
    "lora_r",
    "forget_passages",
    "forget_tokens",
)

# The stages of the protocol (goft.apps.protocol), recorded with every run.
SWEEP, FINAL, UNSWEPT = "sweep", "final", "unswept"
# Runs recorded before the validated protocol were scored on the test split, at rates compared there.
LEGACY_STAGE = "test-scored (no validation)"
# The learning-rate schedule of instruct runs (the shared loop's), recorded with each; runs recorded before instruct
# used that loop trained at a constant rate.
INSTRUCT_SCHEDULE = "warmup 6% + linear decay"
LEGACY_SCHEDULE = "constant"


def upgrade(data: dict, kind: str) -> dict:
    """Bring ``data`` (a results file of ``kind``) to ``SCHEMA_VERSION`` in place and return it.

    Schema 1 (no ``schema`` field) left out what its runs did implicitly: every run trained on the CPU; a run
    without a stage was scored on test (``LEGACY_STAGE``); a compare run without a sweep was recorded as
    ``final`` (today ``unswept``); embedded models were named ``minilm`` (today ``goft:minilm``); instruct runs
    without a schedule trained at a constant rate on an fp32 base and had no validation split; files without a
    ``setup`` are judged by the options their first run recorded."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    version = data.get("schema", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise OutputError(f"results schema {version!r} is newer than this goft reads ({SCHEMA_VERSION}): upgrade goft")
    if version < 2:
        for run in data["runs"]:
            run.setdefault("device", "cpu")
            run.setdefault("stage", LEGACY_STAGE)
            if kind == "compare":
                run["model"] = model_reference(run["model"], run["model"])
            else:
                run.setdefault("schedule", LEGACY_SCHEDULE)
                run.setdefault("base_weights", "fp32")
                for unmeasured in ("val_accuracy", "base_val_accuracy", "val_examples"):  # before validation
                    run.setdefault(unmeasured, None)
        if kind == "compare":
            swept = {(r["method"], r["epochs"]) for r in data["runs"] if r["stage"] == SWEEP}
            for run in data["runs"]:
                if run["stage"] == FINAL and (run["method"], run["epochs"]) not in swept:
                    run["stage"] = UNSWEPT
        if "setup" not in data and data["runs"]:
            data["setup"] = _setup_recorded_by(data, kind)
        budgets = {r["epochs"] for r in data["runs"] if "epochs" in r}
        if kind == "compare" and "setup" in data and len(budgets) == 1:  # the budget joined the setup in schema 2
            data["setup"].setdefault("epochs", budgets.pop())
    data["schema"] = SCHEMA_VERSION
    return data


def _setup_recorded_by(data: dict, kind: str) -> dict:
    """The setup of a schema-1 file without one: what its first run recorded; compare's other options had their
    defaults then (the instruct file's are left unchecked)."""
    run = data["runs"][0]
    if kind == "compare":
        defaults = {f.name: f.default for f in fields(FinetuneConfig) if f.name in COMPARE_SETUP_OPTIONS}
        return {
            **defaults,
            "task": data.get("task"),
            "model": model_reference(run["model"], MINILM_NAME),
            "batch_size": run["batch_size"],
            "target_modules": run["target_modules"],
        }
    setup = {"train_size": run["train_examples"]} if "train_examples" in run else {}
    if run.get("eval_examples"):  # a sweep run reads no test sentences
        setup["eval_size"] = run["eval_examples"]
    return setup


def load(path: str | Path, kind: str) -> dict:
    """The results file at ``path`` (``{"runs": []}`` when there is none yet), upgraded to today's schema."""
    path = Path(path)
    if not path.is_file():
        return {"schema": SCHEMA_VERSION, "runs": []}
    data = files.read_json(path, OutputError, "a results file")
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise OutputError(f"{path} is not a results file (no 'runs' list)")
    return upgrade(data, kind)


class RunsFile:
    """A results file being added to: its runs, keyed by ``key_fields``, and its setup."""

    def __init__(self, path: str | Path, key_fields: Sequence[str], kind: str):
        self.path, self.key_fields = Path(path), tuple(key_fields)
        self.data = load(self.path, kind)

    @property
    def runs(self) -> list[dict]:
        return self.data["runs"]

    def key(self, run: dict) -> tuple:
        return tuple(run[name] for name in self.key_fields)

    def has(self, *key) -> bool:
        return any(self.key(run) == tuple(key) for run in self.runs)

    def check_setup(self, setup: dict) -> None:
        """Refuse to add runs of another ``setup`` (option -> value) than the file's, naming the first option that
        differs; the file then records ``setup`` with its next run."""
        for name, value in self.data.get("setup", {}).items():
            if setup.get(name) != value:
                raise OptionError(
                    name,
                    f"{setup.get(name)!r} differs from the runs in {self.path} ({value!r}): a "
                    "results file holds one comparison; pass another --results, or that file's "
                    "options",
                )
        self.data["setup"] = setup

    def add(self, run: dict, task: str) -> None:
        """Record one run and rewrite the file atomically."""
        self.runs.append(run)
        self.data["task"] = task
        files.write_json(self.path, self.data)


def best_rate_on_validation(sweep_runs: Iterable[dict], grid) -> float:
    """The rate of ``grid`` whose sweep run (one method's, already filtered) has the best ``val_accuracy``; ties go
    to the smaller rate."""
    scored = {r["lr"]: r["val_accuracy"] for r in sweep_runs if r["lr"] in grid}
    return max(sorted(scored), key=lambda lr: scored[lr])


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def group_runs(runs: list[dict], fields: Sequence[str]) -> dict[tuple, list[dict]]:
    """Runs grouped by the values of ``fields``, in order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[f] for f in fields), []).append(run)
    return groups


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align`` holds one 'l' or 'r' per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]
    return "\n".join(lines) + "\n"
