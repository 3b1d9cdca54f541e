"""Third-party log lines the ``goft`` command drops: lines on every run that say nothing about the user's work."""

from __future__ import annotations

import logging
import re


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


def drop_foreign_kernel_noise() -> None:
    """Install the filters of ``FOREIGN_KERNEL_NOISE`` on their loggers (once per logger)."""
    for name, pattern in FOREIGN_KERNEL_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))
