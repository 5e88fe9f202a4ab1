"""Atari data: frames of a real ALE game, stored once and stacked on access; the JAT PNG-stack layout, the
DQN-replay checkpoint layout, and `dmamba collect` on an ALE game."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, IterableDataset, Sequence, Value

from conftest import load_script
from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.data import TrajectoryWindowDataset, iter_episodes, load_trajectories, sources
from hf_decision_mamba.data.atari import split_stacks

ROOT = Path(__file__).resolve().parents[1]


def record_breakout(episodes=2, max_steps=150, seed=0):
    """Real Breakout frames (84x84 gray, frame skip 4) with random actions, without OpenCV.

    Each episode: `frames` has 3 copies of the reset frame (the stack padding) then one frame per step.
    """
    import ale_py
    import gymnasium as gym
    from PIL import Image as PILImage

    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5", obs_type="grayscale", frameskip=4, repeat_action_probability=0.25)
    env.action_space.seed(seed)
    shrink = lambda frame: np.asarray(PILImage.fromarray(frame).resize((84, 84), PILImage.BILINEAR))  # noqa: E731
    recorded = []
    for index in range(episodes):
        frame, _ = env.reset(seed=seed + index)
        frames, actions, rewards = [shrink(frame)] * 4, [], []
        for _ in range(max_steps):
            actions.append(int(env.action_space.sample()))
            frame, reward, terminated, truncated, _ = env.step(actions[-1])
            rewards.append(reward)
            if terminated or truncated:
                break
            frames.append(shrink(frame))
        length = len(actions)
        recorded.append(
            {
                "frames": np.stack(frames[: length + 3]),
                "actions": np.array(actions),
                "rewards": np.array(rewards, np.float32),
            }
        )
    env.close()
    return recorded


@pytest.fixture(scope="module")
def breakout():
    return record_breakout()


def canonical(recording):
    length = len(recording["actions"])
    return {
        "observations": recording["frames"][3:],
        "initial_frames": recording["frames"][:3],
        "actions": recording["actions"].astype(np.int64),
        "rewards": recording["rewards"],
        "terminations": np.arange(length) == length - 1,
        "truncations": np.zeros(length, dtype=bool),
    }


def stacks(recording):
    """The 4-frame stack (oldest first) of every step."""
    frames = recording["frames"]
    return np.stack([frames[t : t + 4] for t in range(len(frames) - 3)])


def test_windows_build_each_steps_frame_stack_on_access(breakout):
    dataset = TrajectoryWindowDataset([canonical(r) for r in breakout], 30, progress=False)
    expected = stacks(breakout[0])
    for end in (1, 3, 30, len(expected)):
        item = dataset[end - 1]
        assert item["states"].dtype == np.uint8
        np.testing.assert_array_equal(item["states"], expected[max(0, end - 30) : end])
    batch = dataset.collator()([dataset[i] for i in (0, 40, len(dataset) - 1)])
    assert batch["states"].shape == (3, 30, 4, 84, 84) and batch["states"].dtype == torch.uint8
    assert batch["actions"].dtype == torch.int64 and batch["attention_mask"][0].sum() == 1


def test_an_atari_batch_stores_each_frame_once_under_its_stack_view(breakout):
    dataset = TrajectoryWindowDataset([canonical(r) for r in breakout], 30, progress=False)
    expected = stacks(breakout[0])
    batch = dataset.collator()([dataset[4], dataset[99]])
    np.testing.assert_array_equal(batch["states"][0, -5:].numpy(), expected[:5])
    np.testing.assert_array_equal(batch["states"][1].numpy(), expected[70:100])
    assert batch["states"].untyped_storage().nbytes() == 2 * (30 + 3) * 84 * 84
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=dataset.collator())
    from_worker = next(iter(loader))["states"]
    assert (
        from_worker.shape == (2, 30, 4, 84, 84) and from_worker.untyped_storage().nbytes() == 2 * 33 * 84 * 84
    )


def test_each_frame_is_stored_once_so_500k_transitions_fit_in_4_gb(breakout):
    dataset = TrajectoryWindowDataset([canonical(r) for r in breakout], 30, progress=False)
    per_transition = dataset.nbytes / dataset.num_transitions
    assert all(states.shape[1:] == (84, 84) and states.dtype == np.uint8 for states in dataset.states)
    assert (
        84 * 84 <= per_transition < 84 * 84 + 400
    )  # frames + actions, rewards, returns, index (+ 3 initial frames)
    assert 500_000 * 84 * 84 * 1.02 < 4e9


def jat_features():
    return Features(
        {
            "image_observations": Sequence(Image()),
            "rewards": Sequence(Value("float32")),
            "discrete_actions": Sequence(Value("int64")),
        }
    )


def write_jat_parquet(path, recordings, newest_first=False):
    """jat-project/jat-dataset Atari layout: one row per episode, each step a 4-channel PNG (frames as channels)."""
    from PIL import Image as PILImage

    rows = []
    for recording in recordings:
        step_stacks = stacks(recording)[:, ::-1] if newest_first else stacks(recording)
        images = [PILImage.fromarray(np.ascontiguousarray(np.moveaxis(s, 0, -1))) for s in step_stacks]
        rows.append(
            {
                "image_observations": images,
                "rewards": recording["rewards"].tolist(),
                "discrete_actions": recording["actions"].tolist(),
            }
        )
    Dataset.from_list(rows, features=jat_features()).to_parquet(str(path))


@pytest.mark.parametrize("newest_first", [False, True])
def test_jat_png_stacks_stream_as_frames_stored_once(tmp_path, breakout, newest_first):
    write_jat_parquet(tmp_path / "train-00000-of-00001.parquet", breakout, newest_first)
    dataset = load_trajectories(tmp_path / "train-00000-of-00001.parquet", streaming=True)
    assert isinstance(dataset, IterableDataset)
    for got, recording in zip(iter_episodes(dataset), breakout, strict=True):
        want = canonical(recording)
        np.testing.assert_array_equal(got["observations"], want["observations"])
        np.testing.assert_array_equal(got["initial_frames"], want["initial_frames"])
        np.testing.assert_array_equal(got["actions"], want["actions"])
        assert got["terminations"][-1] and not got["truncations"].any()


def test_jat_hub_configs_are_streamed_by_default(tmp_path, breakout, monkeypatch):
    write_jat_parquet(tmp_path / "breakout.parquet", breakout[:1])
    calls = []

    def load_dataset(path, name=None, split=None, streaming=False, revision=None):
        calls.append((path, name, split, streaming))
        return Dataset.from_parquet(str(tmp_path / "breakout.parquet")).to_iterable_dataset()

    monkeypatch.setattr(sources, "load_dataset", load_dataset)
    (episode,) = iter_episodes(load_trajectories("jat:breakout"))
    assert calls == [("jat-project/jat-dataset", "atari-breakout", "train", True)]
    assert episode["observations"].shape == (len(breakout[0]["actions"]), 84, 84)


def test_stacks_that_do_not_slide_are_rejected():
    stacks_ = np.random.default_rng(0).integers(0, 256, (5, 4, 84, 84), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"episode 7: 'image_observations' are not sliding 4-frame stacks"):
        split_stacks(stacks_, 7)


# DQN replay ----------------------------------------------------------------------------------------------------


def save_gz(path, array):
    """Dopamine's checkpoint format: np.save inside a gzip stream."""
    with gzip.open(path, "wb") as file:
        np.save(file, array, allow_pickle=False)


