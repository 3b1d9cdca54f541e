"""The one training loop of the applications (``goft finetune``, ``goft compare``, ``goft instruct``).

AdamW with linear warmup (6% of the steps) and linear decay; qGOFT's orthogonality penalty added visibly to the loss;
checkpoints that continue bit-for-bit (``--resume``); data parallelism under ``torchrun``.  The caller supplies the
model, the number of examples, a function that turns example indices into the model's keyword arguments (with
``labels``, so the model returns ``.loss``), and optionally an evaluation run at each epoch end.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..tuner.layer import ORDER_KIND
from ..tuner.model import GOFTModel, orthogonality_penalty
from . import files
from .errors import Interrupted, OptionError, OutputError

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class LoopOptions:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    warmup_fraction: float = 0.06
    checkpoint: Optional[Path] = None  # file to checkpoint to (None: no checkpoints)
    save_every: int = 0  # also checkpoint every N optimizer steps (0: only at epoch ends)
    resume: bool = False  # continue from ``checkpoint`` if it exists
    overwrite: bool = False  # start over even if ``checkpoint`` holds an earlier run
    run_identity: Optional[dict] = None  # the options that define the run: saved, and compared on --resume
    progress: bool = True
    description: str = ""


@dataclass
class LoopState:
    """Where a run is: the next epoch and batch, the data order's RNG state, elapsed seconds and the curve."""

    epoch: int = 0
    batch: int = 0
    epoch_generator: Optional[torch.Tensor] = None
    elapsed: float = 0.0
    curve: dict = field(default_factory=lambda: {"step": [], "loss": [], "eval_epoch": [], "eval_accuracy": []})


@dataclass
class LoopResult:
    curve: dict
    seconds: float
    is_main: bool  # this process writes the outputs (always, without torchrun)
    distributed: Optional[dict]  # world size and largest parameter difference across ranks, under torchrun


# Options of a run that cannot change what it trains: a checkpoint may be resumed with these changed.
# A run may also continue on another device than it started on (the checkpoint is loaded onto the run's device).
RUN_NEUTRAL_OPTIONS = frozenset({"progress", "resume", "overwrite", "save_every", "output", "evaluate_test", "device"})


def run_identity(config, lr: float) -> dict:
    """The options of a dataclass ``config`` that decide what is trained, with the effective learning rate ``lr``
    (a default of None and the same rate given explicitly are one run)."""
    return {**{k: v for k, v in asdict(config).items() if k not in RUN_NEUTRAL_OPTIONS}, "lr": lr}


