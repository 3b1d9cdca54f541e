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
import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F_nn
from tqdm.auto import tqdm

QUESTION = "Is this review positive or negative? Answer with one word.\n\n\"{text}\""
ANSWERS = ("negative", "positive")
INSTRUCT_METHODS = ("goft", "qgoft", "lora", "oft")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Defaults for short CPU runs (a few hundred examples): the rates that did best in the sweep of
# results/smollm2-instruct.md (512 sentences, 1 epoch; OFT diverged at 2e-3, GOFT forgot far more at 1e-2).
INSTRUCT_LR = {"goft": 3e-3, "qgoft": 5e-3, "lora": 1e-3, "oft": 3e-4}


@dataclass
class InstructConfig:
    method: str = "goft"
    model: Optional[str] = None  # local causal-LM directory; None = embedded SmolLM2-135M-Instruct
    target_modules: Optional[list[str]] = None
    train_size: int = 512
    eval_size: int = 200
    epochs: int = 1
    batch_size: int = 8
    lr: Optional[float] = None
    seed: int = 0
    orth_reg_weight: float = 1e-2
    lora_r: int = 8
    forget_passages: int = 48
    forget_tokens: int = 128
    progress: bool = True

    def __post_init__(self):
        if self.method not in INSTRUCT_METHODS:
            raise ValueError(f"--method must be one of {', '.join(INSTRUCT_METHODS)}, got {self.method!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else INSTRUCT_LR[self.method]


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
    from .data import load_corpus

    hedge = " ".join(load_corpus("hedge").texts)
    reviews = " ".join(load_corpus("reviews").texts)
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
        out.append(F_nn.log_softmax(model(input_ids=passages[start:start + batch_size]).logits.float(), dim=-1))
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
    import warnings

    from peft import LoraConfig, OFTConfig, get_peft_model

    from .config import GOFTConfig

    common = {"target_modules": cfg.target_modules or DEFAULT_TARGETS, "task_type": "CAUSAL_LM"}
    config = {
        "goft": lambda: GOFTConfig(**common),
        "qgoft": lambda: GOFTConfig(quasi=True, orth_reg_weight=cfg.orth_reg_weight, **common),
        "lora": lambda: LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, **common),
        "oft": lambda: OFTConfig(**common),
    }[cfg.method]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(model, config)


def instruct(cfg: InstructConfig, base_logprobs_cache: Optional[dict] = None) -> dict:
    """Tune, then measure generation accuracy and forgetting.  Returns a metrics dict."""
    from .data import load_task
    from .model import orthogonality_penalty
    from .models import load_causal_lm

    torch.manual_seed(cfg.seed)
    model, tokenizer = load_causal_lm(cfg.model)
    train_set, test_set = load_task("polarity")
    train_set = train_set.subset(cfg.train_size, cfg.seed)
    test_set = test_set.subset(cfg.eval_size, 0)  # the same evaluation sentences for every run
    passages = heldout_passages(tokenizer, cfg.forget_passages, cfg.forget_tokens)
    cache = base_logprobs_cache if base_logprobs_cache is not None else {}
    if "base" not in cache:
        cache["base"] = next_token_logprobs(model, passages)
        cache["base_accuracy"] = generation_accuracy(model, tokenizer, test_set.texts, test_set.labels)
    model = build_instruct_model(cfg, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    examples = [(prompt_ids(tokenizer, t), answer_ids(tokenizer, y)) for t, y in zip(train_set.texts, train_set.labels)]
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(examples) / cfg.batch_size) * cfg.epochs
    bar = tqdm(total=steps, disable=not cfg.progress, desc=f"{cfg.method} instruct", leave=False)
    losses = []
    start = time.perf_counter()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for b in range(0, len(order), cfg.batch_size):
            batch = build_batch(tokenizer, [examples[i] for i in order[b:b + cfg.batch_size]])
            loss = model(**batch).loss + orthogonality_penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    accuracy = generation_accuracy(model, tokenizer, test_set.texts, test_set.labels)
    forget = forgetting(cache["base"], next_token_logprobs(model, passages), passages)
    return {"method": cfg.method, "seed": cfg.seed, "accuracy": accuracy, "base_accuracy": cache["base_accuracy"],
            "trainable_params": sum(p.numel() for p in params), "seconds": seconds, **forget,
            "loss": losses, "config": {**asdict(cfg), "lr": cfg.learning_rate}}