def write_dqn_checkpoint(directory, checkpoint, episodes, capacity):
    """Replay as Dopamine's circular buffer stores it: 3 zero transitions before each episode, wrapped at capacity."""
    stream = {"observation": [], "action": [], "reward": [], "terminal": []}
    for frames, actions, rewards, finished in episodes:
        for _ in range(3):
            for name, zero in zip(stream, (np.zeros((84, 84), np.uint8), 0, 0.0, 0), strict=True):
                stream[name].append(zero)
        for t in range(len(actions)):
            stream["observation"].append(frames[t])
            stream["action"].append(actions[t])
            stream["reward"].append(rewards[t])
            stream["terminal"].append(int(finished and t == len(actions) - 1))
    add_count = len(stream["action"])
    physical = (np.arange(add_count - capacity, add_count)) % capacity
    dtypes = {"observation": np.uint8, "action": np.int32, "reward": np.float32, "terminal": np.uint8}
    for name, values in stream.items():
        store = np.zeros((capacity, *np.shape(values[0])), dtypes[name])
        store[physical] = np.asarray(values[add_count - capacity :], dtypes[name])
        save_gz(directory / f"$store$_{name}_ckpt.{checkpoint}.gz", store)
    save_gz(directory / f"add_count_ckpt.{checkpoint}.gz", np.array(add_count))
    save_gz(
        directory / f"invalid_range_ckpt.{checkpoint}.gz",
        np.arange(add_count % capacity - 1, add_count % capacity + 3),
    )


