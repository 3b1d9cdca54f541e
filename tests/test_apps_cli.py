"""The command line: a user's mistake is one line naming the flag; a run ends with its outputs inspectable."""


import pytest

from goft.apps.cli import main


def test_cli_names_the_flag_and_exits_with_a_message(capsys):
    with pytest.raises(SystemExit, match="^goft finetune: --epochs must be a positive integer, got 0$"):
        main(["finetune", "--epochs", "0"])
    with pytest.raises(SystemExit, match="^goft compare: --methods has unknown \\['lora_r9'\\]; allowed: goft, "):
        main(["compare", "--methods", "goft,lora_r9"])


def test_cli_finetune_and_inspect(tiny_checkpoint, toy_files, tmp_path, capsys):
    train, evals = toy_files
    out = tmp_path / "cli"
    assert main(["finetune", "--model", str(tiny_checkpoint), "--train-file", str(train), "--eval-file", str(evals),
                 "--epochs", "2", "--method", "goft", "--output", str(out), "--no-progress"]) == 0
    assert "goft on user: test accuracy" in capsys.readouterr().out
    assert main(["inspect", str(out / "adapter")]) == 0
    printed = capsys.readouterr().out
    assert "attention.self.query" in printed and (out / "adapter" / "inspect.png").is_file()
    with pytest.raises(SystemExit, match="--train-file and --eval-file go together"):
        main(["finetune", "--train-file", str(train)])


def test_counts_must_be_positive(capsys):
    for argv in (["compare", "--seeds", "0"], ["instruct", "--seeds", "-1"], ["bench", "--reps", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err
