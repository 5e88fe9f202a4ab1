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
from ..envs.protocols import AtariProtocol, check_int, make_protocol
from ..envs.protocols import Protocol as EnvProtocol
from ..envs.registry import env_family, resolve_env_id
from ..envs.spaces import action_start
from ..policy_decision_mamba import MODES
from .compatibility import check_model_fits_env, model_config
from .scores import normalized_score, score_range

POLICY_MODES = MODES  # the inference modes of `DecisionMambaPolicy`


class Policy(Protocol):
    """What `evaluate_policy` drives: `reset` all envs at once, then `act` on batched observations.

    A policy may also have `keep(active)`, to act from then on for the envs where `active` is true only
    (as `DecisionMambaPolicy` does): the rollout then stops computing actions for finished episodes. With
    `fork()`, returning an independent policy that shares the model, a native Atari rollout runs its envs as
    two groups that take turns, so one group's emulators step while the policy acts for the other.
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


def model_env_options(config: Any, env_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """Protocol `options`, plus the `env_kwargs` the model's config records for its own environment (e.g. a
    maze's map from Minari's metadata), unless `options` set them or the env is another one."""
    recorded = getattr(config, "env_kwargs", None)
    own = getattr(config, "env_id", None)
    if not recorded or "env_kwargs" in options or not own or resolve_env_id(own) != env_id:
        return options
    return {**options, "env_kwargs": dict(recorded)}


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
    (discrete indices shifted to the space's `start`, continuous ones clipped to a Box's bounds); any other
    sub-env, whose episode has ended, gets the first valid action."""
    space = env.single_action_space
    discrete = hasattr(space, "n")
    shape, dtype = ((), np.int64) if discrete else (space.shape, space.dtype)
    start = action_start(space)
    rows = np.arange(env.num_envs) if rows is None else rows
    full = np.full((env.num_envs, *shape), start, dtype=dtype)
    full[rows] = np.asarray(actions).astype(dtype).reshape(len(rows), *shape) + start
    return full if discrete else np.clip(full, space.low, space.high)


class _Rollout:
    """One vector env and the policy acting in it: a batch of episodes stepped with send/receive.

    Each episode counts only up to its first termination/truncation. A policy with `keep(active)` stops acting
    for sub-envs whose episode has ended (they still step, as a vector env steps all of them, but their results
    are ignored), so the wait for the longest episode is cheap. On ale-py's native env `send` returns at once
    and the emulators step in their own threads, so several rollouts taking turns overlap emulation and policy.
    """

    def __init__(self, policy: Policy, env: Any, seeds: np.ndarray, target: float | None, cap: int) -> None:
        count = len(seeds)
        self.policy, self.env, self.cap = policy, env, cap
        self.native = env_is_native_atari(env)
        self.returns, self.lengths = np.zeros(count), np.zeros(count, dtype=np.int64)
        self.done = np.zeros(count, dtype=bool)
        self.rows = np.arange(count)  # the sub-envs the policy acts for
        self.prunable = callable(getattr(policy, "keep", None))
        self.first_actions: list[np.ndarray] = []
        self.pending: np.ndarray | None = None  # actions of the step in flight (envs without send/recv)
        observation, _ = env.reset(seed=seeds if self.native else [int(s) for s in seeds])
        policy.reset(num_envs=count, target_return=target)
        self._send(observation, None)

    @property
    def running(self) -> bool:
        return not self.done.all()

    def _send(self, observation: np.ndarray, reward: np.ndarray | None) -> None:
        """The policy's actions for the running episodes, started on the env (or kept for `_receive`)."""
        acted = self.policy.act(observation[self.rows], None if reward is None else reward[self.rows])
        actions = _env_actions(acted, self.env, self.rows)
        if not self.done[0]:
            self.first_actions.append(actions[0].copy())
        if self.native:
            self.env.send(actions)
        else:
            self.pending = actions

    def _receive(self) -> tuple:
        return self.env.recv() if self.native else self.env.step(self.pending)

    def advance(self) -> tuple[int, list[int]]:
        """Receive the step in flight, book it and send the next actions; returns how many episode steps it
        booked and the lengths of the episodes that ended."""
        observation, raw_reward, terminated, truncated, _ = self._receive()
        active = ~self.done
        self.returns[active] += np.asarray(raw_reward, dtype=np.float64)[active]
        self.lengths[active] += 1
        finished = active & (np.asarray(terminated) | np.asarray(truncated) | (self.lengths >= self.cap))
        self.done |= finished
        if self.running:
            if self.prunable and finished.any():
                self.policy.keep(~self.done[self.rows])
                self.rows = np.flatnonzero(~self.done)
            self._send(observation, np.asarray(raw_reward, dtype=np.float32))
        return int(active.sum()), self.lengths[finished].tolist()


