"""Scores, parallel seeded rollouts and replay videos of `hf_decision_mamba.evaluation`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHIFTED_ACTIONS_ENV
from hf_decision_mamba.envs import build_vector_env, make_env
from hf_decision_mamba.evaluation import (
    SCORE_RANGES,
    VectorEnvPool,
    evaluate_policy,
    flat_metrics,
    format_report,
    is_browser_playable,
    normalized_score,
    probe_video,
    rollout,
    write_mp4,
)
from hf_decision_mamba.evaluation.video import _gymnasium_frames


class LinearPolicy:
    """Deterministic continuous policy `tanh(gain * obs @ W)` that records its resets and rewards."""

    def __init__(self, obs_dim: int = 11, act_dim: int = 3, gain: float = 0.1):
        self.weights = gain * np.sin(np.arange(obs_dim * act_dim)).reshape(obs_dim, act_dim)
        self.resets: list[tuple[int, float | None]] = []
        self.rewards: list[np.ndarray | None] = []

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.resets.append((num_envs, target_return))

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        self.rewards.append(reward)
        return np.tanh(observation @ self.weights).astype(np.float32)


class AtariPolicy:
    """Deterministic discrete policy of the frames and the step count (so it fires and the game moves)."""

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.step = 0

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        self.step += 1
        pixels = observation.reshape(len(observation), -1)[:, ::97].astype(np.int64).sum(axis=1)
        return (pixels + self.step) % 4


class TinyModel(torch.nn.Module):
    """A model with a config carrying `env_id` and a `.policy()` factory, like `DecisionMambaModel`."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.config = type("Config", (), {"env_id": "hopper-medium-v2"})()
        self.policy_calls: list[dict] = []

    def policy(self, **kwargs) -> LinearPolicy:
        assert not self.training, "evaluation must run the model in eval mode"
        self.policy_calls.append(kwargs)
        return LinearPolicy()


def manual_returns(policy: LinearPolicy, seeds: range, max_steps: int) -> list[float]:
    """Reference: each episode alone in a single env, stopped at its first termination or truncation."""
    returns = []
    for seed in seeds:
        env = make_env("hopper", max_episode_steps=max_steps)
        obs, _ = env.reset(seed=seed)
        policy.reset(1)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs[None], None)[0])
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return returns


# -- normalised scores -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "raw", "expected"),
    [
        ("hopper-medium-v2", 3234.3, 100.0),
        ("Hopper-v5", -20.272305, 0.0),
        ("halfcheetah", 12135.0, 100.0),
        ("walker2d-expert-v2", 4592.3, 100.0),
        ("Walker2d-v5", 1.629008, 0.0),
        ("breakout", 30.0, 100.0),
        ("ALE/Breakout-v5", 2.0, 0.0),
        ("ALE/Pong-v5", 15.0, 100.0),
        ("qbert", 13455.0, 100.0),
        ("seaquest", 68.0, 0.0),
    ],
)
def test_normalized_score_constants(env_id, raw, expected):
    assert normalized_score(env_id, raw) == pytest.approx(expected)


def test_normalized_score_of_an_array_and_of_unknown_envs():
    np.testing.assert_allclose(normalized_score("breakout", [2.0, 16.0, 30.0]), [0.0, 50.0, 100.0])
    assert normalized_score("CartPole-v1", 100.0) is None
    assert normalized_score("ALE/Tennis-v5", 1.0) is None


def test_score_table_is_keyed_by_resolved_ids():
    from hf_decision_mamba.envs import resolve_env_id

    assert all(resolve_env_id(env_id) == env_id for env_id in SCORE_RANGES)


# -- evaluate_policy ---------------------------------------------------------------------------------------


def test_same_seeds_give_identical_returns_and_batching_does_not_matter():
    kwargs = {"env_id": "hopper", "num_episodes": 4, "seed": 3, "max_episode_steps": 60, "progress": False}
    first = evaluate_policy(LinearPolicy(), **kwargs)["results"][0]
    again = evaluate_policy(LinearPolicy(), **kwargs)["results"][0]
    one_by_one = evaluate_policy(LinearPolicy(), num_envs=1, **kwargs)["results"][0]
    assert first["returns"] == again["returns"] == one_by_one["returns"]
    assert first["episode_lengths"] == one_by_one["episode_lengths"]
    assert len(set(first["returns"])) == 4, "different seeds must give different episodes"
    other_seed = evaluate_policy(LinearPolicy(), **{**kwargs, "seed": 4})["results"][0]
    assert other_seed["returns"][:3] == first["returns"][1:]


