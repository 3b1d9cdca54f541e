"""The ``goft`` command line (also ``python -m goft``): argparse, and the one place that turns errors into messages.

Each subcommand's options become a config of its module (``finetune``, ``compare``, ``instruct``, ``inspect``,
``merge``, ``bench``); those modules know nothing of argparse.  Heavy modules are imported only by the subcommand
that needs them, so ``goft --help`` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import AppError, Interrupted, OptionError
from .methods import (
    COMPARE_DEFAULT,
    FINETUNE_METHODS,
    INSTRUCT_METHODS,
    METHODS,
    chosen_lr,
    default_lr,
    instruct_default_lr,
)

DEVICE_HELP = "where to train: cpu, cuda or cuda:N; under torchrun, cuda is each process's own GPU (default: cpu)"


def _int_list(minimum: int):
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values or any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"expected comma-separated integers >= {minimum}, got {text!r}")
        return values

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}") from None
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers > 0, got {text!r}")
    return values


def _comma_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


# ---------------------------------------------------------------------------------------------------------------------
# Commands: options -> a config of the command's module -> its function
# ---------------------------------------------------------------------------------------------------------------------


def _finetune_config(args: argparse.Namespace):
    from .finetune import FinetuneConfig

    values = dict(
        task=args.task,
        model=args.model,
        train_file=args.train_file,
        eval_file=args.eval_file,
        val_file=args.val_file,
        val_fraction=args.val_fraction,
        target_modules=_comma_list(args.target_modules),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        train_size=args.train_size,
        progress=not args.no_progress,
        device=args.device,
    )
    # finetune's own options (compare's parser lacks them: FinetuneConfig's defaults apply)
    for name in (
        "method",
        "seed",
        "orth_reg_weight",
        "lora_r",
        "structure",
        "depth",
        "output",
        "save_every",
        "resume",
        "overwrite",
    ):
        if hasattr(args, name):
            values[name] = getattr(args, name)
    return FinetuneConfig(**values)


def data_stem(args: argparse.Namespace) -> str:
    """What the data are called in file names: the embedded task, or the training file's name without suffix."""
    return Path(args.train_file).stem if args.train_file else args.task


