"""Third-party log lines the ``goft`` command drops: lines on every run that say nothing about the user's work."""

from __future__ import annotations

import logging
import re
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


# torchao, which transformers imports on every command, logs one line for each of its compiled extensions built for
# another platform (a CUDA architecture, another Python), and torch one deprecation for each enum torchao registers
# with pytree; bitsandbytes, on CPUs with AVX512-BF16, one line saying that the optional `kernels` package (a faster
# 4-bit CPU matmul fetched from a hub) is missing.  Lines on every run that say nothing about the user's work; only
# those messages are dropped.
FOREIGN_KERNEL_NOISE = {
    "torchao": r"^Failed to load .*_C_\w+.*\.so",
    "bitsandbytes.backends.cpu.ops": r"^Failed to load CPU gemm_4bit_forward from kernels-community",
    "torch.utils._pytree": r"is an Enum subclass and is now natively supported by torch\.compile",
}


# transformers deprecates ``is_gradient_checkpointing``, which peft reads on every wrap, load and merge: a
# FutureWarning each time, about code that is neither the user's nor goft's.
FOREIGN_WARNINGS = (r"`is_gradient_checkpointing` is deprecated",)


def drop_foreign_kernel_noise() -> None:
    """Install the filters of ``FOREIGN_KERNEL_NOISE`` on their loggers (once per logger), and ignore the
    ``FOREIGN_WARNINGS``."""
    for name, pattern in FOREIGN_KERNEL_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))
    for message in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