class UnsquashedPolicy(LinearPolicy):
    """LinearPolicy's actions times 4, mostly beyond Hopper's [-1, 1]: what a head without tanh may predict."""

    def __init__(self, clip: bool = False):
        super().__init__()
        self.clip = clip

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        actions = 4 * super().act(observation, reward)
        return np.clip(actions, -1.0, 1.0) if self.clip else actions


def test_continuous_actions_beyond_the_bounds_are_clipped_before_the_environment_sees_them():
    # MuJoCo clips the control itself, but the reward's control cost takes the action as given.
    kwargs = {"num_episodes": 3, "max_episode_steps": 40, "progress": False}
    returns = evaluate_policy(UnsquashedPolicy(), "hopper", **kwargs)["results"][0]["returns"]
    np.testing.assert_allclose(returns, manual_returns(UnsquashedPolicy(clip=True), range(3), 40), rtol=1e-6)
    assert not np.allclose(returns, manual_returns(UnsquashedPolicy(), range(3), 40), rtol=1e-6)


def test_each_episode_counts_only_until_its_first_end():
    # gain 0.1: seeds 0-3 end by termination at 57, 56, 58 steps and by truncation at 60
    result = evaluate_policy(LinearPolicy(), "hopper", num_episodes=4, max_episode_steps=60, progress=False)
    expected = manual_returns(LinearPolicy(), range(4), max_steps=60)
    np.testing.assert_allclose(result["results"][0]["returns"], expected, rtol=1e-10)
    lengths = result["results"][0]["episode_lengths"]
    assert len(set(lengths)) > 1 and max(lengths) <= 60, "episodes must end at different steps"


class PruningLinearPolicy(LinearPolicy):
    """`LinearPolicy` with `keep`: it records how many envs it is asked to act for at each step."""

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        super().reset(num_envs, target_return)
        self.batch_sizes: list[int] = []

    def keep(self, active: np.ndarray) -> None:
        self.kept = active

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        self.batch_sizes.append(len(observation))
        return super().act(observation, reward)


def test_a_policy_that_can_drop_finished_envs_acts_only_for_running_episodes():
    # the same ragged episodes as above (57, 56, 58 and 60 steps)
    policy = PruningLinearPolicy()
    result = evaluate_policy(policy, "hopper", num_episodes=4, max_episode_steps=60, progress=False)
    expected = manual_returns(LinearPolicy(), range(4), max_steps=60)
    np.testing.assert_allclose(result["results"][0]["returns"], expected, rtol=1e-10)
    lengths = sorted(result["results"][0]["episode_lengths"])
    running = [sum(length > step for length in lengths) for step in range(max(lengths))]
    assert policy.batch_sizes == running


def test_atari_evaluation_is_reproducible_and_its_replay_matches(tmp_path, caplog):
    kwargs = {"env_id": "breakout", "num_episodes": 3, "max_episode_steps": 300, "progress": False}
    first = evaluate_policy(AtariPolicy(), record_video=tmp_path / "replay.mp4", **kwargs)
    again = evaluate_policy(AtariPolicy(), num_envs=2, **kwargs)
    assert first["results"][0]["returns"] == again["results"][0]["returns"]
    assert first["results"][0]["returns"][0] > 0, "the replayed episode should score, to be a real check"
    assert "replay" not in caplog.text, "the video must replay exactly the evaluated episode"
    assert first["protocol"]["repeat_action_probability"] == 0.25
    result = first["results"][0]
    assert result["normalized_score_mean"] == pytest.approx(100 * (result["return_mean"] - 2) / 28)


class ForkingAtariPolicy(AtariPolicy):
    """`AtariPolicy` with `fork` and `keep`: it records the batch size of each of its `act` calls."""

    def __init__(self, forks: list | None = None) -> None:
        self.forks = [self] if forks is None else forks
        self.batch_sizes: list[int] = []

    def fork(self) -> ForkingAtariPolicy:
        self.forks.append(ForkingAtariPolicy(self.forks))
        return self.forks[-1]

    def keep(self, active: np.ndarray) -> None:
        pass

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        self.batch_sizes.append(len(observation))
        return super().act(observation, reward)


