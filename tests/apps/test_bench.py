"""goft bench runs end to end at toy sizes and reports what it should (timings themselves are not asserted)."""

import json

import torch

from goft.apps import bench


def test_bench_toy_run_writes_jsonl_and_plot(tmp_path):
    rows = bench.run(tmp_path, dims=[8, 16], tokens_list=[4], reps=1, e2e=False, merge=False)
    lines = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(rows))
    layer = [r for r in rows if r["bench"] == "layer"]
    assert {r["method"] for r in layer} == set(bench.LAYER_METHODS)
    assert all(r["machine"]["cpu"] and r["seconds"] > 0 for r in layer)
    frozen = [r for r in layer if r["method"] == "frozen"]
    assert all(r["ratio_to_frozen"] == 1.0 for r in frozen)
    goft16 = next(r for r in layer if r["method"] == "goft" and r["d"] == 16)
    assert goft16["trainable_params"] == 15
    assert any(r["bench"] == "rotation_scaling" for r in rows)
    assert (tmp_path / "bench_layer.png").stat().st_size > 0


def test_half_precision_layers_and_the_decoder_step_run(tmp_path, monkeypatch):
    """bf16 layer rows carry their dtype; the decoder step runs (at toy width: the real one is for a GPU) and names
    its model; no peak memory is claimed on CPU."""
    rows = bench.run(
        tmp_path,
        dims=[8],
        tokens_list=[4],
        reps=1,
        e2e=False,
        merge=False,
        methods=["frozen", "goft", "lora_r8"],
        dtypes=["bfloat16"],
    )
    layer = [r for r in rows if r["bench"] == "layer"]
    assert {r["dtype"] for r in layer} == {"bfloat16"} and all(r["step_peak_bytes"] is None for r in layer)
    monkeypatch.setitem(bench.E2E_SHAPES, "llama-1b", (2, 8))
    monkeypatch.setattr(
        bench,
        "LLAMA_1B",
        {
            **bench.LLAMA_1B,
            "vocab_size": 20001,
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 8,
        },
    )
    e2e = bench.bench_e2e(torch.device("cpu"), 1, 2, 8, ["goft", "lora_r8"], model_name="llama-1b")
    assert [r["method"] for r in e2e] == ["goft", "lora_r8"]
    assert all(r["model"] == "llama-1b" and r["dtype"] == "bfloat16" and r["seconds"] > 0 for r in e2e)
    assert e2e[0]["trainable_params"] == 6 * 15 + 23  # d_in - 1 angles: six projections from 16, down_proj from 24


def test_a_spread_of_more_than_2x_between_repetitions_is_warned_about():
    from goft.apps.bench_report import spread_warnings

    steady = {"bench": "layer", "method": "goft", "d": 768, "tokens": 4096, "ratio_to_frozen_range": [1.05, 1.4]}
    busy = {**steady, "method": "lora_r8", "ratio_to_frozen_range": [2.57, 39.8]}
    (line,) = spread_warnings([steady, busy])
    assert line.startswith(
        "warning: layer lora_r8 d=768 tokens=4096: per-repetition ratio_to_frozen spread 2.57-39.80"
    )
