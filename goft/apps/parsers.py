"""The parsers of the ``goft`` command: one per subcommand, the options of a config built from its dataclass fields
(:func:`add_config_options`), so their defaults and help are stated once, in :mod:`goft.apps.configs`.  Imports
neither torch nor PEFT: ``goft --help`` and a malformed option answer before they load."""

from __future__ import annotations

import argparse
from dataclasses import fields

from .._version import installed_version
from .configs import FinetuneConfig, InstructConfig, RunOptions, field_default
from .methods import COMPARE_DEFAULT, INSTRUCT_METHODS, METHODS, instruct_default_lr


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


class ShowDefaults(argparse.HelpFormatter):
    """Help that ends with the option's default, unless the help names it or there is none to name (None, or a
    flag's False / True: ``is``, since 0 == False and 1 == True)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        unnamed = action.default is None or action.default is False or action.default is True
        if "(default:" in help_text or unnamed or action.default == argparse.SUPPRESS:
            return help_text
        return f"{help_text} (default: %(default)s)"


def add_config_options(parser: argparse.ArgumentParser, config: type[RunOptions], names: list[str]) -> None:
    """``--field-name`` options for the fields ``names`` of ``config``, with the fields' defaults and help; the
    namespace remembers which fields they are (:func:`config_from`)."""
    by_name = {f.name: f for f in fields(config)}
    for name in names:
        meta = by_name[name].metadata
        default = by_name[name].default
        help_text, shown = config.HELP.get(name, (meta["help"], meta["shown"]))
        shown = shown() if callable(shown) else shown
        kwargs: dict = {"dest": name, "default": default}
        if isinstance(default, bool):
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            kwargs["type"] = meta["parse"] or (type(default) if default is not None else str)
            if meta["choices"] is not None:
                kwargs["choices"] = meta["choices"]()
            if shown is not None:
                help_text += f" (default: {shown})"
        flag = meta["flag"] or "--" + name.replace("_", "-")
        parser.add_argument(flag, help=help_text.replace("%", "%%"), **kwargs)
    parser.set_defaults(config_fields=tuple(names))


def config_from(args: argparse.Namespace, config: type[RunOptions], **values):
    """``config`` built from the options :func:`add_config_options` added (and ``values``); the rest keep the
    dataclass's defaults."""
    return config(**{name: getattr(args, name) for name in args.config_fields}, **values)


TRAINING_FIELDS = [
    "task",
    "model",
    "train_file",
    "eval_file",
    "val_file",
    "val_fraction",
    "target_modules",
    "epochs",
    "lr",
    "batch_size",
    "max_length",
    "train_size",
    "device",
    "progress",
]


def _add_finetune_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a classifier with one method and evaluate it",
        description="Fine-tune the embedded MiniLM (or --model) on a real task (or your files); "
        "writes OUTPUT/metrics.json, the adapter and curve.png.",
        formatter_class=ShowDefaults,
    )
    # (finetune only, with --structure, --depth and --pairing: compare's rows are keyed by method name, see its
    # registry rows; compare's task-pairing runs calibrate on --calibration-batches' default)
    add_config_options(
        p,
        FinetuneConfig,
        [
            "method",
            *TRAINING_FIELDS,
            "structure",
            "depth",
            "pairing",
            "calibration_batches",
            "orth_reg_weight",
            "lora_r",
            "seed",
            "output",
            "save_every",
            "resume",
            "overwrite",
        ],
    )


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
        formatter_class=ShowDefaults,
    )
    p.add_argument(
        "--methods",
        default=",".join(COMPARE_DEFAULT),
        help=f"comma-separated runs from {', '.join(METHODS)}; lora_r2 matches qGOFT's parameter count",
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="number of seeds, 0..N-1")
    p.add_argument(
        "--results",
        default="runs/compare",
        help="results directory (the committed tables are reproduced with --results results)",
    )
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the validation sweep: every seed at the method's default rate (or --lr); for quick "
        "looks, not for verdicts",
    )
    add_config_options(p, FinetuneConfig, TRAINING_FIELDS)


def _add_instruct_parser(sub) -> None:
    p = sub.add_parser(
        "instruct",
        help="instruction-tune a causal LM on polarity-instruct; accuracy and forgetting",
        description="Tune SmolLM2-135M-Instruct (or --model) with each method: sweep the learning "
        "rate with seed 0 scored on validation prompts (set aside from the training "
        "split), then run every seed at the best rate and score it on the test "
        "sentences; greedy generation accuracy and KL forgetting on held-out text, "
        "appended to --results.",
        formatter_class=ShowDefaults,
    )
    p.add_argument("--methods", default=",".join(INSTRUCT_METHODS), help="comma-separated")
    p.add_argument("--seeds", type=_positive_int, default=2, help="number of seeds, 0..N-1")
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
    p.add_argument(
        "--results",
        default="runs/smollm2-instruct.json",
        help="results JSON, PNG and table beside it (the committed ones: --results results/smollm2-instruct.json)",
    )
    add_config_options(
        p,
        InstructConfig,
        [
            "model",
            "base_weights",
            "train_size",
            "eval_size",
            "val_size",
            "epochs",
            "batch_size",
            "device",
            "output",
            "save_every",
            "resume",
            "overwrite",
            "progress",
        ],
    )