def warmup_linear_schedule(optimizer, total_steps: int, warmup_fraction: float):
    warmup = max(1, round(warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )


def batch_order(n: int, batch_size: int, generator: Optional[torch.Generator]) -> list[list[int]]:
    """Example indices in batches: shuffled by ``generator``, or in order without one."""
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


def train(
    model,
    n_examples: int,
    make_batch: Callable[[list[int]], dict],
    options: LoopOptions,
    evaluate: Optional[Callable[[], float]] = None,
) -> LoopResult:
    """Train ``model``'s trainable parameters in place; see the module docstring."""
    _penalty_outside_loss(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.0)
    total_steps = math.ceil(n_examples / options.batch_size) * options.epochs
    schedule = warmup_linear_schedule(optimizer, total_steps, options.warmup_fraction)
    dist = Distributed.from_environment(next(model.parameters()).device)
    train_model = dist.wrap(model)
    generator = torch.Generator().manual_seed(options.seed)
    state = _starting_state(options, model, optimizer, schedule, generator)
    checkpoint = options.checkpoint if dist.is_main else None  # rank 0 writes; the others hold the same state
    start = time.perf_counter() - state.elapsed
    bar = tqdm(
        total=total_steps,
        initial=len(state.curve["step"]),
        disable=not (options.progress and dist.is_main),
        desc=options.description,
        leave=False,
    )

    def save(epoch: int, batch: int, epoch_generator: torch.Tensor) -> None:
        if checkpoint is not None:
            at = LoopState(epoch, batch, epoch_generator, time.perf_counter() - start, state.curve)
            save_checkpoint(checkpoint, model, optimizer, schedule, at, options.run_identity)

    with stop_on_ctrl_c(enabled=dist.world_size == 1) as stop:
        for epoch in range(state.epoch, options.epochs):
            model.train()
            generator.set_state(state.epoch_generator)  # the data order of this epoch, also after a resume
            epoch_generator = generator.get_state()
            for b, idx in enumerate(batch_order(n_examples, options.batch_size, generator)):
                if epoch == state.epoch and b < state.batch:
                    continue  # done before the resume
                local = dist.shard(idx)  # this process's share of the global batch (all of it without torchrun)
                # weighting each share's mean by its size makes DDP's gradient average equal the global batch mean
                loss = _step(
                    train_model,
                    model,
                    optimizer,
                    schedule,
                    make_batch(local),
                    weight=len(local) * dist.world_size / len(idx),
                )
                _record(state.curve, bar, loss)
                if stop.requested or (options.save_every and len(state.curve["step"]) % options.save_every == 0):
                    save(epoch, b + 1, epoch_generator)
                if stop.requested:
                    raise Interrupted(checkpoint, len(state.curve["step"]))
            if evaluate is not None:
                state.curve["eval_epoch"].append(epoch + 1)
                state.curve["eval_accuracy"].append(evaluate())
            state.epoch_generator = generator.get_state()
            save(epoch + 1, 0, state.epoch_generator)
            if stop.requested:
                raise Interrupted(checkpoint, len(state.curve["step"]))
    bar.close()
    seconds = time.perf_counter() - start
    distributed = dist.check_identical(params)
    # DDP's reducer holds a reference to the process group: let it go while every rank is still connected, or the
    # group's last reference dies with the wrapper after close(), and gloo's destructor can wait forever on threads
    # talking to a rank that has already exited
    del train_model
    dist.close()
    return LoopResult(state.curve, seconds, dist.is_main, distributed)


def _starting_state(options: LoopOptions, model, optimizer, schedule, generator) -> LoopState:
    """A fresh start, or the checkpoint's state with ``--resume``; refuses to overwrite a checkpoint unasked."""
    if options.checkpoint is not None and options.checkpoint.is_file():
        if options.resume:
            return load_checkpoint(options.checkpoint, model, optimizer, schedule, options.run_identity)
        if not options.overwrite:
            raise OutputError(
                f"{options.checkpoint} holds a checkpoint of an earlier run; pass --resume to continue "
                "it, or --overwrite to start over and replace it"
            )
    return LoopState(epoch_generator=generator.get_state())


def _record(curve: dict, bar, loss: float) -> None:
    curve["step"].append(len(curve["step"]) + 1)
    curve["loss"].append(loss)
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.3f}")


class _StopRequest:
    requested = False


@contextlib.contextmanager
def stop_on_ctrl_c(enabled: bool = True):
    """While training: the first Ctrl-C asks the loop to stop after the current step (it then checkpoints and raises
    :class:`Interrupted`); a second one interrupts at once.  Off under torchrun (ranks must stop at the same step)
    and outside the main thread (signals go to the main thread only)."""
    stop = _StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, frame):
        stop.requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C stops at once
        print("\nstopping after this step (Ctrl-C again to stop at once) ...", flush=True)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _penalty_outside_loss(model) -> None:
    """This loop weighs the task loss of each process's shard and adds the penalty once, unweighted: the model must
    leave the penalty out of its own loss (``GOFTModel.penalty_in_loss``)."""
    for module in model.modules():
        if isinstance(module, GOFTModel):
            module.penalty_in_loss = False


def _step(train_model, model, optimizer, schedule, batch: dict, weight: float) -> float:
    """One optimizer step on ``batch`` (the task loss times ``weight``, plus qGOFT's penalty once, unweighted: this
    loop adds it itself, see :func:`_penalty_outside_loss`); returns the loss."""
    loss = train_model(**batch).loss * weight + orthogonality_penalty(model)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item()


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints: learned numbers, optimizer, schedule, RNG and position; nothing derivable from the config
# ---------------------------------------------------------------------------------------------------------------------


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trained parameters, and the coordinate orders a "task" pairing chose from data before training."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t for n, t in model.state_dict().items() if n in names or f".{ORDER_KIND}." in n}


