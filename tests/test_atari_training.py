"""Issue 5, items 3 and 5 (data side): every Atari preset trains with the plain `Trainer` on DQN-replay data
converted by `scripts/convert_dqn_replay.py` and on `jat-project/jat-dataset` episodes, with the Atari optimiser
recipe; datasets that disagree with the game are refused with the field named."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import Array3D, Dataset, Features
from transformers import Trainer

from conftest import load_script
from hf_decision_mamba import PRESETS, DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.cli import train as train_cli
from hf_decision_mamba.data import canonical_features, sources
from hf_decision_mamba.data.synthetic import synthetic_episodes
from hf_decision_mamba.training import (
    DecisionTrainer,
    ModelArguments,
    build_config,
    build_optimizer,
    parse_train_args,
    run_training,
)
from hf_decision_mamba.training.recipe import choose_env_id
from test_data_atari import record_breakout, write_dqn_checkpoint, write_jat_parquet

ATARI_PRESETS = sorted(
    name for name, preset in PRESETS.items() if preset["config"]["state_encoder"] == "atari_cnn"
)
TINY = "hidden_size=16,num_hidden_layers=1,state_size=4,context_length=4,dropout=0.0"
QUIET = [
    "--use_cpu",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--no_env_eval",
    "--save_strategy",
    "no",
]


@pytest.fixture(scope="module")
def breakout_frames():
    return record_breakout(episodes=2, max_steps=60)


@pytest.fixture(scope="module")
def dqn_dataset(tmp_path_factory, breakout_frames) -> Path:
    """Real Breakout frames in Dopamine's replay-checkpoint layout, converted by the repository's script."""
    root = tmp_path_factory.mktemp("dqn")
    frames, rng = breakout_frames[0]["frames"][3:] | 1, np.random.default_rng(0)
    episodes = [
        (frames[a:b], rng.integers(0, 4, b - a), rng.normal(size=b - a), True) for a, b in ((0, 25), (25, 55))
    ]
    write_dqn_checkpoint(root, 0, episodes, capacity=sum(3 + len(e[1]) for e in episodes))
    convert = load_script("convert_dqn_replay")
    assert (
        convert.main(["--input-dir", str(root), "--checkpoints", "0", "--output", str(root / "converted")])
        == 0
    )
    return root / "converted"


def train(dataset: str, output_dir: Path, *extra: str):
    """Two optimisation steps of a tiny model, logging the loss at each."""
    argv = ["--dataset", dataset, "--config_overrides", TINY, "--per_device_train_batch_size", "4",
            "--max_steps", "2", "--logging_steps", "1", "--output_dir", str(output_dir), *QUIET, *extra]  # fmt: skip
    return run_training(parse_train_args(argv))


def logged_losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


# -- 3. Training -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ATARI_PRESETS)
def test_every_atari_preset_trains_on_converted_dqn_replay(preset, dqn_dataset, tmp_path):
    result = train(str(dqn_dataset), tmp_path, "--preset", preset)
    assert result.global_step == 2 and result.dataset["episodes"] == 2
    losses = logged_losses(tmp_path)
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    config = DecisionMambaConfig.from_pretrained(tmp_path)
    assert (config.preset, config.action_space, config.n_actions, config.env_id) == (preset, "discrete", 4, "ALE/Breakout-v5")  # fmt: skip


def test_trains_on_jat_dataset_configs_streamed(breakout_frames, tmp_path, monkeypatch):
    write_jat_parquet(tmp_path / "breakout.parquet", breakout_frames)
    calls = []

    def load_dataset(path, name=None, split=None, streaming=False, revision=None):
        calls.append((path, name, streaming))
        return Dataset.from_parquet(str(tmp_path / "breakout.parquet")).to_iterable_dataset()

    monkeypatch.setattr(sources, "load_dataset", load_dataset)
    result = train("jat:breakout", tmp_path / "run", "--preset", "mamba-rl-atari-3l")
    assert calls == [("jat-project/jat-dataset", "atari-breakout", True)]
    assert result.global_step == 2 and len(logged_losses(tmp_path / "run")) == 2
    assert DecisionMambaConfig.from_pretrained(tmp_path / "run").env_id == "ALE/Breakout-v5"


def test_the_trainer_is_the_plain_one():
    for method in ("compute_loss", "training_step", "get_train_dataloader", "create_scheduler"):
        assert getattr(DecisionTrainer, method) is getattr(Trainer, method)


def test_atari_presets_have_the_papers_sizes():
    sizes = {name: DecisionMambaConfig.from_preset(name) for name in ATARI_PRESETS}
    shape = lambda c: (c.num_hidden_layers, c.hidden_size, c.context_length, c.dropout)  # noqa: E731
    assert shape(sizes["dmamba-atari"]) == (6, 128, 30, 0.1)  # DT-style
    assert shape(sizes["mamba-rl-atari-3l"]) == (3, 128, 16, 0.1)  # seed 000's smaller configs
    assert shape(sizes["mamba-rl-atari-4l"]) == (4, 128, 16, 0.2)
    assert (sizes["dema-atari"].block_type, sizes["dema-atari"].state_size) == ("dema", 128)  # DeMa's
    assert all(
        c.state_encoder == "atari_cnn" and c.is_discrete and c.rtg_scale == 1.0 for c in sizes.values()
    )


@pytest.mark.parametrize("preset", ATARI_PRESETS)
def test_the_atari_optimiser_recipe(preset, tmp_path):
    training = parse_train_args(["--preset", preset, "--output_dir", str(tmp_path), "--use_cpu"]).training
    assert (training.adam_beta1, training.adam_beta2, training.weight_decay) == (0.9, 0.95, 0.1)
    assert (training.learning_rate, training.max_grad_norm) == (6e-4, 1.0)
    model = DecisionMambaModel(DecisionMambaConfig.from_preset(preset, hidden_size=16, num_hidden_layers=1))
    optimizer = build_optimizer(model, training)
    decay, no_decay = optimizer.param_groups
    assert decay["betas"] == (0.9, 0.95) and (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    weights = {id(m.weight) for m in model.modules() if type(m).__name__ in ("Linear", "Conv1d", "Conv2d")}
    assert {
        id(p) for p in decay["params"]
    } == weights  # CNN and linear weights; never A_log, D, norms, biases
    trainer = DecisionTrainer(model=model, args=training, optimizers=(optimizer, None))
    scheduler = trainer.create_scheduler(num_training_steps=200, optimizer=optimizer)
    rates = []
    for _ in range(200):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step(), scheduler.step()
    peak = int(np.argmax(rates))
    assert 0 < peak <= 10 and rates[0] < rates[peak] == pytest.approx(6e-4)  # short linear warm-up
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :], strict=False))  # then decays
    middle = peak + (200 - peak) // 2
    assert rates[middle] == pytest.approx(3e-4, rel=0.05) and rates[-1] < 1e-5  # cosine-shaped


def test_a_preset_trained_on_another_game_plays_that_game(tmp_path):
    args = parse_train_args(
        ["--preset", "dmamba-atari", "--dataset", "jat:pong", "--output_dir", str(tmp_path)]
    )
    assert choose_env_id(args) == "ALE/Pong-v5"  # the data decides, not the preset's default Breakout
    config = build_config(ModelArguments(preset="dmamba-atari"), "ALE/Pong-v5")
    assert (config.n_actions, config.target_return) == (6, 20.0)  # Pong's action set and DT's Pong target
    full = build_config(ModelArguments(preset="dmamba-atari"), "ALE/Pong-v5", {"full_action_space": True})
    assert full.n_actions == 18


# -- 5. Bad datasets ---------------------------------------------------------------------------------------------


def frames_dataset(path: Path, size: int, n_actions: int) -> str:
    """Canonical Atari episodes whose frames are `size` x `size` and whose actions go up to `n_actions - 1`."""
    episodes = synthetic_episodes([12, 12], atari=True, n_actions=n_actions)
    features = canonical_features(atari=True, discrete=True)
    if size != 84:
        episodes = [{**e, "observations": e["observations"][:, :size, :size], "initial_frames": e["initial_frames"][:, :size, :size]} for e in episodes]  # fmt: skip
        features = Features({**features, "observations": Array3D((None, size, size), "uint8"),
                             "initial_frames": Array3D((3, size, size), "uint8")})  # fmt: skip
    Dataset.from_list(episodes, features=features).save_to_disk(path)
    return str(path)


def train_cli_error(capsys, dataset: str, output_dir: Path, *extra: str) -> str:
    argv = ["--preset", "dmamba-atari", "--dataset", dataset, "--env_id", "breakout", "--config_overrides", TINY,
            "--max_steps", "1", "--output_dir", str(output_dir), *QUIET, *extra]  # fmt: skip
    assert train_cli.main(argv) == 2
    return capsys.readouterr().err


def test_frames_that_are_not_84x84_are_refused(tmp_path, capsys):
    error = train_cli_error(capsys, frames_dataset(tmp_path / "data", 64, 4), tmp_path / "run")
    assert "episode 0: 'observations' has shape (64, 64) per step; expected (84, 84)" in error
    assert "84x84 grayscale frames" in error


def test_jat_stacks_that_are_not_84x84_are_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    recording = {"frames": rng.integers(0, 256, (13, 64, 64), dtype=np.uint8), "actions": np.zeros(10, np.int64),
                 "rewards": np.zeros(10, np.float32)}  # fmt: skip
    write_jat_parquet(tmp_path / "jat.parquet", [recording])
    error = train_cli_error(capsys, str(tmp_path / "jat.parquet"), tmp_path / "run")
    assert "'image_observations' has shape (10, 4, 64, 64); expected (steps, 4, 84, 84) stacks" in error


def test_actions_outside_the_games_action_set_are_refused(tmp_path, capsys):
    data = frames_dataset(tmp_path / "data", 84, 18)
    error = train_cli_error(capsys, data, tmp_path / "run")
    assert re.search(
        r"'actions' has indices in \[0, 1\d\]; expected \[0, 4\), the 4 actions of ALE/Breakout-v5", error
    )
    assert "full action set" in error
    result = train(
        data, tmp_path / "full", "--preset", "dmamba-atari", "--env_id", "breakout", "--full_action_space"
    )
    assert result.global_step == 2 and DecisionMambaConfig.from_pretrained(tmp_path / "full").n_actions == 18
