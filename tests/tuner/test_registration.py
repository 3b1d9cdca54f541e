"""goft's registration with peft: fails loudly if a peft upgrade moves the tables it relies on."""

import json

import peft
from peft import PeftConfig, mapping

import goft
from goft.tuner.config import GOFT_PEFT_TYPE


def test_installed_peft_is_the_supported_series():
    major, minor = (int(v) for v in peft.__version__.split(".")[:2])
    assert (major, minor) == (0, 21), f"goft is tested against peft 0.21.x, found {peft.__version__}"


def test_goft_is_in_every_peft_table():
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING[GOFT_PEFT_TYPE] is goft.GOFTConfig
    assert mapping.PEFT_TYPE_TO_TUNER_MAPPING[GOFT_PEFT_TYPE] is goft.GOFTModel
    assert mapping.PEFT_TYPE_TO_PREFIX_MAPPING[GOFT_PEFT_TYPE] == "goft_"
    # peft.peft_model holds the same dict objects, not copies
    from peft import peft_model

    assert peft_model.PEFT_TYPE_TO_TUNER_MAPPING is mapping.PEFT_TYPE_TO_TUNER_MAPPING


def test_plain_string_from_json_finds_the_tables():
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING["GOFT"] is goft.GOFTConfig
    assert GOFT_PEFT_TYPE == "GOFT" and GOFT_PEFT_TYPE.value == "GOFT"


def test_registration_is_idempotent():
    goft.register_with_peft()
    assert mapping.PEFT_TYPE_TO_CONFIG_MAPPING[GOFT_PEFT_TYPE] is goft.GOFTConfig


def test_config_round_trip_through_json(tmp_path):
    config = goft.GOFTConfig(target_modules=["q", "v"], quasi=True, scaling=True, orth_reg_weight=0.02)
    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "adapter_config.json").read_text())
    assert on_disk["peft_type"] == "GOFT"
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, goft.GOFTConfig)
    assert loaded.peft_type is GOFT_PEFT_TYPE
    assert (loaded.quasi, loaded.scaling, loaded.orth_reg_weight) == (True, True, 0.02)
    assert loaded.target_modules == {"q", "v"}


def test_fresh_process_loads_a_saved_adapter_after_import_goft(tmp_path):
    """PeftModel.from_pretrained in a new interpreter: works once goft is imported."""
    import subprocess
    import sys

    import torch
    from peft import get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 4))
    torch.save(base.state_dict(), tmp_path / "base.pt")
    model = get_peft_model(base, goft.GOFTConfig(target_modules=["0"], init_weights=False))
    x = torch.randn(3, 6)
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    model.save_pretrained(tmp_path / "adapter")
    script = f"""
import torch, goft
from peft import PeftModel
base = torch.nn.Sequential(torch.nn.Linear(6, 4))
base.load_state_dict(torch.load({str(tmp_path / "base.pt")!r}))
io = torch.load({str(tmp_path / "io.pt")!r})
model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r})
assert torch.equal(model(io["x"]), io["y"])
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
