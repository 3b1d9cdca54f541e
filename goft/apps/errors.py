"""The applications' error family: a user's mistake or a missing resource, never a bug.

``goft.apps.cli`` turns each of these (and the library's own input errors) into one line on stderr and exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AppError(Exception):
    """Base of the errors the command line reports as a message, not a traceback."""


class OptionError(AppError, ValueError):
    """A bad option value.  ``option`` is the field name (``train_size``); the command line shows it as a flag."""

    def __init__(self, option: str, problem: str):
        self.option, self.problem = option, problem
        super().__init__(f"{option} {problem}")

    def as_flag(self) -> str:
        return f"--{self.option.replace('_', '-')} {self.problem}"


class DataError(AppError, ValueError):
    """Bad or unavailable data; the message names the file (and line) and what is wrong."""


class ModelUnavailableError(AppError, RuntimeError):
    """An embedded model's package is not installed, or a model directory is not a checkpoint."""


class OutputError(AppError, ValueError):
    """An output or results location that cannot be used as asked (exists, not empty, wrong kind of file)."""


class Interrupted(AppError):
    """Training stopped at the user's request (Ctrl-C) after a step; ``checkpoint`` holds it, if the run has one."""

    def __init__(self, checkpoint, step: int):
        self.checkpoint, self.step = checkpoint, step
        where = f"checkpoint written to {checkpoint}" if checkpoint is not None else "nothing saved (no --output)"
        super().__init__(f"stopped after step {step}; {where}")
