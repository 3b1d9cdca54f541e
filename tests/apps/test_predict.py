"""goft predict, and a trained classifier's adapter in PEFT's own loader: the classes as named in training."""

import io
import json

import pytest
import torch

from goft.apps.cli import main


@pytest.fixture
def trained(finetune_args, tmp_path):
    out = tmp_path / "run"
    assert main([*finetune_args, "--output", str(out)]) == 0
    return out


def test_peft_s_auto_class_loads_the_adapter_with_its_labels(trained):
    from peft import AutoPeftModelForSequenceClassification, PeftModel

    import goft  # noqa: F401
    from goft.apps.predict import load_classifier

    auto = AutoPeftModelForSequenceClassification.from_pretrained(trained / "adapter").eval()
    saved = json.loads((trained / "adapter" / "labels.json").read_text())["id2label"]
    assert {str(k): v for k, v in auto.config.id2label.items()} == saved
    ours, tokenizer = load_classifier(trained / "adapter")
    assert isinstance(ours, PeftModel)
    batch = tokenizer(["good great fine", "bad awful poor"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(auto(**batch).logits, ours(**batch).logits, rtol=0, atol=1e-6)


def test_predict_labels_texts_from_arguments_a_file_or_stdin_and_agrees_with_the_merged_model(
    trained, tmp_path, capsys, monkeypatch
):
    assert main(["predict", str(trained), "good great fine", "bad awful poor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = set(json.loads((trained / "adapter" / "labels.json").read_text())["id2label"].values())
    assert len(lines) == 2 and all(line.split("\t")[0] in names for line in lines)
    assert [line.split("\t")[2] for line in lines] == ["good great fine", "bad awful poor"]
    assert all(0.0 < float(line.split("\t")[1]) <= 1.0 for line in lines)

    (tmp_path / "texts.txt").write_text("good great fine\nbad awful poor\n")
    assert (
        main(
            [
                "predict",
                str(trained / "adapter"),
                "--file",
                str(tmp_path / "texts.txt"),
                "--output",
                str(tmp_path / "p.jsonl"),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [line.split("\t")[0] for line in lines]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)

    assert main(["merge", str(trained / "adapter"), "--output", str(tmp_path / "merged")]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("good great fine\nbad awful poor\n"))
    assert main(["predict", str(tmp_path / "merged")]) == 0
    merged = capsys.readouterr().out.splitlines()
    assert [m.split("\t")[0] for m in merged] == [line.split("\t")[0] for line in lines]
    for m, a in zip(merged, lines, strict=True):
        assert abs(float(m.split("\t")[1]) - float(a.split("\t")[1])) < 1e-3


def test_predict_refuses_what_it_cannot_read_by_name(tmp_path):
    with pytest.raises(SystemExit, match=r"^goft predict: CLASSIFIER .*nowhere is not a directory"):
        main(["predict", str(tmp_path / "nowhere"), "text"])
    with pytest.raises(SystemExit, match=r"^goft predict: .* holds no adapter \(adapter_config\.json\)"):
        main(["predict", str(tmp_path), "text"])
    with pytest.raises(SystemExit, match=r"^goft predict: --file names no file"):
        main(["predict", str(tmp_path), "--file", str(tmp_path / "none.csv")])


def test_on_a_machine_without_the_recorded_base_the_portable_name_is_used(trained, tmp_path, capsys):
    config_file = trained / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(tmp_path / "elsewhere" / "tiny-bert")  # as on another machine
    config_file.write_text(json.dumps(config))
    assert main(["predict", str(trained), "good great fine"]) == 0
    assert capsys.readouterr().out.count("\t") == 2
    assert main(["merge", str(trained / "adapter"), "--output", str(tmp_path / "merged")]) == 0


def test_text_files_are_read_as_finetune_reads_its_data(tmp_path):
    from goft.apps.errors import DataError
    from goft.apps.predict import read_texts

    (tmp_path / "t.csv").write_text("text,label\nfine film,pos\ndull,neg\n")
    (tmp_path / "t.jsonl").write_text('{"text": "fine film"}\n\n{"text": "dull"}\n')
    (tmp_path / "t.txt").write_text("fine film\n\ndull\n")
    assert read_texts(tmp_path / "t.csv") == read_texts(tmp_path / "t.jsonl") == read_texts(tmp_path / "t.txt")
    (tmp_path / "bad.csv").write_text("words\nfine film\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: header has no 'text' column"):
        read_texts(tmp_path / "bad.csv")
    (tmp_path / "gap.jsonl").write_text('{"text": "fine"}\n{"text": ""}\n')
    with pytest.raises(DataError, match=r"gap\.jsonl:2: missing 'text'"):
        read_texts(tmp_path / "gap.jsonl")
