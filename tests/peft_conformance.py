"""Run PEFT's own custom-model test suite with GOFT / qGOFT rows added to its case tables.

PEFT ships ``tests/test_custom_models.py`` in its source release.  This script

1. fetches the source release of the *installed* peft version into a cache (``pip download --no-binary``),
2. writes ``test_custom_models_extended.py`` beside PEFT's test files: PEFT's file with our rows inserted at the head
   of ``TEST_CASES`` and ``MULTIPLE_ACTIVE_ADAPTERS_TEST_CASES`` (each anchor must occur exactly once, so a PEFT
   upgrade that moves them fails loudly here), and
3. runs pytest on it with ``-k GOFT`` (the generated file's name has no "GOFT" in it, so only our rows run), at
   PEFT's default tolerances, and exits with pytest's status.

Usage: ``python tests/peft_conformance.py [--cache DIR] [-- extra pytest args]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
from pathlib import Path

GOFT_TEST_CASES = """
    ########
    # GOFT #
    ########
    ("Vanilla MLP 1 GOFT", "MLP", GOFTConfig, {"target_modules": "lin0"}),
    ("Vanilla MLP 2 GOFT", "MLP", GOFTConfig, {"target_modules": ["lin0"]}),
    ("Vanilla MLP 3 GOFT", "MLP", GOFTConfig, {"target_modules": ["lin0", "lin1"]}),
    ("Vanilla MLP 4 GOFT", "MLP", GOFTConfig, {"target_modules": ["lin0"], "modules_to_save": ["lin1"]}),
    ("Vanilla MLP 5 GOFT regex", "MLP", GOFTConfig, {"target_modules": r".*lin[01]$"}),
    ("Vanilla MLP 6 GOFT scaling", "MLP", GOFTConfig, {"target_modules": ["lin0", "lin1"], "scaling": True}),
    ("Vanilla MLP 7 qGOFT", "MLP", GOFTConfig, {"target_modules": ["lin0"], "quasi": True}),
    ("Vanilla MLP 8 qGOFT", "MLP", GOFTConfig, {"target_modules": ["lin0", "lin1"], "quasi": True}),
    ("Vanilla MLP 9 GOFT butterfly", "MLP", GOFTConfig,
     {"target_modules": ["lin0", "lin1"], "structure": "butterfly"}),
    ("Vanilla MLP 10 qGOFT depth 2", "MLP", GOFTConfig,
     {"target_modules": ["lin0", "lin1"], "quasi": True, "scaling": True, "depth": 2}),
    ("Conv2d 4 GOFT butterfly depth 2", "Conv2d", GOFTConfig,
     {"target_modules": ["conv2d", "lin0"], "structure": "butterfly", "depth": 2}),
    (
        "Vanilla MLP 9 qGOFT scaling",
        "MLP",
        GOFTConfig,
        {"target_modules": ["lin0"], "quasi": True, "scaling": True, "modules_to_save": ["lin1"]},
    ),
    ("Embedding + transformers Conv1D 1 GOFT", "EmbConv1D", GOFTConfig, {"target_modules": ["conv1d"]}),
    (
        "Embedding + transformers Conv1D 2 qGOFT",
        "EmbConv1D",
        GOFTConfig,
        {"target_modules": ["conv1d"], "quasi": True, "scaling": True},
    ),
    # torch convolutions (groups=1): R acts on the input channels
    ("Conv1d bigger GOFT", "Conv1dBigger", GOFTConfig, {"target_modules": ["conv1d"]}),
    ("Conv2d 1 GOFT", "Conv2d", GOFTConfig, {"target_modules": ["conv2d"]}),
    ("Conv2d 2 GOFT", "Conv2d", GOFTConfig, {"target_modules": ["conv2d", "lin0"]}),
    ("Conv2d 3 qGOFT", "Conv2d", GOFTConfig, {"target_modules": ["conv2d"], "quasi": True, "scaling": True}),
    ("Conv2d2 GOFT", "Conv2d2", GOFTConfig, {"target_modules": ["conv2d", "lin0"]}),
    ("Conv3d 1 GOFT", "Conv3d", GOFTConfig, {"target_modules": ["conv3d"]}),
    ("Conv3d 2 qGOFT", "Conv3d", GOFTConfig, {"target_modules": ["conv3d", "lin0"], "quasi": True}),
