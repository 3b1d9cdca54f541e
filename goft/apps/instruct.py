"""Instruction tuning of a causal LM on the polarity task, and what the tuning makes the model forget.

Task ``polarity-instruct``: each Pang & Lee sentence becomes a chat prompt ("Is this review positive or negative?
Answer with one word." + the sentence) built with the model's chat template; the target is the answer word followed by
the end-of-turn token.  The loss covers only the answer tokens.  Accuracy is measured by greedy generation and
parsing the first word of the reply.

Forgetting is measured on held-out text the model is not tuned on (CoNLL-2010 sentences and passages of the long
Pang & Lee reviews): the mean over tokens of ``KL(p_base ‖ p_tuned)`` between the base and the tuned model's
next-token distributions, and the change in perplexity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from . import data, io, pretrained
from .errors import OptionError
from .loop import CHECKPOINT_NAME, LoopOptions, run_identity, train
from .methods import INSTRUCT_METHODS, METHODS, count_parameters, get_method, wrap
from .results import RunsFile, group_runs, markdown_table, mean_std

QUESTION = "Is this review positive or negative? Answer with one word.\n\n\"{text}\""
ANSWERS = ("negative", "positive")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
TASK = "polarity-instruct"
# The learning-rate schedule of the shared loop, recorded with every run; runs recorded before instruct used that
# loop trained at a constant rate, and are told apart by it.
SCHEDULE = "warmup 6% + linear decay"
KEY_DEFAULTS = {"schedule": "constant", "base_weights": "fp32"}


@dataclass
class InstructConfig:
    method: str = "goft"  # a run name of goft.apps.methods.INSTRUCT_METHODS
    model: Optional[str] = None  # local causal-LM directory; None = embedded SmolLM2-135M-Instruct
    base_weights: str = "fp32"  # or "int8": the base's linear layers quantized (torchao int8 weight-only) on load
    target_modules: Optional[list[str]] = None
    train_size: int = 512
    eval_size: int = 200
    epochs: int = 1
    batch_size: int = 8
    lr: Optional[float] = None  # None = the method's instruct_lr
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

    def __post_init__(self):
        get_method(self.method, INSTRUCT_METHODS)
        pretrained.check_base_weights(self.base_weights)
        for name in ("train_size", "eval_size", "epochs", "batch_size", "lora_r"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise OptionError(name, f"must be a positive integer, got {value!r}")
        if (self.save_every or self.resume) and not self.output:
            raise OptionError("output", "is needed by --save-every and --resume (where the checkpoints live)")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else METHODS[self.method].instruct_lr

    @property
    def run_dir(self) -> Optional[Path]:
        """This run's directory under ``output``: one per (method, seed, learning rate)."""
        if self.output is None:
            return None
        quantized = "" if self.base_weights == "fp32" else f"-{self.base_weights}"
        return Path(self.output) / f"{self.method}{quantized}-seed{self.seed}-lr{self.learning_rate:g}"


def prompt_ids(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": QUESTION.format(text=text)}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    return list(enc["input_ids"])


def answer_ids(tokenizer, label: int) -> list[int]:
    ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]
    end = tokenizer.eos_token_id
    return list(ids) + ([end] if end is not None else [])


def build_batch(tokenizer, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-padded input ids with labels -100 everywhere except the answer tokens."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    length = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), length), pad, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (p, a) in enumerate(examples):
        seq = p + a
        ids[row, :len(seq)] = torch.tensor(seq)
        mask[row, :len(seq)] = 1
        labels[row, len(p):len(seq)] = torch.tensor(a)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


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
    correct = 0
    for start in range(0, len(texts), batch_size):
        prompts = [prompt_ids(tokenizer, t) for t in texts[start:start + batch_size]]
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, length - len(p):] = torch.tensor(p)
            mask[row, length - len(p):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                             pad_token_id=pad)
        for row, label in enumerate(labels[start:start + batch_size]):
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
            chunk = ids[k * tokens:(k + 1) * tokens]
            if len(chunk) == tokens:
                rows.append(chunk)
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def next_token_logprobs(model, passages: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(passages), batch_size):
        out.append(F.log_softmax(model(input_ids=passages[start:start + batch_size]).logits.float(), dim=-1))
    return torch.cat(out)


def forgetting(base_logprobs: torch.Tensor, tuned_logprobs: torch.Tensor, passages: torch.Tensor) -> dict:
    """Mean token KL(p_base ‖ p_tuned) and the perplexities of both models on the held-out passages."""
    kl = (base_logprobs.exp() * (base_logprobs - tuned_logprobs)).sum(-1)[:, :-1].mean().item()
    targets = passages[:, 1:]

    def perplexity(logprobs):
        nll = -logprobs[:, :-1].gather(-1, targets[..., None]).squeeze(-1).mean().item()
        return math.exp(nll)

    base_ppl, tuned_ppl = perplexity(base_logprobs), perplexity(tuned_logprobs)
    return {"kl_base_to_tuned": kl, "perplexity_base": base_ppl, "perplexity_tuned": tuned_ppl,
            "perplexity_change": tuned_ppl - base_ppl}


