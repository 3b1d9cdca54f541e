"""The package's version, as pyproject.toml gives it to the installed package (the one place it is written); read
without importing torch, so ``goft --version`` answers at once."""

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    try:
        return version("goft")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"