def save_checkpoint(path: Path, model, optimizer, schedule, state: LoopState, run_identity: Optional[dict]) -> None:
    """Everything needed to continue bit-for-bit, written atomically (a kill leaves the old or the new file)."""
    files.write_torch(
        path,
        {
            "model": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "run": run_identity,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "state": {
                "epoch": state.epoch,
                "batch": state.batch,
                "epoch_generator": state.epoch_generator,
                "elapsed": state.elapsed,
                "curve": state.curve,
            },
        },
    )


def load_checkpoint(path: Path, model, optimizer, schedule, run_identity: Optional[dict] = None) -> LoopState:
    """Restore a run from ``path``; refuses one written with other options than ``run_identity``, naming them."""
    payload = torch.load(path, map_location="cpu", weights_only=False)  # load_state_dict copies to the run's device
    _check_same_run(path, payload.get("run"), run_identity)
    missing = set(trainable_state(model)) - set(payload["model"])
    if missing:
        raise OutputError(
            f"{path} does not match this run (e.g. {sorted(missing)[0]!r} is missing); "
            "resume with the same method and options, or start a fresh --output"
        )
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    schedule.load_state_dict(payload["schedule"])
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") is not None and torch.cuda.is_available():  # dropout's masks on a GPU
        for index, state in enumerate(payload["cuda_rng"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    saved = payload["state"]
    return LoopState(saved["epoch"], saved["batch"], saved["epoch_generator"], saved["elapsed"], saved["curve"])


def trained_to_the_end(path: Path, run_identity: dict, epochs: int) -> bool:
    """Whether the checkpoint at ``path`` holds the run ``run_identity`` written at the end of epoch ``epochs``, its
    last: resuming it trains nothing."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    saved = payload["state"]
    return payload.get("run") == run_identity and saved["epoch"] == epochs and saved["batch"] == 0


def _check_same_run(path: Path, saved: Optional[dict], now: Optional[dict]) -> None:
    if now is None:
        return
    if saved is None:
        raise OutputError(
            f"{path} does not record the options it was trained with, so resuming it could mix two "
            "runs; start over with --overwrite"
        )
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        listed = "; ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} there, {now.get(k)!r} now" for k in changed)
        raise OutputError(
            f"{path} was trained with other options ({listed}); resume with the checkpoint's options, "
            "or start over with --overwrite"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Data parallelism
# ---------------------------------------------------------------------------------------------------------------------


class Distributed:
    """Data parallelism under ``torchrun`` (gloo for a model on the CPU, nccl on GPUs); a no-op for one process.

    Each optimizer step takes the same global batch as a single-process run and gives every rank an equal, strided
    share of it; DDP averages the gradients, so the adapters stay identical across ranks and equal (up to float
    rounding) to the single-process run with the same batch size -- exactly so without dropout; with dropout the
    masks differ from the single-process run's.
    """

    def __init__(self, world_size: int = 1, rank: int = 0):
        self.world_size, self.rank = world_size, rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        """One process, or torchrun's group: nccl for a model on a GPU, gloo for one on the CPU (also on a machine
        with GPUs, where a CPU run's tensors cannot go through nccl)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(tdist.get_world_size(), tdist.get_rank())

    def wrap(self, model):
        if self.world_size == 1:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def shard(self, idx: list[int]) -> list[int]:
        if self.world_size == 1:
            return idx
        if len(idx) < self.world_size:
            raise OptionError(
                "batch_size",
                f"must be at least the number of processes ({self.world_size}): a batch "
                f"of {len(idx)} examples cannot be split over them",
            )
        return idx[self.rank :: self.world_size]

    def check_identical(self, params) -> Optional[dict]:
        """Largest difference of any trainable parameter between rank 0 and the other ranks (None: one process)."""
        if self.world_size == 1:
            return None
        flat = torch.cat([p.detach().reshape(-1).float() for p in params])
        reference = flat.clone()
        tdist.broadcast(reference, src=0)
        diff = (flat - reference).abs().max()
        tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
        return {"world_size": self.world_size, "max_param_diff_across_ranks": diff.item()}

    def close(self) -> None:
        if self.world_size > 1:
            gc.collect()  # the DDP wrapper sits in reference cycles (hooks): collect it before the group goes
            tdist.barrier()
            tdist.destroy_process_group()
