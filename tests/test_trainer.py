"""The plain `transformers.Trainer` trains a Decision Mamba without a subclass and reports `eval_loss`."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments

from conftest import FixedWindows, tiny_model


def test_plain_trainer_lowers_the_loss_and_reports_eval_loss(tmp_path):
    model = tiny_model("dmamba-mujoco")
    data = FixedWindows(model.config)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        max_steps=30,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=10,
    )
    optimizer = torch.optim.AdamW(model.get_optimizer_param_groups(weight_decay=1e-4), lr=args.learning_rate)
    trainer = Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, optimizers=(optimizer, None)
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()
    assert "eval_loss" in after
    assert after["eval_loss"] < 0.5 * before
