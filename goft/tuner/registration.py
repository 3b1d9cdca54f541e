"""GOFT's entry in peft's lookup tables: the one place that knows how peft finds a method."""

from __future__ import annotations

from peft import mapping

from .config import GOFT_PEFT_TYPE, GOFTConfig
from .model import GOFTModel


def register_with_peft() -> None:
    """Add GOFT to peft's lookup tables (config, tuner, prefix), in place; safe to call again.

    peft's ``register_peft_method`` only accepts names already in its ``PeftType`` enum, which cannot be extended, so
    goft inserts its own str-enum member (:data:`goft.tuner.config.GOFT_PEFT_TYPE`) into the same dict objects that
    every peft module holds.  ``tests/tuner/test_registration.py`` fails loudly if a peft upgrade moves these tables.
    """
    tables = {
        "PEFT_TYPE_TO_CONFIG_MAPPING": GOFTConfig,
        "PEFT_TYPE_TO_TUNER_MAPPING": GOFTModel,
        "PEFT_TYPE_TO_PREFIX_MAPPING": GOFTModel.prefix,
    }
    for table_name, value in tables.items():
        table = getattr(mapping, table_name, None)
        if not isinstance(table, dict):
            raise ImportError(
                f"goft cannot register with this peft version: peft.mapping.{table_name} is missing or not a dict"
            )
        existing = table.get(GOFT_PEFT_TYPE)
        if existing is not None and existing != value:
            raise ImportError(f"peft.mapping.{table_name} already maps 'GOFT' to {existing!r}")
        table[GOFT_PEFT_TYPE] = value