def default_output(args: argparse.Namespace) -> str:
    """Where ``goft finetune`` keeps a run when ``--output`` is not given: a new directory under ./runs."""
    return f"runs/{args.method}-{data_stem(args)}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_finetune(args: argparse.Namespace) -> int:
    from .finetune import finetune

    if args.output is None and not args.resume:
        args.output = default_output(args)
        print(f"output: {args.output} (pass --output to choose)")
    cfg = _finetune_config(args)
    metrics = finetune(cfg)
    print(
        f"{cfg.method_label} on {metrics['task']}: test accuracy {metrics['accuracy']:.4f} "
        f"({metrics['eval_examples']} examples), validation accuracy by epoch "
        + ", ".join(f"{v:.4f}" for v in metrics["val_accuracy_per_epoch"])
        + f" ({metrics['val_examples']} examples); {metrics['trainable_params']:,} trainable parameters "
        f"({metrics['adapter_params']:,} in the adapter), {metrics['seconds']:.1f} s"
    )
    if cfg.output:
        print(f"wrote {', '.join(f'{cfg.output}/{name}' for name in metrics['outputs'])}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import run_compare
    from .compare_report import report_text
    from .methods import method_list

    methods = method_list(args.methods, tuple(METHODS))
    results = run_compare(
        data_stem(args),
        methods,
        list(range(args.seeds)),
        _finetune_config(args),
        Path(args.results),
        sweep=not args.no_sweep,
    )
    print(report_text(results))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .adapter_stats import inspect_adapter

    inspect_adapter(Path(args.adapter_dir), plot=Path(args.plot) if args.plot else None)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge_adapter_to_directory

    result = merge_adapter_to_directory(args.adapter_dir, args.output, base=args.base, overwrite=args.overwrite)
    print(
        f"wrote a merged checkpoint to {result.output} (base: {result.base_dir}); load it with transformers alone "
        "(no goft needed)"
    )
    if not result.tokenizer:
        print(f"note: {result.base_dir} has no tokenizer, so the merged checkpoint has none either")
    return 0


def cmd_instruct(args: argparse.Namespace) -> int:
    from .instruct import InstructConfig, run_instruct_compare
    from .methods import method_list

    methods = method_list(args.methods, INSTRUCT_METHODS)
    base = InstructConfig(
        method=methods[0],
        model=args.model,
        base_weights=args.base_weights,
        train_size=args.train_size,
        eval_size=args.eval_size,
        val_size=args.val_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        output=args.output,
        save_every=args.save_every,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        device=args.device,
    )
    run_instruct_compare(
        methods, list(range(args.seeds)), base, Path(args.results), learning_rates=args.lr, sweep=not args.no_sweep
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .methods import method_list

    methods = method_list(args.methods, bench.LAYER_METHODS) if args.methods else list(bench.LAYER_METHODS)
    if "frozen" not in methods:
        methods = ["frozen", *methods]
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    bench.run(
        out,
        [] if args.no_layers else args.dims,
        args.tokens,
        args.reps,
        device=args.device,
        e2e=not args.no_e2e,
        merge=not args.no_merge,
        methods=methods,
        dense_max_d=args.dense_max_d,
        e2e_methods=[m for m in bench.E2E_METHODS if m in methods],
        dtypes=method_list(args.dtypes, bench.DTYPES, option="dtypes"),
        e2e_models=method_list(args.e2e_models, bench.E2E_MODELS, option="e2e_models"),
    )
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------------------------


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="polarity", help="embedded task: polarity or hedge (default: polarity)")
    p.add_argument(
        "--model",
        default=None,
        help="local transformers checkpoint directory, or minilm (default: the embedded MiniLM)",
    )
    p.add_argument(
        "--train-file", default=None, help="your own training data: .csv/.tsv (header text,label) or .jsonl"
    )
    p.add_argument("--eval-file", default=None, help="your own test data, same format (with --train-file)")
    p.add_argument(
        "--val-file",
        default=None,
        help="your own validation data, same format (default: set --val-fraction of --train-file aside)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training data set aside, stratified and seed-fixed, for validation (default: 0.1)",
    )
    p.add_argument(
        "--target-modules",
        default=None,
        help="comma-separated module names to adapt (default: all linear layers of the encoder)",
    )
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="AdamW learning rate (compare without it sweeps four rates per method); finetune's default "
        "per method (* chosen on validation): "
        + ", ".join(
            f"{name} {default_lr(name):g}{'*' if chosen_lr(name) is not None else ''}" for name in FINETUNE_METHODS
        )
        + "; goft with --structure butterfly "
        + f"{default_lr('goft', structure='butterfly'):g}*",
    )
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--max-length", type=int, default=64, help="max tokens per example (default: 64)")
    p.add_argument("--train-size", type=int, default=None, help="use only this many training examples (seeded)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_checkpoint_args(p: argparse.ArgumentParser, where: str) -> None:
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        help=f"also write {where} every N steps (it is always written at epoch ends)",
    )
    p.add_argument(
        "--resume", action="store_true", help=f"continue an interrupted run from {where} (same options and seed)"
    )


def _add_finetune_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a classifier with one method and evaluate it",
        description="Fine-tune the embedded MiniLM (or --model) on a real task (or your files); "
        "writes OUTPUT/metrics.json, the adapter and curve.png.",
    )
    p.add_argument(
        "--method",
        default="goft",
        choices=tuple(METHODS),
        help="goft, qgoft, lora, oft, boft (PEFT), head (classifier only), full, or any run name of "
        "goft compare (default: goft)",
    )
    _add_training_args(p)
    p.add_argument(
        "--structure",
        default="tree",
        help="GOFT's pairing for --method goft/qgoft: tree (the paper's, d-1 blocks) or butterfly "
        "(about (d/2)·log2 d blocks) (default: tree)",
    )
    p.add_argument(
        "--depth", type=int, default=1, help="stacked GOFT rotations, each with its own blocks (default: 1)"
    )
    # (finetune only, with --structure and --depth: compare's rows are keyed by method name, see its registry rows)
    p.add_argument("--orth-reg-weight", type=float, default=1e-2, help="qGOFT penalty weight λ (default: 0.01)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank for --method lora (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--output",
        default=None,
        help="directory for the adapter (or head, or model), metrics.json, curve.png and checkpoint.pt "
        "(default: a new runs/METHOD-TASK-YYYYmmdd-HHMMSS)",
    )
    _add_checkpoint_args(p, "OUTPUT/checkpoint.pt")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --output that holds an earlier run's checkpoint, replacing it",
    )
    p.set_defaults(func=cmd_finetune)


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="methods x seeds on one task, rates chosen on validation -> results/<data>.*",
        description="For each method: train at four rates spanning 30x around its sweep centre "
        "(seed 0), choose the rate with the best validation accuracy, then train every "
        "seed at that rate and score it on the test split. --lr replaces the sweep by one "
        "rate. Results are recorded run by run in RESULTS/<task or training file's "
        "name>.json; a rerun skips what is recorded and continues an interrupted run from "
        "its checkpoint (RESULTS/unfinished/).",
    )
    p.add_argument(
        "--methods",
        default=",".join(COMPARE_DEFAULT),
        help=f"comma-separated runs from {', '.join(METHODS)} (default: {','.join(COMPARE_DEFAULT)}); "
        "lora_r2 matches qGOFT's parameter count",
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the validation sweep: every seed at the method's default rate (or --lr); for quick "
        "looks, not for verdicts",
    )
    _add_training_args(p)
    p.set_defaults(func=cmd_compare)


