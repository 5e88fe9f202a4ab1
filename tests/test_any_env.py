"""Any Gymnasium task and any Minari dataset: real datasets made with `minari`'s DataCollector (hdf5 and arrow),
trained with `dmamba train --dataset <id or folder>` and no `--env_id`: environment, kwargs and sizes come from
the data, the run evaluates, records a replay and writes a card naming the environment."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from hf_decision_mamba.cli import main
from hf_decision_mamba.data import dataset_environment, load_trajectories
from hf_decision_mamba.envs import flatten_observation, make_vector_env, observation_layout, resolve_env_id
from hf_decision_mamba.evaluation import is_browser_playable

minari = pytest.importorskip("minari", reason="the minari package is not installed")
try:
    from minari import DataCollector
except ImportError as error:  # pragma: no cover - depends on the test extra
    pytest.skip(
        f"minari's DataCollector needs `pip install 'minari[create]'` ({error})", allow_module_level=True
    )

APP = Path(__file__).resolve().parent.parent / "spaces_demo" / "app.py"
TINY = "hidden_size=16,num_hidden_layers=1,state_size=4,context_length=4,dropout=0.0"


def robotics_installed() -> bool:
    try:
        import gymnasium_robotics  # noqa: F401
    except ImportError:
        return False
    return True


def collect(
    env_id: str,
    data_format: str,
    episodes: int = 2,
    steps: int = 12,
    eval_env: bool = True,
    name: str | None = None,
    **card: Any,
) -> str:
    """A Minari dataset of `episodes` random episodes (at most `steps` each) in MINARI_DATASETS_PATH; its id."""
    resolve_env_id(env_id)  # registers gymnasium-robotics' ids when needed
    dataset_id = f"test/{name or env_id.split('-')[0].lower()}/{data_format}-v0"  # ids are write-once
    env = DataCollector(gym.make(env_id, max_episode_steps=steps), data_format=data_format)
    env.action_space.seed(0)
    for episode in range(episodes):
        env.reset(seed=episode)
        while not any(env.step(env.action_space.sample())[2:4]):
            pass
    env.create_dataset(
        dataset_id=dataset_id, algorithm_name="random", eval_env=env_id if eval_env else None, **card
    )
    env.close()
    return dataset_id


def dataset_folder(dataset_id: str) -> Path:
    return Path(os.environ["MINARI_DATASETS_PATH"]) / dataset_id


def train(dataset: str, output: Path) -> None:
    argv = ["train", "--dataset", dataset, "--max_steps", "5", "--output_dir", str(output),
            "--config_overrides", TINY, "--per_device_train_batch_size", "4", "--report_to", "none",
            "--env_eval_episodes", "1", "--env_eval_max_episode_steps", "8", "--save_steps", "5"]  # fmt: skip
    assert main(argv) == 0


@pytest.fixture(scope="module")
def space():
    """The Space's `app.py` as a module (a script, not part of the package); skipped without gradio."""
    pytest.importorskip("gradio", reason="the Space needs gradio (the space extra)")
    spec = importlib.util.spec_from_file_location("space_app_any_env", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


CASES = [
    ("Ant-v5", "hdf5", {"state_dim": 105, "act_dim": 8}),
    ("InvertedPendulum-v5", "arrow", {"state_dim": 4, "act_dim": 1, "action_tanh": False}),
    ("Reacher-v5", "hdf5", {"state_dim": 10, "act_dim": 2}),
    ("CartPole-v1", "arrow", {"state_dim": 4, "n_actions": 2, "action_space": "discrete"}),
]


@pytest.mark.parametrize(("env_id", "data_format", "sizes"), CASES)
def test_training_on_a_minari_dataset_infers_environment_and_sizes(
    tmp_path, monkeypatch, space, env_id, data_format, sizes
):
    dataset_id = collect(env_id, data_format)
    by_folder = data_format == "arrow"  # one format through the folder, the other through the Minari id
    train(str(dataset_folder(dataset_id)) if by_folder else dataset_id, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env_id"] == env_id
    assert {key: config[key] for key in sizes} == sizes
    assert config["env_kwargs"]["max_episode_steps"] == gym.spec(env_id).max_episode_steps  # eval_env_spec's
    report = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert report["env_id"] == env_id and report["score_reference"] is None  # no invented reference
    assert report["results"][0]["normalized_score_mean"] is None
    assert is_browser_playable(tmp_path / "run" / "replay.mp4")
    card = (tmp_path / "run" / "README.md").read_text()
    assert f"name: {env_id}" in card.split("model-index:")[1]
    monkeypatch.setenv(
        space.LOCAL_ROOT_VARIABLE, str(tmp_path)
    )  # the Space plays local folders under it only
    assert (
        space.env_choices(str(tmp_path / "run"))[0] == env_id
    )  # the Space offers the checkpoint's env first


@pytest.mark.skipif(
    not robotics_installed(), reason="gymnasium-robotics is not installed (the robotics extra)"
)
def test_goal_conditioned_maze_is_flattened_identically_for_data_and_environment(tmp_path):
    dataset_id = collect("PointMaze_UMaze-v3", "hdf5", eval_env=False)
    episode = next(iter(minari.load_dataset(dataset_id).iterate_episodes()))
    layout = observation_layout(minari.load_dataset(dataset_id).observation_space)
    assert [path for path, _ in layout] == ["achieved_goal", "desired_goal", "observation"]  # sorted keys
    loaded = np.asarray(load_trajectories(dataset_id)[0]["observations"], dtype=np.float32)
    expected = np.concatenate([episode.observations[key] for key in sorted(episode.observations)], axis=1)
    np.testing.assert_array_equal(loaded, expected[:-1].astype(np.float32))
    env = make_vector_env("PointMaze_UMaze-v3", 1, seed=0, env_kwargs={"continuing_task": True})
    observation, _ = env.reset(seed=0)
    assert observation.shape == (1, 8)

    train(dataset_id, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env_id"] == "PointMaze_UMaze-v3" and config["observation_layout"] == layout
    assert config["env_kwargs"]["maze_map"][0] == [1, 1, 1, 1, 1]  # env_spec's kwargs (no eval_env_spec)
    assert is_browser_playable(tmp_path / "run" / "replay.mp4")
    assert "name: PointMaze_UMaze-v3" in (tmp_path / "run" / "README.md").read_text()


def test_minari_reference_scores_normalise_the_evaluation(tmp_path):
    dataset_id = collect("CartPole-v1", "hdf5", name="cartpole-refs", ref_min_score=10.0, ref_max_score=500.0)
    dataset_id = str(dataset_folder(dataset_id))
    train(dataset_id, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["ref_min_score"], config["ref_max_score"]) == (10.0, 500.0)
    report = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    result = report["results"][0]
    assert report["score_reference"].startswith("Minari")
    assert result["normalized_score_mean"] == pytest.approx(100 * (result["return_mean"] - 10.0) / 490.0)


def test_flattening_order_is_sorted_dict_keys_then_tuple_entries():
    space = gym.spaces.Dict(
        {
            "b": gym.spaces.Box(0, 1, (2,)),
            "a": gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Box(0, 1, (1, 2)))),
        }
    )
    layout = observation_layout(space)
    assert layout == [["a/0", []], ["a/1", [1, 2]], ["b", [2]]]
    value = {"b": np.array([5.0, 6.0]), "a": (2, np.array([[3.0, 4.0]]))}
    np.testing.assert_array_equal(flatten_observation(value, layout), [2.0, 3.0, 4.0, 5.0, 6.0])


def test_data_and_environment_mismatch_is_one_line_naming_both_sides(tmp_path, capsys):
    dataset_id = collect("InvertedPendulum-v5", "hdf5", episodes=1, steps=5, name="pendulum-mismatch")
    common = ["train", "--dataset", dataset_id, "--max_steps", "1", "--output_dir", str(tmp_path / "run"),
              "--report_to", "none"]  # fmt: skip
    assert main([*common, "--env_id", "Hopper-v5", "--config_overrides", TINY]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "state_dim: dataset" in error and "has 4 but env_id 'Hopper-v5' (--env_id) has 11" in error
    assert main([*common, "--no_env_eval", "--config_overrides", f"{TINY},state_dim=7"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "state_dim: dataset" in error and "has 4 but config_overrides has 7" in error


def test_broken_minari_files_stop_with_one_line_naming_file_episode_and_expected_value():
    import h5py

    dataset_id = collect("CartPole-v1", "hdf5", episodes=2, steps=5, name="cartpole-broken")
    data = dataset_folder(dataset_id) / "data"
    metadata = json.loads((data / "metadata.json").read_text())
    (data / "metadata.json").write_text(json.dumps({**metadata, "total_episodes": 3}))
    with pytest.raises(ValueError, match=r"data: episode 2 is missing .*expected 3 episodes") as error:
        load_trajectories(dataset_id)
    assert "\n" not in str(error.value)
    (data / "metadata.json").write_text(json.dumps(metadata))
    with h5py.File(data / "main_data.hdf5", "a") as file:
        observations = file["episode_1/observations"][()]
        del file["episode_1/observations"]
        file["episode_1/observations"] = observations[:-1]
    with pytest.raises(
        ValueError,
        match=rf"{data}: episode 1: 'observations' has {len(observations) - 1} entries .*expected {len(observations)}",
    ):
        load_trajectories(str(dataset_folder(dataset_id)))


def test_collect_any_env_writes_the_hub_schema_and_the_same_episodes_as_a_minari_dataset(tmp_path, capsys):
    argv = ["collect", "--env", "CartPole-v1", "--episodes", "3", "--seed", "4", "--output", str(tmp_path / "hub"),
            "--minari-id", "local/cartpole/random-v0", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert '"minari_dataset"' in capsys.readouterr().out
    hub, recorded = load_trajectories(str(tmp_path / "hub")), load_trajectories("local/cartpole/random-v0")
    assert len(hub) == len(recorded) == 3
    assert dataset_environment(str(tmp_path / "hub")) == ("CartPole-v1", {})  # from the folder's dataset card
    for ours, theirs in zip(hub, recorded, strict=True):
        np.testing.assert_array_equal(ours["observations"], theirs["observations"])
        np.testing.assert_array_equal(ours["actions"], theirs["actions"])
        np.testing.assert_array_equal(ours["rewards"], theirs["rewards"])


def test_collect_with_a_trained_policy_and_action_noise(tmp_path):
    from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel

    config = DecisionMambaConfig(state_dim=4, act_dim=1, hidden_size=16, num_hidden_layers=1, state_size=4,
                                 context_length=4, env_id="InvertedPendulum-v5", target_return=10.0)  # fmt: skip
    DecisionMambaModel(config).save_pretrained(tmp_path / "policy")
    runs = {}
    for noise in ("0", "0.5"):
        output = tmp_path / f"noise-{noise}"
        argv = ["collect", "--env", "InvertedPendulum-v5", "--policy", str(tmp_path / "policy"), "--action-noise",
                noise, "--episodes", "1", "--max-episode-steps", "5", "--output", str(output), "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        runs[noise] = np.asarray(load_trajectories(str(output))[0]["actions"])
    assert runs["0"].shape == runs["0.5"].shape and not np.allclose(runs["0"], runs["0.5"])
    assert np.all(np.abs(runs["0"]) <= 1.0)  # the tiny model's tanh actions, unchanged without noise
