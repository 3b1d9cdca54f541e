"""The ``goft`` command line (also ``python -m goft``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _positive_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 2 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 2, got {text!r}")
    return values


def _positive_float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}") from None
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers > 0, got {text!r}")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    methods = args.methods.split(",") if args.methods else list(bench.LAYER_METHODS)
    unknown = sorted(set(methods) - set(bench.LAYER_METHODS))
    if unknown:
        raise SystemExit(f"goft bench: --methods has unknown {unknown}; allowed: {', '.join(bench.LAYER_METHODS)}")
    if "frozen" not in methods:
        methods = ["frozen", *methods]
    bench.run(Path(args.out), args.dims, args.tokens, args.reps, device=args.device, e2e=not args.no_e2e,
              merge=not args.no_merge, methods=methods, dense_max_d=args.dense_max_d,
              e2e_methods=[m for m in bench.E2E_METHODS if m in methods])
    return 0


def _finetune_config(args: argparse.Namespace, **overrides):
    from .train import FinetuneConfig

    targets = [t.strip() for t in args.target_modules.split(",")] if args.target_modules else None
    values = dict(
        method=getattr(args, "method", "goft"), task=args.task, model=args.model,
        train_file=args.train_file, eval_file=args.eval_file, target_modules=targets, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, max_length=args.max_length, seed=getattr(args, "seed", 0),
        train_size=args.train_size, orth_reg_weight=args.orth_reg_weight, lora_r=args.lora_r,
        output=getattr(args, "output", None), progress=not args.no_progress,
        save_every=getattr(args, "save_every", 0), resume=getattr(args, "resume", False),
    )
    values.update(overrides)
    try:
        return FinetuneConfig(**values)
    except ValueError as err:
        raise SystemExit(f"goft: {err}") from None


def cmd_finetune(args: argparse.Namespace) -> int:
    from .data import DataError
    from .models import ModelUnavailableError
    from .train import finetune

    cfg = _finetune_config(args)
    try:
        metrics = finetune(cfg)
    except (DataError, ModelUnavailableError) as err:
        raise SystemExit(f"goft finetune: {err}") from None
    print(f"{cfg.method} on {metrics['task']}: test accuracy {metrics['accuracy']:.4f} "
          f"({metrics['eval_examples']} examples), {metrics['trainable_params']:,} trainable parameters "
          f"({metrics['adapter_params']:,} in the adapter), {metrics['seconds']:.1f} s")
    if cfg.output:
        print(f"wrote {cfg.output}/metrics.json, curve.png" + (" and the adapter" if cfg.method != "full" else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import markdown_table, run_compare

    labels = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = list(range(args.seeds))
    base = _finetune_config(args, progress=not args.no_progress)
    try:
        results = run_compare(args.task, labels, seeds, base, Path(args.results))
    except ValueError as err:
        raise SystemExit(f"goft compare: {err}") from None
    print(markdown_table(results))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_adapter

    try:
        inspect_adapter(Path(args.adapter_dir), plot=Path(args.plot) if args.plot else None)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"goft inspect: {err}") from None
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .models import ModelUnavailableError, merge_adapter_to_directory

    try:
        out = merge_adapter_to_directory(args.adapter_dir, args.output, base=args.base, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, ModelUnavailableError) as err:
        raise SystemExit(f"goft merge: {err}") from None
    print(f"wrote a merged checkpoint to {out}; load it with transformers alone (no goft needed)")
    return 0


def cmd_instruct(args: argparse.Namespace) -> int:
    from .instruct import InstructConfig, run_instruct_compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        base = InstructConfig(model=args.model, train_size=args.train_size, eval_size=args.eval_size,
                              epochs=args.epochs, batch_size=args.batch_size,
                              progress=not args.no_progress, method=methods[0] if methods else "goft")
        run_instruct_compare(methods, list(range(args.seeds)), base, Path(args.results), learning_rates=args.lr)
    except ValueError as err:
        raise SystemExit(f"goft instruct: {err}") from None
    return 0


def _add_training_args(p: argparse.ArgumentParser) -> None:
    from .train import DEFAULT_LR

    p.add_argument("--task", default="polarity", help="embedded task: polarity or hedge (default: polarity)")
    p.add_argument("--model", default=None, help="local transformers checkpoint directory (default: embedded MiniLM)")
    p.add_argument("--train-file", default=None, help="your own training data: .csv/.tsv (header text,label) or .jsonl")
    p.add_argument("--eval-file", default=None, help="your own evaluation data, same format (with --train-file)")
    p.add_argument("--target-modules", default=None,
                   help="comma-separated module names to adapt (default: all linear layers of the encoder)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate; default per method: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()))
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--max-length", type=int, default=64, help="max tokens per example (default: 64)")
    p.add_argument("--train-size", type=int, default=None, help="use only this many training examples (seeded)")
    p.add_argument("--orth-reg-weight", type=float, default=1e-2, help="qGOFT penalty weight λ (default: 0.01)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank for --method lora (default: 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .compare import DEFAULT_RUNS, RUNS
    from .train import METHODS

    parser = argparse.ArgumentParser(prog="goft", description="Givens-rotation orthogonal fine-tuning (GOFT, qGOFT)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune a classifier with one method and evaluate it",
                       description="Fine-tune the embedded MiniLM (or --model) on a real task (or your files); "
                                   "writes OUTPUT/metrics.json, the adapter and curve.png.")
    p.add_argument("--method", default="goft", choices=METHODS,
                   help="goft, qgoft, lora, oft, boft (PEFT), head (classifier only) or full (default: goft)")
    _add_training_args(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--output", default=None, help="directory for metrics.json, the adapter and curve.png")
    p.add_argument("--save-every", type=int, default=0,
                   help="also write OUTPUT/checkpoint.pt every N steps (it is always written at epoch ends)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUTPUT/checkpoint.pt (same options and seed)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("compare", help="methods x seeds on one task -> results/<task>.json, .md, .png")
    p.add_argument("--methods", default=",".join(DEFAULT_RUNS),
                   help=f"comma-separated runs from {', '.join(RUNS)} (default: {','.join(DEFAULT_RUNS)}); "
                        "lora_r2 matches qGOFT's parameter count")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default: 3)")
    p.add_argument("--results", default="results", help="results directory (default: results)")
    _add_training_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("inspect", help="per-layer statistics of a saved GOFT adapter (and a PNG)")
    p.add_argument("adapter_dir", help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--plot", default=None, help="write a per-layer PNG here (default: ADAPTER_DIR/inspect.png)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("instruct", help="instruction-tune a causal LM on polarity-instruct; accuracy and forgetting",
                       description="Tune SmolLM2-135M-Instruct (or --model) with each method and seed; measure greedy "
                                   "generation accuracy and KL forgetting on held-out text; append to --results.")
    p.add_argument("--methods", default="goft,qgoft,lora,oft", help="comma-separated (default: goft,qgoft,lora,oft)")
    p.add_argument("--seeds", type=int, default=2, help="number of seeds (default: 2)")
    p.add_argument("--model", default=None, help="local causal-LM directory (default: embedded SmolLM2)")
    p.add_argument("--train-size", type=int, default=512, help="training sentences (default: 512)")
    p.add_argument("--eval-size", type=int, default=200, help="evaluation sentences (default: 200)")
    p.add_argument("--epochs", type=int, default=1, help="epochs (default: 1)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default: 8)")
    p.add_argument("--lr", type=_positive_float_list, default=None,
                   help="learning rate, or comma-separated rates to sweep (each method at each rate); default: one "
                        "per method, see goft.instruct.INSTRUCT_LR")
    p.add_argument("--results", default="results/smollm2-instruct.json", help="results JSON (PNG beside it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_instruct)

    p = sub.add_parser("merge", help="fold a saved adapter into its base model and save a plain checkpoint")
    p.add_argument("adapter_dir", help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--output", required=True, help="directory for the merged checkpoint (must be new or empty)")
    p.add_argument("--base", default=None,
                   help="base model directory, or minilm / smollm2 (default: the adapter's base_model_name_or_path)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("bench", help="speed and memory against the frozen layer, LoRA, OFT, BOFT, the dense approach",
                       description="Per-layer forward+backward time and saved bytes, rotation scaling in d, merge "
                                   "time, and an end-to-end MiniLM training step; interleaved medians in one run.")
    p.add_argument("--dims", type=_positive_int_list, default=[384, 768, 1024, 2048, 4096],
                   help="layer sizes d_in = d_out (default: 384,768,1024,2048,4096)")
    p.add_argument("--tokens", type=_positive_int_list, default=[512, 4096], help="tokens per step (default: 512,4096)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions per method (default: 7)")
    p.add_argument("--methods", default="",
                   help="comma-separated subset of the layer methods, also used for the end-to-end step (default: all)")
    p.add_argument("--dense-max-d", type=int, default=2048,
                   help="largest d for the authors' dense approach, which costs O(L d^3) a step (default: 2048)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end MiniLM training step")
    p.add_argument("--no-merge", action="store_true", help="skip the 4096x4096 merge timing")
    p.add_argument("--out", default="results", help="directory for bench.jsonl and bench_layer.png (default: results)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