class EvaluationProgress:
    """The evaluation's progress bar: environment steps out of the step budget (episodes x step cap), with the
    episodes done beside them.

    Vectorised episodes tend to end together, so a bar of episodes sat at 0/10 for most of an evaluation. An
    episode that ends before the cap releases its unused budget, so the bar ends at 100%.
    """

    def __init__(self, num_episodes: int, cap: int, desc: str, disable: bool = False) -> None:
        self.num_episodes, self.cap, self.episodes_done = num_episodes, cap, 0
        self.total, self.steps = num_episodes * cap, 0  # what the bar shows (also when it is hidden)
        self.target: float | None = None
        self.bar = tqdm(total=self.total, desc=desc, unit="step", disable=disable)

    def set_target(self, target: float | None) -> None:
        """Show the target return being evaluated."""
        self.target = target
        self._postfix()

    def update(self, steps: int, finished_lengths: Sequence[int] = ()) -> None:
        """Count `steps` environment steps and the episodes that ended (their lengths)."""
        counted = steps + sum(self.cap - int(length) for length in finished_lengths)
        self.steps += counted
        self.bar.update(counted)
        if finished_lengths:
            self.episodes_done += len(finished_lengths)
            self._postfix()

    def _postfix(self) -> None:
        target = "" if self.target is None else f"target_return={self.target:g}, "
        self.bar.set_postfix_str(f"{target}episodes {self.episodes_done}/{self.num_episodes}")

    def __enter__(self) -> EvaluationProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.bar.close()


def _run_wave(
    policies: Sequence[Policy],
    envs: Sequence[Any],
    seeds: np.ndarray,
    target: float | None,
    cap: int,
    bar: EvaluationProgress,
) -> EpisodeBatch:
    """Run one episode per seed, the seeds split in order over the (policy, env) groups, which take turns."""
    groups = np.split(seeds, np.cumsum([env.num_envs for env in envs])[:-1])
    rollouts = [
        _Rollout(p, e, group, target, cap) for p, e, group in zip(policies, envs, groups, strict=True)
    ]
    while running := [rollout for rollout in rollouts if rollout.running]:
        for rollout in running:
            bar.update(*rollout.advance())
    return EpisodeBatch(
        np.concatenate([r.returns for r in rollouts]).tolist(),
        np.concatenate([r.lengths for r in rollouts]).tolist(),
        rollouts[0].first_actions,
    )


def _group_sizes(count: int, protocol: EnvProtocol, forkable: bool) -> tuple[int, ...]:
    """How a wave of `count` envs is split: in two groups that take turns for the native Atari env (one
    group's emulators step while the policy acts for the other), else in one."""
    groups = 2 if forkable and count >= 2 and isinstance(protocol, AtariProtocol) else 1
    return tuple(len(group) for group in np.array_split(np.arange(count), groups))


class VectorEnvPool:
    """Vector envs kept for reuse across evaluations, built on first use and closed by `close()` (or `with`).

    `evaluate_policy(..., envs=pool)` takes its envs from the pool, so later evaluations of the same env id and
    protocol (as in a training run) skip the construction: ale-py loads the ROM once per sub-env, ~70 ms each,
    one after another. Without a pool, each `evaluate_policy` call builds its own and closes them at the end.
    """

    def __init__(self) -> None:
        self._envs: dict[tuple[str, EnvProtocol, tuple[int, ...]], list[Any]] = {}

    def get(self, env_id: str, protocol: EnvProtocol, sizes: tuple[int, ...]) -> list[Any]:
        """One vector env per group size (`sizes`), for `env_id` under `protocol`."""
        key = (env_id, protocol, sizes)
        if key not in self._envs:
            self._envs[key] = [build_vector_env(env_id, size, protocol) for size in sizes]
        return self._envs[key]

    def close(self) -> None:
        for envs in self._envs.values():
            for env in envs:
                env.close()
        self._envs.clear()

    def __enter__(self) -> VectorEnvPool:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


@contextlib.contextmanager
def _evaluation_envs(envs: VectorEnvPool | None) -> Iterator[VectorEnvPool]:
    """`envs`, left open afterwards, or a pool of this evaluation's own, closed at the end. A failed evaluation
    empties `envs` too: an interrupted rollout can leave env steps in flight."""
    pool = VectorEnvPool() if envs is None else envs
    try:
        yield pool
    except BaseException:
        pool.close()
        raise
    if envs is None:
        pool.close()