def run_instruct_compare(methods, seeds, base: InstructConfig, results_path, progress=print,
                         learning_rates=None) -> dict:
    """Methods × learning rates × seeds of :func:`instruct`, appended to a results JSON (atomic, resumable) with a PNG
    of accuracy against forgetting.

    ``learning_rates`` None runs each method at its default (``INSTRUCT_LR``); a list runs every method at each rate
    (a sweep).  A run is identified by (method, seed, learning rate), so a sweep adds to earlier results and a rerun
    skips what is recorded."""
    import json
    from dataclasses import replace
    from pathlib import Path

    results_path = Path(results_path)
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": []}
    done = {(r["method"], r["seed"], r["lr"]) for r in results["runs"]}
    cache: dict = {}
    for seed in seeds:
        for method in methods:
            for lr in (learning_rates or [None]):
                cfg = replace(base, method=method, seed=seed, lr=lr)
                if (method, seed, cfg.learning_rate) in done:
                    progress(f"skip {method} seed {seed} lr {cfg.learning_rate:g}: already in {results_path}")
                    continue
                _run_and_record(cfg, results, results_path, cache, progress)
    plot_accuracy_vs_forgetting(results, results_path.with_suffix(".png"))
    results_path.with_suffix(".md").write_text(instruct_table(results) + "\n")
    return results


def summarize_instruct(results: dict) -> list[dict]:
    """One row per (method, learning rate): means and sample standard deviations over the recorded seeds."""
    import statistics

    def mean_std(values):
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    rows = []
    for method, lr in sorted({(r["method"], r["lr"]) for r in results["runs"]}):
        runs = [r for r in results["runs"] if (r["method"], r["lr"]) == (method, lr)]
        rows.append({"method": method, "lr": lr, "seeds": len(runs), "params": runs[0]["trainable_params"],
                     "accuracy": mean_std([r["accuracy"] for r in runs]),
                     "kl": mean_std([r["kl_base_to_tuned"] for r in runs]),
                     "perplexity_change": mean_std([r["perplexity_change"] for r in runs])})
    return rows


def instruct_table(results: dict) -> str:
    """A markdown table of :func:`summarize_instruct` (accuracy in %, mean ± std over seeds)."""
    lines = ["| method | lr | seeds | trainable params | generation accuracy (%) | KL(base ‖ tuned) | "
             "perplexity change |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    if results["runs"]:
        lines.append(f"| base model | – | – | 0 | {100 * results['runs'][0]['base_accuracy']:.1f} | 0 | 0 |")
    for r in summarize_instruct(results):
        (acc, acc_sd), (kl, kl_sd), (dp, dp_sd) = r["accuracy"], r["kl"], r["perplexity_change"]
        lines.append(f"| {r['method']} | {r['lr']:g} | {r['seeds']} | {r['params']:,} | {100 * acc:.1f} ± "
                     f"{100 * acc_sd:.1f} | {kl:.4f} ± {kl_sd:.4f} | {dp:+.2f} ± {dp_sd:.2f} |")
    return "\n".join(lines)


def _run_and_record(cfg: InstructConfig, results: dict, results_path, cache: dict, progress) -> None:
    from .train import write_json_atomic

    metrics = instruct(cfg, base_logprobs_cache=cache)
    row = {k: v for k, v in metrics.items() if k not in ("loss", "config")}
    row["lr"] = metrics["config"]["lr"]
    row["train_examples"], row["eval_examples"] = cfg.train_size, cfg.eval_size
    results["runs"].append(row)
    results["task"] = "polarity-instruct"
    write_json_atomic(results_path, results)
    progress(f"{cfg.method} seed {cfg.seed} lr {row['lr']:g}: accuracy {row['accuracy']:.3f} "
             f"(base {row['base_accuracy']:.3f}), KL {row['kl_base_to_tuned']:.4f}, perplexity "
             f"{row['perplexity_base']:.2f} -> {row['perplexity_tuned']:.2f}, {row['seconds']:.0f} s")


def plot_accuracy_vs_forgetting(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # one colour per method: each seed faint, the mean over seeds at each learning rate joined in order of rate
    for colour, method in enumerate(sorted({r["method"] for r in results["runs"]})):
        runs = [r for r in results["runs"] if r["method"] == method]
        ax.scatter([r["kl_base_to_tuned"] for r in runs], [100 * r["accuracy"] for r in runs], s=14, alpha=0.35,
                   color=f"C{colour}")
        means = [(lr, [r for r in runs if r["lr"] == lr]) for lr in sorted({r["lr"] for r in runs})]
        xs = [sum(r["kl_base_to_tuned"] for r in rs) / len(rs) for _, rs in means]
        ys = [100 * sum(r["accuracy"] for r in rs) / len(rs) for _, rs in means]
        ax.plot(xs, ys, marker="o", color=f"C{colour}", label=method)
        for (lr, _), x, y in zip(means, xs, ys):
            ax.annotate(f"{lr:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=f"C{colour}")
    if results["runs"]:
        ax.axhline(100 * results["runs"][0]["base_accuracy"], color="grey", linestyle="--", label="base model")
    ax.set_xscale("log")  # KL spans orders of magnitude across methods and rates
    ax.set_xlabel("forgetting: mean token KL(p_base ‖ p_tuned) on held-out text (log)")
    ax.set_ylabel("generation accuracy (%)")
    ax.set_title("SmolLM2-135M-Instruct, polarity-instruct (labels: learning rate)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
