"""`goft merge` writes a checkpoint that plain transformers loads, with the unmerged adapter's generations."""

import json
import subprocess
import sys

import pytest
import torch
from toys import PROMPTS, adapted_llama

from goft.apps.cli import main


def test_goft_merge_writes_a_plain_checkpoint_with_equal_generations(tiny_llama, tmp_path):
    model = adapted_llama(tiny_llama, quasi=True, scaling=True).eval()
    want = model.generate(input_ids=PROMPTS, max_new_tokens=8, do_sample=False)
    model.save_pretrained(tmp_path / "adapter")
    torch.save({"prompts": PROMPTS, "want": want}, tmp_path / "io.pt")
    assert main(["merge", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged")]) == 0
    # a fresh interpreter that never imports goft
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "merged")!r}).eval()
io = torch.load({str(tmp_path / "io.pt")!r})
got = model.generate(input_ids=io["prompts"], max_new_tokens=8, do_sample=False)
assert "goft" not in sys.modules
assert torch.equal(got, io["want"]), (got, io["want"])
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_merge_refuses_to_overwrite(tiny_llama, tmp_path):
    adapted_llama(tiny_llama).save_pretrained(tmp_path / "adapter")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        main(["merge", str(tmp_path / "adapter"), "--output", str(tmp_path / "taken")])
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_merge_without_a_recorded_base_says_to_pass_base(tiny_llama, tmp_path):
    adapted_llama(tiny_llama).save_pretrained(tmp_path / "adapter")
    config_file = tmp_path / "adapter" / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": None}))
    with pytest.raises(SystemExit, match=r"records no base model \(base_model_name_or_path is None\); pass --base"):
        main(["merge", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged")])
    assert not (tmp_path / "merged").exists()


def test_a_base_without_a_tokenizer_gives_a_checkpoint_without_one_and_says_so(tiny_llama, tmp_path, capsys):
    adapted_llama(tiny_llama).save_pretrained(tmp_path / "adapter")
    assert (
        main(["merge", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged"), "--base", str(tiny_llama)])
        == 0
    )
    assert "has no tokenizer, so the merged checkpoint has none either" in capsys.readouterr().out
    assert not any("token" in p.name or p.name.startswith("vocab") for p in (tmp_path / "merged").iterdir())


def test_goft_export_lora_writes_a_lora_adapter_that_peft_alone_loads(tiny_llama, tmp_path):
    model = adapted_llama(tiny_llama, scaling=True).eval()
    want = model(input_ids=PROMPTS).logits
    model.save_pretrained(tmp_path / "adapter")
    torch.save({"prompts": PROMPTS, "want": want}, tmp_path / "io.pt")
    assert main(["export-lora", str(tmp_path / "adapter"), "--rank", "64", "--output", str(tmp_path / "lora")]) == 0
    report = json.loads((tmp_path / "lora" / "goft_export.json").read_text())
    assert report["source"]["peft_type"] == "GOFT" and report["worst_weight_relative_error"] < 1e-10
    script = f"""
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained({str(tiny_llama)!r})
model = PeftModel.from_pretrained(base, {str(tmp_path / "lora")!r}).eval()
io = torch.load({str(tmp_path / "io.pt")!r})
got = model(input_ids=io["prompts"]).logits
assert "goft" not in sys.modules and model.peft_config["default"].peft_type == "LORA"
assert ((got - io["want"]).norm() / io["want"].norm()) < 1e-4
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    with pytest.raises(SystemExit, match="rank must be a positive integer, got 0"):
        main(["export-lora", str(tmp_path / "adapter"), "--rank", "0", "--output", str(tmp_path / "x")])
