"""Training helpers.  qGOFT's orthogonality penalty is added visibly to the loss, never hidden in a hook."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import transformers
from tqdm.auto import tqdm

from .model import orthogonality_penalty


class OrthogonalityPenaltyTrainer(transformers.Trainer):
    """``transformers.Trainer`` that adds :func:`goft.orthogonality_penalty` to the training loss.

    Use it in place of ``Trainer`` for qGOFT (for strict GOFT the penalty is exactly 0)::

        trainer = OrthogonalityPenaltyTrainer(model=peft_model, args=args, train_dataset=ds)

    With gradient accumulation the penalty is counted once per optimizer step: it is divided by the number of
    accumulation steps exactly when the Trainer itself will not divide the loss.
    """

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch: Any = None, **kwargs):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, **kwargs
        )
        loss, outputs = result if return_outputs else (result, None)
        if model.training:
            penalty = orthogonality_penalty(model)
            if self._loss_is_scaled_for_ga(num_items_in_batch):
                penalty = penalty / max(1, getattr(self, "current_gradient_accumulation_steps", 1))
            loss = loss + penalty.to(loss.device, loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def _loss_is_scaled_for_ga(self, num_items_in_batch: Any) -> bool:
        """Mirrors ``Trainer.training_step``'s rule for whether it will divide the loss by the accumulation steps."""
        explicit = getattr(self, "loss_is_scaled_for_ga", None)
        if explicit is not None:
            return bool(explicit)
        return bool(
            (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
            or getattr(self, "compute_loss_func", None) is not None
        )


# ---------------------------------------------------------------------------------------------------------------------
# One readable fine-tuning loop (used by `goft finetune` and `goft compare`)
# ---------------------------------------------------------------------------------------------------------------------

METHODS = ("goft", "qgoft", "lora", "oft", "boft", "head", "full")

# Per-method default learning rates (AdamW with 6% warmup and linear decay), for MiniLM-sized encoders and short runs
# (about a hundred steps).  The paper used about 5e-4 to 2e-3 for GOFT over many epochs; in short runs the angles,
# which start at zero, need more (a 512-example, 1-epoch GOFT run reached 0.565 at 5e-3 and 0.679 at 2e-2).  These are
# sensible defaults, not per-method tuned optima.  Printed by `goft finetune -h`.
DEFAULT_LR = {"goft": 1e-2, "qgoft": 1e-2, "lora": 2e-3, "oft": 5e-3, "boft": 5e-3, "head": 5e-3, "full": 5e-5}


@dataclass
class FinetuneConfig:
    method: str = "goft"
    task: str = "polarity"
    model: Optional[str] = None  # local transformers checkpoint dir; None = the embedded MiniLM
    train_file: Optional[str] = None
    eval_file: Optional[str] = None
    target_modules: Optional[list[str]] = None  # None = all linear layers of the encoder
    epochs: int = 3
    lr: Optional[float] = None  # None = DEFAULT_LR[method]
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    train_size: Optional[int] = None
    orth_reg_weight: float = 1e-2
    lora_r: int = 8
    output: Optional[str] = None
    save_adapter: bool = True
    progress: bool = True
    save_every: int = 0  # also checkpoint every N optimizer steps (0: only at epoch ends); needs output
    resume: bool = False  # continue from output/checkpoint.pt if it exists

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("epochs", "batch_size", "max_length", "lora_r"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.train_size is not None and self.train_size < 2:
            raise ValueError(f"--train-size must be at least 2, got {self.train_size}")
        if (self.train_file is None) != (self.eval_file is None):
            raise ValueError("--train-file and --eval-file go together: give both or neither")
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise ValueError(f"--save-every must be an integer >= 0, got {self.save_every!r}")
        if (self.save_every or self.resume) and not self.output:
            raise ValueError("--save-every and --resume need --output (where the checkpoint lives)")
        if self.lr is not None and not (self.lr > 0):
            raise ValueError(f"--lr must be a positive number, got {self.lr!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


def build_model(cfg: FinetuneConfig, num_labels: int):
    """The base classifier wrapped for ``cfg.method``; returns (model, tokenizer)."""
    import warnings

    from peft import BOFTConfig, LoraConfig, OFTConfig, get_peft_model

    from .config import GOFTConfig
    from .models import load_sequence_classifier

    model, tokenizer = load_sequence_classifier(cfg.model, num_labels=num_labels)
    targets = cfg.target_modules or "all-linear"
    common = {"target_modules": targets, "task_type": "SEQ_CLS"}
    if cfg.method in ("head", "full"):
        for name, param in model.named_parameters():
            param.requires_grad = cfg.method == "full" or _is_head(name)
        return model, tokenizer
    config = {
        "goft": lambda: GOFTConfig(**common),
        "qgoft": lambda: GOFTConfig(quasi=True, orth_reg_weight=cfg.orth_reg_weight, **common),
        "lora": lambda: LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, **common),
        "oft": lambda: OFTConfig(**common),
        "boft": lambda: BOFTConfig(**common),
    }[cfg.method]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BOFT warns that its CUDA kernel is unavailable on CPU
        return get_peft_model(model, config), tokenizer


def _is_head(name: str) -> bool:
    return name.split(".")[0] in ("classifier", "score") or ".classifier." in name


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _batches(n: int, batch_size: int, generator: Optional[torch.Generator]):
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


@torch.no_grad()
def evaluate(model, tokenizer, data, batch_size: int = 64, max_length: int = 64) -> float:
    model.eval()
    correct = 0
    for idx in _batches(len(data), batch_size, None):
        enc = tokenizer([data.texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor([data.labels[i] for i in idx])).sum())
    return correct / len(data)


def finetune(cfg: FinetuneConfig) -> dict:
    """Train, evaluate and (with ``cfg.output``) write metrics.json, the adapter and a curve PNG.  Returns metrics."""
    from . import data as data_mod

    torch.manual_seed(cfg.seed)
    if cfg.train_file is not None:
        train_set, test_set = data_mod.load_user_files(cfg.train_file, cfg.eval_file)
    else:
        train_set, test_set = data_mod.load_task(cfg.task)
    train_set = train_set.subset(cfg.train_size, cfg.seed)
    model, tokenizer = build_model(cfg, num_labels=len(train_set.label_names))
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    dist = _Distributed.from_environment()
    train_model = dist.wrap(model)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = max(1, round(0.06 * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    generator = torch.Generator().manual_seed(cfg.seed)
    ckpt = Path(cfg.output) / "checkpoint.pt" if cfg.output else None
    state = {"epoch": 0, "batch": 0, "epoch_generator": generator.get_state(), "seen": 0, "correct": 0,
             "elapsed": 0.0, "curve": {"step": [], "loss": [], "eval_epoch": [], "eval_accuracy": []}}
    if cfg.resume and ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, model, optimizer, schedule)
    if not dist.is_main:
        ckpt = None  # rank 0 writes; the other ranks hold identical state
    curve = state["curve"]
    start = time.perf_counter() - state["elapsed"]
    bar = tqdm(total=total_steps, initial=len(curve["step"]), disable=not (cfg.progress and dist.is_main),
               desc=f"{cfg.method} {train_set.source}", leave=False)

    def checkpoint(epoch: int, batch: int, epoch_generator: torch.Tensor) -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, model, optimizer, schedule, {
                **state, "epoch": epoch, "batch": batch, "epoch_generator": epoch_generator,
                "elapsed": time.perf_counter() - start})

    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        generator.set_state(state["epoch_generator"])  # the data order of this epoch, also after a resume
        epoch_generator = generator.get_state()
        for b, idx in enumerate(list(_batches(len(train_set), cfg.batch_size, generator))):
            if epoch == state["epoch"] and b < state["batch"]:
                continue  # done before the resume
            local = dist.shard(idx)  # this process's part of the global batch (all of it without torchrun)
            enc = tokenizer([train_set.texts[i] for i in local], padding=True, truncation=True,
                            max_length=cfg.max_length, return_tensors="pt")
            labels = torch.tensor([train_set.labels[i] for i in local])
            out = train_model(**enc, labels=labels)
            # Weighting each shard's mean by its share makes DDP's gradient average equal the global batch mean.
            loss = out.loss * (len(local) * dist.world_size / len(idx)) + orthogonality_penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            state["seen"] += len(local)
            state["correct"] += int((out.logits.argmax(-1) == labels).sum())
            curve["step"].append(len(curve["step"]) + 1)
            curve["loss"].append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{state['correct'] / state['seen']:.3f}")
            if cfg.save_every and len(curve["step"]) % cfg.save_every == 0:
                checkpoint(epoch, b + 1, epoch_generator)
        curve["eval_epoch"].append(epoch + 1)
        curve["eval_accuracy"].append(evaluate(model, tokenizer, test_set, max_length=cfg.max_length))
        state["epoch_generator"] = generator.get_state()
        checkpoint(epoch + 1, 0, state["epoch_generator"])
    bar.close()
    seconds = time.perf_counter() - start
    distributed = dist.check_identical(params)
    metrics = {
        "method": cfg.method, "task": cfg.task if cfg.train_file is None else "user", "seed": cfg.seed,
        "accuracy": curve["eval_accuracy"][-1], "trainable_params": n_trainable,
        "adapter_params": n_trainable - _head_params(model), "seconds": seconds,
        "train_examples": len(train_set), "eval_examples": len(test_set),
        "config": {**asdict(cfg), "lr": cfg.learning_rate},
        "curve": curve,
    }
    if distributed:
        metrics["distributed"] = distributed
    if cfg.output and dist.is_main:
        _write_outputs(cfg, model, metrics)
    dist.close()
    return metrics


class _Distributed:
    """Data parallelism under ``torchrun`` (gloo on CPU, nccl on GPU); a no-op for a single process.

    Each optimizer step takes the same global batch as a single-process run and gives every rank an equal, strided
    share of it; DDP averages the gradients, so the adapters stay identical across ranks and equal (up to float
    rounding) to the single-process run with the same ``--batch-size`` -- exactly so without dropout; with dropout
    the masks differ from the single-process run's.
    """

    def __init__(self, world_size: int = 1, rank: int = 0):
        self.world_size, self.rank = world_size, rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "_Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(tdist.get_world_size(), tdist.get_rank())

    def wrap(self, model):
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def shard(self, idx: list[int]) -> list[int]:
        if self.world_size == 1:
            return idx
        if len(idx) < self.world_size:
            raise ValueError(f"a batch of {len(idx)} examples cannot be split over {self.world_size} processes; "
                             "use a --batch-size of at least the number of processes")
        return idx[self.rank::self.world_size]

    def check_identical(self, params) -> Optional[dict]:
        """Largest difference of any trainable parameter between rank 0 and the other ranks (None: one process)."""
        if self.world_size == 1:
            return None
        import torch.distributed as tdist

        flat = torch.cat([p.detach().reshape(-1).float() for p in params])
        reference = flat.clone()
        tdist.broadcast(reference, src=0)
        diff = (flat - reference).abs().max()
        tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
        return {"world_size": self.world_size, "max_param_diff_across_ranks": diff.item()}

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as tdist

            tdist.barrier()
            tdist.destroy_process_group()


def _trainable_state(model) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t for n, t in model.state_dict().items() if n in names}


def save_checkpoint(path: Path, model, optimizer, schedule, state: dict) -> None:
    """Everything needed to continue bit-for-bit: trainable weights, optimizer, schedule, RNG states, position.

    Written to a temporary file in the same directory, fsynced, then renamed over the old checkpoint, so a kill at
    any moment leaves either the previous checkpoint or the new one, never a torn file.
    """
    payload = {"model": _trainable_state(model), "optimizer": optimizer.state_dict(),
               "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state(), "state": state}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path, model, optimizer, schedule) -> dict:
    payload = torch.load(path, weights_only=False)
    missing = set(_trainable_state(model)) - set(payload["model"])
    if missing:
        raise ValueError(f"{path} does not match this run (e.g. {sorted(missing)[0]!r} is missing); "
                         "resume with the same method and options, or start a fresh --output")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    torch.set_rng_state(payload["torch_rng"])
    return payload["state"]


def _head_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "classifier" in n)


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temporary file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_outputs(cfg: FinetuneConfig, model, metrics: dict) -> None:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.save_adapter:
        if hasattr(model, "save_pretrained") and cfg.method not in ("head", "full"):
            model.save_pretrained(out / "adapter")
        elif cfg.method == "head":
            from safetensors.torch import save_file

            save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad},
                      str(out / "head.safetensors"))
    plot_curve(metrics, out / "curve.png")
    write_json_atomic(out / "metrics.json", metrics)


def plot_curve(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = metrics["curve"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss = curve["loss"]
    window = max(1, len(loss) // 25)
    smooth = [sum(loss[max(0, i - window + 1):i + 1]) / len(loss[max(0, i - window + 1):i + 1])
              for i in range(len(loss))]
    ax1.plot(curve["step"], loss, alpha=0.3, label="step")
    ax1.plot(curve["step"], smooth, label=f"mean of {window}")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.legend()
    ax2.plot(curve["eval_epoch"], curve["eval_accuracy"], marker="o")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy")
    fig.suptitle(f"{metrics['method']} on {metrics['task']} (seed {metrics['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
