"""The ``goft`` command line (also ``python -m goft``): the commands, and the one place that turns errors into text.

Each subcommand's options (:mod:`goft.apps.parsers`) become a config of :mod:`goft.apps.configs` or arguments of
its module's function (``finetune``, ``compare``, ``instruct``, ``adapter_stats``, ``merge``, ``bench``); those
modules know nothing of argparse.  Heavy modules are imported only by the subcommand that needs them, so ``goft
--help`` stays quick.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .configs import FinetuneConfig, InstructConfig, check_output
from .errors import AppError, DataError, Interrupted, OptionError
from .log_filters import drop_foreign_kernel_noise
from .methods import INSTRUCT_METHODS, METHODS, method_list
from .parsers import build_parser, config_from

# ---------------------------------------------------------------------------------------------------------------------
# Commands: check the options (no torch needed), then return the run: options -> a config -> the module's function
# ---------------------------------------------------------------------------------------------------------------------


def data_stem(args: argparse.Namespace) -> str:
    """What the data are called in file names: the embedded task, or the training file's name without suffix."""
    return Path(args.train_file).stem if args.train_file else args.task


def default_output(args: argparse.Namespace) -> str:
    """Where ``goft finetune`` keeps a run when ``--output`` is not given: a new directory under ./runs."""
    return f"runs/{args.method}-{data_stem(args)}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_directory(path: str, argument: str, what: str) -> None:
    """A positional ARGUMENT naming a directory: refused by name when it is not one."""
    if not Path(path).is_dir():
        raise DataError(f"{argument} {path} is not a directory ({what})")


def _calibration_cost(metrics: dict) -> str:
    """``" + 3.2 s choosing the pairing (8 batches, 3% of training)"``, or nothing without a task pairing."""
    calibration = metrics.get("calibration")
    if not calibration:
        return ""
    share = calibration["seconds"] / metrics["seconds"] if metrics["seconds"] else float("nan")
    seconds, batches = calibration["seconds"], calibration["batches"]
    return f" + {seconds:.1f} s choosing the pairing ({batches} batches, {share:.0%} of training)"


def cmd_finetune(args: argparse.Namespace) -> Callable[[], int]:
    chosen_output = args.output is None and not args.resume
    if chosen_output:
        args.output = default_output(args)
    cfg = config_from(args, FinetuneConfig)
    if chosen_output:
        print(f"output: {args.output} (pass --output to choose)")

    def run() -> int:
        from .finetune import finetune

        metrics = finetune(cfg)
        print(
            f"{cfg.method_label} on {metrics['task']}: test accuracy {metrics['accuracy']:.4f} "
            f"({metrics['eval_examples']} examples), validation accuracy by epoch "
            + ", ".join(f"{v:.4f}" for v in metrics["val_accuracy_per_epoch"])
            + f" ({metrics['val_examples']} examples); {metrics['trainable_params']:,} trainable parameters "
            f"({metrics['adapter_params']:,} in the adapter), {metrics['seconds']:.1f} s" + _calibration_cost(metrics)
        )
        if cfg.output:
            print(f"wrote {', '.join(f'{cfg.output}/{name}' for name in metrics['outputs'])}")
        return 0

    return run


def cmd_compare(args: argparse.Namespace) -> Callable[[], int]:
    methods = method_list(args.methods, tuple(METHODS))
    base = config_from(args, FinetuneConfig)
    check_output(Path(args.results), "results")

    def run() -> int:
        from .compare import run_compare
        from .compare_report import report_text

        results = run_compare(
            data_stem(args), methods, list(range(args.seeds)), base, Path(args.results), sweep=not args.no_sweep
        )
        print(report_text(results))
        return 0

    return run


def cmd_inspect(args: argparse.Namespace) -> Callable[[], int]:
    check_directory(args.adapter_dir, "ADAPTER_DIR", "a saved adapter's folder")

    def run() -> int:
        from .adapter_stats import inspect_adapter

        inspect_adapter(Path(args.adapter_dir), plot=Path(args.plot) if args.plot else None)
        return 0

    return run


def cmd_merge(args: argparse.Namespace) -> Callable[[], int]:
    check_directory(args.adapter_dir, "ADAPTER_DIR", "a saved adapter's folder")
    check_output(Path(args.output))

    def run() -> int:
        from .merge import merge_adapter_to_directory

        result = merge_adapter_to_directory(args.adapter_dir, args.output, base=args.base, overwrite=args.overwrite)
        print(
            f"wrote a merged checkpoint to {result.output} (base: {result.base_dir}); load it with transformers "
            "alone (no goft needed)"
        )
        if not result.tokenizer:
            print(f"note: {result.base_dir} has no tokenizer, so the merged checkpoint has none either")
        return 0

    return run


