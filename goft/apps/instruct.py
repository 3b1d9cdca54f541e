"""Instruction tuning of a causal LM on the polarity task, and what the tuning makes the model forget.

Task ``polarity-instruct``: each Pang & Lee sentence becomes a chat prompt ("Is this review positive or negative?
Answer with one word." + the sentence) built with the model's chat template; the target is the answer word followed by
the end-of-turn token.  The loss covers only the answer tokens.  Accuracy is measured by greedy generation and
parsing the first word of the reply.

Forgetting is measured on held-out text the model is not tuned on (CoNLL-2010 sentences and passages of the long
Pang & Lee reviews): the mean over tokens of ``KL(p_base ‖ p_tuned)`` between the base and the tuned model's
next-token distributions, and the change in perplexity.

The protocol of :func:`run_instruct_compare` is ``goft compare``'s: per method, a sweep over a grid of rates with the
first seed, each run scored on validation prompts (a fixed share of the training split, see
:func:`goft.apps.data.split_validation`; the test sentences are not read); the rate with the best validation accuracy
(ties: the smaller); then the final runs at that rate with every seed, scored on the test sentences once.  The final
run with the sweep's seed trains exactly what the chosen sweep run trained (which sentences are scored does not change
the training): with ``output`` it starts from that run's finished checkpoint and only scores it.  Every run
records its stage, rate, validation and (finals only) test accuracy and its forgetting, so the file also holds the
accuracy-vs-forgetting frontier over the grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from . import adapter_files, data, files, plots, pretrained
from .errors import OptionError
from .loop import (
    CHECKPOINT_NAME,
    LoopOptions,
    device_description,
    run_identity,
    train,
    trained_to_the_end,
    training_device,
    use_device,
)
from .methods import INSTRUCT_METHODS, METHODS, count_parameters, get_method, instruct_default_lr, wrap
from .results import RunsFile, best_rate_on_validation, group_runs, markdown_table, mean_std

# Runs recorded before the validated protocol were all scored on the test sentences, at rates compared there.
LEGACY_STAGE = "test-scored (no validation)"

QUESTION = 'Is this review positive or negative? Answer with one word.\n\n"{text}"'
ANSWERS = ("negative", "positive")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
TASK = "polarity-instruct"
# The learning-rate schedule of the shared loop, recorded with every run; runs recorded before instruct used that
# loop trained at a constant rate, and are told apart by it.
SCHEDULE = "warmup 6% + linear decay"
KEY_DEFAULTS = {"schedule": "constant", "base_weights": "fp32", "stage": LEGACY_STAGE}
KEY_FIELDS = ("method", "stage", "seed", "lr", "schedule", "base_weights")
# The options every run of one results file shares (its rows are keyed by KEY_FIELDS alone).
SETUP_OPTIONS = (
    "model",
    "target_modules",
    "train_size",
    "eval_size",
    "val_size",
    "epochs",
    "batch_size",
    "orth_reg_weight",
    "lora_r",
    "forget_passages",
    "forget_tokens",
)


@dataclass
class InstructConfig:
    method: str = "goft"  # a run name of goft.apps.methods.INSTRUCT_METHODS
    model: Optional[str] = None  # local causal-LM directory; None = embedded SmolLM2-135M-Instruct
    base_weights: str = "fp32"  # or "int8": the base's linear layers quantized (torchao int8 weight-only) on load
    target_modules: Optional[list[str]] = None
    train_size: int = 512
    eval_size: int = 200
    val_size: int = 100  # validation prompts, from the share of the training split set aside for validation
    epochs: int = 1
    batch_size: int = 8
    lr: Optional[float] = None  # None = methods.instruct_default_lr(method)
    seed: int = 0
    orth_reg_weight: float = 1e-2
    lora_r: int = 8
    forget_passages: int = 48
    forget_tokens: int = 128
    output: Optional[str] = None  # root of the per-run directories (checkpoint, adapter); None = keep nothing
    save_every: int = 0
    resume: bool = False  # continue each run from its checkpoint where it has one
    overwrite: bool = False  # replace an unfinished run's checkpoint instead of refusing
    progress: bool = True
    evaluate_test: bool = True  # False for runs that only choose a learning rate: the test sentences stay unread
    device: str = "cpu"  # cpu, cuda or cuda:N

    def __post_init__(self):
        get_method(self.method, INSTRUCT_METHODS)
        pretrained.check_base_weights(self.base_weights)
        if training_device(self.device).type != "cpu" and self.base_weights != "fp32":
            raise OptionError(
                "base_weights",
                f"{self.base_weights} loads the base for the CPU (torchao weight-only); "
                "use --device cpu with it, or fp32 on a GPU",
            )
        for name in ("train_size", "eval_size", "val_size", "epochs", "batch_size", "lora_r"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionError(name, f"must be a positive integer, got {value!r}")
        if (self.save_every or self.resume) and not self.output:
            raise OptionError("output", "is needed by --save-every and --resume (where the checkpoints live)")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else instruct_default_lr(self.method)

    @property
    def run_dir(self) -> Optional[Path]:
        """This run's directory under ``output``: one per (method, base weights, seed, learning rate, and whether it
        is a sweep run, which never reads the test sentences)."""
        if self.output is None:
            return None
        quantized = "" if self.base_weights == "fp32" else f"-{self.base_weights}"
        sweep = "" if self.evaluate_test else "-sweep"
        return Path(self.output) / f"{self.method}{quantized}-seed{self.seed}-lr{self.learning_rate:g}{sweep}"


def prompt_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": QUESTION.format(text=text)}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(enc["input_ids"])


def answer_ids(tokenizer, label: int) -> list[int]:
    ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]
    end = tokenizer.eos_token_id
    return list(ids) + ([end] if end is not None else [])


def build_batch(
    tokenizer, examples: list[tuple[list[int], list[int]]], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Right-padded input ids with labels -100 everywhere except the answer tokens, on ``device``."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), length), pad, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (p, a) in enumerate(examples):
        seq = p + a
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(a)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def parse_answer(reply: str) -> Optional[int]:
    """The first 'positive' / 'negative' among the words of the (4-token) reply; None when neither appears.

    Looking at every word rather than the first one credits the base model's "This review is positive" too."""
    words = reply.strip().lower().replace(".", " ").replace(",", " ").replace("!", " ").split()
    for word in words:
        if word in ANSWERS:
            return ANSWERS.index(word)
    return None