def run_episodes(
    policy: Policy,
    env_id: str,
    protocol: EnvProtocol,
    seeds: np.ndarray,
    target: float | None,
    num_envs: int,
    bar: EvaluationProgress,
    envs: VectorEnvPool,
) -> EpisodeBatch:
    """Episodes `seeds` in waves of `num_envs` parallel envs from `envs`; episode i starts from `reset(seeds[i])`.

    A policy with `fork()` (an independent copy sharing the model) lets a native Atari wave run as two groups.
    """
    batch = EpisodeBatch()
    forkable = callable(getattr(policy, "fork", None))
    for start in range(0, len(seeds), num_envs):
        wave = seeds[start : start + num_envs]
        sizes = _group_sizes(len(wave), protocol, forkable)
        policies = [policy] + [policy.fork() for _ in sizes[1:]]
        result = _run_wave(
            policies, envs.get(env_id, protocol, sizes), wave, target, protocol.max_episode_steps, bar
        )
        batch.returns += result.returns
        batch.lengths += result.lengths
        batch.first_actions = batch.first_actions or result.first_actions
    return batch


def _summary(
    env_id: str, target: float | None, batch: EpisodeBatch, wall_time: float, config: Any = None
) -> dict[str, Any]:
    """JSON-ready statistics of one target's episodes (normalised with the `config`'s reference, if any)."""
    returns = np.asarray(batch.returns, dtype=np.float64)
    scores = normalized_score(env_id, returns, config)
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


def _auto_torch_threads(env_id: str, mode: str) -> int | None:
    """`evaluate_policy`'s torch threads for `torch_threads="auto"`: one for recurrent Atari acting, else
    torch's setting (None). `mode` is the policy's own mode when it has one.

    Recurrent steps are many small ops that a second thread does not speed up, while its idle OpenMP thread
    spins against the emulator threads: on 2 cores, 10 Breakout episodes in parallel took 1.2x as long with 2
    threads. Window acting is compute-bound (a K-step window per env and step): there 2 threads were 1.4x
    faster. MuJoCo envs step in this thread, so torch's threads are free while they do.
    """
    return 1 if env_family(env_id) == "atari" and mode == "recurrent" else None


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
    envs: VectorEnvPool | None = None,
    **env_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate a model or policy on `num_episodes` episodes run in parallel; episode i is seeded `seed + i`.

    Every call replays the same seeds (and seeds torch's RNG with `seed`, so `deterministic=False` samples the same
    actions too), so evaluations are comparable across checkpoints. A model whose observations or action set do not
    fit the environment raises a `ValueError` before any episode is played. `env_kwargs` set
    the protocol (e.g. `repeat_action_probability=0.0` for DT's Atari protocol). Returns one entry of
    statistics per target return under `"results"`; `record_video` writes the first episode as H.264 MP4.

    `torch_threads`: torch's intra-op threads during the rollout (None keeps torch's setting); `"auto"`: see
    `_auto_torch_threads`.
    `envs`: a `VectorEnvPool` to take the vector envs from and leave them in, open, for the next evaluation.
    """
    check_int("num_episodes", num_episodes, 1)
    check_int("seed", seed, 0)
    env_id = resolve_env_id(env_id or _default_env_id(model_or_policy))
    for name, value in (
        ("num_envs", num_envs),
        ("torch_threads", None if torch_threads == "auto" else torch_threads),
    ):
        if value is not None:
            check_int(name, value, 1)
    config = model_config(model_or_policy)
    protocol = make_protocol(
        env_id, max_episode_steps=max_episode_steps, **model_env_options(config, env_id, env_kwargs)
    )
    targets = _targets(target_return)
    if mode not in POLICY_MODES:
        raise ValueError(f"mode={mode!r} is invalid; expected one of {list(POLICY_MODES)}")
    check_model_fits_env(model_or_policy, env_id, protocol)
    seeds = np.arange(seed, seed + num_episodes, dtype=np.int64)
    num_envs = min(num_envs or num_episodes, num_episodes)
    results, first = [], None
    bar = EvaluationProgress(
        num_episodes * len(targets), protocol.max_episode_steps, f"Evaluating {env_id}", disable=not progress
    )
    with bar, _inference(model_or_policy, seed), _evaluation_envs(envs) as envs:
        policy = build_policy(model_or_policy, mode, targets[0], deterministic)
        if targets == [None]:  # report the target the policy falls back to (e.g. config.target_return)
            targets = [_default_target(policy)]
        if torch_threads == "auto":
            torch_threads = _auto_torch_threads(env_id, getattr(policy, "mode", mode))
        with _torch_threads(torch_threads):
            for target in targets:
                bar.set_target(target)
                start = time.perf_counter()
                batch = run_episodes(policy, env_id, protocol, seeds, target, num_envs, bar, envs)
                results.append(_summary(env_id, target, batch, time.perf_counter() - start, config))
                first = first or batch
    video = None
    if record_video is not None:
        from .video import record_replay

        video = str(
            record_replay(env_id, protocol, seed, first.first_actions, record_video, first.returns[0])
        )
    constants = score_range(env_id, config)
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
