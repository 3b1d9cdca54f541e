"""How well a trained GOFT adapter survives ``goft export-lora`` at each rank: per-layer error and task accuracy.

Loads a GOFT adapter written by ``goft finetune`` (its base found as ``goft merge`` finds it), scores it on the task's
test split, then exports it as a LoRA adapter at each rank, loads that with PEFT alone on a fresh base, and scores it
on the same split.  The adapter was trained and chosen before this script runs; the test split only measures how
much of it the export keeps.  Per rank: the LoRA parameter count, the median and worst per-layer relative errors of
the update (‖ΔW − BA‖/‖ΔW‖) and of the merged weight, and the accuracy.

``--task polarity-instruct`` scores an adapter of ``goft instruct`` (SmolLM2) the way that command does: greedy
answers to the same 200 test sentences (``--eval-size``).

Run: ``.venv/bin/python bench/lora_export_fidelity.py ADAPTER [--task polarity | polarity-instruct]
[--ranks 1,4,16,64,128,384] [--out results/lora-export-fidelity.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from goft import export_lora
from goft.apps import adapter_files, data
from goft.apps.configs import InstructConfig
from goft.apps.finetune import evaluate as evaluate_classifier
from goft.apps.instruct_task import generation_accuracy
from goft.apps.merge import load_adapted


def lora_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", help="a GOFT adapter directory (goft finetune's OUTPUT/adapter)")
    parser.add_argument("--task", default="polarity", help="polarity, hedge, or polarity-instruct")
    parser.add_argument("--eval-size", type=int, default=InstructConfig.eval_size, help="polarity-instruct only")
    parser.add_argument("--ranks", default="1,4,16,64,128,384")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    adapter = Path(args.adapter)
    instruct = args.task == "polarity-instruct"
    _, test_set = data.load_task("polarity" if instruct else args.task)
    if instruct:  # the sentences goft instruct scores
        test_set = test_set.subset(args.eval_size, 0)
    goft_model, base_dir = load_adapted(adapter, None)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    saved = adapter_files.read_config(adapter)

    def evaluate(model) -> float:
        if instruct:
            return generation_accuracy(model, tokenizer, test_set.texts, test_set.labels)
        return evaluate_classifier(model, tokenizer, test_set)

    goft_accuracy = evaluate(goft_model)
    goft_params = sum(p.numel() for n, p in goft_model.named_parameters() if ".goft_" in n)
    print(f"GOFT adapter: {goft_params:,} numbers, test accuracy {goft_accuracy:.4f}", flush=True)
    rows = []
    for rank in [int(r) for r in args.ranks.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            report = export_lora(goft_model, tmp, rank)
            lora = PeftModel.from_pretrained(adapter_files.load_base(base_dir, adapter, saved.get("task_type")), tmp)
            accuracy = evaluate(lora)
            n_params = lora_parameters(lora)
        update = [layer.update_relative_error for layer in report.layers]
        weight = [layer.weight_relative_error for layer in report.layers]
        rows.append(
            {
                "rank": rank,
                "lora_parameters": n_params,
                "update_error_median": statistics.median(update),
                "update_error_max": max(update),
                "weight_error_median": statistics.median(weight),
                "weight_error_max": max(weight),
                "accuracy": accuracy,
            }
        )
        print(
            f"rank {rank:4d}: {n_params:>10,} LoRA numbers, update error median {statistics.median(update):.3f} "
            f"max {max(update):.3f}, weight error max {max(weight):.2e}, accuracy {accuracy:.4f}",
            flush=True,
        )
    result = {
        "benchmark": "GOFT adapter exported as LoRA by truncated SVD: fidelity against rank",
        "adapter": str(adapter),
        "source": {k: saved.get(k) for k in ("peft_type", "quasi", "scaling", "structure", "depth", "pairing")},
        "task": args.task,
        "test_examples": len(test_set),
        "goft_parameters": goft_params,
        "goft_accuracy": goft_accuracy,
        "layers": len(report.layers),
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