def cmd_export_lora(args: argparse.Namespace) -> Callable[[], int]:
    check_directory(args.adapter_dir, "ADAPTER_DIR", "a saved adapter's folder")
    check_output(Path(args.output))
    if args.rank < 1:
        raise OptionError("rank", f"must be a positive integer, got {args.rank}")

    def run() -> int:
        from .merge import export_lora_to_directory

        result = export_lora_to_directory(
            args.adapter_dir, args.output, args.rank, base=args.base, overwrite=args.overwrite
        )
        layers = result.report.layers
        errors = sorted(layer.weight_relative_error for layer in layers)
        print(
            f"wrote a LoRA adapter of rank {args.rank} to {result.output} (base: {result.base_dir}), {len(layers)} "
            f"layers; relative error of the merged weights: median {errors[len(errors) // 2]:.2e}, worst "
            f"{errors[-1]:.2e} (per layer in {result.output}/goft_export.json); loads with peft alone"
        )
        return 0

    return run


def cmd_instruct(args: argparse.Namespace) -> Callable[[], int]:
    methods = method_list(args.methods, INSTRUCT_METHODS)
    base = config_from(args, InstructConfig, method=methods[0])
    check_output(Path(args.results).parent, "results")

    def run() -> int:
        from .instruct import run_instruct_compare

        run_instruct_compare(
            methods, list(range(args.seeds)), base, Path(args.results), learning_rates=args.lr, sweep=not args.no_sweep
        )
        return 0

    return run


def cmd_bench(args: argparse.Namespace) -> Callable[[], int]:
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    check_output(out, "out")

    def run() -> int:
        from . import bench

        methods = method_list(args.methods, bench.LAYER_METHODS) if args.methods else list(bench.LAYER_METHODS)
        if "frozen" not in methods:
            methods = ["frozen", *methods]
        named = args.e2e_models and not args.no_e2e
        e2e_models = method_list(args.e2e_models, bench.E2E_MODELS, option="e2e_models") if named else []
        bench.run(
            out,
            [] if args.no_layers else args.dims,
            args.tokens,
            args.reps,
            device=args.device,
            e2e=bool(e2e_models),
            merge=args.merge and not args.no_merge,
            methods=methods,
            dense_max_d=args.dense_max_d,
            e2e_methods=[m for m in bench.E2E_METHODS if m in methods],
            dtypes=method_list(args.dtypes, bench.DTYPES, option="dtypes"),
            e2e_models=e2e_models,
        )
        return 0

    return run


def cmd_predict(args: argparse.Namespace) -> Callable[[], int]:
    check_directory(args.classifier, "CLASSIFIER", "an adapter, a run folder or a checkpoint")
    if args.file is not None and not Path(args.file).is_file():
        raise OptionError("file", f"names no file: {args.file}")
    if args.output is not None:
        check_output(Path(args.output).parent)
        if Path(args.output).is_dir():
            raise OptionError("output", f"{args.output} is a directory: name a .jsonl, .csv or .tsv file")
    if args.texts and args.file:
        raise OptionError("file", "and TEXTS arguments are two sources: give one")

    def run() -> int:
        from .predict import load_classifier, predict, read_texts, write_predictions

        texts = args.texts or (read_texts(args.file) if args.file else [t for t in sys.stdin.read().splitlines() if t])
        if not texts:
            raise DataError("no texts to classify: give them as arguments, with --file, or on standard input")
        model, tokenizer = load_classifier(args.classifier)
        write_predictions(predict(model, tokenizer, texts, args.max_length, args.batch_size), args.output)
        if args.output:
            print(f"wrote {len(texts)} predictions to {args.output}")
        return 0

    return run


# Each command checks its options (no torch needed) and returns the run, which the entry point starts once the
# library is loaded: a mistake is answered before the imports, in well under a second.
COMMANDS = {
    "finetune": cmd_finetune,
    "compare": cmd_compare,
    "instruct": cmd_instruct,
    "inspect": cmd_inspect,
    "merge": cmd_merge,
    "export-lora": cmd_export_lora,
    "bench": cmd_bench,
    "predict": cmd_predict,
}


def resume_command(argv: list[str] | None, output: str | None) -> str:
    """The command that continues an interrupted run: this one with ``--resume``, its output named, no
    ``--overwrite``."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--overwrite"]
    if output is not None and "--output" not in args:
        args += ["--output", output]
    return shlex.join(["goft", *args, *([] if "--resume" in args else ["--resume"])])


def main(argv: list[str] | None = None, before_command: Callable[[], object] | None = None) -> int:
    """Run one command.  A user's mistake (a bad option, file, model or adapter) or the file system's refusal ends in
    one line on stderr and exit status 1, Ctrl-C in exit status 130, never a traceback; anything else is a bug and
    keeps its traceback.

    ``before_command`` runs after the options are parsed and checked, before the command runs: the ``goft`` script's
    entry point (:mod:`goft_cli`) passes the loading of the library there, so ``--help`` and bad options never wait
    for torch."""
    args = build_parser().parse_args(argv)
    drop_foreign_kernel_noise()
    try:
        run = COMMANDS[args.command](args)
        if before_command is not None:
            before_command()
        return run()
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