"""

GOFT_MULTI_ADAPTER_CASES = """
    (
        "GOFT Same",
        "goft",
        GOFTConfig,
        {"target_modules": ["lin0"], "init_weights": False},
        {"target_modules": ["lin0"], "init_weights": False},
    ),
    (
        "GOFT Different",
        "goft",
        GOFTConfig,
        {"target_modules": ["lin0"], "init_weights": False},
        {"target_modules": ["lin1"], "init_weights": False},
    ),
    (
        "qGOFT Same",
        "goft",
        GOFTConfig,
        {"target_modules": ["lin0"], "init_weights": False, "quasi": True, "scaling": True},
        {"target_modules": ["lin0"], "init_weights": False, "quasi": True, "scaling": True},
    ),
    (
        "qGOFT Different",
        "goft",
        GOFTConfig,
        {"target_modules": ["lin0"], "init_weights": False, "quasi": True},
        {"target_modules": ["lin1"], "init_weights": False, "quasi": True},
    ),
    (
        "GOFT butterfly and tree depth 2 Same",
        "goft",
        GOFTConfig,
        {"target_modules": ["lin0"], "init_weights": False, "structure": "butterfly"},
        {"target_modules": ["lin0"], "init_weights": False, "depth": 2},
    ),
"""

# PEFT lowers the learning rate of test_parameters_after_loading_model for methods whose free parameters blow up at
# lr 0.5 on its inputs (values up to 89): without this, qGOFT's free 2x2 blocks reach NaN after 3 SGD steps there
# (seen on "Vanilla MLP 8 qGOFT" and "Vanilla MLP 9 qGOFT scaling").  qGOFT joins that branch; strict GOFT does not.
LR_ANCHOR = "        elif issubclass(config_cls, (VBLoRAConfig, RandLoraConfig, UniLoraConfig, OSFConfig)):\n"
LR_PATCHED = (
    "        elif issubclass(config_cls, (VBLoRAConfig, RandLoraConfig, UniLoraConfig, OSFConfig)) or (\n"
    '            config_cls is GOFTConfig and config_kwargs.get("quasi")\n'
    "        ):\n"
)

PATCHES = [
    ("import torch\n", "import torch\nfrom goft import GOFTConfig  # importing goft registers GOFT with peft\n"),
    ("\nTEST_CASES = [\n", "\nTEST_CASES = [\n" + GOFT_TEST_CASES),
    (
        "\nMULTIPLE_ACTIVE_ADAPTERS_TEST_CASES = [\n",
        "\nMULTIPLE_ACTIVE_ADAPTERS_TEST_CASES = [\n" + GOFT_MULTI_ADAPTER_CASES,
    ),
    (LR_ANCHOR, LR_PATCHED),
]

GENERATED_NAME = "test_custom_models_extended.py"  # no "goft" in the name: -k GOFT must select rows, not the file


def peft_version() -> str:
    import peft

    return peft.__version__


def fetch_peft_tests(cache: Path, version: str) -> Path:
    """Return the ``tests`` directory of peft's source release ``version``, downloading it once into ``cache``."""
    root = cache / f"peft-{version}"
    tests = root / "tests"
    if (tests / "test_custom_models.py").is_file():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"peft-{version}.tar.gz"
    if not sdist.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"peft=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"peft-{version}/tests/")]
        tar.extractall(cache, members=members, filter="data")
    return tests


def generate(tests: Path) -> Path:
    """Write the extended test file (and what pytest needs to import it as a package) beside PEFT's tests."""
    source = (tests / "test_custom_models.py").read_text()
    for anchor, replacement in PATCHES:
        count = source.count(anchor)
        if count != 1:
            raise SystemExit(
                f"peft's test_custom_models.py has {count} occurrences of the anchor {anchor!r} (expected 1): "
                "this peft version changed its test tables; update tests/peft_conformance.py"
            )
        source = source.replace(anchor, replacement)
    target = tests / GENERATED_NAME
    target.write_text(source)
    (tests / "__init__.py").touch()  # PEFT's tests import their helpers relatively
    (tests / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("GOFT_CACHE", Path.home() / ".cache" / "goft")) / "peft-src",
        help="where peft's source release is kept (default: $GOFT_CACHE/peft-src or ~/.cache/goft/peft-src)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = parser.parse_args(argv)

    tests = fetch_peft_tests(args.cache, peft_version())
    target = generate(tests)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(target),
        "-c",
        str(tests / "pytest.ini"),
        "--rootdir",
        str(tests.parent),
        "-k",
        "GOFT",
        "-q",
        "-rs",
        "-p",
        "no:randomly",
        *args.pytest_args,
    ]
    print("running:", " ".join(cmd), flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(cmd, cwd=tests.parent, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