@torch.no_grad()
def generation_accuracy(model, tokenizer, texts: list[str], labels: list[int], batch_size: int = 16) -> float:
    """Greedy generation (4 new tokens), left-padded batches; a reply without 'positive'/'negative' is wrong."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(texts), batch_size):
        prompts = [prompt_ids(tokenizer, t) for t in texts[start : start + batch_size]]
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, length - len(p) :] = torch.tensor(p)
            mask[row, length - len(p) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=pad,
        )
        for row, label in enumerate(labels[start : start + batch_size]):
            reply = tokenizer.decode(out[row, length:], skip_special_tokens=True)
            correct += int(parse_answer(reply) == label)
    return correct / len(texts)


def heldout_passages(tokenizer, n: int, tokens: int) -> torch.Tensor:
    """(n, tokens) ids from text the instruct task never shows: CoNLL-2010 sentences and long-review passages."""
    hedge = " ".join(data.load_corpus("hedge").texts)
    reviews = " ".join(data.load_corpus("reviews").texts)
    rows = []
    for source in (hedge, reviews):
        ids = tokenizer(source, add_special_tokens=False)["input_ids"]
        for k in range(n // 2):
            chunk = ids[k * tokens : (k + 1) * tokens]
            if len(chunk) == tokens:
                rows.append(chunk)
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def next_token_logprobs(model, passages: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(passages), batch_size):
        out.append(F.log_softmax(model(input_ids=passages[start : start + batch_size]).logits.float(), dim=-1))
    return torch.cat(out)


def forgetting(base_logprobs: torch.Tensor, tuned_logprobs: torch.Tensor, passages: torch.Tensor) -> dict:
    """Mean token KL(p_base ‖ p_tuned) and the perplexities of both models on the held-out passages."""
    kl = (base_logprobs.exp() * (base_logprobs - tuned_logprobs)).sum(-1)[:, :-1].mean().item()
    targets = passages[:, 1:]

    def perplexity(logprobs):
        nll = -logprobs[:, :-1].gather(-1, targets[..., None]).squeeze(-1).mean().item()
        return math.exp(nll)

    base_ppl, tuned_ppl = perplexity(base_logprobs), perplexity(tuned_logprobs)
    return {
        "kl_base_to_tuned": kl,
        "perplexity_base": base_ppl,
        "perplexity_tuned": tuned_ppl,
        "perplexity_change": tuned_ppl - base_ppl,
    }


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
    torch.manual_seed(cfg.seed)
    model, tokenizer = pretrained.load_causal_lm(cfg.model, cfg.base_weights)
    base_bytes = pretrained.weight_bytes(model)
    device = use_device(cfg.device)
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
    """The protocol of the module docstring for every method, appended to a results JSON (atomic, resumable) with a
    markdown table and a PNG of accuracy against forgetting.

    The sweep's grid is ``learning_rates`` when given, else four rates spanning 30× around the method's
    ``instruct_lr`` (:func:`goft.apps.compare.lr_grid`).  ``sweep=False`` skips the sweep and runs every seed at
    each of ``learning_rates`` or at :func:`~goft.apps.methods.instruct_default_lr` (the rate a recorded sweep chose,
    else the grid's centre), scored on test, as stage ``unswept`` (quick looks; the table says so).  A run is
    identified by (method, stage, seed, rate, schedule, base weights): a rerun skips what is recorded."""
    from .compare import lr_grid  # the one grid of both comparisons

    results = RunsFile(results_path, key_fields=KEY_FIELDS, key_defaults=KEY_DEFAULTS)
    results.check_setup(instruct_setup(base), older_setup)
    cache: dict = {}
    for method in methods:
        if sweep:
            grid = list(learning_rates) if learning_rates else lr_grid(METHODS[method].instruct_lr)
            for lr in grid:
                _run_once(
                    replace(base, method=method, seed=seeds[0], lr=lr, evaluate_test=False),
                    "sweep",
                    results,
                    cache,
                    progress,
                )
            chosen = choose_instruct_lr(results.runs, method, base, grid)
            progress(f"{method}: chose lr {chosen:g} of {[f'{lr:g}' for lr in grid]} by validation accuracy")
            finals, stage = [chosen], "final"
        else:
            finals, stage = list(learning_rates or [instruct_default_lr(method)]), "unswept"
        for lr in finals:
            for seed in seeds:
                _run_once(
                    replace(base, method=method, seed=seed, lr=lr, evaluate_test=True), stage, results, cache, progress
                )
    plot_accuracy_vs_forgetting(results.data, results.path.with_suffix(".png"))
    files.write_text(results.path.with_suffix(".md"), instruct_table(results.data))
    return results.data


def instruct_setup(base: InstructConfig) -> dict:
    """The values of ``SETUP_OPTIONS`` for ``base``, as the results file records them."""
    return {
        **{name: getattr(base, name) for name in SETUP_OPTIONS},
        "model": pretrained.model_reference(base.model, pretrained.SMOLLM2_NAME),
    }


def older_setup(run: dict) -> dict:
    """The setup options a run recorded before files recorded their setup (the others had their defaults)."""
    setup = {"train_size": run["train_examples"]} if "train_examples" in run else {}
    if run.get("eval_examples"):  # a sweep run reads no test sentences
        setup["eval_size"] = run["eval_examples"]
    return setup


def choose_instruct_lr(runs: list[dict], method: str, base: InstructConfig, grid) -> float:
    """The grid rate whose sweep run (on ``base``'s weights and today's schedule) scored best on validation."""
    return best_rate_on_validation(
        (
            r
            for r in runs
            if r["method"] == method
            and r.get("stage") == "sweep"
            and r.get("base_weights", "fp32") == base.base_weights
            and r.get("schedule") == SCHEDULE
        ),
        grid,
    )


def _run_once(cfg: InstructConfig, stage: str, results: RunsFile, cache: dict, progress) -> None:
    if results.has(cfg.method, stage, cfg.seed, cfg.learning_rate, SCHEDULE, cfg.base_weights):
        progress(f"skip {cfg.method} {stage} seed {cfg.seed} lr {cfg.learning_rate:g}: already in {results.path}")
        return
    trained_by_sweep = _start_from_the_sweep_run(cfg) if stage == "final" else None
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
    row["schedule"] = SCHEDULE
    results.add(row, TASK)
    test = "" if row["accuracy"] is None else f", test {row['accuracy']:.3f} (base {row['base_accuracy']:.3f})"
    progress(
        f"{cfg.method} {stage} seed {cfg.seed} lr {row['lr']:g}: validation {row['val_accuracy']:.3f}{test}, "
        f"KL {row['kl_base_to_tuned']:.4f}, perplexity {row['perplexity_base']:.2f} -> "
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


def summarize_instruct(results: dict) -> list[dict]:
    """One row per (method, base weights, learning rate, schedule, stage): means and sample standard deviations over
    the recorded seeds (test accuracy only over runs that read the test sentences; validation accuracy over runs that
    have it); a method on a quantized base is labelled as such (e.g. ``goft on int8``)."""
    groups = group_runs(results["runs"], SUMMARY_FIELDS, KEY_DEFAULTS)

    def stats(runs, field):
        values = [r[field] for r in runs if r.get(field) is not None]
        return mean_std(values) if values else None

    return [
        {
            "method": method,
            "base_weights": weights,
            "lr": lr,
            "schedule": schedule,
            "stage": stage,
            "seeds": len(runs),
            "label": method if weights == "fp32" else f"{method} on {weights}",
            "params": runs[0]["trainable_params"],
            "accuracy": stats(runs, "accuracy"),
            "val_accuracy": stats(runs, "val_accuracy"),
            "kl": mean_std(r["kl_base_to_tuned"] for r in runs),
            "perplexity_change": mean_std(r["perplexity_change"] for r in runs),
        }
        for (method, weights, lr, schedule, stage), runs in sorted(groups.items())
    ]


SUMMARY_FIELDS = ("method", "base_weights", "lr", "schedule", "stage")


def _percent(stat) -> str:
    return "–" if stat is None else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def instruct_table(results: dict) -> str:
    """A markdown table of :func:`summarize_instruct` (accuracy in %, mean ± std over seeds)."""
    header = (
        "method",
        "lr",
        "stage",
        "schedule",
        "seeds",
        "trainable params",
        "validation accuracy (%)",
        "test accuracy (%)",
        "KL(base ‖ tuned)",
        "perplexity change",
    )
    rows = []
    for (weights,), runs in group_runs(results["runs"], ("base_weights",), KEY_DEFAULTS).items():
        sizes = [r["base_weight_mib"] for r in runs if "base_weight_mib" in r]  # recorded since --base-weights
        name = "base model" if not sizes else f"base model, {weights} ({sizes[0]:.0f} MiB of weights)"
        test = next((r["base_accuracy"] for r in runs if r.get("base_accuracy") is not None), None)
        val = next((r["base_val_accuracy"] for r in runs if r.get("base_val_accuracy") is not None), None)
        rows.append(
            (
                name,
                "–",
                "–",
                "–",
                "–",
                "0",
                "–" if val is None else f"{100 * val:.1f}",
                "–" if test is None else f"{100 * test:.1f}",
                "0",
                "0",
            )
        )
    for r in summarize_instruct(results):
        (kl, kl_sd), (dp, dp_sd) = r["kl"], r["perplexity_change"]
        rows.append(
            (
                r["label"],
                f"{r['lr']:g}",
                r["stage"],
                r["schedule"],
                str(r["seeds"]),
                f"{r['params']:,}",
                _percent(r["val_accuracy"]),
                _percent(r["accuracy"]),
                f"{kl:.4f} ± {kl_sd:.4f}",
                f"{dp:+.2f} ± {dp_sd:.2f}",
            )
        )
    return markdown_table(header, rows)


def plot_accuracy_vs_forgetting(results: dict, path) -> None:
    """Accuracy against forgetting, one curve per (method, base weights, schedule, stage) of :func:`plotted_curves`
    joined in order of rate: sweep curves plot validation accuracy (the frontier over the grid), the others test
    accuracy."""
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = plotted_curves(results)
    several_schedules = len({key[2] for key, _ in curves}) > 1
    runs_of = group_runs(results["runs"], CURVE_FIELDS, KEY_DEFAULTS)
    colours = {}  # one colour per (method, base weights): its sweep and its finals side by side
    labels = []
    for key, rows in curves:
        colour = colours.setdefault(key[:2], len(colours))
        field = "val_accuracy" if key[3] == "sweep" else "accuracy"
        runs = [r for r in runs_of[key] if r.get(field) is not None]
        rows = [r for r in rows if r[field] is not None]
        if not rows:
            continue
        # each seed faint, the means over seeds joined in order of learning rate
        ax.scatter(
            [r["kl_base_to_tuned"] for r in runs], [100 * r[field] for r in runs], s=14, alpha=0.35, color=f"C{colour}"
        )
        xs, ys = [r["kl"][0] for r in rows], [100 * r[field][0] for r in rows]
        label = rows[0]["label"] + (f", {key[2]}" if several_schedules else "")
        sweep = key[3] == "sweep"
        label += ", sweep (validation)" if sweep else f", {key[3]} (test)"
        ax.plot(
            xs, ys, marker="o" if sweep else "s", color=f"C{colour}", label=label, linestyle="--" if sweep else "-"
        )
        labels += [(x, y, f"{r['lr']:g}", f"C{colour}") for r, x, y in zip(rows, xs, ys, strict=True)]
    base_test = next((r["base_accuracy"] for r in results["runs"] if r.get("base_accuracy") is not None), None)
    if base_test is not None:
        ax.axhline(100 * base_test, color="grey", linestyle="--", label="base model (test)")
    ax.set_xscale("log")  # KL spans orders of magnitude across methods and rates
    ax.set_xlabel("forgetting: mean token KL(p_base ‖ p_tuned) on held-out text (log)")
    ax.set_ylabel("generation accuracy (%): test; sweeps: validation")
    ax.set_title("SmolLM2-135M-Instruct, polarity-instruct (labels: learning rate)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    plots.label_points(ax, labels)
    plots.save_figure(fig, path)


CURVE_FIELDS = ("method", "base_weights", "schedule", "stage")


def plotted_curves(results: dict) -> list[tuple[tuple, list[dict]]]:
    """The curves of today's protocol (this schedule, stages other than the legacy test-scored one): the superseded
    runs stay in the table, labelled, but mixing rates chosen on test into the frontier would mislead.  A file that
    holds only superseded runs plots them all."""
    curves = _curves(summarize_instruct(results))
    current = [(key, rows) for key, rows in curves if key[2] == SCHEDULE and key[3] != LEGACY_STAGE]
    return current or curves


def _curves(summary: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """The summary rows of each (method, base weights, schedule, stage), in order of learning rate."""
    keys = sorted({tuple(r[f] for f in CURVE_FIELDS) for r in summary})
    return [
        (key, sorted((r for r in summary if tuple(r[f] for f in CURVE_FIELDS) == key), key=lambda r: r["lr"]))
        for key in keys
    ]
