"""`EnvironmentEvaluationCallback` inside a real (tiny) `transformers.Trainer` run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

from hf_decision_mamba.envs import build_vector_env
from hf_decision_mamba.evaluation import EnvironmentEvaluationCallback, rollout


class GainPolicy:
    """Hopper policy `tanh(gain * obs[:3])`: each evaluation gets the next gain, so scores differ."""

    def __init__(self, gain: float):
        self.gain = gain

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        pass

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        return np.tanh(self.gain * observation[:, 2:5]).astype(np.float32)


class RegressionModel(torch.nn.Module):
    """Trainable one-weight model with a loss and a `.policy()` whose gain changes at every evaluation."""

    gains = (0.0, 3.0, -3.0)

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.evaluations = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        prediction = x * self.weight
        return {"loss": torch.nn.functional.mse_loss(prediction, labels), "logits": prediction}

    def policy(self, mode: str, target_return: float | None, deterministic: bool) -> GainPolicy:
        gain = self.gains[self.evaluations % len(self.gains)]
        self.evaluations += 1
        return GainPolicy(gain)


def _trainer(tmp_path, callback: EnvironmentEvaluationCallback, max_steps: int = 6) -> Trainer:
    data = [{"x": torch.tensor([float(i)]), "labels": torch.tensor([2.0 * i])} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    return Trainer(model=RegressionModel(), args=args, train_dataset=data)


def _callback(**kwargs) -> EnvironmentEvaluationCallback:
    return EnvironmentEvaluationCallback(
        env_id="hopper", num_episodes=2, target_return=3600.0, mode="window", max_episode_steps=15, **kwargs
    )


def test_metrics_reach_log_history_and_report_labels_last_and_best(tmp_path, capsys):
    callback = _callback(eval_every=2)
    trainer = _trainer(tmp_path, callback)
    callback.attach(trainer)
    trainer.train()

    logged = [entry for entry in trainer.state.log_history if "env_eval/return_mean" in entry]
    assert [entry["step"] for entry in logged] == [2, 4, 6]
    assert all("env_eval/normalized_score_mean" in entry and "epoch" in entry for entry in logged)
    returns = [entry["env_eval/return_mean"] for entry in logged]
    assert len(set(returns)) == 3

    report = json.loads((tmp_path / "env_eval_report.json").read_text())
    assert report["last"]["step"] == 6 and "last" in report["last"]["label"]
    best_step = [2, 4, 6][int(np.argmax(returns))]
    assert report["best"]["step"] == best_step and "best" in report["best"]["label"]
    assert report["best"]["metrics"]["env_eval/return_mean"] == max(returns)
    assert [record["step"] for record in report["history"]] == [2, 4, 6]
    table = capsys.readouterr().out
    assert "LAST (step 6" in table and f"BEST (step {best_step}" in table


def test_envs_are_built_at_the_first_evaluation_and_closed_at_train_end(tmp_path, monkeypatch):
    built, closed = [], []
    monkeypatch.setattr(
        rollout, "build_vector_env", lambda *args: built.append(args) or build_vector_env(*args)
    )
    callback = _callback(eval_every=2)
    close = callback.envs.close
    monkeypatch.setattr(callback.envs, "close", lambda: closed.append(len(callback.history)) or close())
    trainer = _trainer(tmp_path, callback)
    callback.attach(trainer)
    trainer.train()
    assert len(callback.history) == 3 and len(built) == 1, "three evaluations, one vector env"
    assert closed == [3], "closed once, after the last evaluation"


def test_evaluates_at_train_end_and_same_seeds_every_time(tmp_path):
    RegressionModel.gains = (1.0,)
    try:
        callback = _callback(eval_every=None)  # eval_strategy "no": only the final model
        trainer = _trainer(tmp_path, callback, max_steps=3)
        callback.attach(trainer)
        trainer.train()
        callback.evaluate(trainer.state, trainer.model)
    finally:
        RegressionModel.gains = (0.0, 3.0, -3.0)
    first, second = (record["report"]["results"][0]["returns"] for record in callback.history)
    assert [record["step"] for record in callback.history] == [3, 3] and first == second


def test_runs_on_the_main_process_only(tmp_path):
    callback = _callback(eval_every=1)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state = TrainerState(global_step=1, is_world_process_zero=False)
    callback.on_step_end(args, state, TrainerControl(), model=RegressionModel())
    assert callback.history == [] and state.log_history == []


def test_without_a_trainer_metrics_still_land_in_log_history(tmp_path):
    callback = _callback(eval_every=1)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    state = TrainerState(global_step=1, epoch=0.5)
    callback.on_step_end(args, state, TrainerControl(), model=RegressionModel())
    assert state.log_history[-1]["step"] == 1 and "env_eval/return_mean" in state.log_history[-1]


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"eval_every": -1}, "eval_every"), ({"mode": "both"}, "mode")]
)
def test_bad_callback_arguments_are_value_errors(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        EnvironmentEvaluationCallback(env_id="hopper", **kwargs)


def test_default_schedule_follows_the_training_arguments(tmp_path):
    callback = _callback()
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, eval_strategy="steps", eval_steps=3
    )
    for step in (1, 2, 3, 4):
        callback.on_step_end(args, TrainerState(global_step=step), TrainerControl(), model=RegressionModel())
    assert [record["step"] for record in callback.history] == [3]


def test_eval_every_zero_evaluates_only_the_final_model_once_with_its_replay(tmp_path, capsys):
    callback = _callback(eval_every=0, final_video=tmp_path / "replay.mp4", print_summary=False)
    trainer = _trainer(tmp_path, callback, max_steps=4)
    callback.attach(trainer)
    trainer.train()
    assert [record["step"] for record in callback.history] == [4]
    assert callback.final(trainer.state)["report"]["video"] == str(tmp_path / "replay.mp4")
    assert (tmp_path / "replay.mp4").stat().st_size > 0
    assert "LAST" not in capsys.readouterr().out, "print_summary=False leaves the table to the caller"


def test_a_scheduled_evaluation_on_the_last_step_is_the_final_one_not_a_second(tmp_path):
    callback = _callback(eval_every=2, final_video=tmp_path / "replay.mp4")
    trainer = _trainer(tmp_path, callback, max_steps=4)
    callback.attach(trainer)
    trainer.train()
    assert [record["step"] for record in callback.history] == [2, 4]
    assert callback.history[0]["report"]["video"] is None
    assert callback.history[1]["report"]["video"] == str(tmp_path / "replay.mp4")
