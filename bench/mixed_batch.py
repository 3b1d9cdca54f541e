"""Many adapters in one batch: a decoder at SmolLM2-135M's width, each sequence with its own adapter among N.

The model is SmolLM2-135M's architecture (hidden 576, MLP 1536, 9 heads, 3 key/value heads) with 4 layers and random
weights (weights change no timing), without its LM head, whose 49,152-way matmul would hide every adapter.  Adapters
on q, k, v and o, random (non-identity): GOFT (the tree, strict) and PEFT's LoRA r=8, N of each on one base; sequence
i of the batch uses adapter ``i mod N`` through ``adapter_names``.  Timed, interleaved in one run, per repetition:
the plain base model, then each method, on the same inputs: a prefill of B sequences × T tokens (no cache) and one
decode step (B × 1 token on a KV cache of T tokens, cropped back after each step).  Ratios are to the base model of
the same repetition; the table shows the median and the range over repetitions.

``--model smollm2`` runs SmolLM2-135M-Instruct itself instead (the embedded weights, all 30 layers and its LM head):
what a user serving it sees, the head's cost included.

Run: ``.venv/bin/python bench/mixed_batch.py [--model smollm2] [--adapters 1,8,64,512] [--reps 5]
[--out results/mixed-batch.json]``.
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
from peft import LoraConfig, get_peft_model
from transformers import DynamicCache, LlamaConfig, LlamaModel

from goft import GOFTConfig

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def decoder(layers: int) -> LlamaModel:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=1024,
        max_position_embeddings=512,
    )
    return LlamaModel(config).eval()


def with_adapters(base: LlamaModel, method: str, n: int):
    """``n`` random adapters named a0 … a{n-1} of ``method`` on a copy of ``base``."""

    def config():
        if method == "goft":
            return GOFTConfig(target_modules=TARGETS, init_weights=False)
        return LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False)

    torch.manual_seed(1)
    model = get_peft_model(copy.deepcopy(base), config(), adapter_name="a0")
    for k in range(1, n):
        model.add_adapter(f"a{k}", config())
    return model.eval()


def adapter_bytes(model, name: str) -> int:
    return sum(
        p.numel() * p.element_size()
        for key, p in model.named_parameters()
        if key.endswith(f".{name}.weight") or key.endswith(f".{name}")
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", default="1,8,64,512", help="comma-separated N")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--model", choices=["random", "smollm2"], default="random", help="random: SmolLM2's width")
    parser.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    args = parser.parse_args()
    if args.model == "smollm2":
        from goft.apps.pretrained import load_causal_lm

        base = load_causal_lm("smollm2")[0].eval()
        args.layers = base.config.num_hidden_layers
    else:
        base = decoder(args.layers)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1024, (args.batch, args.tokens), generator=g)
    step = torch.randint(0, 1024, (args.batch, 1), generator=g)
    with torch.no_grad():
        cache = base(input_ids=ids, use_cache=True).past_key_values
    assert isinstance(cache, DynamicCache)
    rows = []
    for n in [int(v) for v in args.adapters.split(",")]:
        models = {"goft": with_adapters(base, "goft", n), "lora_r8": with_adapters(base, "lora", n)}
        names = [f"a{i % n}" for i in range(args.batch)]
        sizes = {method: adapter_bytes(model, "a0") for method, model in models.items()}

        def prefill(model, **kwargs):
            return lambda: model(input_ids=ids, use_cache=False, **kwargs)

        def decode(model, **kwargs):
            def run():
                model(input_ids=step, cache=cache, use_cache=True, **kwargs)
                cache.crop(-1)  # drop the token just added: every step sees T cached tokens

            return run

        runs = {"base": base, **models}
        times = {(phase, m): [] for phase in ("prefill", "decode") for m in runs}
        with torch.no_grad():
            for phase, make in (("prefill", prefill), ("decode", decode)):
                for method, model in runs.items():  # warm-up: compile the kernels, fill the caches
                    make(model, **({} if method == "base" else {"adapter_names": names}))()
                for _ in range(args.reps):
                    for method, model in runs.items():
                        fn = make(model, **({} if method == "base" else {"adapter_names": names}))
                        times[(phase, method)].append(timed(fn))
        for phase in ("prefill", "decode"):
            base_times = times[(phase, "base")]
            for method in models:
                ratios = [t / b for t, b in zip(times[(phase, method)], base_times, strict=True)]
                rows.append(
                    {
                        "adapters": n,
                        "phase": phase,
                        "method": method,
                        "ratio_median": statistics.median(ratios),
                        "ratio_min": min(ratios),
                        "ratio_max": max(ratios),
                        "seconds_median": statistics.median(times[(phase, method)]),
                        "base_seconds_median": statistics.median(base_times),
                        "bytes_per_adapter": sizes[method],
                    }
                )
                row = rows[-1]
                print(
                    f"N={n:4d} {phase:7s} {method:8s} {row['ratio_median']:.2f}x "
                    f"[{row['ratio_min']:.2f}-{row['ratio_max']:.2f}] of base "
                    f"({row['base_seconds_median'] * 1e3:.1f} ms), {sizes[method]:,} bytes/adapter",
                    flush=True,
                )
        del models
    result = {
        "benchmark": "mixed-adapter batch, "
        + (
            "SmolLM2-135M-Instruct (embedded weights, LM head included)"
            if args.model == "smollm2"
            else "decoder at SmolLM2-135M's width"
        ),
        "setup": {
            "model": "goft:smollm2" if args.model == "smollm2" else "random weights, no LM head",
            "layers": args.layers,
            "hidden": 576,
            "batch": args.batch,
            "prefill_tokens": args.tokens,
            "targets": TARGETS,
            "reps": args.reps,
            "lora": "PEFT LoraConfig(r=8), its mixed-batch path",
            "goft": "GOFTConfig() tree, strict",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
