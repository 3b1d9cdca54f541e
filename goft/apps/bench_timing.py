"""How ``goft bench`` measures: the machine, interleaved medians (``torch.utils.benchmark``, which synchronises
CUDA around each repetition), peak memory of a step, and the bytes autograd saves for backward."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable

import torch
from torch.utils import benchmark

from .. import functional as givens


def machine_description(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["goft_kernel"] = givens.kernel_choice(device.type)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    steps: dict[str, Callable[[], None]], reps: int, device: torch.device, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds of each step in each repetition, timing the steps round-robin so that machine noise hits all of them
    alike (repetition i of every step ran back to back)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync(device)
    # (Timer would run single-threaded by default: keep the threads the process has, as the steps will in use)
    timers = {
        name: benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
        for name, step in steps.items()
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, timer in timers.items():
            times[name].append(timer.timeit(1).raw_times[0])
    return times


def peak_step_bytes(step: Callable[[], None], device: torch.device, above_start: bool = False) -> int | None:
    """Peak CUDA memory allocated while ``step`` runs: all live tensors, the model's included, or with
    ``above_start`` only what the step adds to what was allocated when it began; None on CPU."""
    if device.type != "cuda":
        return None
    sync(device)
    start = torch.cuda.memory_allocated(device) if above_start else 0
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - start


def timing_fields(times: dict[str, list[float]], name: str, reference: str | None) -> dict:
    """Median seconds of ``name`` with its range, and its ratio to ``reference`` (median of the medians) with the
    range of the per-repetition ratios, so that a noisy run shows as noisy."""
    fields = {"seconds": statistics.median(times[name]), "seconds_range": [min(times[name]), max(times[name])]}
    if reference is not None and reference in times:
        ratios = [t / r for t, r in zip(times[name], times[reference], strict=True)]
        fields[f"ratio_to_{reference}"] = fields["seconds"] / statistics.median(times[reference])
        fields[f"ratio_to_{reference}_range"] = [min(ratios), max(ratios)]
    return fields


def saved_bytes(step: Callable[[], None], exclude: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``step``, not counting ``exclude``'s storage
    (the layer input, which the network keeps alive anyway)."""
    storages: dict[int, int] = {}
    skip = exclude.untyped_storage().data_ptr()

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() != skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())
