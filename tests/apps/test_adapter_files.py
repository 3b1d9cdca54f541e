"""The adapter directory: PEFT's file names, goft's class names, clear errors for a damaged labels file."""

import json

import peft
import pytest
from transformers import BertForSequenceClassification

import goft
from goft.apps import adapter_files
from goft.apps.errors import DataError


def test_a_written_classifier_adapter_reads_back_with_peft_and_its_class_names(tiny_checkpoint, tmp_path):
    base = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=3, ignore_mismatched_sizes=True)
    config = goft.GOFTConfig(target_modules=["query"], task_type="SEQ_CLS")
    model = peft.get_peft_model(base, config)
    adapter_files.write_adapter(model, tmp_path / "adapter", labels=["neg", "neu", "pos"])
    assert adapter_files.config_path(tmp_path / "adapter").is_file()
    assert adapter_files.weights_path(tmp_path / "adapter").is_file()
    assert adapter_files.read_config(tmp_path / "adapter")["peft_type"] == "GOFT"
    assert adapter_files.read_labels(tmp_path / "adapter") == {0: "neg", 1: "neu", 2: "pos"}
    assert adapter_files.saved_classes(tmp_path / "adapter") == 3
    assert (adapter_files.CONFIG_FILE, adapter_files.WEIGHTS_FILE) == (
        peft.utils.CONFIG_NAME,
        peft.utils.SAFETENSORS_WEIGHTS_NAME,
    )


def test_no_labels_file_is_none_and_a_malformed_one_names_itself(tmp_path):
    assert adapter_files.read_labels(tmp_path) is None
    (tmp_path / adapter_files.LABELS_FILE).write_text("{not json")
    with pytest.raises(DataError, match=r"labels.json is not a labels file \(not valid JSON"):
        adapter_files.read_labels(tmp_path)
    (tmp_path / adapter_files.LABELS_FILE).write_text(json.dumps(["neg", "pos"]))
    with pytest.raises(DataError, match="id2label"):
        adapter_files.read_labels(tmp_path)
