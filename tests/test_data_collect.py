"""`dmamba collect`: rolls out a behaviour in a Gymnasium env, writes a canonical dataset with its card, pushes it;
and the embedded Hopper dataset is what the command in its card makes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SHIFTED_ACTIONS_ENV
from hf_decision_mamba.cli import collect
from hf_decision_mamba.data import collection as collection_module
from hf_decision_mamba.data import iter_episodes, load_trajectories

EMBEDDED = Path(collection_module.__file__).parent / "embedded"


def run(tmp_path, *extra):
    argv = ["--env", "Hopper-v5", "--seed", "0", "--output", str(tmp_path), "--no-progress", *extra]
    assert collect.main(argv) == 0
    return list(iter_episodes(load_trajectories(tmp_path)))


def test_random_behaviour_for_a_number_of_episodes(tmp_path):
    episodes = run(tmp_path, "--behaviour", "random", "--episodes", "3")
    assert len(episodes) == 3
    for episode in episodes:
        assert episode["observations"].shape[1:] == (11,) and episode["actions"].shape[1:] == (3,)
        assert episode["terminations"][-1] or episode["truncations"][-1]
        assert not (episode["terminations"][:-1] | episode["truncations"][:-1]).any()


def test_a_step_budget_cuts_the_last_episode_and_marks_it_truncated(tmp_path):
    episodes = run(tmp_path, "--behaviour", "random", "--steps", "100")
    assert sum(len(e["actions"]) for e in episodes) == 100
    assert episodes[-1]["truncations"][-1] or episodes[-1]["terminations"][-1]


def test_seeds_make_collection_reproducible(tmp_path):
    first = run(tmp_path / "a", "--behaviour", "scripted", "--noise", "0.3", "--episodes", "2")
    second = run(tmp_path / "b", "--behaviour", "scripted", "--noise", "0.3", "--episodes", "2")
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["actions"], b["actions"])


def test_scripted_noise_levels_give_varied_returns(tmp_path):
    episodes = run(
        tmp_path,
        "--behaviour",
        "scripted",
        "--noise",
        "0.0",
        "0.8",
        "--random-prob",
        "0",
        "1",
        "--episodes",
        "4",
    )
    returns = [float(e["rewards"].sum()) for e in episodes]  # levels cycle: (0,0) (0,1) (0.8,0) (0.8,1)
    assert returns[0] > 1000 and returns[1] < 100 and returns[0] > returns[2] > returns[3]


def test_dataset_card_records_the_command_and_returns(tmp_path):
    run(tmp_path, "--behaviour", "random", "--episodes", "2", "--title", "tiny hopper")
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\n") and "path: data/train-*.parquet" in card and "# tiny hopper" in card
    assert f"dmamba collect --env Hopper-v5 --seed 0 --output {tmp_path}" in card
    assert re.search(r"Episodes: 2, steps: \d+", card) and "Episode return: mean" in card


def test_push_to_hub_uploads_the_folder(tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls.append(("create", repo_id, repo_type, private))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
            calls.append(
                ("upload", sorted(p.name for p in Path(folder_path).rglob("*") if p.is_file()), repo_id)
            )

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    run(tmp_path, "--behaviour", "random", "--episodes", "1", "--push-to-hub", "me/hopper", "--private")
    assert calls == [
        ("create", "me/hopper", "dataset", True),
        ("upload", ["README.md", "train-00000-of-00001.parquet"], "me/hopper"),
    ]


def test_model_behaviour_acts_through_the_saved_policy_api(tmp_path, monkeypatch):
    seen = []

    class FakePolicy:
        def reset(self, num_envs):
            seen.append(("reset", num_envs))

        def act(self, observations, rewards):
            seen.append(("act", observations.shape, None if rewards is None else rewards.shape))
            return np.zeros((len(observations), 3), np.float32)

    class FakeModel:
        def policy(self, mode):
            assert mode == "window"
            return FakePolicy()

    import transformers

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda path: FakeModel())
    episodes = run(tmp_path, "--behaviour", "model", "--model", "some/model", "--steps", "5")
    assert seen[:3] == [("reset", 1), ("act", (1, 11), None), ("act", (1, 11), (1,))]
    assert not episodes[0]["actions"].any()


def test_bad_requests_fail_with_clear_messages(tmp_path):
    with pytest.raises(ValueError, match=r"no scripted controller for 'Pendulum-v1'; expected one of"):
        collect.main(
            ["--env", "Pendulum-v1", "--behaviour", "scripted", "--episodes", "1", "--output", str(tmp_path)]
        )
    with pytest.raises(ValueError, match=r"behaviour 'model' needs a model path"):
        collect.main(
            ["--env", "Hopper-v5", "--behaviour", "model", "--episodes", "1", "--output", str(tmp_path)]
        )
    with pytest.raises(SystemExit):
        collect.main(["--env", "Hopper-v5", "--episodes", "0", "--output", str(tmp_path)])


def test_embedded_hopper_card_sits_next_to_the_data():
    card = (EMBEDDED / "hopper.md").read_text()
    episodes = load_trajectories("embedded:hopper")
    returns = np.array([sum(r) for r in episodes["rewards"]])
    assert f"Episodes: {len(episodes)}, steps: {sum(len(r) for r in episodes['rewards'])}" in card
    assert f"mean {returns.mean():.1f}" in card and "dmamba collect --env Hopper-v5" in card


@pytest.mark.slow
def test_the_command_in_the_embedded_card_reproduces_the_embedded_data(tmp_path):
    command = re.search(r"```bash\n(dmamba collect .*)\n```", (EMBEDDED / "hopper.md").read_text()).group(1)
    argv = shlex.split(command)[2:]
    argv[argv.index("--output") + 1] = str(tmp_path)
    assert collect.main(argv) == 0
    made = pq.read_table(tmp_path / "data" / "train-00000-of-00001.parquet")
    assert made.equals(pq.read_table(EMBEDDED / "hopper.parquet"))


class IndexModel:
    """A saved model's stand-in whose window policy always predicts action index 0."""

    def policy(self, mode):
        return self

    def reset(self, num_envs):
        pass

    def act(self, observations, rewards):
        return np.zeros(len(observations), np.int64)


def test_discrete_actions_are_recorded_as_indices_from_zero(monkeypatch):
    """`Discrete(3, start=-1)` takes -1..1; datasets hold 0..2, as models and the Minari loader count."""
    import transformers

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda path: IndexModel())
    for policy, expected in (
        (collection_module.RandomPolicy(gym.make(SHIFTED_ACTIONS_ENV).action_space, seed=0), {0, 1, 2}),
        (collection_module.ModelPolicy("some/model", gym.make(SHIFTED_ACTIONS_ENV).action_space), {0}),
    ):
        env = gym.make(SHIFTED_ACTIONS_ENV)
        episodes = list(collection_module.rollout(env, policy, episodes=4, progress=False))
        recorded = np.concatenate([episode["actions"] for episode in episodes])
        assert recorded.dtype == np.int64 and set(recorded) == expected
        np.testing.assert_array_equal(recorded - 1, env.unwrapped.received)
