"""Decoder LMs: GOFT on a causal LM generates, works with gradient checkpointing, and `goft merge` writes a
checkpoint that plain transformers loads and whose greedy generations equal the unmerged adapter's."""

import math
import subprocess
import sys

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import goft
from goft.apps.cli import main

PROMPTS = torch.tensor([[1, 5, 9, 13, 2], [1, 7, 7, 21, 30]])


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def adapted(tiny_llama, **kw):
    torch.manual_seed(1)  # the same random adapter every call
    model = LlamaForCausalLM.from_pretrained(tiny_llama)
    config = goft.GOFTConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM",
                             init_weights=False, **kw)
    return get_peft_model(model, config)


def test_generate_with_adapter_attached(tiny_llama):
    model = adapted(tiny_llama).eval()
    out = model.generate(input_ids=PROMPTS, max_new_tokens=6, do_sample=False)
    assert out.shape == (2, 11)
    with model.disable_adapter():
        base = model.generate(input_ids=PROMPTS, max_new_tokens=6, do_sample=False)
    assert not torch.equal(out, base)  # the random adapter changes what is generated


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama):
    grads = []
    for checkpointing in (False, True):
        model = adapted(tiny_llama, quasi=True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        loss = model(input_ids=PROMPTS, labels=PROMPTS).loss
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5), name


def test_goft_merge_writes_a_plain_checkpoint_with_equal_generations(tiny_llama, tmp_path):
    model = adapted(tiny_llama, quasi=True, scaling=True).eval()
    want = model.generate(input_ids=PROMPTS, max_new_tokens=8, do_sample=False)
    model.save_pretrained(tmp_path / "adapter")
    torch.save({"prompts": PROMPTS, "want": want}, tmp_path / "io.pt")
    assert main(["merge", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged")]) == 0
    # a fresh interpreter that never imports goft
    script = f"""
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "merged")!r}).eval()
io = torch.load({str(tmp_path / "io.pt")!r})
got = model.generate(input_ids=io["prompts"], max_new_tokens=8, do_sample=False)
assert "goft" not in sys.modules
assert torch.equal(got, io["want"]), (got, io["want"])
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_merge_refuses_to_overwrite(tiny_llama, tmp_path):
    adapted(tiny_llama).save_pretrained(tmp_path / "adapter")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not empty"):
        main(["merge", str(tmp_path / "adapter"), "--output", str(tmp_path / "taken")])
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------------------------------
# The instruct task's pieces
# ---------------------------------------------------------------------------------------------------------------------

from goft.apps import instruct  # noqa: E402
from goft.apps.methods import METHODS  # noqa: E402


@pytest.fixture(scope="module")
def chat_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "is", "this", "review",
             "positive", "or", "negative", "?", "answer", "with", "one", "word", ".", "\"", "a", "fine", "film"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")
    fast.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
    return fast


def test_batches_train_only_on_the_answer(chat_tokenizer):
    p = instruct.prompt_ids(chat_tokenizer, "a fine film")
    a = instruct.answer_ids(chat_tokenizer, 1)
    assert chat_tokenizer.decode(a) == "positive <|im_end|>"
    batch = instruct.build_batch(chat_tokenizer, [(p, a), (p[:-2], instruct.answer_ids(chat_tokenizer, 0))])
    labels = batch["labels"]
    assert (labels[0, :len(p)] == -100).all() and labels[0, len(p):len(p) + 2].tolist() == a
    assert batch["attention_mask"][1].sum() == len(p) - 2 + 2
    assert (labels[1, len(p) - 2 + 2:] == -100).all()


@pytest.mark.parametrize("reply, want", [(" Positive.", 1), ("negative, clearly", 0), ("This review is positive", 1),
                                         ("I cannot tell", None), ("", None)])
def test_parse_answer(reply, want):
    assert instruct.parse_answer(reply) == want


def test_forgetting_measures():
    torch.manual_seed(0)
    logits = torch.randn(3, 10, 40)
    base = torch.log_softmax(logits, -1)
    passages = torch.randint(0, 40, (3, 10))
    same = instruct.forgetting(base, base, passages)
    assert same["kl_base_to_tuned"] == pytest.approx(0.0, abs=1e-7) and same["perplexity_change"] == 0.0
    other = instruct.forgetting(base, torch.log_softmax(logits + torch.randn(3, 10, 40), -1), passages)
    assert other["kl_base_to_tuned"] > 0.01
    nll = -base[:, :-1].gather(-1, passages[:, 1:, None]).mean().item()
    assert same["perplexity_base"] == pytest.approx(math.exp(nll), rel=1e-6)


def test_generation_accuracy_runs_on_a_tiny_chat_model(chat_tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(chat_tokenizer), hidden_size=16, intermediate_size=24,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128))
    acc = instruct.generation_accuracy(model, chat_tokenizer, ["a fine film", "a film"], [1, 0])
    assert 0.0 <= acc <= 1.0


def test_instruct_sweep_records_each_rate_once_and_resumes(monkeypatch, tmp_path):
    calls = []

    def fake_instruct(cfg, base_logprobs_cache=None):
        calls.append((cfg.method, cfg.seed, cfg.learning_rate))
        return {"method": cfg.method, "seed": cfg.seed, "accuracy": 0.5 + cfg.learning_rate, "base_accuracy": 0.5,
                "trainable_params": 10, "seconds": 1.0, "kl_base_to_tuned": cfg.learning_rate,
                "perplexity_base": 10.0, "perplexity_tuned": 11.0, "perplexity_change": 1.0,
                "loss": [1.0], "config": {"lr": cfg.learning_rate}}

    monkeypatch.setattr(instruct, "instruct", fake_instruct)
    path = tmp_path / "r.json"
    base = instruct.InstructConfig(progress=False)
    instruct.run_instruct_compare(["goft"], [0], base, path, progress=lambda *_: None)
    assert calls == [("goft", 0, METHODS["goft"].instruct_lr)]
    instruct.run_instruct_compare(["goft", "lora"], [0, 1], base, path, progress=lambda *_: None,
                                  learning_rates=[METHODS["goft"].instruct_lr, 1e-3])
    # the default-rate goft seed 0 run is recorded already and is not repeated; the other 7 pairs run once each
    assert len(calls) == 1 + 7 and len(set(calls)) == 8
    instruct.run_instruct_compare(["goft", "lora"], [0, 1], base, path, progress=lambda *_: None,
                                  learning_rates=[METHODS["goft"].instruct_lr, 1e-3])
    assert len(calls) == 8
    table = path.with_suffix(".md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| goft") or line.startswith("| lora")]
    assert len(rows) == 4 and all("| 2 |" in row for row in rows)  # each (method, rate) over both seeds
    assert path.with_suffix(".png").is_file()
