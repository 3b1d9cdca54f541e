"""``goft instruct``: instruction tuning of a causal LM on ``polarity-instruct``, and what it makes the model forget.

The task is :mod:`goft.apps.instruct_task`'s, the forgetting measures :mod:`goft.apps.forgetting`'s, the protocol
:mod:`goft.apps.protocol`'s (``goft compare``'s): per method, a sweep over a grid of rates with the first seed, each
run scored on validation prompts (a fixed share of the training split, see :func:`goft.apps.data.split_validation`;
the test sentences are not read); the rate with the best validation accuracy; then the final runs at that rate with
every seed, scored on the test sentences once.  The final run with the sweep's seed trains exactly what the chosen
sweep run trained (which sentences are scored does not change the training): with ``output`` it starts from that
run's finished checkpoint and only scores it.  Every run records its stage, rate, validation and (finals only) test
accuracy and its forgetting, so the file also holds the accuracy-vs-forgetting frontier over the grid.  Tables and
the plot: :mod:`goft.apps.instruct_report`.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch

from . import adapter_files, data, files, pretrained
from .configs import InstructConfig
from .devices import device_description, use_device
from .forgetting import forgetting, heldout_passages, next_token_logprobs
from .instruct_report import write_report
from .instruct_task import TASK, answer_ids, build_batch, generation_accuracy, prompt_ids
from .loop import (
    CHECKPOINT_NAME,
    LoopOptions,
    run_identity,
    train,
    trained_to_the_end,
)
from .methods import METHODS, count_parameters, instruct_default_lr, wrap
from .protocol import Plan, lr_grid, run_protocol
from .results import FINAL, INSTRUCT_SETUP_OPTIONS, SWEEP, RunsFile
from .results import INSTRUCT_SCHEDULE as SCHEDULE

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
KEY_FIELDS = ("method", "stage", "seed", "lr", "schedule", "base_weights")


def build_instruct_model(cfg: InstructConfig, model):
    config = METHODS[cfg.method].peft_config(
        cfg.target_modules or DEFAULT_TARGETS,
        task_type="CAUSAL_LM",
        orth_reg_weight=cfg.orth_reg_weight,
        lora_r=cfg.lora_r,
    )
    return wrap(model, config)


def instruct(cfg: InstructConfig, base_logprobs_cache: Optional[dict] = None) -> dict:
    """Tune with the shared loop, then measure generation accuracy and forgetting.  Returns a metrics dict; with
    ``cfg.output`` the run's checkpoint and adapter are kept in ``cfg.run_dir``."""
    device = use_device(cfg.device)  # refuses a device this machine lacks before the model is loaded
    torch.manual_seed(cfg.seed)
    model, tokenizer = pretrained.load_causal_lm(cfg.model, cfg.base_weights)
    base_bytes = pretrained.weight_bytes(model)
    model.to(device)
    train_set, test_set = data.load_task("polarity")
    train_set, val_set = data.split_validation(train_set)
    train_set = train_set.subset(cfg.train_size, cfg.seed)
    val_set = val_set.subset(cfg.val_size, 0)  # the same validation prompts for every run
    test_set = test_set.subset(cfg.eval_size, 0)  # the same evaluation sentences for every run
    passages = heldout_passages(tokenizer, cfg.forget_passages, cfg.forget_tokens).to(device)
    # the base's own numbers, per base weights: a tuned model's forgetting is measured against the base it tuned
    cache = (base_logprobs_cache if base_logprobs_cache is not None else {}).setdefault(cfg.base_weights, {})
    if "base" not in cache:
        cache["base"] = next_token_logprobs(model, passages)
        cache["base_val_accuracy"] = generation_accuracy(model, tokenizer, val_set.texts, val_set.labels)
    if cfg.evaluate_test and "base_accuracy" not in cache:
        cache["base_accuracy"] = generation_accuracy(model, tokenizer, test_set.texts, test_set.labels)
    model = build_instruct_model(cfg, model)
    reference = pretrained.model_reference(cfg.model, pretrained.SMOLLM2_NAME)  # how outputs name the base
    model.peft_config["default"].base_model_name_or_path = reference
    examples = [
        (prompt_ids(tokenizer, t), answer_ids(tokenizer, y))
        for t, y in zip(train_set.texts, train_set.labels, strict=True)
    ]
    options = LoopOptions(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.learning_rate,
        seed=cfg.seed,
        checkpoint=cfg.run_dir / CHECKPOINT_NAME if cfg.run_dir else None,
        save_every=cfg.save_every,
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        description=f"{cfg.method} instruct",
        run_identity=run_identity(cfg, cfg.learning_rate),
    )
    result = train(
        model, len(examples), lambda idx: build_batch(tokenizer, [examples[i] for i in idx], device), options
    )
    if cfg.run_dir is not None and result.is_main:
        adapter_files.write_adapter(model, cfg.run_dir / "adapter")
    val_accuracy = generation_accuracy(model, tokenizer, val_set.texts, val_set.labels)
    accuracy = generation_accuracy(model, tokenizer, test_set.texts, test_set.labels) if cfg.evaluate_test else None
    forget = forgetting(cache["base"], next_token_logprobs(model, passages), passages)
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "model": reference,
        "accuracy": accuracy,
        "val_accuracy": val_accuracy,
        "base_accuracy": cache.get("base_accuracy") if cfg.evaluate_test else None,
        "base_val_accuracy": cache["base_val_accuracy"],
        "trainable_params": count_parameters(model),
        "seconds": result.seconds,
        **forget,
        "base_weights": cfg.base_weights,
        "base_weight_mib": base_bytes / 2**20,
        "device": device_description(device),
        "loss": result.curve["loss"],
        "config": {**asdict(cfg), "lr": cfg.learning_rate},
    }


