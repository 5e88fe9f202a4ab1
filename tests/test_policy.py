"""Acting: window and recurrent modes agree within the context, and the bookkeeping matches a hand-built window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ALL_PRESETS, tiny_model
from hf_decision_mamba import DecisionMambaPolicy


class ToyEnv:
    """Deterministic batched dynamics whose next observation depends on the action, so diverging actions show."""

    def __init__(self, config, num_envs: int, seed: int = 0) -> None:
        self.config, self.num_envs = config, num_envs
        self.rng = np.random.default_rng(seed)
        self.shape = tuple(config.state_shape or [config.state_dim])

    def reset(self) -> np.ndarray:
        if len(self.shape) == 3:
            self.obs = self.rng.integers(0, 256, (self.num_envs, *self.shape), dtype=np.uint8)
        else:
            self.obs = self.rng.normal(size=(self.num_envs, *self.shape)).astype(np.float32)
        return self.obs

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        signal = action.reshape(self.num_envs, -1).astype(np.float32).sum(-1)
        if len(self.shape) == 3:
            self.obs = np.roll(self.obs, 1, axis=-1)
            self.obs[:, :, 0, 0] = (signal * 37).astype(np.uint8)[:, None]
        else:
            self.obs = np.tanh(np.roll(self.obs, 1, axis=-1) + signal[:, None])
        return self.obs, signal + 1.0


def rollout(policy: DecisionMambaPolicy, env: ToyEnv, steps: int) -> list[np.ndarray]:
    obs, reward, actions = env.reset(), None, []
    policy.reset(env.num_envs, target_return=[30.0, 12.0, 5.0][: env.num_envs])
    for _ in range(steps):
        action = policy.act(obs, reward)
        actions.append(action)
        obs, reward = env.step(action)
    return actions


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_window_and_recurrent_choose_the_same_actions_within_the_context(preset):
    model = tiny_model(preset, context_length=6, rtg_scale=10.0)
    window = rollout(model.policy(mode="window"), ToyEnv(model.config, 3), steps=6)
    recurrent = rollout(model.policy(mode="recurrent"), ToyEnv(model.config, 3), steps=6)
    for step, (a, b) in enumerate(zip(window, recurrent, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"step {step}")


def test_window_policy_feeds_normalised_states_and_remaining_returns():
    model = tiny_model("dema-mujoco", context_length=3, rtg_scale=10.0)
    mean, std = np.full(5, 0.5, np.float32), np.full(5, 2.0, np.float32)
    policy = DecisionMambaPolicy(model, mode="window", state_mean=mean, state_std=std)
    env = ToyEnv(model.config, 2)
    obs, reward = env.reset(), None
    policy.reset(2, target_return=20.0)
    history = {"states": [], "actions": [], "returns": []}
    remaining = np.full(2, 20.0)
    for t in range(5):
        if reward is not None:
            remaining = remaining - reward
        action = policy.act(obs, reward)
        history["states"].append((obs - mean) / std)
        history["returns"].append(remaining / 10.0)
        history["actions"].append(action)
        obs, reward = env.step(action)
        first = max(0, t - 2)
        window = {
            "states": torch.tensor(np.stack(history["states"][first:], 1), dtype=torch.float32),
            "actions": torch.tensor(np.stack(history["actions"][first:], 1)),
            "returns_to_go": torch.tensor(np.stack(history["returns"][first:], 1), dtype=torch.float32)[
                ..., None
            ],
            "timesteps": torch.arange(first, t + 1).expand(2, -1),
        }
        with torch.no_grad():
            expected = model(**window).action_preds[:, -1].numpy()
        np.testing.assert_allclose(action, expected, atol=1e-5, err_msg=f"step {t}")


@pytest.mark.parametrize("mode", ["window", "recurrent"])
@pytest.mark.parametrize("preset", ["dmamba-mujoco", "mambadm-mujoco", "dema-atari"])
def test_dropping_finished_envs_leaves_the_others_actions_unchanged(preset, mode):
    model = tiny_model(preset, context_length=4, rtg_scale=10.0)
    everyone = rollout(model.policy(mode=mode), ToyEnv(model.config, 3), steps=7)
    policy, env = model.policy(mode=mode), ToyEnv(model.config, 3)
    obs, reward = env.reset(), None
    policy.reset(3, target_return=[30.0, 12.0, 5.0])
    rows = np.arange(3)
    for step in range(7):
        if step == 3:  # env 1's episode has ended: act for envs 0 and 2 only
            policy.keep(np.array([True, False, True]))
            rows = np.array([0, 2])
        action = policy.act(obs[rows], None if reward is None else reward[rows])
        assert action.shape[0] == len(rows)
        np.testing.assert_allclose(action, everyone[step][rows], atol=1e-5, err_msg=f"step {step}")
        full = everyone[step].copy()
        full[rows] = action
        obs, reward = env.step(full)
    with pytest.raises(ValueError, match=r"active: got shape \(3,\), expected \(2,\)"):
        policy.keep(np.ones(3, dtype=bool))


@pytest.mark.parametrize("mode", ["window", "recurrent"])
def test_a_fork_shares_the_model_but_not_the_episodes(mode):
    model = tiny_model("dmamba-atari", context_length=4, rtg_scale=10.0)
    alone = rollout(model.policy(mode=mode), ToyEnv(model.config, 3), steps=6)
    policy = model.policy(mode=mode)
    fork = policy.fork()
    assert fork.model is policy.model and fork.mode == mode
    with pytest.raises(RuntimeError, match="reset"):
        fork.act(ToyEnv(model.config, 2).reset())
    # the two take turns on different envs: neither disturbs the other's episodes
    envs = ToyEnv(model.config, 3), ToyEnv(model.config, 2, seed=1)
    observations, rewards = [env.reset() for env in envs], [None, None]
    policy.reset(3, target_return=[30.0, 12.0, 5.0])
    fork.reset(2, target_return=7.0)
    for step in range(6):
        for k, (acting, env) in enumerate(zip((policy, fork), envs, strict=True)):
            action = acting.act(observations[k], rewards[k])
            if k == 0:
                np.testing.assert_allclose(action, alone[step], atol=1e-5, err_msg=f"step {step}")
            observations[k], rewards[k] = env.step(action)


def test_window_policy_encodes_each_frame_once():
    model = tiny_model("dmamba-atari", context_length=4)
    encoded = []
    model.embed_state.register_forward_hook(lambda module, inputs, output: encoded.append(len(output)))
    rollout(model.policy(mode="window"), ToyEnv(model.config, 2), steps=6)
    assert encoded == [2] * 6, "one frame per env and step, not the whole window again"


def test_recurrent_latency_state_does_not_grow_with_the_episode():
    model = tiny_model("dmamba-mujoco")
    policy = model.policy(mode="recurrent", target_return=1.0)
    policy.reset(2)
    sizes = []
    for _ in range(40):
        policy.act(np.zeros((2, 5), np.float32), np.ones(2))
        sizes.append(sum(s.conv.numel() + s.ssm.numel() for s in policy.cache.global_states))
    assert len(set(sizes)) == 1


def test_discrete_policy_returns_integer_actions_and_samples_when_asked():
    model = tiny_model("dmamba-atari", context_length=4)
    env = ToyEnv(model.config, 2)
    greedy = rollout(model.policy(mode="window"), env, steps=2)
    assert greedy[0].dtype == np.int64 and greedy[0].shape == (2,)
    sampled = rollout(model.policy(mode="recurrent", deterministic=False), ToyEnv(model.config, 2), steps=2)
    assert all(a.min() >= 0 and a.max() < model.config.n_actions for a in sampled)


def test_policy_rejects_bad_observations_and_modes():
    model = tiny_model("dmamba-mujoco")
    with pytest.raises(ValueError, match=r"mode='greedy': expected one of \['window', 'recurrent'\]"):
        model.policy(mode="greedy")
    policy = model.policy(target_return=10.0)
    policy.reset(2)
    with pytest.raises(ValueError, match=r"observation: got shape \(2, 4\), expected \(2, 5\)"):
        policy.act(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="target_return: got None"):
        tiny_model("dmamba-mujoco").policy().reset(1)


@pytest.mark.parametrize("mode", ["window", "recurrent"])
@pytest.mark.parametrize("preset", ["dmamba-mujoco", "dmamba-atari"])
def test_a_model_with_nan_weights_stops_instead_of_acting(preset, mode):
    """Greedy argmax over NaN logits is action 0, a plausible policy; the policy refuses to act instead."""
    model = tiny_model(preset, context_length=4)
    with torch.no_grad():
        model.predict_action.bias.fill_(float("nan"))
    policy = model.policy(mode=mode, target_return=10.0)
    policy.reset(2)
    with pytest.raises(ValueError, match=r"step 0: the model predicted NaN or inf action values"):
        policy.act(ToyEnv(model.config, 2).reset())
