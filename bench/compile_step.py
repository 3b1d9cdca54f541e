"""A MiniLM training step with GOFT, eager against torch.compile (inductor), timed round-robin in one run.

GOFT (strict) on every linear layer of the embedded all-MiniLM-L6-v2 encoder, batch 32 × 64 tokens, forward, backward
and an AdamW step.  Both models start from the same weights; the compile time (first call) is reported apart.
Run: ``.venv/bin/python bench/compile_step.py [--reps 10] [--out results/compile-step.json]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from peft import get_peft_model

from goft import GOFTConfig
from goft.apps.bench import interleaved_times, timing_fields
from goft.apps.pretrained import load_sequence_classifier


def training_step(model, batch, optimizer):
    def step():
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=None, help="JSON file for the result (default: print only)")
    args = parser.parse_args()

    torch.manual_seed(0)
    base, _ = load_sequence_classifier()
    model = get_peft_model(base, GOFTConfig(target_modules="all-linear", task_type="SEQ_CLS"))
    compiled_model = copy.deepcopy(model)
    batch = {
        "input_ids": torch.randint(1000, 20000, (32, 64)),
        "attention_mask": torch.ones(32, 64, dtype=torch.long),
        "labels": torch.randint(0, 2, (32,)),
    }
    eager_step = training_step(model, batch, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]))
    compiled = torch.compile(compiled_model)
    compiled_step = training_step(
        compiled, batch, torch.optim.AdamW([p for p in compiled_model.parameters() if p.requires_grad])
    )
    start = time.perf_counter()
    compiled_step()  # compiles forward and backward
    compile_seconds = time.perf_counter() - start
    explanation = torch._dynamo.explain(copy.deepcopy(model))(**batch)

    times = interleaved_times({"eager": eager_step, "compiled": compiled_step}, args.reps, torch.device("cpu"))
    result = {
        "model": "goft:minilm",
        "method": "goft (all-linear)",
        "batch": [32, 64],
        "reps": args.reps,
        "graph_breaks": explanation.graph_break_count,
        "graphs": explanation.graph_count,
        "compile_seconds": compile_seconds,
        "eager": timing_fields(times, "eager", None),
        "compiled": timing_fields(times, "compiled", "eager"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"compiled / eager step: {result['compiled']['ratio_to_eager']:.2f} "
        f"(median of {args.reps}; eager {statistics.median(times['eager']) * 1e3:.0f} ms)"
    )


if __name__ == "__main__":
    main()
