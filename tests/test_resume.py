"""Never lose work: a run killed mid-epoch, or while writing a checkpoint, resumes to the same adapter and metrics."""

import json
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

# Runs `goft finetune` in a child process; FAULT decides where the child dies abruptly (os._exit, no clean-up).
RUNNER = textwrap.dedent("""
    import os, sys, torch
    import goft.apps.io as io
    fault, at = sys.argv[1], int(sys.argv[2])
    steps = {"n": 0}
    if fault == "step":  # die right after optimizer step `at`, mid-epoch
        original_step = torch.optim.AdamW.step
        def step(self, *a, **k):
            result = original_step(self, *a, **k)
            steps["n"] += 1
            if steps["n"] == at:
                os._exit(75)
            return result
        torch.optim.AdamW.step = step
    elif fault == "checkpoint":  # die inside checkpoint write number `at`: temp file written, not yet renamed
        original_replace = os.replace
        def replace(src, dst):
            if str(dst).endswith("checkpoint.pt"):
                steps["n"] += 1
                if steps["n"] == at:
                    os._exit(75)
            return original_replace(src, dst)
        io.os.replace = replace
    from goft.apps.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def run_child(tmp_path, fault, at, args):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    return subprocess.run([sys.executable, str(script), fault, str(at), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("fault, at", [("step", 7), ("checkpoint", 3)])
def test_killed_run_resumes_to_the_same_result(tiny_checkpoint, toy_files, tmp_path, fault, at):
    train, evals = toy_files
    common = ["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--eval-file", str(evals),
              "--epochs", "3", "--batch-size", "16", "--method", "qgoft", "--save-every", "2", "--no-progress"]
    whole = run_child(tmp_path, "none", 0, [*common, "--output", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr
    killed = run_child(tmp_path, fault, at, [*common, "--output", str(tmp_path / "cut")])
    assert killed.returncode == 75, killed.stderr
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()  # the previous checkpoint survived any torn write
    resumed = run_child(tmp_path, "none", 0, [*common, "--output", str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert a["accuracy"] == b["accuracy"]
    assert a["curve"]["loss"] == b["curve"]["loss"]
    wa = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_resume_needs_output():
    from goft.apps.finetune import FinetuneConfig

    with pytest.raises(ValueError, match="^output is needed by --save-every and --resume"):
        FinetuneConfig(resume=True)
