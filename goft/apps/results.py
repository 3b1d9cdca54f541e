"""Results files of ``goft compare`` and ``goft instruct``: one JSON of runs, resumable, with summaries and tables.

A results file is ``{"task": ..., "setup": {...}, "runs": [{...}, ...]}``.  Each run is identified by the values of
the file's key fields (e.g. method and seed); a run already recorded is skipped on the next invocation, and the file
is rewritten atomically after every run, so an interrupted comparison continues where it stopped.  ``setup`` holds
the options every run of the file shares (model, data, sizes): runs of another setup are refused, since their rows
would be taken for these.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from . import files
from .errors import OptionError, OutputError


class RunsFile:
    """``key_defaults`` gives the value of a key field that older runs did not record (what they did implicitly)."""

    def __init__(self, path: str | Path, key_fields: Sequence[str], key_defaults: dict | None = None):
        self.path, self.key_fields = Path(path), tuple(key_fields)
        self.key_defaults = dict(key_defaults or {})
        self.data = {"runs": []}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise OutputError(f"{self.path} is not a results file (not valid JSON: {err})") from None
            if not isinstance(self.data, dict) or not isinstance(self.data.get("runs"), list):
                raise OutputError(f"{self.path} is not a results file (no 'runs' list)")

    @property
    def runs(self) -> list[dict]:
        return self.data["runs"]

    def key(self, run: dict) -> tuple:
        return tuple(run[name] if name in run else self.key_defaults[name] for name in self.key_fields)

    def has(self, *key) -> bool:
        return any(self.key(run) == tuple(key) for run in self.runs)

    def check_setup(self, setup: dict, older_setup: Callable[[dict], dict]) -> None:
        """Refuse to add runs of another ``setup`` (option -> value) than the file's, naming the first option that
        differs; the file then records ``setup`` with its next run.  A file from before setups were recorded is
        judged by ``older_setup(first run)``: the options its runs did record."""
        recorded = self.data.get("setup")
        if recorded is None:
            recorded = older_setup(self.runs[0]) if self.runs else {}
        for name, value in recorded.items():
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


def group_runs(runs: list[dict], fields: Sequence[str], defaults: dict | None = None) -> dict[tuple, list[dict]]:
    """Runs grouped by the values of ``fields`` (``defaults`` for fields a run lacks), in order of first appearance."""
    defaults = defaults or {}
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[f] if f in run else defaults[f] for f in fields), []).append(run)
    return groups


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align`` holds one 'l' or 'r' per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]
    return "\n".join(lines) + "\n"
