"""`record_episode`: play one seeded episode with a model's policy and keep what a viewer wants to see.

Per step it keeps the reward and the return-to-go the policy conditioned on; at the end it computes the
hidden attention of the last step's context window and (optionally) writes the episode as an H.264 video
by replaying its actions in a rendering environment (`record_replay`), so rendering never slows the rollout.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..envs.factory import build_vector_env, env_is_native_atari
from ..envs.protocols import Protocol, check_int, make_protocol
from ..envs.registry import resolve_env_id
from .compatibility import check_model_fits_env, model_config
from .rollout import (
    POLICY_MODES,
    _default_env_id,
    _default_target,
    _env_actions,
    _inference,
    build_policy,
    model_env_options,
)
from .scores import ScoreRange, score_range
from .video import record_replay


@dataclass
class EpisodeRecording:
    """One episode: per-step rewards and returns-to-go, the last step's hidden attention, timings, video.

    `terminated`: the environment ended it (a fall, game over); `timed_out`: the time limit stopped it;
    neither: it reached the step limit. `video_cut`: the time limit stopped the video before the episode's end.
    """

    env_id: str
    seed: int
    mode: str
    target_return: float
    rewards: np.ndarray
    returns_to_go: np.ndarray
    attention: np.ndarray
    terminated: bool
    timed_out: bool
    rollout_s: float
    attention_s: float
    video: Path | None = None
    video_s: float = 0.0
    score: ScoreRange | None = None
    video_cut: bool = False

    @property
    def length(self) -> int:
        """Number of steps played."""
        return len(self.rewards)

    @property
    def total_return(self) -> float:
        """Sum of the rewards."""
        return float(self.rewards.sum())

    @property
    def normalized_score(self) -> float | None:
        """Normalised score of the return (None for environments without a reference, see `scores`)."""
        score = self.score or score_range(self.env_id)
        return None if score is None else float(score.normalize(self.total_return))


@dataclass
class _Rollout:
    """What the episode loop collects: all rewards and env actions, the last `context` steps' inputs."""

    rewards: list[float]
    env_actions: list[np.ndarray]
    observations: collections.deque
    policy_actions: collections.deque
    terminated: bool = False
    truncated: bool = False
    timed_out: bool = False


def _play(policy: Any, env: Any, seed: int, target: float, cap: int, deadline: float) -> _Rollout:
    """Run one episode from `reset(seed)` until it ends, after `cap` steps, or past `deadline` (>= 1 step)."""
    observation, _ = env.reset(seed=np.array([seed]) if env_is_native_atari(env) else [seed])
    policy.reset(num_envs=1, target_return=target)
    context = policy.context_length
    run = _Rollout([], [], collections.deque(maxlen=context), collections.deque(maxlen=context))
    reward = None
    while len(run.rewards) < cap and not (run.terminated or run.truncated):
        if run.rewards and time.perf_counter() > deadline:
            run.timed_out = True
            break
        raw = np.asarray(policy.act(observation, reward))
        action = _env_actions(raw, env)
        run.observations.append(np.asarray(observation[0]).copy())
        run.policy_actions.append(raw[0].copy())
        run.env_actions.append(action[0].copy())
        observation, step_reward, terminated, truncated, _ = env.step(action)
        reward = np.asarray(step_reward, dtype=np.float32)
        run.rewards.append(float(step_reward[0]))
        run.terminated, run.truncated = bool(terminated[0]), bool(truncated[0])
    return run


def _window_inputs(policy: Any, run: _Rollout, returns_to_go: np.ndarray) -> dict[str, torch.Tensor]:
    """The model inputs of the last step's context window, as the window-mode policy built them."""
    steps = len(run.observations)
    first = len(run.rewards) - steps
    device = policy.device
    states = torch.as_tensor(np.stack(run.observations), device=device)[None]
    if states.ndim == 3:  # vector states are normalised; image stacks stay uint8
        states = states.float()
        if policy.state_mean is not None:
            states = (states - policy.state_mean) / policy.state_std
        states = states.to(next(policy.model.parameters()).dtype)
    actions = torch.as_tensor(np.stack(run.policy_actions), device=device)[None].clone()
    actions[:, -1] = 0  # the action being chosen is not known yet at the last step
    scaled = torch.as_tensor(returns_to_go[first:], dtype=torch.float32, device=device) / policy.rtg_scale
    timesteps = torch.arange(first, first + steps, device=device).clamp(max=policy.max_timestep)[None]
    return {
        "states": states,
        "actions": actions,
        "rewards": torch.zeros(1, steps, 1, device=device),
        "returns_to_go": scaled.reshape(1, steps, 1),
        "timesteps": timesteps,
        "attention_mask": torch.ones(1, steps, dtype=torch.long, device=device),
    }