def test_a_forkable_policy_plays_atari_in_two_groups_with_unchanged_episodes(monkeypatch):
    built = []
    monkeypatch.setattr(
        rollout, "build_vector_env", lambda *args: built.append(args[1]) or build_vector_env(*args)
    )
    kwargs = {"env_id": "breakout", "num_episodes": 5, "max_episode_steps": 200, "progress": False}
    policy = ForkingAtariPolicy()
    grouped = evaluate_policy(policy, target_return=[5.0, 2.0], **kwargs)
    assert built == [3, 2], "two groups, and the envs of the first target serve the second"
    one_by_one = evaluate_policy(AtariPolicy(), num_envs=1, **kwargs)
    assert [r["returns"] for r in grouped["results"]] == [one_by_one["results"][0]["returns"]] * 2
    assert grouped["results"][0]["episode_lengths"] == one_by_one["results"][0]["episode_lengths"]
    assert len(policy.forks) == 3, "one fork per target, for the second group"
    assert policy.batch_sizes[0] == 3 and policy.forks[1].batch_sizes[0] == 2, "seeds 0-2, then seeds 3-4"


class BuildLog:
    """Wraps `build_vector_env`: records each env it builds and whether that env was closed."""

    def __init__(self) -> None:
        self.envs: list = []

    def __call__(self, *args):
        env = build_vector_env(*args)
        self.envs.append(env)
        env.closed_by_test = False
        close = env.close
        env.close = lambda: setattr(env, "closed_by_test", True) or close()
        return env

    @property
    def closed(self) -> list[bool]:
        return [env.closed_by_test for env in self.envs]


def test_a_vector_env_pool_keeps_its_envs_across_evaluations_until_closed(monkeypatch):
    log = BuildLog()
    monkeypatch.setattr(rollout, "build_vector_env", log)
    kwargs = {"env_id": "breakout", "num_episodes": 2, "max_episode_steps": 50, "progress": False}
    alone = evaluate_policy(AtariPolicy(), **kwargs)
    assert log.closed == [True], "an evaluation without a pool closes what it built"
    with VectorEnvPool() as pool:
        first = evaluate_policy(AtariPolicy(), envs=pool, **kwargs)
        again = evaluate_policy(AtariPolicy(), envs=pool, **kwargs)
        evaluate_policy(
            LinearPolicy(), env_id="hopper", num_episodes=2, max_episode_steps=5, envs=pool, progress=False
        )
        assert len(log.envs) == 3 and log.closed == [True, False, False], "built once per env id, kept open"
    assert log.closed == [True, True, True]
    assert first["results"][0]["returns"] == again["results"][0]["returns"] == alone["results"][0]["returns"]


class FailingAtariPolicy(AtariPolicy):
    """`AtariPolicy` that raises at its 5th step."""

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        if self.step == 4:
            raise RuntimeError("policy failed")
        return super().act(observation, reward)


def test_a_failed_evaluation_empties_the_pool_and_the_next_one_rebuilds(monkeypatch):
    log = BuildLog()
    monkeypatch.setattr(rollout, "build_vector_env", log)
    kwargs = {"env_id": "breakout", "num_episodes": 2, "max_episode_steps": 50, "progress": False}
    with VectorEnvPool() as pool:
        with pytest.raises(RuntimeError, match="policy failed"):
            evaluate_policy(FailingAtariPolicy(), envs=pool, **kwargs)
        assert log.closed == [True], "an env with a step in flight is not reused"
        after = evaluate_policy(AtariPolicy(), envs=pool, **kwargs)
        assert log.closed == [True, False]
    assert after["results"][0]["returns"] == evaluate_policy(AtariPolicy(), **kwargs)["results"][0]["returns"]


def test_every_target_is_evaluated_and_passed_to_reset():
    policy = LinearPolicy()
    report = evaluate_policy(
        policy, "hopper", num_episodes=2, target_return=[3600, 1800], max_episode_steps=20, progress=False
    )
    assert [r["target_return"] for r in report["results"]] == [3600.0, 1800.0]
    assert policy.resets == [(2, 3600.0), (2, 1800.0)]
    assert policy.rewards[0] is None and policy.rewards[1].shape == (2,)
    metrics = flat_metrics(report)
    assert {"env_eval/target_3600/return_mean", "env_eval/target_1800/normalized_score_mean"} <= set(metrics)
    assert "1800" in format_report(report)


