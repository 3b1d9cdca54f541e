"""``goft finetune``: fine-tune a sequence classifier with one method, evaluate it, and write what it learned."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..tuner.calibration import calibrate_pairing
from . import adapter_files, data, files, plots
from .configs import FinetuneConfig
from .devices import device_description, use_device
from .errors import OptionError
from .loop import (
    CHECKPOINT_NAME,
    LoopOptions,
    batch_order,
    run_identity,
    train,
)
from .methods import (
    METHODS,
    adapter_parameters,
    count_parameters,
    is_head_parameter,
    wrap,
)
from .pretrained import MINILM_NAME, labelled_base, load_sequence_classifier, model_reference, resolve_model_dir


def build_model(cfg: FinetuneConfig, label_names: tuple[str, ...]):
    """The base classifier wrapped for ``cfg.method``, its classes named; returns (model, tokenizer)."""
    model, tokenizer = load_sequence_classifier(cfg.model, num_labels=len(label_names))
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: i for i, name in enumerate(label_names)}
    method = METHODS[cfg.method]
    if not method.adapts:
        for name, param in model.named_parameters():
            param.requires_grad = method.family == "full" or is_head_parameter(name)
        return model, tokenizer
    config = method.peft_config(
        cfg.target_modules or "all-linear",
        task_type="SEQ_CLS",
        orth_reg_weight=cfg.orth_reg_weight,
        lora_r=cfg.lora_r,
        structure=cfg.structure,
        depth=cfg.depth,
        pairing=cfg.pairing,
    )
    model = wrap(model, config)
    # PEFT's AutoPeftModelForSequenceClassification loads the base from here, its classes named; on another
    # machine goft finds the base by the portable name saved beside the adapter (adapter_files.write_adapter)
    config.base_model_name_or_path = str(labelled_base(resolve_model_dir(cfg.model, MINILM_NAME), label_names))
    return model, tokenizer


def encode(
    tokenizer, dataset: data.Dataset, idx: list[int], max_length: int, device: torch.device | str = "cpu"
) -> dict:
    return dict(
        tokenizer(
            [dataset.texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
    )


@torch.no_grad()
def evaluate(model, tokenizer, dataset: data.Dataset, batch_size: int = 64, max_length: int = 64) -> float:
    """Accuracy of ``model`` (on whatever device it is) on ``dataset``."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for idx in batch_order(len(dataset), batch_size, None):
        pred = model(**encode(tokenizer, dataset, idx, max_length, device)).logits.argmax(-1).cpu()
        correct += int((pred == torch.tensor([dataset.labels[i] for i in idx])).sum())
    return correct / len(dataset)


def load_data(cfg: FinetuneConfig) -> tuple[data.Dataset, data.Dataset, data.Dataset]:
    """(train, validation, test).  ``train_size`` subsamples what is left for training after the validation split is
    set aside, so the validation split is the same whatever the training size."""
    if cfg.train_file is None:
        train_set, test_set = data.load_task(cfg.task)
        train_set, val_set = data.split_validation(train_set, cfg.val_fraction)
    elif cfg.val_file is not None:
        train_set, test_set, val_set = data.load_user_files(cfg.train_file, cfg.eval_file, cfg.val_file)
    else:
        train_set, test_set = data.load_user_files(cfg.train_file, cfg.eval_file)
        train_set, val_set = data.split_validation(train_set, cfg.val_fraction)
    return train_set.subset(cfg.train_size, cfg.seed), val_set, test_set


