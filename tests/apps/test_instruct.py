"""`goft instruct`'s pieces: prompts and answer-only labels, answer parsing, forgetting, the resumable sweep."""

import json
import shutil

import pytest

from goft.apps import instruct, instruct_report, pretrained, results
from goft.apps.errors import OptionError
from goft.apps.methods import METHODS
from goft.apps.protocol import lr_grid


def fake_metrics(cfg, accuracy, val_accuracy, **extra):
    """What :func:`instruct` returns, without a model: test accuracy only when the run may read the test split."""
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "accuracy": accuracy if cfg.evaluate_test else None,
        "val_accuracy": val_accuracy,
        "base_accuracy": 0.5 if cfg.evaluate_test else None,
        "base_val_accuracy": 0.45,
        "trainable_params": 10,
        "seconds": 1.0,
        "kl_base_to_tuned": cfg.learning_rate,
        "perplexity_base": 10.0,
        "perplexity_tuned": 11.0,
        "perplexity_change": 1.0,
        "loss": [1.0],
        "config": {"lr": cfg.learning_rate},
        **extra,
    }


def test_instruct_sweeps_on_validation_then_runs_every_seed_at_the_chosen_rate(monkeypatch, tmp_path):
    calls = []

    def fake_instruct(cfg, base_logprobs_cache=None):
        calls.append((cfg.method, cfg.seed, cfg.learning_rate, cfg.evaluate_test))
        # validation peaks at the second-smallest rate of each grid; test accuracy is deliberately unrelated
        grid = lr_grid(METHODS[cfg.method].instruct_lr)
        return fake_metrics(
            cfg, accuracy=0.9 - cfg.learning_rate, val_accuracy=0.8 if cfg.learning_rate == grid[1] else 0.6
        )

    monkeypatch.setattr(instruct, "instruct", fake_instruct)
    path = tmp_path / "r.json"
    base = instruct.InstructConfig(progress=False)
    instruct.run_instruct_compare(["goft", "lora"], [0, 1], base, path, progress=lambda *_: None)
    for method in ("goft", "lora"):
        grid = lr_grid(METHODS[method].instruct_lr)
        assert len(grid) == 4 and max(grid) / min(grid) >= 30
        ran = [c for c in calls if c[0] == method]
        # the sweep: seed 0 at each rate, the test split unread; then both seeds at the chosen rate, on test
        assert ran == [(method, 0, lr, False) for lr in grid] + [(method, s, grid[1], True) for s in (0, 1)]
    runs = json.loads(path.read_text())["runs"]
    assert {r["stage"] for r in runs} == {"sweep", "final"}
    assert all(r["accuracy"] is None and r["eval_examples"] == 0 for r in runs if r["stage"] == "sweep")
    # rerunning skips every recorded run
    instruct.run_instruct_compare(["goft", "lora"], [0, 1], base, path, progress=lambda *_: None)
    assert len(calls) == 2 * (4 + 2)
    table = path.with_suffix(".md").read_text()
    final_rows = [line for line in table.splitlines() if "| final |" in line]
    assert len(final_rows) == 2 and all("| 2 |" in row for row in final_rows)  # each method over both seeds
    assert "| base model | – | – | – | – | 0 | 45.0 | 50.0 |" in table
    assert path.with_suffix(".png").is_file()


def test_without_a_sweep_every_rate_runs_on_test_and_says_so(monkeypatch, tmp_path):
    calls = []

    def fake_instruct(cfg, base_logprobs_cache=None):
        calls.append((cfg.seed, cfg.learning_rate, cfg.evaluate_test))
        return fake_metrics(cfg, accuracy=0.7, val_accuracy=0.6)

    monkeypatch.setattr(instruct, "instruct", fake_instruct)
    path = tmp_path / "r.json"
    instruct.run_instruct_compare(
        ["goft"],
        [0],
        instruct.InstructConfig(progress=False),
        path,
        progress=lambda *_: None,
        learning_rates=[1e-3, 3e-3],
        sweep=False,
    )
    assert calls == [(0, 1e-3, True), (0, 3e-3, True)]
    assert {r["stage"] for r in json.loads(path.read_text())["runs"]} == {"unswept"}


def test_runs_recorded_before_the_shared_loop_are_kept_apart(monkeypatch, tmp_path):
    """A run without a recorded schedule or stage was trained at a constant rate and scored on test: a new run at the
    same method, seed and rate is not skipped as a duplicate, and the table shows both, each with its own."""

    def fake_instruct(cfg, base_logprobs_cache=None):
        return fake_metrics(cfg, accuracy=0.9, val_accuracy=0.8)

    monkeypatch.setattr(instruct, "instruct", fake_instruct)
    path = tmp_path / "r.json"
    legacy = {
        "method": "goft",
        "seed": 0,
        "lr": 0.003,
        "accuracy": 0.8,
        "base_accuracy": 0.5,
        "trainable_params": 10,
        "seconds": 1.0,
        "kl_base_to_tuned": 0.2,
        "perplexity_base": 10.0,
        "perplexity_tuned": 12.0,
        "perplexity_change": 2.0,
    }
    path.write_text(json.dumps({"task": "polarity-instruct", "runs": [legacy]}))
    instruct.run_instruct_compare(
        ["goft"],
        [0],
        instruct.InstructConfig(progress=False),
        path,
        progress=lambda *_: None,
        learning_rates=[0.003],
        sweep=False,
    )
    runs = json.loads(path.read_text())["runs"]
    # the older run is upgraded on load (goft.apps.results.upgrade) and written back with what it did implicitly
    assert [r["schedule"] for r in runs] == ["constant", instruct.SCHEDULE]
    table = path.with_suffix(".md").read_text()
    legacy_stage = results.LEGACY_STAGE
    assert f"| goft | 0.003 | {legacy_stage} | constant | 1 |" in table
    assert f"| goft | 0.003 | unswept | {instruct.SCHEDULE} | 1 |" in table
    # the plot leaves the superseded run out, unless nothing else is recorded
    assert [key for key, _ in instruct_report.plotted_curves(results.load(path, "instruct"))] == [
        ("goft", "fp32", instruct.SCHEDULE, "unswept")
    ]
    assert [key for key, _ in instruct_report.plotted_curves(results.upgrade({"runs": [legacy]}, "instruct"))] == [
        ("goft", "fp32", "constant", legacy_stage)
    ]