@pytest.fixture
def replay_logs(tmp_path, breakout):
    frames = breakout[0]["frames"][3:] | 1  # real frames, never all zero
    rng = np.random.default_rng(0)
    episodes = [
        (frames[:25], rng.integers(0, 4, 25), rng.normal(size=25), True),
        (frames[:40], rng.integers(0, 4, 40), rng.normal(size=40), True),
        (frames[40:70], rng.integers(0, 4, 30), rng.normal(size=30), True),
        (
            frames[70:90],
            rng.integers(0, 4, 20),
            rng.normal(size=20),
            False,
        ),  # still running at checkpoint time
    ]
    write_dqn_checkpoint(tmp_path, 7, episodes, capacity=100)  # 127 adds: the buffer wrapped mid-episode 0
    return tmp_path, episodes


def test_dqn_replay_converts_to_complete_episodes_in_the_canonical_schema(tmp_path, replay_logs):
    logs, episodes = replay_logs
    convert = load_script("convert_dqn_replay")
    assert (
        convert.main(["--input-dir", str(logs), "--checkpoints", "7", "--output", str(tmp_path / "out")]) == 0
    )
    loaded = list(iter_episodes(load_trajectories(tmp_path / "out")))
    assert [len(e["actions"]) for e in loaded] == [40, 30, 20]  # episode 0 was cut by the wrap: dropped
    for got, (frames, actions, rewards, _) in zip(loaded, episodes[1:], strict=True):
        np.testing.assert_array_equal(got["observations"], frames)
        np.testing.assert_array_equal(got["actions"], actions)
        np.testing.assert_allclose(got["rewards"], rewards.astype(np.float32))
        assert not got["initial_frames"].any()
    assert [bool(e["terminations"][-1]) for e in loaded] == [True, True, False]
    assert [bool(e["truncations"][-1]) for e in loaded] == [False, False, True]
    assert "convert_dqn_replay.py --input-dir" in (tmp_path / "out" / "README.md").read_text()


def test_dqn_replay_stops_at_max_transitions(tmp_path, replay_logs):
    logs, _ = replay_logs
    convert = load_script("convert_dqn_replay")
    convert.main(
        [
            "--input-dir",
            str(logs),
            "--checkpoints",
            "7",
            "--max-transitions",
            "60",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    loaded = list(iter_episodes(load_trajectories(tmp_path / "o")))
    assert [len(e["actions"]) for e in loaded] == [40, 20] and loaded[1]["truncations"][-1]


# Collecting from ALE -------------------------------------------------------------------------------------------


def test_collect_records_an_ale_game_with_frames_stored_once(tmp_path):
    from hf_decision_mamba.cli import collect

    argv = [
        "--env",
        "ALE/Breakout-v5",
        "--behaviour",
        "random",
        "--steps",
        "150",
        "--seed",
        "3",
        "--output",
        str(tmp_path),
        "--no-progress",
    ]
    assert collect.main(argv) == 0
    episodes = list(iter_episodes(load_trajectories(tmp_path)))
    assert sum(len(e["actions"]) for e in episodes) == 150
    assert all(
        e["observations"].dtype == np.uint8 and e["observations"].shape[1:] == (84, 84) for e in episodes
    )
    assert episodes[-1]["truncations"][-1] or episodes[-1]["terminations"][-1]
    dataset = TrajectoryWindowDataset(episodes, 30, progress=False, short_episodes="keep")
    assert dataset[0]["states"].shape == (1, 4, 84, 84)
    assert "ALE/Breakout-v5" in (tmp_path / "README.md").read_text()


def test_an_atari_batch_runs_through_decision_mamba_model(breakout):
    config = DecisionMambaConfig.from_preset(
        "dmamba-atari", hidden_size=16, num_hidden_layers=1, context_length=4, max_ep_len=256
    )
    dataset = TrajectoryWindowDataset.from_config([canonical(r) for r in breakout], config, progress=False)
    batch = dataset.collator()([dataset[i] for i in (0, 10)])
    output = DecisionMambaModel(config).eval()(**batch)
    assert output.action_preds.shape == (2, 4, config.n_actions) and torch.isfinite(output.loss)
