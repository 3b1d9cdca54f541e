"""``OrthogonalityPenaltyTrainer``: ``transformers.Trainer`` plus qGOFT's penalty, added visibly to the loss."""

from __future__ import annotations

from typing import Any

import transformers

from .model import orthogonality_penalty


class OrthogonalityPenaltyTrainer(transformers.Trainer):
    """``transformers.Trainer`` that adds :func:`goft.orthogonality_penalty` to the training loss.

    Use it in place of ``Trainer`` for qGOFT (for strict GOFT the penalty is exactly 0)::

        trainer = OrthogonalityPenaltyTrainer(model=peft_model, args=args, train_dataset=ds)

    With gradient accumulation the penalty is counted once per optimizer step: it is divided by the number of
    accumulation steps exactly when the Trainer itself will not divide the loss.
    """

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch: Any = None, **kwargs):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, **kwargs
        )
        loss, outputs = result if return_outputs else (result, None)
        if model.training:
            penalty = orthogonality_penalty(model)
            if self._loss_is_scaled_for_ga(num_items_in_batch):
                penalty = penalty / max(1, getattr(self, "current_gradient_accumulation_steps", 1))
            loss = loss + penalty.to(loss.device, loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def _loss_is_scaled_for_ga(self, num_items_in_batch: Any) -> bool:
        """Mirrors ``Trainer.training_step``'s rule for whether it will divide the loss by the accumulation steps."""
        explicit = getattr(self, "loss_is_scaled_for_ga", None)
        if explicit is not None:
            return bool(explicit)
        return bool(
            (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
            or getattr(self, "compute_loss_func", None) is not None
        )