def test_runs_on_an_int8_base_are_recorded_and_labelled_apart(monkeypatch, tmp_path):
    def fake_instruct(cfg, base_logprobs_cache=None):
        quantized = cfg.base_weights == "int8"
        return fake_metrics(
            cfg,
            accuracy=0.8 if quantized else 0.9,
            val_accuracy=0.7,
            base_weights=cfg.base_weights,
            base_weight_mib=150.0 if quantized else 513.0,
            base_accuracy=(0.4 if quantized else 0.5) if cfg.evaluate_test else None,
        )

    monkeypatch.setattr(instruct, "instruct", fake_instruct)
    path = tmp_path / "r.json"
    for weights in ("fp32", "int8", "int8"):  # the second int8 sweep finds its run recorded
        instruct.run_instruct_compare(
            ["goft"],
            [0],
            instruct.InstructConfig(progress=False, base_weights=weights),
            path,
            progress=lambda *_: None,
            sweep=False,
        )
    runs = json.loads(path.read_text())["runs"]
    assert [r["base_weights"] for r in runs] == ["fp32", "int8"]
    table = path.with_suffix(".md").read_text()
    assert "| base model, fp32 (513 MiB of weights) | – | – | – | – | 0 | 45.0 | 50.0 |" in table
    assert "| base model, int8 (150 MiB of weights) | – | – | – | – | 0 | 45.0 | 40.0 |" in table
    assert "| goft on int8 | " in table and "| goft | " in table
    with pytest.raises(OptionError, match="base_weights must be one of fp32, int8, got 'int4'"):
        instruct.InstructConfig(base_weights="int4")


def test_an_int8_base_loads_quantized_and_smaller(tiny_llama, chat_tokenizer, tmp_path):
    pytest.importorskip("torchao")
    checkpoint = tmp_path / "llama"
    shutil.copytree(tiny_llama, checkpoint)
    chat_tokenizer.save_pretrained(checkpoint)
    fp32, _ = pretrained.load_causal_lm(str(checkpoint))
    int8, _ = pretrained.load_causal_lm(str(checkpoint), "int8")
    assert type(int8.model.layers[0].self_attn.q_proj.weight).__name__ == "Int8Tensor"
    quantized = [m for m in int8.modules() if type(getattr(m, "weight", None)).__name__ == "Int8Tensor"]
    assert len(quantized) == 7 * fp32.config.num_hidden_layers  # q, k, v, o, gate, up, down of every layer
    weights = sum(m.weight.numel() for m in quantized)
    rows = sum(m.out_features for m in quantized)
    saved = pretrained.weight_bytes(fp32) - pretrained.weight_bytes(int8)
    # 4 bytes -> 1 a weight, and each row gains a scale and zero point (fp32 + int8 in torchao 0.18: 5 bytes)
    assert 3 * weights - 8 * rows <= saved <= 3 * weights - rows


def test_a_results_file_holds_one_setup(monkeypatch, tmp_path):
    from goft.apps.errors import OptionError

    monkeypatch.setattr(
        instruct, "instruct", lambda cfg, base_logprobs_cache=None: fake_metrics(cfg, accuracy=0.7, val_accuracy=0.6)
    )
    path = tmp_path / "r.json"
    quick = dict(progress=lambda *_: None, learning_rates=[1e-3], sweep=False)
    instruct.run_instruct_compare(["goft"], [0], instruct.InstructConfig(progress=False), path, **quick)
    assert json.loads(path.read_text())["setup"]["model"] == "goft:smollm2"
    for option, value in (("epochs", 2), ("train_size", 64), ("lora_r", 4), ("model", str(tmp_path))):
        with pytest.raises(OptionError, match=rf"^{option} .* differs from the runs in .*r\.json"):
            instruct.run_instruct_compare(
                ["goft"], [0], instruct.InstructConfig(progress=False, **{option: value}), path, **quick
            )
    # a file from before setups were recorded: judged by the sizes its runs recorded
    older = json.loads(path.read_text())
    del older["setup"], older["schema"]  # as files were written before schema 2
    path.write_text(json.dumps(older))
    with pytest.raises(OptionError, match=r"^train_size 64 differs .*\(512\)"):
        instruct.run_instruct_compare(
            ["goft"], [0], instruct.InstructConfig(progress=False, train_size=64), path, **quick
        )
    instruct.run_instruct_compare(["goft"], [0], instruct.InstructConfig(progress=False), path, **quick)
