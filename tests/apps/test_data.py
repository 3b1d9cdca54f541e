"""Data loading: users' files are validated with errors naming file and line; the split is fixed and stratified."""

import io
import json
import tarfile

import pytest

from goft.apps import data
from goft.apps.data import DataError, Dataset
from goft.apps.errors import OptionError


def write(path, text):
    path.write_text(text)
    return path


def test_csv_and_jsonl_user_files(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\nnice one,pos\nawful,neg\nok then,pos\n")
    evals = write(tmp_path / "eval.jsonl", '{"text": "great", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n')
    tr, ev = data.load_user_files(train, evals)
    assert tr.label_names == ("neg", "pos")
    assert tr.labels == [1, 0, 1] and ev.labels == [1, 0]
    assert ev.texts == ["great", "bad"]


def test_numeric_labels_sort_numerically(tmp_path):
    train = write(tmp_path / "t.csv", "text,label\na,10\nb,2\nc,-1\n")
    tr, _ = data.load_user_files(train, train)
    assert tr.label_names == ("-1", "2", "10")


@pytest.mark.parametrize(
    "content, message",
    [
        ("words,label\nhi,1\n", r"t\.csv:1: header has no 'text' column"),
        ("text,label\n", r"t\.csv: the file holds no examples"),
        ("", r"t\.csv: the file is empty \(expected a header row text,label, then examples\)"),
        ("text,label\nhi,1\n,0\n", r"t\.csv:3: missing 'text'"),
        ("text,label\nhi,1\nho,\n", r"t\.csv:3: missing 'label'"),
        ("text,label\nhi,1\nho,1\n", r"t\.csv: needs at least 2 distinct labels"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "t.csv", content)
    with pytest.raises(DataError, match=message):
        data.load_user_files(path, path)


def test_unknown_eval_label_names_file_and_line(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\na,0\nb,1\n")
    evals = write(
        tmp_path / "eval.jsonl",
        json.dumps({"text": "x", "label": 0}) + "\n" + json.dumps({"text": "y", "label": 2}) + "\n",
    )
    with pytest.raises(DataError, match=r"eval\.jsonl:2: unknown label '2'; the training file has \['0', '1'\]"):
        data.load_user_files(train, evals)


def test_bad_jsonl_and_types(tmp_path):
    bad = write(tmp_path / "b.jsonl", '{"text": "a", "label": 1}\n{not json}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: not valid JSON"):
        data.load_user_files(bad, bad)
    listy = write(tmp_path / "l.jsonl", '["a", 1]\n')
    with pytest.raises(DataError, match=r"l\.jsonl:1: expected a JSON object"):
        data.load_user_files(listy, listy)
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        data.load_user_files(write(tmp_path / "x.txt", "a"), write(tmp_path / "y.txt", "b"))
    with pytest.raises(DataError, match="no such file"):
        data.load_user_files(tmp_path / "missing.csv", tmp_path / "missing.csv")


def test_split_is_stratified_fixed_and_disjoint():
    ds = Dataset([f"s{i}" for i in range(100)], [0] * 70 + [1] * 30, ("a", "b"), "toy")
    train, test = data.split(ds)
    assert len(test) == 20 and len(train) == 80
    assert sum(test.labels) == 6 and sum(train.labels) == 24
    assert not set(train.texts) & set(test.texts)
    again_train, again_test = data.split(ds)
    assert again_test.texts == test.texts and again_train.texts == train.texts


def test_subset_is_seeded():
    ds = Dataset([str(i) for i in range(50)], [i % 2 for i in range(50)], ("a", "b"), "toy")
    assert ds.subset(10, 1).texts == ds.subset(10, 1).texts
    assert ds.subset(10, 1).texts != ds.subset(10, 2).texts
    assert ds.subset(None, 0) is ds and ds.subset(500, 0) is ds


def test_corrupted_source_archive_is_refused(tmp_path):
    member = data.CORPORA["polarity"].member
    buffer = io.BytesIO(b'"1","not the real corpus"\n')
    with tarfile.open(tmp_path / data.SOURCE_ARCHIVE, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(buffer.getvalue())
        tar.addfile(info, buffer)
    with pytest.raises(DataError, match="checksum mismatch"):
        data.corpus_path("polarity", root=tmp_path)
    assert not (tmp_path / "polarity-en-pang&lee2.csv").exists()  # nothing half-written is left behind


def test_unknown_task_and_corpus():
    with pytest.raises(OptionError, match="^task must be one of polarity, hedge, got 'sst2'"):
        data.load_task("sst2")  # the library names the field; the command line shows it as --task
    with pytest.raises(DataError, match="unknown corpus 'x'"):
        data.corpus_path("x")


@pytest.mark.slow
def test_real_corpora_download_verify_and_split():
    for task, (n_train, n_test) in {"polarity": (3200, 800), "hedge": (2400, 600)}.items():
        train, test = data.load_task(task)
        assert (len(train), len(test)) == (n_train, n_test)
        assert sum(test.labels) * 2 == len(test)
    assert len(data.load_corpus("reviews")) == 1500