def build_instruct_model(cfg: InstructConfig, model):
    config = METHODS[cfg.method].peft_config(cfg.target_modules or DEFAULT_TARGETS, task_type="CAUSAL_LM",
                                             orth_reg_weight=cfg.orth_reg_weight, lora_r=cfg.lora_r)
    return wrap(model, config)


def instruct(cfg: InstructConfig, base_logprobs_cache: Optional[dict] = None) -> dict:
    """Tune with the shared loop, then measure generation accuracy and forgetting.  Returns a metrics dict; with
    ``cfg.output`` the run's checkpoint and adapter are kept in ``cfg.run_dir``."""
    torch.manual_seed(cfg.seed)
    model, tokenizer = pretrained.load_causal_lm(cfg.model, cfg.base_weights)
    base_bytes = pretrained.weight_bytes(model)
    train_set, test_set = data.load_task("polarity")
    train_set = train_set.subset(cfg.train_size, cfg.seed)
    test_set = test_set.subset(cfg.eval_size, 0)  # the same evaluation sentences for every run
    passages = heldout_passages(tokenizer, cfg.forget_passages, cfg.forget_tokens)
    # the base's own numbers, per base weights: a tuned model's forgetting is measured against the base it tuned
    cache = (base_logprobs_cache if base_logprobs_cache is not None else {}).setdefault(cfg.base_weights, {})
    if "base" not in cache:
        cache["base"] = next_token_logprobs(model, passages)
        cache["base_accuracy"] = generation_accuracy(model, tokenizer, test_set.texts, test_set.labels)
    model = build_instruct_model(cfg, model)
    model.peft_config["default"].base_model_name_or_path = pretrained.model_reference(cfg.model,
                                                                                      pretrained.SMOLLM2_NAME)
    examples = [(prompt_ids(tokenizer, t), answer_ids(tokenizer, y))
                for t, y in zip(train_set.texts, train_set.labels, strict=True)]
    options = LoopOptions(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.learning_rate, seed=cfg.seed,
        checkpoint=cfg.run_dir / CHECKPOINT_NAME if cfg.run_dir else None, save_every=cfg.save_every,
        resume=cfg.resume, overwrite=cfg.overwrite, progress=cfg.progress, description=f"{cfg.method} instruct",
        run_identity=run_identity(cfg, cfg.learning_rate),
    )
    result = train(model, len(examples), lambda idx: build_batch(tokenizer, [examples[i] for i in idx]), options)
    if cfg.run_dir is not None and result.is_main:
        io.save_pretrained(model, cfg.run_dir / "adapter")
    accuracy = generation_accuracy(model, tokenizer, test_set.texts, test_set.labels)
    forget = forgetting(cache["base"], next_token_logprobs(model, passages), passages)
    return {"method": cfg.method, "seed": cfg.seed, "accuracy": accuracy, "base_accuracy": cache["base_accuracy"],
            "trainable_params": count_parameters(model), "seconds": result.seconds, **forget,
            "base_weights": cfg.base_weights, "base_weight_mib": base_bytes / 2**20,
            "loss": result.curve["loss"], "config": {**asdict(cfg), "lr": cfg.learning_rate}}


def run_instruct_compare(methods, seeds, base: InstructConfig, results_path, progress=print,
                         learning_rates=None) -> dict:
    """Methods × learning rates × seeds of :func:`instruct`, appended to a results JSON (atomic, resumable) with a
    markdown table and a PNG of accuracy against forgetting.

    ``learning_rates`` None runs each method at its default; a list runs every method at each rate (a sweep).  A run
    is identified by (method, seed, learning rate), so a sweep adds to earlier results and a rerun skips what is
    recorded."""
    results = RunsFile(results_path, key_fields=("method", "seed", "lr", "schedule", "base_weights"),
                       key_defaults=KEY_DEFAULTS)
    cache: dict = {}
    for seed in seeds:
        for method in methods:
            for lr in (learning_rates or [None]):
                cfg = replace(base, method=method, seed=seed, lr=lr)
                if results.has(method, seed, cfg.learning_rate, SCHEDULE, cfg.base_weights):
                    progress(f"skip {method} seed {seed} lr {cfg.learning_rate:g}: already in {results.path}")
                    continue
                _run_and_record(cfg, results, cache, progress)
    plot_accuracy_vs_forgetting(results.data, results.path.with_suffix(".png"))
    io.write_text(results.path.with_suffix(".md"), instruct_table(results.data))
    return results.data


