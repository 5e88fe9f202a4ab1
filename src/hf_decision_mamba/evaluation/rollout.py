"""`evaluate_policy`: run a return-conditioned policy for N seeded episodes in parallel, in a vector env."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..envs.factory import build_vector_env, env_is_native_atari
from ..envs.protocols import Protocol as EnvProtocol
from ..envs.protocols import check_int, make_protocol
from ..envs.registry import env_family, resolve_env_id
from ..policy_decision_mamba import MODES
from .compatibility import check_model_fits_env
from .scores import normalized_score, score_range

POLICY_MODES = MODES  # the inference modes of `DecisionMambaPolicy`


class Policy(Protocol):
    """What `evaluate_policy` drives: `reset` all envs at once, then `act` on batched observations.

    A policy may also have `keep(active)`, to act from then on for the envs where `active` is true only
    (as `DecisionMambaPolicy` does): the rollout then stops computing actions for finished episodes.
    """

    def reset(self, num_envs: int, target_return: float | None = None) -> None: ...

    def act(self, observation: np.ndarray, reward: np.ndarray | None) -> np.ndarray: ...


def is_policy(obj: Any) -> bool:
    """Whether `obj` already is a policy (has callable `reset` and `act`)."""
    return callable(getattr(obj, "reset", None)) and callable(getattr(obj, "act", None))


def build_policy(
    model_or_policy: Any, mode: str = "window", target_return: float | None = None, deterministic: bool = True
) -> Policy:
    """A policy from a policy (returned as is), a model with `.policy(...)`, or a `DecisionTransformerModel`."""
    if mode not in POLICY_MODES:
        raise ValueError(f"mode={mode!r} is invalid; expected one of {list(POLICY_MODES)}")
    if is_policy(model_or_policy):
        return model_or_policy
    kwargs = {"mode": mode, "target_return": target_return, "deterministic": deterministic}
    if callable(getattr(model_or_policy, "policy", None)):
        return model_or_policy.policy(**kwargs)
    if type(model_or_policy).__name__ == "DecisionTransformerModel":
        from ..policy_decision_mamba import DecisionMambaPolicy

        return DecisionMambaPolicy(model_or_policy, **kwargs)
    raise ValueError(
        f"model_or_policy={type(model_or_policy).__name__} is invalid; expected a policy (with reset/act), "
        "a model with a .policy() method, or a transformers DecisionTransformerModel"
    )


def _default_env_id(model_or_policy: Any) -> str:
    """`model.config.env_id` (also through a policy's `.model`), for when no `env_id` is given."""
    model = getattr(model_or_policy, "model", model_or_policy)
    env_id = getattr(getattr(model, "config", None), "env_id", None)
    if not env_id:
        raise ValueError(
            "env_id=None is invalid here: the model's config has no env_id; pass env_id explicitly"
        )
    return env_id


def _targets(target_return: float | Sequence[float] | None) -> list[float | None]:
    """One entry per target to evaluate (`None`: the policy's own default)."""
    targets = list(target_return) if isinstance(target_return, (list, tuple, np.ndarray)) else [target_return]
    for value in targets:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
            raise ValueError(
                f"target_return={target_return!r} is invalid; expected a number or a list of numbers"
            )
    if not targets:
        raise ValueError(
            "target_return=[] is invalid; expected a number, a non-empty list of numbers, or None"
        )
    return [None if value is None else float(value) for value in targets]


def _default_target(policy: Policy) -> float | None:
    """The scalar target a policy uses when reset without one, if it exposes it."""
    value = getattr(policy, "target_return", None)
    return (
        float(value) if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else None
    )


def _model_device(model: Any) -> torch.device | None:
    """The device of a torch model's first parameter (None for anything else)."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return None
    return next(iter(parameters()), torch.empty(0)).device


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run with `count` torch intra-op threads (None: leave torch's setting), restored afterwards."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _inference(model_or_policy: Any, seed: int) -> Iterator[None]:
    """Eval mode, no autograd and torch's RNG seeded with `seed` (so sampled actions repeat across calls);
    the model's training mode and the caller's RNG state are restored afterwards."""
    model = getattr(model_or_policy, "model", model_or_policy)
    was_training = bool(getattr(model, "training", False))
    device = _model_device(model)
    if was_training:
        model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
            torch.manual_seed(seed)
            with torch.no_grad():
                yield
    finally:
        if was_training:
            model.train()


@dataclass
class EpisodeBatch:
    """Returns and lengths of finished episodes, plus the actions of the first one (for its replay)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    first_actions: list[np.ndarray] = field(default_factory=list)


def _env_actions(actions: Any, env: Any, rows: np.ndarray | None = None) -> np.ndarray:
    """The policy's actions for the sub-envs `rows` (default: all), in the dtype and shape the vector env takes
    (clipped to a Box's bounds); any other sub-env, whose episode has ended, gets the first valid action."""
    space = env.single_action_space
    shape = () if hasattr(space, "n") else space.shape
    dtype = np.int64 if hasattr(space, "n") else space.dtype
    rows = np.arange(env.num_envs) if rows is None else rows
    full = np.zeros((env.num_envs, *shape), dtype=dtype)
    full[rows] = np.asarray(actions).astype(dtype).reshape(len(rows), *shape)
    return full if hasattr(space, "n") else np.clip(full, space.low, space.high)


def _run_wave(
    policy: Policy, env: Any, seeds: np.ndarray, target: float | None, cap: int, bar: tqdm
) -> EpisodeBatch:
    """Run one episode per sub-env from `reset(seeds)`; each counts only up to its first termination/truncation.

    A policy with `keep(active)` stops acting for sub-envs whose episode has ended (they still step, as the
    vector env steps all of them, but their results are ignored), so the wait for the longest episode is cheap.
    """
    count = len(seeds)
    observation, _ = env.reset(seed=seeds if env_is_native_atari(env) else [int(s) for s in seeds])
    policy.reset(num_envs=count, target_return=target)
    returns, lengths, done = np.zeros(count), np.zeros(count, dtype=np.int64), np.zeros(count, dtype=bool)
    reward, first_actions = None, []
    rows = np.arange(count)  # the sub-envs the policy acts for
    prunable = callable(getattr(policy, "keep", None))
    while not done.all():
        actions = _env_actions(
            policy.act(observation[rows], None if reward is None else reward[rows]), env, rows
        )
        if not done[0]:
            first_actions.append(actions[0].copy())
        observation, raw_reward, terminated, truncated, _ = env.step(actions)
        reward = np.asarray(raw_reward, dtype=np.float32)
        active = ~done
        returns[active] += np.asarray(raw_reward, dtype=np.float64)[active]
        lengths[active] += 1
        finished = active & (np.asarray(terminated) | np.asarray(truncated) | (lengths >= cap))
        done |= finished
        bar.update(int(finished.sum()))
        if prunable and finished.any() and not done.all():
            policy.keep(~done[rows])
            rows = np.flatnonzero(~done)
    return EpisodeBatch(returns.tolist(), lengths.tolist(), first_actions)


def run_episodes(
    policy: Policy,
    env_id: str,
    protocol: EnvProtocol,
    seeds: np.ndarray,
    target: float | None,
    num_envs: int,
    bar: tqdm,
) -> EpisodeBatch:
    """Episodes `seeds` in waves of `num_envs` parallel envs; episode i always starts from `reset(seeds[i])`."""
    batch, envs = EpisodeBatch(), {}
    try:
        for start in range(0, len(seeds), num_envs):
            wave = seeds[start : start + num_envs]
            if len(wave) not in envs:
                envs[len(wave)] = build_vector_env(env_id, len(wave), protocol)
            env = envs[len(wave)]
            result = _run_wave(policy, env, wave, target, protocol.max_episode_steps, bar)
            batch.returns += result.returns
            batch.lengths += result.lengths
            batch.first_actions = batch.first_actions or result.first_actions
    finally:
        for env in envs.values():
            env.close()
    return batch


def _summary(env_id: str, target: float | None, batch: EpisodeBatch, wall_time: float) -> dict[str, Any]:
    """JSON-ready statistics of one target's episodes."""
    returns = np.asarray(batch.returns, dtype=np.float64)
    scores = normalized_score(env_id, returns)
    return {
        "target_return": target,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score_mean": None if scores is None else float(scores.mean()),
        "normalized_score_std": None if scores is None else float(scores.std()),
        "episode_length_mean": float(np.mean(batch.lengths)),
        "returns": returns.tolist(),
        "normalized_scores": None if scores is None else scores.tolist(),
        "episode_lengths": list(batch.lengths),
        "wall_time_s": wall_time,
    }


def evaluate_policy(
    model_or_policy: Any,
    env_id: str | None = None,
    num_episodes: int = 10,
    seed: int = 0,
    target_return: float | Sequence[float] | None = None,
    mode: str = "window",
    deterministic: bool = True,
    num_envs: int | None = None,
    max_episode_steps: int | None = None,
    record_video: str | Path | None = None,
    progress: bool = True,
    torch_threads: int | None | str = "auto",
    **env_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate a model or policy on `num_episodes` episodes run in parallel; episode i is seeded `seed + i`.

    Every call replays the same seeds (and seeds torch's RNG with `seed`, so `deterministic=False` samples the same
    actions too), so evaluations are comparable across checkpoints. A model whose observations or action set do not
    fit the environment raises a `ValueError` before any episode is played. `env_kwargs` set
    the protocol (e.g. `repeat_action_probability=0.0` for DT's Atari protocol). Returns one entry of
    statistics per target return under `"results"`; `record_video` writes the first episode as H.264 MP4.

    `torch_threads`: torch's intra-op threads during the rollout (None keeps torch's setting). `"auto"`: one
    for Atari, whose emulator threads already use every core (on a 2-core machine 2 torch threads made a
    10-episode Breakout evaluation 8x slower), torch's setting for MuJoCo, whose envs step in this thread.
    """
    check_int("num_episodes", num_episodes, 1)
    check_int("seed", seed, 0)
    env_id = resolve_env_id(env_id or _default_env_id(model_or_policy))
    if torch_threads == "auto":
        torch_threads = 1 if env_family(env_id) == "atari" else None
    for name, value in (("num_envs", num_envs), ("torch_threads", torch_threads)):
        if value is not None:
            check_int(name, value, 1)
    protocol = make_protocol(env_id, max_episode_steps=max_episode_steps, **env_kwargs)
    targets = _targets(target_return)
    if mode not in POLICY_MODES:
        raise ValueError(f"mode={mode!r} is invalid; expected one of {list(POLICY_MODES)}")
    check_model_fits_env(model_or_policy, env_id, protocol)
    seeds = np.arange(seed, seed + num_episodes, dtype=np.int64)
    num_envs = min(num_envs or num_episodes, num_episodes)
    results, first = [], None
    bar = tqdm(
        total=num_episodes * len(targets), desc=f"Evaluating {env_id}", unit="episode", disable=not progress
    )
    with bar, _inference(model_or_policy, seed), _torch_threads(torch_threads):
        policy = build_policy(model_or_policy, mode, targets[0], deterministic)
        if targets == [None]:  # report the target the policy falls back to (e.g. config.target_return)
            targets = [_default_target(policy)]
        for target in targets:
            bar.set_postfix_str(f"target_return={target}")
            start = time.perf_counter()
            batch = run_episodes(policy, env_id, protocol, seeds, target, num_envs, bar)
            results.append(_summary(env_id, target, batch, time.perf_counter() - start))
            first = first or batch
    video = None
    if record_video is not None:
        from .video import record_replay

        video = str(
            record_replay(env_id, protocol, seed, first.first_actions, record_video, first.returns[0])
        )
    constants = score_range(env_id)
    return {
        "env_id": env_id,
        "num_episodes": num_episodes,
        "seeds": seeds.tolist(),
        "mode": mode,
        "deterministic": deterministic,
        "num_envs": num_envs,
        "protocol": dataclasses.asdict(protocol),
        "score_reference": None if constants is None else constants.reference,
        "results": results,
        "video": video,
    }