def last_step_attention(model: Any, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Each layer's hidden attention over the window `inputs`: (layers, tokens, tokens) float32 numpy.

    Attention with heads (a Decision Transformer) is averaged over the heads.
    """
    with torch.no_grad():
        output = model(**inputs, output_attentions=True, return_dict=True)
    layers = [layer[0].float() for layer in output.attentions]
    layers = [layer.mean(0) if layer.ndim == 3 else layer for layer in layers]
    return torch.stack(layers).cpu().numpy()


def _check_target(target: Any) -> float:
    """`target` as a float, or a ValueError naming it."""
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, float, np.number))
        or not math.isfinite(target)
    ):
        raise ValueError(f"target_return={target!r} is invalid; expected a finite number")
    return float(target)


def _record(
    model: Any,
    env_id: str,
    protocol: Protocol,
    seed: int,
    target: float | None,
    mode: str,
    time_limit_s: float,
) -> tuple[EpisodeRecording, list[np.ndarray]]:
    """Play the episode in a one-env vector env, then compute the last step's attention; also the actions."""
    env = build_vector_env(env_id, 1, protocol)
    try:
        with _inference(model, seed):
            policy = build_policy(model, mode, target)
            target = _check_target(target if target is not None else _default_target(policy))
            start = time.perf_counter()
            run = _play(policy, env, seed, target, protocol.max_episode_steps, start + time_limit_s)
            rollout_s = time.perf_counter() - start
            rewards = np.asarray(run.rewards, dtype=np.float64)
            returns_to_go = target - np.concatenate([[0.0], np.cumsum(rewards)[:-1]])
            attention = last_step_attention(model, _window_inputs(policy, run, returns_to_go))
    finally:
        env.close()
    recording = EpisodeRecording(
        env_id, seed, mode, target, rewards, returns_to_go, attention, run.terminated, run.timed_out,
        rollout_s, time.perf_counter() - start - rollout_s,
    )  # fmt: skip
    return recording, run.env_actions


def record_episode(
    model: Any,
    env_id: str | None = None,
    seed: int = 0,
    target_return: float | None = None,
    mode: str = "window",
    max_episode_steps: int | None = None,
    time_limit_s: float | None = None,
    video_path: str | Path | None = None,
    **env_kwargs: Any,
) -> EpisodeRecording:
    """Play episode `seed` of `env_id` (default: the model's) with `model.policy(mode, target_return)`.

    The rollout stops at the episode's end, after `max_episode_steps`, or once `time_limit_s` have passed
    (`timed_out`). `video_path`: replay the episode into an H.264 MP4, within the same time limit (rendering
    and encoding stop there: `video_cut`). `env_kwargs` set the protocol.
    """
    check_int("seed", seed, 0)
    if mode not in POLICY_MODES:
        raise ValueError(f"mode={mode!r} is invalid; expected one of {list(POLICY_MODES)}")
    target = None if target_return is None else _check_target(target_return)
    env_id = resolve_env_id(env_id or _default_env_id(model))
    config = model_config(model)
    protocol = make_protocol(
        env_id, max_episode_steps=max_episode_steps, **model_env_options(config, env_id, env_kwargs)
    )
    check_model_fits_env(model, env_id, protocol)
    limit = math.inf if time_limit_s is None else time_limit_s
    deadline = time.perf_counter() + limit
    recording, actions = _record(model, env_id, protocol, seed, target, mode, limit)
    recording.score = score_range(env_id, config)
    if video_path is not None:
        start = time.perf_counter()
        recording.video = record_replay(
            env_id, protocol, seed, actions, video_path, recording.total_return, deadline=deadline
        )
        recording.video_s = time.perf_counter() - start
        recording.video_cut = time.perf_counter() > deadline
    return recording


__all__ = ["EpisodeRecording", "last_step_attention", "record_episode"]
