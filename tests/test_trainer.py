"""The plain `transformers.Trainer` trains a Decision Mamba without a subclass and reports `eval_loss`."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from conftest import make_batch, tiny_model


class FixedWindows(Dataset):
    """A handful of fixed windows, returned one example at a time as the Trainer's sampler expects."""

    def __init__(self, config, count: int = 16) -> None:
        batch = make_batch(config, batch=count, steps=4, seed=1)
        batch["labels"] = batch["actions"]
        self.rows = [{key: value[i] for key, value in batch.items()} for i in range(count)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


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
