"""The one training loop: a killed run resumes to the same result, torchrun matches one process, instruct shares it."""

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from goft.apps.errors import OptionError

# Runs `goft finetune` in a child process; FAULT decides where the child dies abruptly (os._exit, no clean-up).
RUNNER = textwrap.dedent("""
    import os, sys, torch
    import goft.apps.files as files
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
        files.os.replace = replace
    from goft.apps.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def run_child(tmp_path, fault, at, args):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    return subprocess.run(
        [sys.executable, str(script), fault, str(at), *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("fault, at", [("step", 7), ("checkpoint", 3)])
def test_killed_run_resumes_to_the_same_result(tiny_checkpoint, toy_files, tmp_path, fault, at):
    train, evals = toy_files
    common = [
        "finetune",
        "--model",
        str(tiny_checkpoint),
        "--train-file",
        str(train),
        "--eval-file",
        str(evals),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--method",
        "qgoft",
        "--save-every",
        "2",
        "--no-progress",
    ]
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
    from goft.apps.configs import FinetuneConfig

    with pytest.raises(ValueError, match="^output is needed by --save-every and --resume"):
        FinetuneConfig(resume=True)


# ---------------------------------------------------------------------------------------------------------------------
# Data parallelism under torchrun (2 processes, gloo on CPU)
# ---------------------------------------------------------------------------------------------------------------------


def finetune_args(tiny_checkpoint, toy_files, output):
    train, evals = toy_files
    return [
        "finetune",
        "--model",
        str(tiny_checkpoint),
        "--train-file",
        str(train),
        "--eval-file",
        str(evals),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--method",
        "qgoft",
        "--output",
        str(output),
        "--no-progress",
    ]


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tiny_checkpoint, toy_files, tmp_path):
    args = finetune_args(tiny_checkpoint, toy_files, tmp_path / "one")
    single = subprocess.run([sys.executable, "-m", "goft", *args], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "goft",
            *finetune_args(tiny_checkpoint, toy_files, tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["distributed"] == {"world_size": 2, "max_param_diff_across_ranks": 0.0}
    assert "distributed" not in one
    wa = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= 1e-5, worst
    assert one["curve"]["eval_accuracy"] == two["curve"]["eval_accuracy"]


# ---------------------------------------------------------------------------------------------------------------------
# goft instruct runs on the same loop: checkpoints, --resume, the adapter kept
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_instruct(monkeypatch, tiny_llama, chat_tokenizer):
    """``goft instruct`` on the tiny Llama with the word-level chat tokenizer and 24 toy sentences (no download)."""
    from goft.apps import data, instruct, pretrained

    texts = [
        f"a {a} {b}"
        for a in ("fine", "great", "good", "dull", "bad", "poor")
        for b in ("film", "plot", "cast", "show")
    ]
    labels = [int(t.split()[1] in ("fine", "great", "good")) for t in texts]
    toy = data.Dataset(texts, labels, ("negative", "positive"), "toy")
    monkeypatch.setattr(data, "load_task", lambda task: (toy, toy))
    monkeypatch.setattr(data, "load_corpus", lambda name: toy)
    monkeypatch.setattr(
        pretrained,
        "load_causal_lm",
        lambda model=None, base_weights="fp32": (LlamaForCausalLM.from_pretrained(tiny_llama), chat_tokenizer),
    )
    return instruct


def test_instruct_keeps_its_run_and_a_killed_run_resumes_to_the_same_result(tiny_instruct, tmp_path, monkeypatch):
    common = dict(
        method="qgoft",
        lr=0.005,
        train_size=24,
        eval_size=4,
        epochs=2,
        batch_size=4,
        forget_passages=2,
        forget_tokens=3,
        progress=False,
        save_every=2,
    )
    whole = tiny_instruct.instruct(tiny_instruct.InstructConfig(output=str(tmp_path / "whole"), **common))
    run_dir = tmp_path / "whole" / "qgoft-seed0-lr0.005"
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert len(whole["loss"]) == 12  # 24 sentences / batch 4 x 2 epochs, with warmup and decay from the shared loop

    real_step, steps = torch.optim.AdamW.step, {"n": 0}

    def interrupted_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 7:  # mid-epoch 2, one step after the checkpoint at step 6
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        tiny_instruct.instruct(tiny_instruct.InstructConfig(output=str(tmp_path / "cut"), **common))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    resumed = tiny_instruct.instruct(tiny_instruct.InstructConfig(output=str(tmp_path / "cut"), resume=True, **common))
    assert resumed["loss"] == whole["loss"]
    cut = load_file(tmp_path / "cut" / "qgoft-seed0-lr0.005" / "adapter" / "adapter_model.safetensors")
    kept = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert cut.keys() == kept.keys() and all(torch.equal(cut[k], kept[k]) for k in kept)


def test_the_final_run_with_the_sweeps_seed_scores_the_sweep_runs_weights(tiny_instruct, tmp_path, monkeypatch):
    """With --output, the final run at the chosen rate and the sweep's seed resumes the sweep run's finished
    checkpoint (no step is taken) and gets the adapter a fresh training of the final run gives."""
    base = tiny_instruct.InstructConfig(
        train_size=16,
        eval_size=4,
        val_size=4,
        batch_size=4,
        forget_passages=2,
        forget_tokens=3,
        progress=False,
        output=str(tmp_path / "runs"),
    )
    real_step, steps = torch.optim.AdamW.step, {"n": 0}

    def counted_step(self, *args, **kwargs):
        steps["n"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counted_step)
    said = []
    data = tiny_instruct.run_instruct_compare(
        ["goft"], [0, 1], base, tmp_path / "runs.json", progress=said.append, learning_rates=[0.01, 0.03]
    )
    assert steps["n"] == 3 * 4  # two sweep runs and the final of seed 1, 4 steps each; seed 0's final took none
    runs = {(r["stage"], r["seed"], r["lr"]): r for r in data["runs"]}
    chosen = next(lr for (stage, _, lr) in runs if stage == "final")
    sweep, final = runs[("sweep", 0, chosen)], runs[("final", 0, chosen)]
    assert final["trained_by"] == str(tmp_path / "runs" / f"goft-seed0-lr{chosen:g}-sweep")
    assert "trained_by" not in runs[("final", 1, chosen)]
    assert any("scoring its weights instead of training again" in line for line in said)
    assert final["val_accuracy"] == sweep["val_accuracy"] and final["accuracy"] is not None
    assert final["kl_base_to_tuned"] == sweep["kl_base_to_tuned"]

    fresh = tiny_instruct.instruct(replace(base, lr=chosen, output=str(tmp_path / "fresh")))
    assert steps["n"] == 4 * 4
    assert fresh["kl_base_to_tuned"] == final["kl_base_to_tuned"] and fresh["accuracy"] == final["accuracy"]
    reused = load_file(tmp_path / "runs" / f"goft-seed0-lr{chosen:g}" / "adapter" / "adapter_model.safetensors")
    trained = load_file(tmp_path / "fresh" / f"goft-seed0-lr{chosen:g}" / "adapter" / "adapter_model.safetensors")
    assert reused.keys() == trained.keys() and all(torch.equal(reused[k], trained[k]) for k in trained)

    # only a sweep run of the same options is taken: another training size trains afresh
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "runs" / f"goft-seed0-lr{chosen:g}-sweep", other / f"goft-seed0-lr{chosen:g}-sweep")
    final_of = partial(replace, base, lr=chosen, output=str(other))
    assert tiny_instruct._start_from_the_sweep_run(final_of(train_size=8)) is None
    assert tiny_instruct._start_from_the_sweep_run(final_of()) == other / f"goft-seed0-lr{chosen:g}-sweep"


def test_instruct_records_its_device_and_refuses_one_it_cannot_use(tiny_instruct):
    run = tiny_instruct.instruct(
        tiny_instruct.InstructConfig(
            method="goft",
            train_size=8,
            eval_size=2,
            val_size=2,
            batch_size=4,
            forget_passages=2,
            forget_tokens=3,
            progress=False,
        )
    )
    assert run["device"] == "cpu"
    with pytest.raises(OptionError, match="^device must be one of cpu, cuda, cuda:N, got 'gpu'$"):
        tiny_instruct.InstructConfig(device="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_instruct_on_the_gpu_learns_as_on_the_cpu(tiny_instruct):
    common = dict(
        method="goft",
        train_size=24,
        eval_size=4,
        val_size=2,
        epochs=2,
        batch_size=4,
        forget_passages=2,
        forget_tokens=3,
        progress=False,
    )
    on_gpu = tiny_instruct.instruct(tiny_instruct.InstructConfig(device="cuda", **common))
    on_cpu = tiny_instruct.instruct(tiny_instruct.InstructConfig(**common))
    assert on_gpu["device"].startswith("cuda (")
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-3, abs=1e-4)
    assert on_gpu["kl_base_to_tuned"] == pytest.approx(on_cpu["kl_base_to_tuned"], rel=1e-2, abs=1e-5)
    with pytest.raises(OptionError, match="^base_weights int8 loads the base for the CPU"):
        tiny_instruct.InstructConfig(device="cuda", base_weights="int8")