def _run_and_record(cfg: InstructConfig, results: RunsFile, cache: dict, progress) -> None:
    metrics = instruct(cfg, base_logprobs_cache=cache)
    row = {k: v for k, v in metrics.items() if k not in ("loss", "config")}
    row["lr"] = metrics["config"]["lr"]
    row["train_examples"], row["eval_examples"] = cfg.train_size, cfg.eval_size
    row["schedule"] = SCHEDULE
    results.add(row, TASK)
    progress(f"{cfg.method} seed {cfg.seed} lr {row['lr']:g}: accuracy {row['accuracy']:.3f} "
             f"(base {row['base_accuracy']:.3f}), KL {row['kl_base_to_tuned']:.4f}, perplexity "
             f"{row['perplexity_base']:.2f} -> {row['perplexity_tuned']:.2f}, {row['seconds']:.0f} s")


def summarize_instruct(results: dict) -> list[dict]:
    """One row per (method, base weights, learning rate, schedule): means and sample standard deviations over the
    recorded seeds; a method on a quantized base is labelled as such (e.g. ``goft on int8``)."""
    groups = group_runs(results["runs"], ("method", "base_weights", "lr", "schedule"), KEY_DEFAULTS)
    return [{"method": method, "base_weights": weights, "lr": lr, "schedule": schedule, "seeds": len(runs),
             "label": method if weights == "fp32" else f"{method} on {weights}",
             "params": runs[0]["trainable_params"],
             "accuracy": mean_std(r["accuracy"] for r in runs),
             "kl": mean_std(r["kl_base_to_tuned"] for r in runs),
             "perplexity_change": mean_std(r["perplexity_change"] for r in runs)}
            for (method, weights, lr, schedule), runs in sorted(groups.items())]


def instruct_table(results: dict) -> str:
    """A markdown table of :func:`summarize_instruct` (accuracy in %, mean ± std over seeds)."""
    header = ("method", "lr", "schedule", "seeds", "trainable params", "generation accuracy (%)", "KL(base ‖ tuned)",
              "perplexity change")
    rows = []
    for (weights,), runs in group_runs(results["runs"], ("base_weights",), KEY_DEFAULTS).items():
        sizes = [r["base_weight_mib"] for r in runs if "base_weight_mib" in r]  # recorded since --base-weights
        name = "base model" if not sizes else f"base model, {weights} ({sizes[0]:.0f} MiB of weights)"
        rows.append((name, "–", "–", "–", "0", f"{100 * runs[0]['base_accuracy']:.1f}", "0", "0"))
    for r in summarize_instruct(results):
        (acc, acc_sd), (kl, kl_sd), (dp, dp_sd) = r["accuracy"], r["kl"], r["perplexity_change"]
        rows.append((r["label"], f"{r['lr']:g}", r["schedule"], str(r["seeds"]), f"{r['params']:,}",
                     f"{100 * acc:.1f} ± {100 * acc_sd:.1f}", f"{kl:.4f} ± {kl_sd:.4f}", f"{dp:+.2f} ± {dp_sd:.2f}"))
    return markdown_table(header, rows)


def plot_accuracy_vs_forgetting(results: dict, path) -> None:
    plt = io.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # one colour per curve (method, base weights, schedule): each seed faint, the means over seeds joined in order
    # of learning rate
    curves = _curves(summarize_instruct(results))
    several_schedules = len({key[2] for key, _ in curves}) > 1
    runs_of = group_runs(results["runs"], CURVE_FIELDS, KEY_DEFAULTS)
    for colour, (key, rows) in enumerate(curves):
        runs = runs_of[key]
        ax.scatter([r["kl_base_to_tuned"] for r in runs], [100 * r["accuracy"] for r in runs], s=14, alpha=0.35,
                   color=f"C{colour}")
        xs, ys = [r["kl"][0] for r in rows], [100 * r["accuracy"][0] for r in rows]
        label = f"{rows[0]['label']}, {key[2]}" if several_schedules else rows[0]["label"]
        ax.plot(xs, ys, marker="o", color=f"C{colour}", label=label)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(f"{r['lr']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=f"C{colour}")
    if results["runs"]:
        ax.axhline(100 * results["runs"][0]["base_accuracy"], color="grey", linestyle="--", label="base model")
    ax.set_xscale("log")  # KL spans orders of magnitude across methods and rates
    ax.set_xlabel("forgetting: mean token KL(p_base ‖ p_tuned) on held-out text (log)")
    ax.set_ylabel("generation accuracy (%)")
    ax.set_title("SmolLM2-135M-Instruct, polarity-instruct (labels: learning rate)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    io.save_figure(fig, path)


CURVE_FIELDS = ("method", "base_weights", "schedule")


def _curves(summary: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """The summary rows of each (method, base weights, schedule), in order of learning rate."""
    keys = sorted({tuple(r[f] for f in CURVE_FIELDS) for r in summary})
    return [(key, sorted((r for r in summary if tuple(r[f] for f in CURVE_FIELDS) == key), key=lambda r: r["lr"]))
            for key in keys]