def test_model_env_id_default_policy_api_and_training_mode_restored():
    model = TinyModel().train()
    report = evaluate_policy(model, num_episodes=2, mode="recurrent", max_episode_steps=10, progress=False)
    assert report["env_id"] == "Hopper-v5" and report["mode"] == "recurrent"
    assert model.policy_calls == [{"mode": "recurrent", "target_return": None, "deterministic": True}]
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_episodes": 0}, "num_episodes"),
        ({"seed": -1}, "seed"),
        ({"num_envs": 0}, "num_envs"),
        ({"mode": "parallel"}, "mode"),
        ({"target_return": "high"}, "target_return"),
        ({"target_return": []}, "target_return"),
        ({"repeat_action_probability": 0.25}, "repeat_action_probability"),
        ({"env_id": "NoSuchEnv-v0"}, "env_id"),
    ],
)
def test_bad_evaluate_inputs_are_value_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        evaluate_policy(LinearPolicy(), **{"env_id": "hopper", "progress": False, **kwargs})


def test_missing_env_id_and_non_policies_are_value_errors():
    with pytest.raises(ValueError, match="^env_id=None"):
        evaluate_policy(LinearPolicy(), progress=False)
    with pytest.raises(ValueError, match="^model_or_policy="):
        evaluate_policy(object(), "hopper", progress=False)


# -- video ----------------------------------------------------------------------------------------------


def test_write_mp4_is_browser_playable_h264(tmp_path):
    frames = [np.full((21, 33), value, dtype=np.uint8) for value in range(0, 250, 10)]  # odd sides, grayscale
    path = write_mp4(frames, tmp_path / "sub" / "clip.mp4", fps=15)
    info = probe_video(path)
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 34, 22)
    assert is_browser_playable(path)
    with pytest.raises(ValueError, match="^frames"):
        write_mp4([], tmp_path / "empty.mp4", fps=15)
    with pytest.raises(ValueError, match="^fps"):
        write_mp4(frames, tmp_path / "bad.mp4", fps=0)


@pytest.mark.parametrize(("env_id", "policy"), [("hopper", LinearPolicy), ("breakout", AtariPolicy)])
def test_record_video_writes_h264_of_the_first_episode(tmp_path, caplog, env_id, policy):
    report = evaluate_policy(
        policy(),
        env_id,
        num_episodes=2,
        max_episode_steps=40,
        record_video=tmp_path / "replay.mp4",
        progress=False,
    )
    assert report["video"] == str(tmp_path / "replay.mp4")
    assert is_browser_playable(report["video"])
    assert "replay" not in caplog.text


def test_replay_reproduces_the_evaluated_episode():
    from hf_decision_mamba.envs import MujocoProtocol

    policy = LinearPolicy()
    expected = manual_returns(policy, [5], max_steps=30)[0]
    env = make_env("hopper", max_episode_steps=30)
    obs, _ = env.reset(seed=5)
    actions, done = [], False
    while not done:
        actions.append(policy.act(obs[None], None)[0])
        obs, _, terminated, truncated, _ = env.step(actions[-1])
        done = terminated or truncated
    frames, fps, total = _gymnasium_frames("Hopper-v5", MujocoProtocol(max_episode_steps=30), 5, actions)
    assert total == pytest.approx(expected) and fps == pytest.approx(125 / 4)
    assert frames[0].shape == (480, 480, 3) and frames[0].dtype == np.uint8


def _agent_share(frame: np.ndarray) -> float:
    """Share of the frame in the agents' colours (brown, orange, pink: red well above green and blue); the
    checkered floor is grey-green to white or black and the sky blue-grey, so they never count."""
    red, green, blue = (frame[..., channel].astype(np.int64) for channel in range(3))
    return float(((red - green > 15) & (red - blue > 15)).mean())


