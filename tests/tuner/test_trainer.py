"""qGOFT's penalty reaches the loss under any trainer that uses the model's own loss or a fused LM head's
log-probs (transformers' Trainer, TRL's SFTTrainer, a plain loop), once per optimizer step, and never twice
(OrthogonalityPenaltyTrainer, a manual orthogonality_penalty)."""

import pytest
import torch
from peft import get_peft_model
from toys import adapted_llama, tiny_bert
from transformers import LlamaForCausalLM, TrainingArguments

import goft
from goft import OrthogonalityPenaltyTrainer

BATCH = {
    "input_ids": torch.randint(0, 30, (4, 8), generator=torch.Generator().manual_seed(0)),
    "labels": torch.tensor([0, 1, 0, 1]),
}


def quasi_bert(orth_reg_weight=0.5):
    return get_peft_model(
        tiny_bert(),
        goft.GOFTConfig(
            target_modules=["query", "value"],
            quasi=True,
            init_weights=False,
            orth_reg_weight=orth_reg_weight,
            modules_to_save=["classifier"],
        ),
    )


def two_steps(tmp_path) -> dict:
    """Training arguments shared by transformers' and TRL's trainers: two steps of 4 on the CPU, nothing saved."""
    return dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-2,
    )


def task_loss(model, batch):
    """The loss without the penalty: the model told to leave it out."""
    model.base_model.penalty_in_loss = False
    try:
        return model(**batch).loss
    finally:
        model.base_model.penalty_in_loss = True


def test_the_models_own_loss_holds_the_penalty_in_training_only():
    model = quasi_bert()
    penalty = goft.orthogonality_penalty(model, counted=True).item()
    assert penalty > 1e-4
    model.train()
    with torch.no_grad():
        task = task_loss(model, BATCH).item()
        assert model(**BATCH).loss.item() == pytest.approx(task + penalty, abs=1e-6)
        # a plain loop that adds the penalty by hand counts it once, not twice
        assert (model(**BATCH).loss + goft.orthogonality_penalty(model)).item() == pytest.approx(
            task + penalty, abs=1e-6
        )
    model.eval()
    with torch.no_grad():
        assert model(**BATCH).loss.item() == pytest.approx(task, abs=1e-6)  # validation losses stay the task's


def test_strict_goft_and_lambda_zero_leave_the_loss_alone():
    for model in (quasi_bert(orth_reg_weight=0.0), get_peft_model(tiny_bert(), goft.GOFTConfig(init_weights=False))):
        model.train()
        with torch.no_grad():
            assert torch.equal(model(**BATCH).loss, task_loss(model, BATCH))


def test_gradient_accumulation_counts_the_penalty_once_per_step():
    model = quasi_bert()
    model.train()
    penalty = goft.orthogonality_penalty(model, counted=True).item()
    with torch.no_grad():
        shares = []
        for half in (slice(0, 1), slice(1, 4)):  # 1 and 3 labelled items of 4
            batch = {k: v[half] for k, v in BATCH.items()}
            base = model.base_model.model
            shares.append(base(**batch, num_items_in_batch=torch.tensor(4)).loss - task_loss_of(base, model, batch))
    assert sum(s.item() for s in shares) == pytest.approx(penalty, rel=1e-5)


def task_loss_of(base, model, batch):
    model.base_model.penalty_in_loss = False
    try:
        return base(**batch, num_items_in_batch=torch.tensor(4)).loss
    finally:
        model.base_model.penalty_in_loss = True


def test_transformers_trainer_and_the_penalty_trainer_count_it_once(tmp_path):
    model = quasi_bert()
    args = TrainingArguments(**two_steps(tmp_path))
    data = [{"input_ids": torch.randint(0, 30, (8,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    penalty = goft.orthogonality_penalty(model, counted=True).item()
    model.train()
    for trainer_class in (OrthogonalityPenaltyTrainer, __import__("transformers").Trainer):
        trainer = trainer_class(model=model, args=args, train_dataset=data)
        with torch.no_grad():
            assert trainer.compute_loss(model, BATCH).item() == pytest.approx(
                task_loss(model, BATCH).item() + penalty, abs=1e-5
            )
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    before = layer.goft_blocks["default"].detach().clone()
    trainer.train()
    assert not torch.equal(before, layer.goft_blocks["default"])


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 40)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def sft_trainer(tiny_llama, tmp_path, quasi):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    g = torch.Generator().manual_seed(1)
    texts = [" ".join(f"w{int(t)}" for t in torch.randint(3, 40, (12,), generator=g)) for _ in range(8)]
    penalty = {"orth_reg_weight": 0.5} if quasi else {}  # strict GOFT has no penalty to weigh
    config = goft.GOFTConfig(
        target_modules=["q_proj", "v_proj"], quasi=quasi, init_weights=False, task_type="CAUSAL_LM", **penalty
    )
    return SFTTrainer(
        model=LlamaForCausalLM.from_pretrained(tiny_llama),
        args=SFTConfig(**two_steps(tmp_path)),
        train_dataset=Dataset.from_dict({"text": texts}),
        processing_class=word_tokenizer(),
        peft_config=config,
    )


@pytest.mark.parametrize("quasi", [False, True])
def test_trl_sft_trainer_trains_and_saves_goft(tiny_llama, tmp_path, quasi):
    trainer = sft_trainer(tiny_llama, tmp_path, quasi)
    layer = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    params = layer.rotation_params("default")
    before = params.detach().clone()
    trainer.train()
    assert not torch.equal(before, params)
    trainer.save_model(str(tmp_path / "adapter"))
    saved = goft.GOFTConfig.from_pretrained(str(tmp_path / "adapter"))
    assert saved.quasi == quasi


def test_trl_sft_trainers_own_loss_carries_the_penalty_once_per_step(tiny_llama, tmp_path):
    """TRL 1.16's SFTTrainer makes its loss from a fused LM head's per-token log-probs, not from outputs.loss: the
    penalty's gradient rides on the log-probs, weighted by the micro-batch's share of the step's labelled tokens."""
    trainer = sft_trainer(tiny_llama, tmp_path, quasi=True)
    model = trainer.model
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    params = [p for p in model.parameters() if p.requires_grad]
    tokens = batch["labels"][:, 1:].ne(-100).sum()  # the labelled tokens the shifted log-probs score

    def gradients(num_items=None, by_hand=False):
        model.zero_grad()
        model.base_model.penalty_in_loss = not by_hand
        try:
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items)
            if by_hand:
                share = 1.0 if num_items is None else tokens / num_items
                loss = loss + share * goft.orthogonality_penalty(model, counted=True)
            loss.backward()
        finally:
            model.base_model.penalty_in_loss = True
        return torch.cat([p.grad.flatten() for p in params])

    got = gradients()
    want = gradients(by_hand=True)
    model.base_model.penalty_in_loss = False
    model.zero_grad()
    trainer.compute_loss(model, dict(batch)).backward()
    model.base_model.penalty_in_loss = True
    task_only = torch.cat([p.grad.flatten() for p in params])
    assert (want - task_only).abs().max() > 1e-3  # the penalty moves the gradient
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # gradient accumulation over two such micro-batches: each carries half
    got = gradients(num_items=2 * tokens)
    want = gradients(num_items=2 * tokens, by_hand=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_a_merged_and_unloaded_model_keeps_no_hook(tiny_llama):
    model = adapted_llama(tiny_llama, quasi=True)
    plain = model.merge_and_unload()
    assert not plain._forward_hooks and not plain._forward_hooks_with_kwargs