def finetune(cfg: FinetuneConfig) -> dict:
    """Train, evaluate on the validation split after every epoch and on the test split at the end (unless
    ``cfg.evaluate_test`` is False), and with ``cfg.output`` write metrics.json, the adapter and a curve PNG.
    Returns the metrics."""
    checkpoint = Path(cfg.output) / CHECKPOINT_NAME if cfg.output else None
    if cfg.resume and not checkpoint.is_file():
        raise OptionError(
            "resume", f"finds no checkpoint at {checkpoint}: nothing to continue (drop --resume to start this run)"
        )
    device = use_device(cfg.device)  # refuses a device this machine lacks before any data or model is loaded
    torch.manual_seed(cfg.seed)
    train_set, val_set, test_set = load_data(cfg)
    model, tokenizer = build_model(cfg, train_set.label_names)
    model.to(device)
    n_trainable = count_parameters(model)

    def make_batch(idx: list[int]) -> dict:
        labels = torch.tensor([train_set.labels[i] for i in idx], device=device)
        return {**encode(tokenizer, train_set, idx, cfg.max_length, device), "labels": labels}

    calibration = None
    if getattr(getattr(model, "peft_config", {}).get("default"), "pairing", None) == "task" and not cfg.resume:
        # a resumed run takes the order from its checkpoint; the test and validation splits are never seen here
        calibration_order = batch_order(len(train_set), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
        report = calibrate_pairing(model, map(make_batch, calibration_order), num_batches=cfg.calibration_batches)
        calibration = {"batches": report.batches, "tokens": report.rows, "seconds": report.seconds}

    options = LoopOptions(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.learning_rate,
        seed=cfg.seed,
        checkpoint=checkpoint,
        save_every=cfg.save_every,
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        run_identity=run_identity(cfg, cfg.learning_rate),
        progress=cfg.progress,
        description=f"{cfg.method} {train_set.source}",
    )
    result = train(
        model,
        len(train_set),
        make_batch,
        options,
        evaluate=lambda: evaluate(model, tokenizer, val_set, max_length=cfg.max_length),
    )
    test_accuracy = evaluate(model, tokenizer, test_set, max_length=cfg.max_length) if cfg.evaluate_test else None
    data_sources = {
        "train": train_set.source,
        "validation": val_set.source,
        "test": test_set.source if cfg.evaluate_test else None,
    }
    metrics = {
        "method": cfg.method,
        "method_label": cfg.method_label,
        "task": cfg.data_name,
        "seed": cfg.seed,
        "model": model_reference(cfg.model, MINILM_NAME),
        "labels": list(train_set.label_names),
        "data": data_sources,
        "accuracy": test_accuracy,
        "val_accuracy": result.curve["eval_accuracy"][-1],
        "val_accuracy_per_epoch": result.curve["eval_accuracy"],
        "trainable_params": n_trainable,
        "adapter_params": adapter_parameters(model),
        "seconds": result.seconds,
        "calibration": calibration,
        "device": device_description(device),
        "train_examples": len(train_set),
        "val_examples": len(val_set),
        "eval_examples": len(test_set) if cfg.evaluate_test else 0,
        "config": {**asdict(cfg), "lr": cfg.learning_rate},
        "curve": result.curve,
    }
    if result.distributed:
        metrics["distributed"] = result.distributed
    metrics["outputs"] = []
    if cfg.output and result.is_main:
        write_outputs(Path(cfg.output), model, metrics)
    return metrics


def write_outputs(out: Path, model, metrics: dict) -> None:
    """What was trained (the adapter with its class names, the head, or the whole model), curve.png, and
    metrics.json last; ``metrics["outputs"]`` lists them."""
    method = METHODS[metrics["method"]]
    out.mkdir(parents=True, exist_ok=True)
    if method.adapts:
        adapter_files.write_adapter(model, out / "adapter", labels=metrics["labels"], base_model=metrics["model"])
        written = ["adapter/"]
    elif method.family == "head":
        files.write_tensors(
            out / "head.safetensors",
            {n: p for n, p in model.named_parameters() if p.requires_grad},
            metadata={"base_model": metrics["model"], "labels": json.dumps(metrics["labels"])},
        )
        written = ["head.safetensors"]
    else:
        files.save_pretrained(model, out / "model")
        written = ["model/"]
    checkpoint = ["checkpoint.pt"] if (out / CHECKPOINT_NAME).is_file() else []  # kept to --resume or extend the run
    metrics["outputs"] = [*written, "curve.png", "metrics.json", *checkpoint]
    plot_curve(metrics, out / "curve.png")
    files.write_json(out / "metrics.json", metrics)


def plot_curve(metrics: dict, path: Path) -> None:
    plt = plots.pyplot()
    curve = metrics["curve"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss = curve["loss"]
    window = max(1, len(loss) // 25)
    ax1.plot(curve["step"], loss, alpha=0.3 if window > 1 else 1.0, label="per step")
    if window > 1:  # a running mean only where there are enough steps to smooth
        smooth = [
            sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1])
            for i in range(len(loss))
        ]
        ax1.plot(curve["step"], smooth, label=f"running mean of {window} steps")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.legend()
    ax2.plot(curve["eval_epoch"], [100 * a for a in curve["eval_accuracy"]], marker="o")
    for epoch, acc in zip(curve["eval_epoch"], curve["eval_accuracy"], strict=True):
        ax2.annotate(f"{100 * acc:.1f}", (epoch, 100 * acc), textcoords="offset points", xytext=(0, 6), ha="center")
    ax2.set_xticks(curve["eval_epoch"])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy (%)")
    method = metrics.get("method_label", metrics["method"])  # metrics written before the label existed lack it
    fig.suptitle(f"{method} on {metrics['task']}, {metrics['model']} (seed {metrics['seed']})")
    plots.save_figure(fig, path)
