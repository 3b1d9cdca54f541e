"""The ``goft`` command's entry point: options are parsed, and ``--help`` or a bad option answered, before torch loads.

Importing any module of the ``goft`` package runs ``goft/__init__``, which imports PEFT (and with it torch and
transformers, several seconds) to register the method.  The parser needs none of that: it lives in
:mod:`goft.apps.cli`, which imports only the standard library and light modules of goft.apps (parsers, configs,
errors, the method registry).  So this entry point binds the ``goft`` package object without running its
``__init__``, imports the parser, and runs ``goft/__init__`` in that same module object once the options are parsed,
before any command starts.  Afterwards the package is exactly what ``import goft`` gives.  (``python -m goft``
imports the package the usual way.)
"""

from __future__ import annotations

import importlib.util
import sys


def main(argv: list[str] | None = None) -> int:
    if "goft" in sys.modules:  # already imported by this process: nothing to defer
        from goft.apps import cli

        return cli.main(argv)
    spec = importlib.util.find_spec("goft")
    package = importlib.util.module_from_spec(spec)  # has __path__, so goft.apps.cli can be imported from it
    sys.modules["goft"] = package
    try:
        from goft.apps import cli
    except BaseException:
        del sys.modules["goft"]
        raise
    return cli.main(argv, before_command=lambda: spec.loader.exec_module(package))
