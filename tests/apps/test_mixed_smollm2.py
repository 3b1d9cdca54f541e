"""Many adapters on SmolLM2-135M-Instruct itself (the embedded weights): a mixed batch equals each adapter run
alone, and the mixed-batch benchmark runs on it.  Slow: the model is loaded (and converted once)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from goft import GOFTConfig

pytestmark = pytest.mark.slow
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served():
    from goft.apps.pretrained import load_causal_lm

    model, tokenizer = load_causal_lm("smollm2")
    torch.manual_seed(0)
    model = get_peft_model(model, GOFTConfig(target_modules=TARGETS, init_weights=False), adapter_name="a0")
    model.add_adapter("a1", GOFTConfig(target_modules=TARGETS, init_weights=False, scaling=True))
    model.add_adapter("a2", GOFTConfig(target_modules=TARGETS, init_weights=False, pairing="random"))
    return model.eval(), tokenizer


def test_a_mixed_batch_on_smollm2_equals_each_adapter_alone(served):
    model, tokenizer = served
    prompts = ["The film was", "A slow, dull story", "I loved every minute", "Nothing happens in it"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    names = ["a2", "__base__", "a0", "a1"]
    with torch.no_grad():
        mixed = model(**batch, adapter_names=names).logits
        for row, name in enumerate(names):
            one = {k: v[row : row + 1] for k, v in batch.items()}
            if name == "__base__":
                with model.disable_adapter():
                    alone = model(**one).logits
            else:
                model.set_adapter(name)
                alone = model(**one).logits
            assert not torch.equal(alone, mixed[(row + 1) % 4 : (row + 1) % 4 + 1])  # rows do differ
            torch.testing.assert_close(mixed[row : row + 1], alone, rtol=0, atol=2e-4 * alone.abs().max().item())
        model.set_adapter("a0")
        generated = model.generate(**batch, adapter_names=names, max_new_tokens=6, do_sample=False)
        for row, name in enumerate(names):
            if name == "__base__":
                continue
            model.set_adapter(name)
            one = {k: v[row : row + 1] for k, v in batch.items()}
            assert torch.equal(generated[row], model.generate(**one, max_new_tokens=6, do_sample=False)[0])


def test_the_mixed_batch_benchmark_runs_on_smollm2(tmp_path):
    out = tmp_path / "mixed.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "mixed_batch.py"),
            "--model",
            "smollm2",
            "--adapters",
            "2",
            "--batch",
            "4",
            "--tokens",
            "8",
            "--reps",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["setup"]["model"] == "goft:smollm2" and result["setup"]["layers"] == 30
    rows = {(r["phase"], r["method"]): r for r in result["rows"]}
    assert set(rows) == {(p, m) for p in ("prefill", "decode") for m in ("goft", "lora_r8")}
    # 30 layers × 4 targets: GOFT's q/k/v/o rotations are 69,000 fp32 numbers (the README's count)
    assert rows[("decode", "goft")]["bytes_per_adapter"] == 69_000 * 4
    assert all(r["ratio_median"] > 0 for r in rows.values())
