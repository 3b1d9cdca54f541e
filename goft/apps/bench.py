"""Benchmarks behind ``goft bench``: GOFT against the frozen layer, PEFT's LoRA / OFT / BOFT and the authors' dense-R
approach, measured in one run, interleaved, as medians of repeated runs (:mod:`goft.apps.bench_timing`); on CUDA
also the peak memory of each step.

Each measurement is one JSON line (written to ``OUT/bench.jsonl``) that names the machine; rich tables summarise them
and ``OUT/bench_layer.png`` plots the per-layer time ratio against d (:mod:`goft.apps.bench_report`).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from .. import functional as givens
from ..tuner.layer import GOFTLayer
from ..tuner.model import orthogonality_penalty
from .bench_report import plot_layer, report, spread_warnings
from .bench_timing import interleaved_times, machine_description, peak_step_bytes, saved_bytes, sync, timing_fields
from .dense_baseline import DenseGivensLinear
from .errors import ModelUnavailableError
from .methods import METHODS, count_parameters, wrap
from .pretrained import load_sequence_classifier

LAYER_METHODS = (
    "frozen",
    "goft",
    "qgoft",
    "goft_scaling",
    "goft_butterfly",
    "qgoft_butterfly",
    "goft_tree_depth2",
    "goft_random",  # any pairing other than "index" costs the same: two gathers of the input and their gradients
    "lora_r8",
    "oft",
    "boft",
    "authors_dense",
)


def build_layer_models(
    d: int, device: torch.device, methods=LAYER_METHODS, dtype: torch.dtype = torch.float32
) -> dict[str, nn.Module]:
    """One frozen ``Linear(d, d)`` in ``dtype`` and each method's adapted copy of it (random, non-identity adapters,
    in the dtype PEFT gives them: fp32 next to a half-precision base)."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(d, d)).to(device=device, dtype=dtype)
    base.requires_grad_(False)
    models = {}
    for name in methods:
        if name == "frozen":
            models[name] = base
        elif name == "authors_dense":
            models[name] = DenseGivensLinear(copy.deepcopy(base[0])).to(device)
        else:
            models[name] = wrap(copy.deepcopy(base), METHODS[name].peft_config(["0"], identity_init=False))
    return models


def bench_layer(
    d: int, tokens: int, device: torch.device, reps: int, methods=LAYER_METHODS, dtype: torch.dtype = torch.float32
) -> list[dict]:
    models = build_layer_models(d, device, methods, dtype)
    # mid-network: the input needs a gradient
    x = torch.randn(tokens, d, device=device, dtype=dtype, requires_grad=True)

    def make_step(model):
        def step():
            model(x).sum().backward()

        return step

    steps = {name: make_step(model) for name, model in models.items()}
    times = interleaved_times(steps, reps, device)
    return [
        {
            "bench": "layer",
            "method": name,
            "d": d,
            "tokens": tokens,
            "dtype": str(dtype).removeprefix("torch."),
            **timing_fields(times, name, "frozen"),
            "saved_bytes": saved_bytes(steps[name], exclude=x),
            # every method's model is on the device: what a step adds above them
            "step_peak_bytes": peak_step_bytes(steps[name], device, above_start=True),
            "trainable_params": count_parameters(model),
            "reps": reps,
        }
        for name, model in models.items()
    ]


def bench_rotation_scaling(dims, tokens: int, device: torch.device, reps: int) -> dict:
    """Forward+backward of the rotation alone across d; returns the per-d medians and the fitted exponent of
    time ∝ d^k (the rotation does O(d) work per token, so k should be near 1)."""
    steps, inputs = {}, {}
    for d in dims:
        x = torch.randn(tokens, d, device=device, requires_grad=True)
        theta = torch.randn(d - 1, device=device, requires_grad=True)
        inputs[d] = (x, theta)
        steps[str(d)] = lambda x=x, theta=theta: givens.rotate(x, theta).sum().backward()
    medians = {name: statistics.median(ts) for name, ts in interleaved_times(steps, reps, device).items()}
    xs = [math.log(d) for d in dims]
    ys = [math.log(medians[str(d)]) for d in dims]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)
    return {
        "bench": "rotation_scaling",
        "tokens": tokens,
        "dims": list(dims),
        "seconds": [medians[str(d)] for d in dims],
        "fitted_exponent": slope,
        "reps": reps,
    }


def bench_merge(d: int, device: torch.device, reps: int) -> list[dict]:
    rows = []
    for variant in ("goft", "qgoft"):
        config = METHODS[variant].peft_config(["0"], identity_init=False)
        torch.manual_seed(0)
        layer = GOFTLayer(nn.Linear(d, d).to(device), "default", config)
        w0 = layer.base_layer.weight.detach().clone()
        merge_times, unmerge_times, restore_first = [], [], None
        for _ in range(reps):
            sync(device)
            start = time.perf_counter()
            layer.merge()
            sync(device)
            merge_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            layer.unmerge()
            sync(device)
            unmerge_times.append(time.perf_counter() - start)
            if restore_first is None:
                restore_first = ((layer.base_layer.weight - w0).abs().max() / w0.abs().max()).item()
        # rounding errors add up over round trips: report one round trip, and all of them
        restore_all = ((layer.base_layer.weight - w0).abs().max() / w0.abs().max()).item()
        rows.append(
            {
                "bench": "merge",
                "method": variant,
                "d": d,
                "merge_seconds": statistics.median(merge_times),
                "unmerge_seconds": statistics.median(unmerge_times),
                "unmerge_restore_max_rel": restore_first,
                "unmerge_restore_max_rel_after_all_reps": restore_all,
                "reps": reps,
            }
        )
    return rows