def _scripted_actions(env_id: str, steps: int) -> tuple[list[np.ndarray], float]:
    """The first `steps` actions (and their return) of the noiseless scripted controller, which walks away."""
    from hf_decision_mamba.data.collection import ScriptedPolicy

    env = make_env(env_id)
    policy = ScriptedPolicy(env_id, env.action_space, [0.0], [0.0], seed=0)
    observation, _ = env.reset(seed=0)
    actions, total = [], 0.0
    for _ in range(steps):
        actions.append(policy.act(observation, None))
        observation, reward, terminated, truncated, _ = env.step(actions[-1])
        total += float(reward)
        if terminated or truncated:
            break
    env.close()
    return actions, total


@pytest.mark.parametrize(
    ("env_id", "steps"), [("Hopper-v5", 300), ("HalfCheetah-v5", 150), ("Walker2d-v5", 300)]
)
def test_replays_of_locomotion_tasks_keep_the_agent_in_frame(tmp_path, env_id, steps):
    # The scripted hopper covers ~4 m in 300 steps and the cheetah ~35 m in 150: a camera that stays where
    # the episode started shows an empty floor in the middle and last frames.
    import imageio.v3 as iio

    from hf_decision_mamba.envs import MujocoProtocol
    from hf_decision_mamba.evaluation import record_replay

    actions, total = _scripted_actions(env_id, steps)
    protocol = MujocoProtocol(render_width=96, render_height=96)
    path = record_replay(env_id, protocol, 0, actions, tmp_path / "replay.mp4", total)
    frames = list(iio.imiter(path))
    for index in (0, len(frames) // 2, len(frames) - 1):
        assert _agent_share(frames[index]) > 0.003, f"{env_id}: no agent in frame {index} of {len(frames)}"


def test_locomotion_tasks_render_with_the_camera_that_follows_the_agent():
    from hf_decision_mamba.envs.mujoco import FOLLOW_CAMERA, render_camera

    for env_id in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"):
        assert render_camera(env_id) == {"camera_name": FOLLOW_CAMERA}
    assert render_camera("Reacher-v5") == {}


# -- progress -------------------------------------------------------------------------------------------


def test_the_progress_bar_counts_environment_steps_and_ends_at_the_full_budget():
    progress = rollout.EvaluationProgress(num_episodes=3, cap=100, desc="test", disable=True)
    progress.update(3)  # the first step of three parallel episodes already shows
    assert (progress.steps, progress.episodes_done) == (3, 0)
    progress.update(3 * 39, finished_lengths=[40])  # one ended at step 40: its 60 unused steps are released
    assert (progress.steps, progress.episodes_done) == (3 * 40 + 60, 1)
    progress.update(2 * 60, finished_lengths=[100, 100])
    assert (progress.steps, progress.total, progress.episodes_done) == (300, 300, 3)


def test_evaluation_progress_shows_steps_and_episodes_done(capsys):
    evaluate_policy(LinearPolicy(), "hopper", num_episodes=2, max_episode_steps=20, progress=True)
    shown = capsys.readouterr().err
    assert "step" in shown and "episodes 2/2" in shown and "40/40" in shown


def test_replays_can_skip_shadows_and_reflections_for_speed(tmp_path):
    from hf_decision_mamba.envs import MujocoProtocol
    from hf_decision_mamba.evaluation import record_replay

    actions, total = _scripted_actions("Hopper-v5", 20)
    protocol = MujocoProtocol(render_width=64, render_height=64, render_effects=False)
    assert is_browser_playable(record_replay("Hopper-v5", protocol, 0, actions, tmp_path / "fast.mp4", total))
    with pytest.raises(ValueError, match="^render_effects="):
        MujocoProtocol(render_effects="off")


class IndexPolicy:
    """Always predicts action index `index` (models count a Discrete space's actions from 0)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def reset(self, num_envs: int, target_return: float | None = None) -> None:
        self.num_envs = num_envs

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray:
        return np.full(len(observation), self.index, dtype=np.int64)


@pytest.mark.parametrize(("index", "expected_return"), [(0, 5.0), (1, 0.0)])
def test_discrete_indices_are_shifted_to_the_spaces_start(index, expected_return):
    """Index 0 is `Discrete(3, start=-1)`'s action -1, the only rewarded one (the env raises outside the space)."""
    result = evaluate_policy(IndexPolicy(index), SHIFTED_ACTIONS_ENV, num_episodes=3, progress=False)
    assert result["results"][0]["returns"] == [expected_return] * 3