def _add_instruct_parser(sub) -> None:
    p = sub.add_parser(
        "instruct",
        help="instruction-tune a causal LM on polarity-instruct; accuracy and forgetting",
        description="Tune SmolLM2-135M-Instruct (or --model) with each method: sweep the learning "
        "rate with seed 0 scored on validation prompts (set aside from the training "
        "split), then run every seed at the best rate and score it on the test "
        "sentences; greedy generation accuracy and KL forgetting on held-out text, "
        "appended to --results.",
    )
    p.add_argument(
        "--methods",
        default=",".join(INSTRUCT_METHODS),
        help=f"comma-separated (default: {','.join(INSTRUCT_METHODS)})",
    )
    p.add_argument("--seeds", type=_positive_int, default=2, help="number of seeds, 0..N-1 (default: 2)")
    p.add_argument("--model", default=None, help="local causal-LM directory, or smollm2 (default: embedded SmolLM2)")
    p.add_argument(
        "--base-weights",
        default="fp32",
        help="fp32, or int8: quantize the base's linear layers on load (torchao int8 weight-only, through "
        "transformers) and tune on that; the results name it (default: fp32)",
    )
    p.add_argument("--train-size", type=int, default=512, help="training sentences (default: 512)")
    p.add_argument("--eval-size", type=int, default=200, help="test sentences (default: 200)")
    p.add_argument(
        "--val-size",
        type=int,
        default=100,
        help="validation prompts that choose the rate, from the 10%% of the training split set aside (default: 100)",
    )
    p.add_argument("--epochs", type=int, default=1, help="epochs (default: 1)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default: 8)")
    p.add_argument(
        "--lr",
        type=_positive_float_list,
        default=None,
        help="comma-separated rates to sweep (default: four rates spanning 30x around each method's sweep "
        "centre: " + ", ".join(f"{m} {METHODS[m].instruct_lr:g}" for m in INSTRUCT_METHODS) + ")",
    )
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the sweep: run every seed at each --lr rate (or the method's default: the rate its "
        "recorded sweep chose, else the sweep's centre; "
        + ", ".join(f"{m} {instruct_default_lr(m):g}" for m in INSTRUCT_METHODS)
        + ") and score it on the test sentences; recorded as stage 'unswept'",
    )
    p.add_argument("--results", default="results/smollm2-instruct.json", help="results JSON (PNG beside it)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument(
        "--output",
        default=None,
        help="keep each run's checkpoint and adapter in OUTPUT/<method>-seed<N>-lr<rate>[-sweep]/ (default: none)",
    )
    _add_checkpoint_args(p, "OUTPUT/<run>/checkpoint.pt")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a run over when OUTPUT/<run>/ holds an unfinished run's checkpoint, replacing it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_instruct)


