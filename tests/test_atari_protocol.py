"""Issue 5, items 1, 2 and 5 (evaluation side): the ALE protocol, seed 000's evaluation protocol, and checkpoints
evaluated in an environment whose action set or observations disagree with theirs."""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import torch

from hf_decision_mamba import DecisionMambaConfig, DecisionMambaModel
from hf_decision_mamba.cli import evaluate as evaluate_cli
from hf_decision_mamba.data import collection
from hf_decision_mamba.envs import AtariProtocol, MujocoProtocol, make_env, make_vector_env
from hf_decision_mamba.envs.atari import atari_action_meanings
from hf_decision_mamba.evaluation import SCORE_RANGES, EnvironmentEvaluationCallback, evaluate_policy
from hf_decision_mamba.evaluation.compatibility import check_model_fits_env
from hf_decision_mamba.training import EnvEvaluationArguments


def atari_model(n_actions: int = 4, env_id: str = "ALE/Breakout-v5", seed: int = 0) -> DecisionMambaModel:
    """A tiny randomly initialised Atari Decision Mamba (one layer, hidden 16, context 4)."""
    config = DecisionMambaConfig.from_preset(
        "dmamba-atari", hidden_size=16, num_hidden_layers=1, state_size=4, context_length=4,
        max_ep_len=512, n_actions=n_actions, env_id=env_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return DecisionMambaModel(config).eval()


class RecordingPolicy:
    """Wraps a model's policy and records every batch of actions it takes."""

    def __init__(self, model: DecisionMambaModel, deterministic: bool):
        self.model = model
        self.inner = model.policy(mode="recurrent", deterministic=deterministic)
        self.actions: list[np.ndarray] = []

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.inner.reset(num_envs, target_return)

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        self.actions.append(self.inner.act(observation, reward))
        return self.actions[-1]


# -- 1. Environments: Gymnasium + ale-py, Machado et al. protocol ------------------------------------------------


def test_envs_are_ale_py_through_gymnasium_and_never_atari_py():
    from ale_py.env import AtariEnv
    from ale_py.vector_env import AtariVectorEnv

    assert isinstance(make_env("breakout").unwrapped, AtariEnv)
    assert isinstance(make_vector_env("breakout", 2), AtariVectorEnv)
    assert "atari_py" not in sys.modules


def test_frame_skip_4_grayscale_84x84_and_sliding_4_frame_stacks():
    vec = make_vector_env("breakout", 2, seed=0)
    obs, info = vec.reset(seed=np.array([0, 1]))
    for _ in range(3):
        new_obs, _, _, _, new_info = vec.step(np.ones(2, dtype=np.int64))
        assert (new_info["episode_frame_number"] - info["episode_frame_number"] == 4).all()  # frame skip 4
        assert new_obs.shape == (2, 4, 84, 84) and new_obs.dtype == np.uint8  # one gray channel per frame
        np.testing.assert_array_equal(new_obs[:, :3], obs[:, 1:])  # a 4-frame stack sliding by one frame
        obs, info = new_obs, new_info


def test_noop_starts_are_up_to_30_frames():
    starts = make_vector_env("breakout", 8).reset(seed=np.arange(8))[1]["episode_frame_number"]
    assert starts.max() <= 30 and len(set(starts.tolist())) > 1
    assert AtariProtocol().noop_max == 30


def test_protocol_defaults_are_machado_and_sticky_actions_are_configurable():
    protocol = AtariProtocol()
    assert (protocol.frame_skip, protocol.screen_size, protocol.frame_stack) == (4, 84, 4)
    assert (protocol.repeat_action_probability, protocol.full_action_space) == (0.25, False)
    for sticky in (0.0, 0.1):  # 0 reproduces the DT protocol
        ale = make_env("breakout", repeat_action_probability=sticky).unwrapped.ale
        assert ale.getFloat("repeat_action_probability") == pytest.approx(sticky)
        assert make_vector_env("breakout", 1, repeat_action_probability=sticky).protocol.repeat_action_probability == sticky  # fmt: skip


def test_dmamba_collect_records_under_the_same_configurable_protocol():
    env = collection.make_env(
        "breakout", max_episode_steps=50, repeat_action_probability=0.0, full_action_space=True
    )
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0 and env.action_space.n == 18
    assert env.observation_space.shape == (4, 84, 84) and env.spec.max_episode_steps == 50
    with pytest.raises(ValueError, match="^repeat_action_probability is an Atari protocol option"):
        collection.make_env("Hopper-v5", repeat_action_probability=0.0)


def test_minimal_or_full_action_set():
    assert atari_action_meanings("breakout") == ("NOOP", "FIRE", "RIGHT", "LEFT")
    assert len(atari_action_meanings("breakout", full_action_space=True)) == 18
    assert make_vector_env("pong", 1, full_action_space=True).single_action_space.n == 18


def test_single_and_native_vector_envs_see_the_same_frames():
    """Recording (`dmamba collect`, one env) and evaluation (native vector env) preprocess frames alike, and both
    pad the first stack with zero frames, as DQN-replay does."""
    deterministic = {"repeat_action_probability": 0.0, "noop_max": 0}
    single, vec = make_env("breakout", **deterministic), make_vector_env("breakout", 1, **deterministic)
    single_obs, _ = single.reset(seed=0)
    vec_obs, _ = vec.reset(seed=np.array([0]))
    assert not single_obs[:3].any()
    actions = np.random.default_rng(0).integers(4, size=40)
    for action in actions:
        np.testing.assert_array_equal(single_obs, vec_obs[0])
        single_obs, single_reward, *_ = single.step(int(action))
        vec_obs, vec_reward, *_ = vec.step(np.array([action]))
        assert single_reward == vec_reward[0]


# -- 2. The evaluation protocol of seed 000 ----------------------------------------------------------------------


def test_ten_episodes_by_default_everywhere():
    assert inspect.signature(evaluate_policy).parameters["num_episodes"].default == 10
    assert inspect.signature(EnvironmentEvaluationCallback).parameters["num_episodes"].default == 10
    assert EnvEvaluationArguments().env_eval_episodes == 10
    assert evaluate_cli.build_parser().parse_args(["model"]).num_episodes == 10


def test_gamer_normalised_scores_use_the_reference_constants():
    reference = {"Breakout": (2, 30), "Qbert": (164, 13455), "Pong": (-21, 15), "Seaquest": (68, 42055),
                 "Asterix": (210, 8503), "Frostbite": (65, 4335), "Assault": (222, 742), "Gopher": (258, 2412)}  # fmt: skip
    for game, (random, gamer) in reference.items():
        scores = SCORE_RANGES[f"ALE/{game}-v5"]
        assert (scores.low, scores.high) == (random, gamer) and "gamer" in scores.reference


def test_same_seeds_every_call_greedy_or_sampled_and_several_targets():
    model = atari_model()
    kwargs = {"env_id": "breakout", "num_episodes": 2, "seed": 5, "max_episode_steps": 15, "progress": False}
    actions = {}
    for name, deterministic, targets in (
        ("sampled", False, 90),
        ("again", False, 90),
        ("greedy", True, [90, 20]),
    ):
        policy = RecordingPolicy(model, deterministic)
        report = evaluate_policy(policy, target_return=targets, **kwargs)
        actions[name] = np.stack(policy.actions)
    np.testing.assert_array_equal(actions["sampled"], actions["again"])  # same episodes, same sampled actions
    assert not np.array_equal(actions["sampled"], actions["greedy"][: len(actions["sampled"])])
    assert report["seeds"] == [5, 6] and report["protocol"]["repeat_action_probability"] == 0.25
    assert [result["target_return"] for result in report["results"]] == [90.0, 20.0]
    for result in report["results"]:
        expected = [100 * (value - 2) / 28 for value in result["returns"]]
        assert result["normalized_scores"] == pytest.approx(expected)


def test_evaluation_leaves_the_callers_random_stream_and_threads_alone():
    model, threads = atari_model(), torch.get_num_threads()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    evaluate_policy(
        model, "breakout", num_episodes=1, max_episode_steps=5, deterministic=False, progress=False
    )
    torch.testing.assert_close(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="^torch_threads=0"):
        evaluate_policy(model, "breakout", num_episodes=1, torch_threads=0, progress=False)


class ThreadRecordingPolicy:
    """Plays NOOP and records torch's intra-op thread count at each step."""

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.threads: list[int] = []

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        self.threads.append(torch.get_num_threads())
        return np.zeros(len(observation), dtype=np.int64)


@pytest.mark.parametrize(("mode", "expected"), [("recurrent", 1), ("window", None)])
def test_recurrent_atari_acts_on_one_torch_thread_and_window_acting_keeps_torchs(mode, expected):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        policy = ThreadRecordingPolicy()
        evaluate_policy(policy, "breakout", num_episodes=1, max_episode_steps=3, mode=mode, progress=False)
        assert set(policy.threads) == {expected or 2}
        assert torch.get_num_threads() == 2, "the caller's setting is restored"
    finally:
        torch.set_num_threads(previous)


# -- 5. A checkpoint evaluated in an environment it does not fit -------------------------------------------------


def test_a_checkpoint_evaluated_on_a_game_with_another_action_set_is_refused():
    breakout = atari_model()
    with pytest.raises(
        ValueError, match=r"^n_actions=4: .*ALE/Breakout-v5's minimal action set.*ALE/Pong-v5.* 6 actions"
    ):
        evaluate_policy(breakout, "pong", num_episodes=1, progress=False)
    with pytest.raises(ValueError, match=r"^n_actions=4: .*full_action_space=True has 18 actions"):
        evaluate_policy(breakout, num_episodes=1, full_action_space=True, progress=False)
    with pytest.raises(ValueError, match=r"^n_actions=18: .*full action set.*pass full_action_space=True"):
        evaluate_policy(atari_model(n_actions=18), num_episodes=1, progress=False)
    check_model_fits_env(atari_model(n_actions=18), "breakout", AtariProtocol(full_action_space=True))
    check_model_fits_env(atari_model(env_id="ALE/Pong-v5", n_actions=6), "pong", AtariProtocol())


def test_same_size_action_sets_of_different_games_are_told_apart():
    assert atari_action_meanings("atlantis") == ("NOOP", "FIRE", "RIGHTFIRE", "LEFTFIRE")  # 4 actions too
    with pytest.raises(ValueError, match=r"^n_actions=4: .*\(NOOP, FIRE, RIGHT, LEFT\).*ALE/Atlantis-v5"):
        check_model_fits_env(atari_model(), "atlantis", AtariProtocol())


def test_models_of_the_other_family_are_refused_with_the_field_named():
    hopper = DecisionMambaModel(
        DecisionMambaConfig(state_dim=11, act_dim=3, hidden_size=16, num_hidden_layers=1)
    )
    with pytest.raises(ValueError, match="^action_space='continuous'"):
        check_model_fits_env(hopper, "breakout", AtariProtocol())
    with pytest.raises(ValueError, match="^action_space='discrete'"):
        check_model_fits_env(atari_model(), "hopper", MujocoProtocol())
    with pytest.raises(ValueError, match="^state_dim=11: .*Walker2d-v5, whose state_dim is 17"):
        check_model_fits_env(hopper, "walker2d", MujocoProtocol())


def test_dmamba_evaluate_names_the_disagreement(tmp_path, capsys):
    atari_model().save_pretrained(tmp_path / "breakout")
    argv = [str(tmp_path / "breakout"), "--env_id", "pong", "--num_episodes", "1", "--no_video", "--no_progress",
            "--output_dir", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    assert evaluate_cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "n_actions=4" in error and "ALE/Pong-v5" in error and "NOOP, FIRE, RIGHT, LEFT" in error