E2E_METHODS = ("goft", "qgoft", "lora_r8", "oft", "boft")
E2E_MODELS = ("minilm", "llama-1b")
DTYPES = ("float32", "bfloat16", "float16")  # of the per-layer benchmark's base layer and input
E2E_SHAPES = {"minilm": (16, 128), "llama-1b": (4, 512)}  # batch, sequence length
MINILM_TARGETS = ["query", "key", "value", "dense"]
DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Llama 3.2 1B's published architecture (its config.json); the weights are random, which changes neither speed nor
# memory, so no download is needed.
LLAMA_1B = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}


def _e2e_model(name: str, device: torch.device):
    """(base model on ``device``, a description of its weights, target modules, PEFT task type, dtype)."""
    if name == "minilm":
        try:
            base, _ = load_sequence_classifier()
            weights = "pretrained"
        except ModelUnavailableError:  # e.g. a GPU machine without the package: same architecture, random weights
            base = BertForSequenceClassification(
                BertConfig(
                    hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, num_labels=2
                )
            )
            weights = "random (MiniLM architecture; model package not installed)"
        return base.to(device), weights, MINILM_TARGETS, "SEQ_CLS", torch.float32
    if name == "llama-1b":
        base = LlamaForCausalLM(LlamaConfig(**LLAMA_1B)).to(device=device, dtype=torch.bfloat16)
        return base, "random (Llama 3.2 1B architecture), bf16", DECODER_TARGETS, "CAUSAL_LM", torch.bfloat16
    raise ValueError(f"end-to-end model must be one of {', '.join(E2E_MODELS)}, got {name!r}")


def _training_step(model, method: str, batch: dict) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    quasi = METHODS[method].options.get("quasi", False)  # the registry says which runs carry qGOFT's penalty

    def step():
        loss = model(**batch).loss
        if quasi:
            loss = loss + orthogonality_penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_e2e(
    device: torch.device, reps: int, batch: int, seq_len: int, methods=E2E_METHODS, model_name: str = "minilm"
) -> list[dict]:
    """One training step (forward, backward, AdamW) of a whole model with all its linear layers adapted, per method:
    interleaved times, and on CUDA each method's peak memory, measured with no other model on the device."""
    torch.manual_seed(0)
    base, weights, targets, task_type, dtype = _e2e_model(model_name, device)
    ids = torch.randint(1000, 20000, (batch, seq_len), device=device)
    labels = torch.randint(0, 2, (batch,), device=device) if task_type == "SEQ_CLS" else ids
    inputs = {"input_ids": ids, "labels": labels}
    base.train()
    peaks = {}
    if device.type == "cuda":
        for method in methods:  # one adapted model at a time, adapters removed again after
            model = wrap(base, METHODS[method].peft_config(targets, task_type=task_type))
            step = _training_step(model, method, inputs)
            step()  # the optimizer's state exists from here on
            peaks[method] = peak_step_bytes(step, device)
            base = model.unload()
            del model, step
            torch.cuda.empty_cache()
    steps, models = {}, {}
    for method in methods:
        models[method] = wrap(copy.deepcopy(base), METHODS[method].peft_config(targets, task_type=task_type))
        models[method].train()
        steps[method] = _training_step(models[method], method, inputs)
    times = interleaved_times(steps, reps, device, warmup=1)
    reference = "lora_r8" if "lora_r8" in times else None
    return [
        {
            "bench": "e2e",
            "model": model_name,
            "method": m,
            "batch": batch,
            "seq_len": seq_len,
            "weights": weights,
            "dtype": str(dtype).removeprefix("torch."),
            **timing_fields(times, m, reference),
            "peak_bytes": peaks.get(m),
            "trainable_params": count_parameters(models[m]),
            "reps": reps,
        }
        for m in methods
    ]


def run(
    out: Path,
    dims,
    tokens_list,
    reps: int,
    device: str = "cpu",
    e2e: bool = True,
    merge: bool = True,
    methods=LAYER_METHODS,
    dense_max_d: int = 2048,
    e2e_methods=E2E_METHODS,
    dtypes=("float32",),
    e2e_models=("minilm",),
) -> list[dict]:
    """Every measurement in one process, each row appended to ``out/bench.jsonl`` as it is made; then the tables
    and ``out/bench_layer.png``."""
    console = Console()
    dev = torch.device(device)
    machine = machine_description(dev)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "bench.jsonl"
    rows: list[dict] = []

    def emit(row: dict) -> None:
        row = {**row, "machine": machine}
        rows.append(row)
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")

    jsonl.write_text("")
    console.print(f"machine: {machine}")
    for dtype in dtypes:
        for tokens in tokens_list:
            for d in dims:
                # the dense approach costs O(L d^3) per step: past dense_max_d it takes minutes and is skipped
                chosen = [m for m in methods if not (m == "authors_dense" and d > dense_max_d)]
                console.print(f"layer d={d} tokens={tokens} {dtype} ...")
                for row in bench_layer(d, tokens, dev, reps, chosen, getattr(torch, dtype)):
                    emit(row)
    if len(dims) >= 2:
        emit(bench_rotation_scaling(dims, max(tokens_list), dev, reps))
    if merge:
        for row in bench_merge(4096, dev, reps):
            emit(row)
    if e2e:
        for model_name in e2e_models:
            console.print(f"end-to-end {model_name} training step ...")
            for row in bench_e2e(dev, reps, *E2E_SHAPES[model_name], e2e_methods, model_name):
                emit(row)
    report(console, rows, dims, tokens_list, methods, reps, dtypes)
    for line in spread_warnings(rows):
        console.print(line, style="yellow")
    if dims:
        plot_layer(rows, max(tokens_list), out / "bench_layer.png", dtypes[0])
        console.print(f"wrote {jsonl} and {out / 'bench_layer.png'}")
    else:
        console.print(f"wrote {jsonl}")
    return rows
