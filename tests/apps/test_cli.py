"""The command line: a user's mistake is one line naming the flag; a run ends with its outputs inspectable."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from toys import tiny_gpt2

from goft import GOFTConfig
from goft.apps.cli import main
from goft.apps.errors import OptionError
from goft.apps.methods import default_lr


def test_cli_names_the_flag_and_exits_with_a_message(capsys):
    with pytest.raises(SystemExit, match="^goft finetune: --epochs must be a positive integer, got 0$"):
        main(["finetune", "--epochs", "0"])
    with pytest.raises(SystemExit, match="^goft compare: --methods has unknown \\['lora_r9'\\]; allowed: goft, "):
        main(["compare", "--methods", "goft,lora_r9"])
    with pytest.raises(SystemExit, match="^goft compare: --device must be one of cpu, cuda, cuda:N, got 'gpu'$"):
        main(["compare", "--device", "gpu"])
    with pytest.raises(SystemExit, match="^goft instruct: --device must be one of cpu, cuda, cuda:N, got 'gpu'$"):
        main(["instruct", "--device", "gpu"])


def test_cli_finetune_and_inspect(tiny_checkpoint, toy_files, tmp_path, capsys):
    train, evals = toy_files
    out = tmp_path / "cli"
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_checkpoint),
                "--train-file",
                str(train),
                "--eval-file",
                str(evals),
                "--epochs",
                "2",
                "--method",
                "goft",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert f"goft on user:{train}: test accuracy" in capsys.readouterr().out
    assert main(["inspect", str(out / "adapter")]) == 0
    printed = capsys.readouterr().out
    assert "GOFT adapter" in printed and "attention.self.query" in printed
    assert (out / "adapter-inspect.png").is_file() and not (out / "adapter" / "inspect.png").exists()
    with pytest.raises(SystemExit, match="--train-file and --eval-file go together"):
        main(["finetune", "--train-file", str(train)])


def test_finetune_names_the_pairing_flags_and_compare_points_to_its_rows(tmp_path):
    from dataclasses import replace

    from goft.apps.compare import run_compare
    from goft.apps.configs import FinetuneConfig

    with pytest.raises(SystemExit, match="^goft finetune: --structure must be one of tree, butterfly, got 'ring'"):
        main(["finetune", "--structure", "ring"])
    with pytest.raises(OptionError, match="^depth is not taken by compare, .*goft_tree_depth2"):
        run_compare("polarity", ["goft"], [0], replace(FinetuneConfig(), depth=2), tmp_path)
    # nor a λ or a rank other than the one its method names stand for (a rerun would mix them up)
    with pytest.raises(OptionError, match="^orth_reg_weight is not taken by compare, .*qgoft_l3"):
        run_compare("polarity", ["qgoft"], [0], FinetuneConfig(method="qgoft", orth_reg_weight=1e-3), tmp_path)
    with pytest.raises(OptionError, match="^lora_r is not taken by compare, .*lora_r4"):
        run_compare("polarity", ["lora"], [0], FinetuneConfig(method="lora", lora_r=4), tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--lora-r", "4"])
    assert exit_info.value.code == 2  # not an option of compare's
    assert not (tmp_path / "polarity.json").exists()
    # a setting the chosen method would ignore is refused, not dropped
    for flag, value, what in (("--lora-r", "4", "LoRA's rank"), ("--orth-reg-weight", "0.001", "qGOFT's penalty")):
        with pytest.raises(SystemExit, match=f"^goft finetune: {flag} sets {what} .*, not head's$"):
            main(["finetune", "--method", "head", flag, value])


def test_counts_must_be_positive(capsys):
    for argv in (["compare", "--seeds", "0"], ["instruct", "--seeds", "-1"], ["bench", "--reps", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err


def test_bench_names_a_bad_dtype_or_model_and_the_allowed_ones():
    with pytest.raises(
        SystemExit,
        match=r"^goft bench: --dtypes has unknown \['float8'\]; allowed: float32, "
        r"bfloat16, float16$",
    ):
        main(["bench", "--dtypes", "float32,float8"])
    with pytest.raises(
        SystemExit,
        match=r"^goft bench: --e2e-models has unknown \['llama-70b'\]; allowed: minilm, "
        r"llama-1b$",
    ):
        main(["bench", "--e2e-models", "llama-70b"])


# ---------------------------------------------------------------------------------------------------------------------
# A user's work: never lost, never contradicted, named by what it came from
# ---------------------------------------------------------------------------------------------------------------------


def test_a_target_that_matches_nothing_is_named(finetune_args, tmp_path):
    with pytest.raises(SystemExit, match=r"target_modules \['qery'\] matched no module GOFT can adapt.*'bert"):
        main([*finetune_args, "--target-modules", "qery", "--output", str(tmp_path / "run")])


def test_resume_refuses_options_that_change_the_run(finetune_args, tmp_path, toy_val_file):
    out = str(tmp_path / "run")
    assert main([*finetune_args, "--output", out]) == 0
    default = re.escape(f"{default_lr('goft')!r}")  # the run above trained at goft's default rate
    with pytest.raises(
        SystemExit,
        match=rf"trained with other options \(--lr {default} there, 0\.05 now; "
        r"--val-file None there, '.*val\.csv' now\)",
    ):
        main([*finetune_args, "--output", out, "--resume", "--lr", "0.05", "--val-file", str(toy_val_file)])
    assert main([*finetune_args[:-1], "--output", out, "--resume", "--save-every", "3"]) == 0  # progress: harmless


def test_no_silent_overwrite_and_no_resume_from_nothing(finetune_args, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit, match=r"--resume finds no checkpoint at .*checkpoint\.pt: nothing to continue"):
        main([*finetune_args, "--output", out, "--resume"])
    assert main([*finetune_args, "--output", out]) == 0
    with pytest.raises(
        SystemExit,
        match=r"holds a checkpoint of an earlier run; pass --resume to continue it, or "
        r"--overwrite to start over",
    ):
        main([*finetune_args, "--output", out])
    assert main([*finetune_args, "--output", out, "--overwrite"]) == 0


def test_without_output_the_run_is_kept_in_a_new_directory(finetune_args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(finetune_args) == 0
    printed = capsys.readouterr().out
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("goft-train-") and f"output: runs/{run.name}" in printed
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "metrics.json").is_file()


def test_ctrl_c_stops_after_a_step_keeps_a_checkpoint_and_prints_the_resume_command(
    finetune_args, tmp_path, monkeypatch, capsys
):
    import os
    import shlex
    import signal

    import torch

    out = str(tmp_path / "cut")
    real_step, steps = torch.optim.AdamW.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C: the handler asks the loop to stop
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    with pytest.raises(SystemExit) as exit_info:
        main([*finetune_args, "--output", out])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert f"stopped after step 3; checkpoint written to {out}/checkpoint.pt" in err
    command = shlex.split(err.split("to continue: ")[1].strip())
    assert command[0] == "goft" and command[-1] == "--resume"
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert main(command[1:]) == 0
    whole = str(tmp_path / "whole")
    assert main([*finetune_args, "--output", whole]) == 0
    resumed, uninterrupted = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("cut", "whole"))
    assert resumed["curve"]["loss"] == uninterrupted["curve"]["loss"]


def test_outputs_name_their_classes_data_and_model_and_have_normal_permissions(tiny_checkpoint, tmp_path):
    import csv
    import os
    import stat

    from safetensors import safe_open

    names = {"fine": "positive", "good": "positive", "bad": "negative", "dull": "negative"}
    for split, n in (("train", 40), ("eval", 12)):
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([w, names[w]] for w in list(names) * (n // 4))
    common = [
        "--model",
        str(tiny_checkpoint),
        "--train-file",
        str(tmp_path / "train.csv"),
        "--eval-file",
        str(tmp_path / "eval.csv"),
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main(["finetune", *common, "--output", str(tmp_path / "goft")]) == 0
    assert main(["finetune", *common, "--method", "head", "--output", str(tmp_path / "head")]) == 0
    metrics = json.loads((tmp_path / "goft" / "metrics.json").read_text())
    assert metrics["labels"] == ["negative", "positive"] and metrics["config"]["task"] is None
    assert metrics["task"] == f"user:{tmp_path / 'train.csv'}" and metrics["model"] == str(tiny_checkpoint.resolve())
    adapter_config = json.loads((tmp_path / "goft" / "adapter" / "adapter_config.json").read_text())
    # the adapter's base: the checkpoint with its classes named (PEFT's auto classes load it with its labels)
    base_view = Path(adapter_config["base_model_name_or_path"])
    assert json.loads((base_view / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert (base_view / "model.safetensors").resolve() == (tiny_checkpoint / "model.safetensors").resolve()
    labels_file = json.loads((tmp_path / "goft" / "adapter" / "labels.json").read_text())
    assert labels_file["base_model"] == str(tiny_checkpoint.resolve())  # where it came from, for another machine
    assert main(["merge", str(tmp_path / "goft" / "adapter"), "--output", str(tmp_path / "merged")]) == 0
    merged_config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged_config["id2label"] == {"0": "negative", "1": "positive"}
    with safe_open(str(tmp_path / "head" / "head.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["labels"]) == ["negative", "positive"]
    umask = os.umask(0)
    os.umask(umask)
    for path in [
        tmp_path / "goft" / name
        for name in (
            "adapter/adapter_model.safetensors",
            "checkpoint.pt",
            "metrics.json",
            "curve.png",
            "adapter/labels.json",
        )
    ] + [tmp_path / "head" / "head.safetensors", tmp_path / "merged" / "model.safetensors"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_messages_say_what_was_written(finetune_args, tmp_path, capsys):
    assert main([*finetune_args, "--method", "head", "--output", str(tmp_path / "head")]) == 0
    printed = capsys.readouterr().out
    assert "head.safetensors" in printed and "adapter" not in printed.split("wrote")[1]
    assert "checkpoint.pt" in printed.split("wrote")[1]  # kept at every epoch end: listed with the rest


def test_bench_writes_a_new_directory_by_default_with_the_spread(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            ["bench", "--dims", "8,16", "--tokens", "4", "--reps", "3", "--methods", "goft", "--no-e2e", "--no-merge"]
        )
        == 0
    )
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("bench-") and not (tmp_path / "results").exists()
    rows = [json.loads(line) for line in (run / "bench.jsonl").read_text().splitlines()]
    layer = [r for r in rows if r["bench"] == "layer"]
    assert all(
        r["ratio_to_frozen_range"][0] <= r["ratio_to_frozen"] <= r["ratio_to_frozen_range"][1]
        or r["method"] == "frozen"
        for r in layer
    )


def test_curve_of_a_short_run_has_no_one_step_mean_and_labels_its_single_epoch(tmp_path, monkeypatch):
    from goft.apps import finetune as finetune_module
    from goft.apps import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=110: drawn.append(fig))
    metrics = {
        "method": "goft",
        "task": "polarity",
        "model": "goft:minilm",
        "seed": 0,
        "curve": {"step": [1, 2, 3], "loss": [0.7, 0.6, 0.5], "eval_epoch": [1], "eval_accuracy": [0.8]},
    }
    finetune_module.plot_curve(metrics, tmp_path / "curve.png")
    loss_axes, accuracy_axes = drawn[0].axes
    assert [t.get_text() for t in loss_axes.get_legend().get_texts()] == ["per step"]
    assert [t.get_text() for t in accuracy_axes.texts] == ["80.0"]


def test_file_system_refusals_and_interrupts_are_one_line(finetune_args, tmp_path, monkeypatch, capsys):
    from goft.apps import finetune as finetune_module

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "train.csv")

    monkeypatch.setattr(finetune_module, "load_data", refused)
    with pytest.raises(SystemExit, match=r"^goft finetune: \[Errno 13\] Permission denied: 'train.csv'$"):
        main([*finetune_args, "--output", str(tmp_path / "run")])

    def interrupted_loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_module, "load_data", interrupted_loading)
    with pytest.raises(SystemExit) as exit_info:
        main([*finetune_args, "--output", str(tmp_path / "run")])
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "goft finetune: interrupted"


# ---------------------------------------------------------------------------------------------------------------------
# The `goft` script's entry point: the parser answers before torch loads, the library is loaded before a command
# ---------------------------------------------------------------------------------------------------------------------

_HEAVY = ("torch", "peft", "transformers")


def _run_entry_point(argv: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys, goft_cli\n"
        f"try:\n    status = goft_cli.main({argv!r})\nexcept SystemExit as stop:\n    status = stop.code\n"
        f"print('loaded:', sorted(m for m in {_HEAVY!r} if m in sys.modules), 'status:', status)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["finetune", "--help"],
        ["finetune", "--epochs", "x"],
        ["compare", "--no-such-option"],
        ["no-such-command"],
    ],
)
def test_help_and_malformed_options_never_load_torch(argv):
    result = _run_entry_point(argv)
    assert "loaded: [] status:" in result.stdout, result.stdout + result.stderr


# Bad values and missing files are refused by the configs' own checks, before torch loads and before the run names a
# folder it would never create.
@pytest.mark.parametrize(
    "argv, message",
    [
        (["finetune", "--lr", "-1"], "--lr must be a positive number, got -1.0"),
        (["finetune", "--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["finetune", "--task", "polarty"], "--task must be one of polarity, hedge, got 'polarty'"),
        (["finetune", "--structure", "buterfly"], "--structure must be one of tree, butterfly, got 'buterfly'"),
        (["finetune", "--train-file", "no.csv", "--eval-file", "no.csv"], "--train-file names no file: no.csv"),
        (["finetune", "--device", "gpu"], "--device must be one of cpu, cuda, cuda:N, got 'gpu'"),
        (["compare", "--methods", "goft,lora_r9"], "--methods has unknown ['lora_r9']"),
        (["instruct", "--base-weights", "int4"], "--base-weights must be one of fp32, int8, got 'int4'"),
        (["merge", "no-adapter", "--output", "out"], "ADAPTER_DIR no-adapter is not a directory"),
    ],
)
def test_bad_values_are_refused_before_torch_loads_and_before_any_output_line(argv, message):
    result = _run_entry_point(argv)
    assert "loaded: [] status: goft" in result.stdout and message in result.stdout, result.stdout + result.stderr
    assert "output:" not in result.stdout


def test_ctrl_c_while_the_library_loads_is_one_line(finetune_args, tmp_path, capsys):
    def loading():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        main([*finetune_args, "--output", str(tmp_path / "run")], before_command=loading)
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "goft finetune: interrupted"


def test_version_answers_without_torch():
    from goft._version import installed_version

    result = _run_entry_point(["--version"])
    assert result.stdout.startswith(f"goft {installed_version()}\nloaded: [] status: 0"), result.stdout
    assert installed_version()[0].isdigit()  # the installed package's, from pyproject.toml


def test_a_command_run_through_the_entry_point_finds_goft_registered(tmp_path):
    model = get_peft_model(tiny_gpt2(), GOFTConfig(target_modules=["c_attn"]))
    model.save_pretrained(tmp_path / "adapter")
    result = _run_entry_point(["inspect", str(tmp_path / "adapter")])
    assert "GOFT adapter" in result.stdout, result.stdout + result.stderr
    assert f"loaded: {sorted(_HEAVY)} status: 0" in result.stdout


def test_compare_on_a_users_files_is_named_after_them_and_ctrl_c_says_how_to_continue(
    tiny_checkpoint, toy_files, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    train, evals = toy_files
    results = tmp_path / "results"
    args = [
        "compare",
        "--model",
        str(tiny_checkpoint),
        "--train-file",
        str(train),
        "--eval-file",
        str(evals),
        "--methods",
        "head",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--no-sweep",
        "--no-progress",
        "--results",
        str(results),
    ]
    real_step = torch.optim.AdamW.step

    def step_then_ctrl_c(self, *a, **kw):
        os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C during the first step
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and "stopped after step 1; checkpoint written to" in err
    assert "the same command continues from there" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert main(args) == 0
    assert "continue head unswept seed 0" in capsys.readouterr().out
    recorded = json.loads((results / "train.json").read_text())  # the training file's name, not the default task
    assert recorded["task"] == f"user:{train}" and recorded["setup"]["task"] is None
    assert [r["stage"] for r in recorded["runs"]] == ["unswept"] and not (results / "polarity.json").exists()
    refused = r"^goft compare: --batch-size 8 differs from the runs in .*train\.json \(16\)"
    with pytest.raises(SystemExit, match=refused):
        main([*args, "--batch-size", "8"])


def test_every_output_naming_a_file_is_refused_before_any_work(finetune_args, tmp_path, monkeypatch):
    from goft.apps import finetune as finetune_module

    monkeypatch.setattr(finetune_module, "finetune", lambda cfg: pytest.fail("trained despite the refusal"))
    afile = tmp_path / "train.csv"
    afile.write_text("text,label\n")
    for output, where in ((afile, "is a file"), (afile / "sub", f"is inside {afile}, which is a file")):
        with pytest.raises(SystemExit, match=f"^goft finetune: --output {output} {where}: name a folder$"):
            main([*finetune_args, "--output", str(output)])
        with pytest.raises(SystemExit, match=f"^goft merge: --output {output} {where}"):
            main(["merge", str(tmp_path), "--output", str(output)])
    with pytest.raises(SystemExit, match=f"^goft compare: --results {afile} is a file"):
        main(["compare", "--results", str(afile)])
    with pytest.raises(SystemExit, match=f"^goft bench: --out {afile} is a file"):
        main(["bench", "--out", str(afile)])


def test_a_folder_of_the_users_own_files_is_not_written_into_without_overwrite(finetune_args, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": true}')  # a name goft writes, but not goft's file
    for extra in ([], ["notes.txt"]):
        for name in extra:
            (mine / name).write_text("my notes")
        foreign = ", ".join(["metrics.json", *extra]).replace(".", r"\.")
        with pytest.raises(
            SystemExit,
            match=rf"^goft finetune: --output .*mine holds files that are not a goft run's \({foreign}\): "
            r"choose a new or empty folder, or pass --overwrite$",
        ):
            main([*finetune_args, "--output", str(mine)])
    assert (mine / "metrics.json").read_text() == '{"mine": true}'
    assert main([*finetune_args, "--output", str(mine), "--overwrite"]) == 0
    assert (mine / "notes.txt").read_text() == "my notes" and (mine / "adapter").is_dir()
    assert main([*finetune_args, "--output", str(mine), "--overwrite"]) == 0  # its own run again: allowed