def _add_inspect_and_merge_parsers(sub) -> None:
    p = sub.add_parser("inspect", help="per-layer statistics of a saved GOFT adapter (and a PNG)")
    p.add_argument("adapter_dir", help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument(
        "--plot",
        default=None,
        help="write the per-layer PNG here (default: ADAPTER_DIR-inspect.png, beside the adapter)",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("merge", help="fold a saved adapter into its base model and save a plain checkpoint")
    p.add_argument("adapter_dir", help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--output", required=True, help="directory for the merged checkpoint (must be new or empty)")
    p.add_argument(
        "--base",
        default=None,
        help="base model directory, or minilm / smollm2 (default: the adapter's base_model_name_or_path)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    p.set_defaults(func=cmd_merge)


def _add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="speed and memory against the frozen layer, LoRA, OFT, BOFT, the dense approach",
        description="Per-layer forward+backward time and saved bytes, rotation scaling in d, merge "
        "time, and an end-to-end MiniLM training step; interleaved medians in one run.",
    )
    p.add_argument(
        "--dims",
        type=_int_list(2),
        default=[384, 768, 1024, 2048, 4096],
        help="layer sizes d_in = d_out, each >= 2 (default: 384,768,1024,2048,4096)",
    )
    p.add_argument("--tokens", type=_int_list(1), default=[512, 4096], help="tokens per step (default: 512,4096)")
    p.add_argument("--reps", type=_positive_int, default=7, help="timed repetitions per method (default: 7)")
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated subset of the layer methods, also used for the end-to-end step (default: all)",
    )
    p.add_argument(
        "--dense-max-d",
        type=int,
        default=2048,
        help="largest d for the authors' dense approach, which costs O(L d^3) a step (default: 2048)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--dtypes",
        default="float32",
        help="comma-separated dtypes of the layer and its input: float32, bfloat16, float16 (default: "
        "float32); adapters keep the dtype PEFT gives them",
    )
    p.add_argument(
        "--e2e-models",
        default="minilm",
        help="models for the end-to-end training step: minilm, llama-1b (Llama 3.2 1B's architecture "
        "with random weights, bf16; for a GPU) (default: minilm)",
    )
    p.add_argument(
        "--no-layers", action="store_true", help="skip the per-layer benchmark (and the rotation's scaling in d)"
    )
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end training steps")
    p.add_argument("--no-merge", action="store_true", help="skip the 4096x4096 merge timing")
    p.add_argument(
        "--out",
        default=None,
        help="directory for bench.jsonl and bench_layer.png (default: a new runs/bench-YYYYmmdd-HHMMSS; "
        "the committed results/ are written only when named)",
    )
    p.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goft", description="Givens-rotation orthogonal fine-tuning (GOFT, qGOFT)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_finetune_parser,
        _add_compare_parser,
        _add_instruct_parser,
        _add_inspect_and_merge_parsers,
        _add_bench_parser,
    ):
        add(sub)
    return parser


def resume_command(argv: list[str] | None, output: str | None) -> str:
    """The command that continues an interrupted run: this one with ``--resume``, its output named, no
    ``--overwrite``."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--overwrite"]
    if output is not None and "--output" not in args:
        args += ["--output", output]
    return shlex.join(["goft", *args, *([] if "--resume" in args else ["--resume"])])


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


# torchao, which transformers imports on every command, logs one line for each of its compiled extensions built for
# another platform (a CUDA architecture, another Python), and torch one deprecation for each enum torchao registers
# with pytree; bitsandbytes, on CPUs with AVX512-BF16, one line saying that the optional `kernels` package (a faster
# 4-bit CPU matmul fetched from a hub) is missing.  Lines on every run that say nothing about the user's work; only
# those messages are dropped.
FOREIGN_KERNEL_NOISE = {
    "torchao": r"^Failed to load .*_C_\w+.*\.so",
    "bitsandbytes.backends.cpu.ops": r"^Failed to load CPU gemm_4bit_forward from kernels-community",
    "torch.utils._pytree": r"is an Enum subclass and is now natively supported by torch\.compile",
}


def drop_foreign_kernel_noise() -> None:
    """Install the filters of ``FOREIGN_KERNEL_NOISE`` on their loggers (once per logger)."""
    for name, pattern in FOREIGN_KERNEL_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))


def main(argv: list[str] | None = None, before_command: Callable[[], object] | None = None) -> int:
    """Run one command.  A user's mistake (a bad option, file, model or adapter) or the file system's refusal ends in
    one line on stderr and exit status 1, Ctrl-C in exit status 130, never a traceback; anything else is a bug and
    keeps its traceback.

    ``before_command`` runs after the options are parsed and before the command: the ``goft`` script's entry point
    (:mod:`goft_cli`) passes the loading of the library there, so ``--help`` and bad options never wait for torch."""
    args = build_parser().parse_args(argv)
    drop_foreign_kernel_noise()
    if before_command is not None:
        before_command()
    try:
        return args.func(args)
    except OptionError as err:
        raise SystemExit(f"goft {args.command}: {err.as_flag()}") from None
    except Interrupted as err:
        if args.command == "compare":  # finished runs are in the results file, the one in progress checkpointed
            resume = "\nruns already in the results file are kept: the same command continues from there"
        elif err.checkpoint is not None:
            resume = f"\nto continue: {resume_command(argv, args.output)}"
        else:
            resume = ""
        print(f"goft {args.command}: {err}{resume}", file=sys.stderr)
        raise SystemExit(130) from None
    except (AppError, ValueError) as err:  # ValueError: the library's input errors (GivensError, AdapterFileError)
        raise SystemExit(f"goft {args.command}: {err}") from None
    except OSError as err:  # the file system's answer (permission denied, disk full): the user's to fix
        raise SystemExit(f"goft {args.command}: {err}") from None
    except KeyboardInterrupt:  # Ctrl-C outside training (loading, evaluating): nothing half-written is kept
        print(f"goft {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