def _add_inspect_and_merge_parsers(sub) -> None:
    p = sub.add_parser(
        "inspect", help="per-layer statistics of a saved GOFT adapter (and a PNG)", formatter_class=ShowDefaults
    )
    p.add_argument("adapter_dir", help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument(
        "--plot",
        default=None,
        help="write the per-layer PNG here (default: ADAPTER_DIR-inspect.png, beside the adapter)",
    )

    p = sub.add_parser(
        "merge",
        help="fold a saved adapter into its base model and save a plain checkpoint",
        formatter_class=ShowDefaults,
    )
    _add_adapter_to_output(p, "the merged checkpoint")

    p = sub.add_parser(
        "export-lora",
        help="write a saved GOFT adapter as a PEFT LoRA adapter (truncated SVD of each layer's update)",
        description="Per layer, the update W(R^T - I) cut to rank --rank by SVD, written as a LoRA adapter "
        "(lora_alpha = rank) that loads with peft alone and serves wherever LoRA does; goft_export.json beside it "
        "names the source and each layer's error. At full rank (min(in, out)) the export is exact.",
        formatter_class=ShowDefaults,
    )
    _add_adapter_to_output(p, "the LoRA adapter")
    p.add_argument("--rank", type=int, required=True, help="LoRA rank r")


def _add_adapter_to_output(p, written: str) -> None:
    """The options of a command that reads a saved adapter and writes ``written`` into a new folder."""
    p.add_argument("adapter_dir", help="directory with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--output", required=True, help=f"directory for {written} (must be new or empty)")
    p.add_argument(
        "--base",
        default=None,
        help="base model directory, or minilm / smollm2 (default: the adapter's base_model_name_or_path)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")


def _add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="speed and memory against the frozen layer, LoRA, OFT, BOFT, the dense approach",
        description="Per-layer forward+backward time and saved bytes and the rotation's scaling in d, as "
        "interleaved medians in one run (about a minute on 2 CPU cores); --e2e-models adds end-to-end training "
        "steps and --merge the 4096x4096 merge timing (the README's tables name theirs).",
        formatter_class=ShowDefaults,
    )
    p.add_argument("--dims", type=_int_list(2), default="384,768", help="layer sizes d_in = d_out, each >= 2")
    p.add_argument("--tokens", type=_int_list(1), default="512,4096", help="tokens per step")
    p.add_argument("--reps", type=_positive_int, default=5, help="timed repetitions per method")
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated subset of the layer methods, also used for the end-to-end step (default: all)",
    )
    p.add_argument(
        "--dense-max-d",
        type=int,
        default=2048,
        help="largest d for the authors' dense approach, which costs O(L d^3) a step",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--dtypes",
        default="float32",
        help="comma-separated dtypes of the layer and its input: float32, bfloat16, float16; adapters keep the "
        "dtype PEFT gives them",
    )
    p.add_argument(
        "--e2e-models",
        default="",
        help="also time a training step end to end on these models: minilm, llama-1b (Llama 3.2 1B's "
        "architecture with random weights, bf16; for a GPU) (default: none)",
    )
    p.add_argument(
        "--no-layers", action="store_true", help="skip the per-layer benchmark (and the rotation's scaling in d)"
    )
    p.add_argument("--merge", action="store_true", help="also time merging and unmerging a 4096x4096 layer")
    # the defaults since the default run became a quick one; still accepted
    p.add_argument("--no-e2e", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-merge", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--out",
        default=None,
        help="directory for bench.jsonl and bench_layer.png (default: a new runs/bench-YYYYmmdd-HHMMSS; "
        "the committed results/ are written only when named)",
    )


def _add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify text with a trained adapter, run folder or merged checkpoint",
        description="Label each text with the classifier goft finetune trained (its adapter, its --output folder, "
        "or the checkpoint goft merge wrote), with the label's probability. Texts: arguments, --file, or standard "
        "input (one per line).",
        formatter_class=ShowDefaults,
    )
    p.add_argument("classifier", help="an adapter directory, a goft finetune --output folder, or a merged checkpoint")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--file", default=None, help="texts from a file: .csv/.tsv (text column), .jsonl, or one per line")
    p.add_argument(
        "--output", default=None, help="write .jsonl (with every class's probability), .csv or .tsv (default: stdout)"
    )
    p.add_argument(
        "--max-length",
        type=_positive_int,
        default=field_default(FinetuneConfig, "max_length"),
        help="max tokens per text (goft finetune's default, as it trained)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="texts per forward pass")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goft", description="Givens-rotation orthogonal fine-tuning (GOFT, qGOFT)")
    parser.add_argument("--version", action="version", version=f"goft {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_finetune_parser,
        _add_compare_parser,
        _add_instruct_parser,
        _add_inspect_and_merge_parsers,
        _add_bench_parser,
        _add_predict_parser,
    ):
        add(sub)
    return parser