def run_instruct_compare(
    methods, seeds, base: InstructConfig, results_path, progress=print, learning_rates=None, sweep: bool = True
) -> dict:
    """The protocol for every method, appended to a results JSON (atomic, resumable) with a markdown table and a PNG
    of accuracy against forgetting.

    The sweep's grid is ``learning_rates`` when given, else four rates spanning 30× around the method's
    ``instruct_lr`` (:func:`goft.apps.protocol.lr_grid`).  ``sweep=False`` skips the sweep and runs every seed at
    each of ``learning_rates`` or at :func:`~goft.apps.methods.instruct_default_lr` (the rate a recorded sweep chose,
    else the grid's centre), scored on test, as stage ``unswept`` (quick looks; the table says so).  A run is
    identified by (method, stage, seed, rate, schedule, base weights): a rerun skips what is recorded."""
    results = RunsFile(results_path, KEY_FIELDS, kind="instruct")
    results.check_setup(instruct_setup(base))
    cache: dict = {}  # the base model's numbers, measured once per base

    def run_one(method: str, stage: str, seed: int, lr: float) -> dict:
        cfg = replace(base, method=method, seed=seed, lr=lr, evaluate_test=stage != SWEEP)
        return _train_and_score(cfg, stage, cache, progress)

    plan = Plan(
        results=results,
        data_name=TASK,
        key=lambda method, stage, seed, lr: (method, stage, seed, lr, SCHEDULE, base.base_weights),
        run_one=run_one,
        sweep_grid=lambda method: list(learning_rates) if learning_rates else lr_grid(METHODS[method].instruct_lr),
        unswept_rates=lambda method: list(learning_rates or [instruct_default_lr(method)]),
        counts_for_choice=trained_like(base),
        describe=describe_run,
    )
    run_protocol(plan, methods, seeds, sweep=sweep, progress=progress)
    write_report(results.data, results.path.with_suffix(".md"), results.path.with_suffix(".png"))
    return results.data


def instruct_setup(base: InstructConfig) -> dict:
    """The values of ``INSTRUCT_SETUP_OPTIONS`` for ``base``, as the results file records them."""
    return {
        **{name: getattr(base, name) for name in INSTRUCT_SETUP_OPTIONS},
        "model": pretrained.model_reference(base.model, pretrained.SMOLLM2_NAME),
    }


def trained_like(base: InstructConfig):
    """Which recorded runs trained like ``base``'s will: on the same base weights, with today's schedule."""
    return lambda row: row["base_weights"] == base.base_weights and row["schedule"] == SCHEDULE


def _train_and_score(cfg: InstructConfig, stage: str, cache: dict, progress) -> dict:
    """One run of :func:`instruct` (a final run starts from its sweep twin's finished checkpoint where there is
    one); returns its results row."""
    trained_by_sweep = _start_from_the_sweep_run(cfg) if stage == FINAL else None
    if trained_by_sweep:
        progress(
            f"{cfg.method} final seed {cfg.seed} lr {cfg.learning_rate:g}: the sweep run in {trained_by_sweep} "
            "trained the same; scoring its weights instead of training again"
        )
        cfg = replace(cfg, resume=True)
    metrics = instruct(cfg, base_logprobs_cache=cache)
    row = {k: v for k, v in metrics.items() if k not in ("loss", "config")}
    if trained_by_sweep:
        row["trained_by"] = str(trained_by_sweep)
    row["stage"], row["lr"] = stage, metrics["config"]["lr"]
    row["train_examples"], row["val_examples"] = cfg.train_size, cfg.val_size
    row["eval_examples"] = cfg.eval_size if cfg.evaluate_test else 0
    row["schedule"], row["base_weights"] = SCHEDULE, cfg.base_weights  # with the method, stage, seed, rate: its key
    return row


def describe_run(row: dict) -> str:
    test = "" if row["accuracy"] is None else f", test {row['accuracy']:.3f} (base {row['base_accuracy']:.3f})"
    return (
        f"{row['method']} {row['stage']} seed {row['seed']} lr {row['lr']:g}: validation {row['val_accuracy']:.3f}"
        f"{test}, KL {row['kl_base_to_tuned']:.4f}, perplexity {row['perplexity_base']:.2f} -> "
        f"{row['perplexity_tuned']:.2f}, {row['seconds']:.0f} s"
    )


def _start_from_the_sweep_run(cfg: InstructConfig) -> Optional[Path]:
    """With ``output``: when the sweep run with ``cfg``'s options, seed and rate finished its training and this run
    has no checkpoint of its own, copy the sweep's checkpoint into this run's directory (resuming it then trains
    nothing) and return the sweep run's directory; else None."""
    if cfg.run_dir is None or (cfg.run_dir / CHECKPOINT_NAME).exists():
        return None
    sweep_dir = replace(cfg, evaluate_test=False).run_dir
    sweep_checkpoint = sweep_dir / CHECKPOINT_NAME
    if not sweep_checkpoint.is_file() or not trained_to_the_end(
        sweep_checkpoint, run_identity(cfg, cfg.learning_rate), cfg.epochs
    ):
        return None
    files.write_bytes(cfg.run_dir / CHECKPOINT_NAME, sweep_checkpoint.read_bytes())
    return sweep_dir
