"""The Trainer integration adds qGOFT's penalty to the training loss, and only there."""

import torch
from peft import get_peft_model
from toys import tiny_bert
from transformers import TrainingArguments

import goft
from goft import OrthogonalityPenaltyTrainer


def test_trainer_adds_the_penalty_in_training_only(tmp_path):
    model = get_peft_model(
        tiny_bert(),
        goft.GOFTConfig(
            target_modules=["query", "value"],
            quasi=True,
            init_weights=False,
            orth_reg_weight=0.5,
            modules_to_save=["classifier"],
        ),
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-2,
    )
    data = [{"input_ids": torch.randint(0, 30, (8,)), "labels": torch.tensor(i % 2)} for i in range(8)]
    trainer = OrthogonalityPenaltyTrainer(model=model, args=args, train_dataset=data)
    batch = {
        "input_ids": torch.stack([d["input_ids"] for d in data[:4]]),
        "labels": torch.stack([d["labels"] for d in data[:4]]),
    }
    penalty = goft.orthogonality_penalty(model).item()
    assert penalty > 1e-4
    model.train()
    with torch.no_grad():
        task_loss = model(**batch).loss.item()
        assert abs(trainer.compute_loss(model, batch).item() - (task_loss + penalty)) < 1e-5
    model.eval()
    with torch.no_grad():
        assert abs(trainer.compute_loss(model, batch).item() - model(**batch).loss.item()) < 1e-6
    before = model.base_model.model.bert.encoder.layer[0].attention.self.query.goft_blocks["default"].detach().clone()
    trainer.train()
    after = model.base_model.model.bert.encoder.layer[0].attention.self.query.goft_blocks["default"]
    assert not torch.equal(before, after)
