"""Map-style trajectory windows for the `Trainer`: one item per (episode, last step), sharded by its sampler.

Window mode has one window ending at every step of every kept episode, so long episodes are sampled in proportion
to their length and a distributed sampler hands each rank different windows. A window holds the K steps up to and
including its last step; the first K-1 windows of an episode are shorter and get left-padded by the collator,
exactly like the windows a policy sees from the start of an episode. Trajectory mode ("RNN-like" training) splits
every episode into consecutive chunks of K steps, the first one short, so whole episodes are covered once.

Episodes are stored once, compactly: float32 states (normalised on access), or uint8 84x84 frames with the 3 frames
before the first step, from which the 4-frame stacks of a window are built on access (a strided view, no copy).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import torch
from datasets import Dataset, IterableDataset
from tqdm.auto import tqdm

from .atari import frame_run, split_stacks, stacks_view
from .normalization import StateStats, default_rtg_scale, record_normalisation, stats_from_states
from .schema import (
    ACTIONS,
    FRAME_SHAPE,
    FRAME_STACK,
    INITIAL_FRAMES,
    OBSERVATIONS,
    REWARDS,
    EpisodeSpec,
    check_finite,
    checked_episode,
    iter_episodes,
)

Episodes = Dataset | IterableDataset | Iterable[Mapping[str, Any]]


def returns_to_go(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """R_t = sum_{t' >= t} gamma^(t' - t) r_t', accumulated in float64."""
    rewards = rewards.astype(np.float64)
    if gamma == 1.0:
        return np.cumsum(rewards[::-1])[::-1]
    out, running = np.empty_like(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _frame_spec(state_shape: Any) -> tuple[int, ...] | None:
    """Per-step stored shape: a (4, 84, 84) stack is stored as its newest 84x84 frame."""
    if state_shape is None:
        return None
    shape = tuple(int(x) for x in state_shape)
    return FRAME_SHAPE if shape[-2:] == FRAME_SHAPE else shape


class TrajectoryWindowDataset(torch.utils.data.Dataset):
    """Map-style dataset of trajectory windows (see the module docstring); items are unpadded numpy windows.

    Episodes shorter than `context_length` are skipped with a warning in window mode (`short_episodes="skip"`);
    `"keep"` trains on them left-padded and `"error"` raises. Bad episodes raise a `ValueError` naming them
    (`env_id` is only used to name the game whose action set out-of-range actions disagree with).
    """

    def __init__(
        self,
        episodes: Episodes,
        context_length: int,
        *,
        mode: Literal["window", "trajectory"] = "window",
        state_mean: Any = None,
        state_std: Any = None,
        normalise_states: bool = True,
        rtg_scale: float = 1.0,
        gamma: float = 1.0,
        max_ep_len: int | None = None,
        short_episodes: Literal["skip", "keep", "error"] = "skip",
        state_shape: Any = None,
        act_dim: int | None = None,
        action_space: str | None = None,
        n_actions: int | None = None,
        env_id: str | None = None,
        progress: bool = True,
    ):
        if context_length < 1:
            raise ValueError(f"context_length={context_length}; expected a positive integer.")
        if mode not in ("window", "trajectory"):
            raise ValueError(f"mode={mode!r}; expected 'window' or 'trajectory'.")
        if short_episodes not in ("skip", "keep", "error"):
            raise ValueError(f"short_episodes={short_episodes!r}; expected 'skip', 'keep' or 'error'.")
        self.context_length, self.mode, self.max_ep_len = context_length, mode, max_ep_len
        self.rtg_scale, self.gamma = float(rtg_scale), gamma
        self.spec = EpisodeSpec(
            _frame_spec(state_shape), act_dim, action_space, n_actions, source="the config", env_id=env_id
        )
        self._store(episodes, short_episodes, progress)
        self.state_stats = self._state_stats(state_mean, state_std, normalise_states)
        self._index()

    # Building -----------------------------------------------------------------------------------------------

    def _store(self, episodes: Episodes, short_episodes: str, progress: bool) -> None:
        self.states, self.initial_frames, self.actions, self.rewards, self.rtg = [], [], [], [], []
        self.source_indices, skipped = [], []
        for index, episode in enumerate(
            tqdm(iter_episodes(episodes), desc="indexing episodes", disable=not progress)
        ):
            if episode[OBSERVATIONS].ndim == 4:  # full frame stacks per step: keep each frame once
                episode = {**episode, **split_stacks(episode[OBSERVATIONS], index, OBSERVATIONS)}
            episode = checked_episode(index, episode, self.spec)
            length = len(episode[ACTIONS])
            if self.mode == "window" and length < self.context_length and short_episodes != "keep":
                if short_episodes == "error":
                    raise ValueError(
                        f"episode {index}: has {length} steps; expected at least context_length={self.context_length}."
                    )
                skipped.append(index)
                continue
            self._add(index, episode)
            self.source_indices.append(index)
        self._report_skipped(skipped)

    def _add(self, index: int, episode: Mapping[str, np.ndarray]) -> None:
        """Store one checked episode (already in its training dtypes) and its float32 returns-to-go."""
        states = episode[OBSERVATIONS]
        if self.spec.is_atari:
            history = (FRAME_STACK - 1, *FRAME_SHAPE)
            self.initial_frames.append(
                np.asarray(episode.get(INITIAL_FRAMES, np.zeros(history, np.uint8)), np.uint8)
            )
            self.states.append(np.asarray(states, np.uint8))
        else:
            self.states.append(np.asarray(states, np.float32).reshape(len(states), -1))
        actions = episode[ACTIONS]
        discrete = self.spec.action_space == "discrete"
        self.actions.append(
            actions.astype(np.int64) if discrete else actions.astype(np.float32).reshape(len(actions), -1)
        )
        rewards = episode[REWARDS].astype(np.float32).reshape(-1)
        self.rewards.append(rewards)
        rtg = returns_to_go(rewards, self.gamma) / self.rtg_scale
        with np.errstate(over="ignore"):
            self.rtg.append(rtg.astype(np.float32))
        check_finite(index, "returns_to_go", self.rtg[-1], original=rtg)

    def _report_skipped(self, skipped: list[int]) -> None:
        if not self.states and not skipped:
            raise ValueError("no episodes: the dataset is empty (0 episodes); expected at least one episode.")
        if not self.states:
            raise ValueError(
                f"no usable episode: all {len(skipped)} episode(s) are shorter than context_length="
                f"{self.context_length}; expected at least one episode that long (or pass short_episodes='keep')."
            )
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} episode(s) shorter than context_length={self.context_length} "
                f"(episodes {skipped[:10]}{' ...' if len(skipped) > 10 else ''}); pass short_episodes='keep' to "
                "train on them left-padded.",
                stacklevel=4,
            )

    def _state_stats(self, mean: Any, std: Any, normalise: bool) -> StateStats | None:
        if self.spec.is_atari or not normalise:
            return None
        if mean is None or std is None:
            return stats_from_states(self.states)
        mean, std = np.asarray(mean, np.float32).reshape(-1), np.asarray(std, np.float32).reshape(-1)
        if mean.shape != (self.state_dim,) or std.shape != (self.state_dim,):
            raise ValueError(
                f"state_mean/state_std have sizes {mean.shape[0]}/{std.shape[0]}; expected state_dim={self.state_dim}."
            )
        return StateStats(mean, std, count=0)

    def _index(self) -> None:
        """Window i ends (exclusively) at step `self._end[i]` of kept episode `self._episode[i]`."""
        lengths = np.array([len(rewards) for rewards in self.rewards], dtype=np.int64)
        if self.mode == "window":
            ends = [np.arange(1, length + 1) for length in lengths]
        else:
            ends = [np.arange(length, 0, -self.context_length)[::-1] for length in lengths]
        self._episode = np.repeat(np.arange(len(lengths), dtype=np.int32), [len(e) for e in ends])
        self._end = np.concatenate(ends).astype(np.int32)
        self.episode_lengths = lengths
        if self.max_ep_len is not None and lengths.max() > self.max_ep_len:
            warnings.warn(
                f"episodes of up to {lengths.max()} steps exceed max_ep_len={self.max_ep_len}; their timesteps are "
                f"clipped to {self.max_ep_len - 1}.",
                stacklevel=3,
            )

    # Access -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._end)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        episode, end = int(self._episode[index]), int(self._end[index])
        start = max(0, end - self.context_length)
        timesteps = np.arange(start, end, dtype=np.int64)
        if self.max_ep_len is not None:
            np.minimum(timesteps, self.max_ep_len - 1, out=timesteps)
        return {
            "states": self._states(episode, start, end),
            "actions": self.actions[episode][start:end],
            "rewards": self.rewards[episode][start:end],
            "returns_to_go": self.rtg[episode][start:end],
            "timesteps": timesteps,
        }

    def _states(self, episode: int, start: int, end: int) -> np.ndarray:
        if self.spec.is_atari:
            return stacks_view(frame_run(self.states[episode], self.initial_frames[episode], start, end))
        states = self.states[episode][start:end]
        return states if self.state_stats is None else self.state_stats.normalise(states)

    # Description --------------------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Episodes kept (after skipping short ones)."""
        return len(self.rewards)

    @property
    def num_transitions(self) -> int:
        """Steps in the kept episodes."""
        return int(self.episode_lengths.sum())

    @property
    def is_atari(self) -> bool:
        """Whether states are 84x84 frames stacked by 4 on access."""
        return self.spec.is_atari

    @property
    def state_dim(self) -> int:
        """Flattened size of one state as the model sees it."""
        return int(np.prod(self.state_shape))

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state as the model sees it, e.g. (11,) or (4, 84, 84)."""
        return (FRAME_STACK, *FRAME_SHAPE) if self.is_atari else tuple(self.spec.state_shape)

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every kept episode."""
        return np.array([rewards.sum(dtype=np.float64) for rewards in self.rewards])

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored episodes and the window index."""
        arrays = [
            *self.states,
            *self.initial_frames,
            *self.actions,
            *self.rewards,
            *self.rtg,
            self._episode,
            self._end,
        ]
        return int(sum(array.nbytes for array in arrays))

    def collator(self):
        """The collator that pads this dataset's windows to `context_length`."""
        from .collator import TrajectoryCollator

        return TrajectoryCollator(self.context_length)

    @classmethod
    def from_config(
        cls,
        episodes: Episodes,
        config: Any,
        *,
        context_length: int | None = None,
        rtg_scale: float | None = None,
        record: bool = True,
        **kwargs: Any,
    ) -> TrajectoryWindowDataset:
        """Windows checked against a model config (`DecisionMambaConfig` or `DecisionTransformerConfig`).

        Normalisation comes from the config when it has `state_mean`/`state_std`; otherwise it is computed from the
        episodes and, with `record=True`, written into the config together with the return-to-go scale.
        """
        context_length = context_length or getattr(config, "context_length", None)
        if context_length is None:
            raise ValueError(f"{type(config).__name__} has no context_length; expected context_length=<K>.")
        atari = getattr(config, "state_encoder", "linear") == "atari_cnn"
        state_shape = getattr(config, "state_shape", None) or (
            (FRAME_STACK, *FRAME_SHAPE) if atari else (config.state_dim,)
        )
        action_space = getattr(config, "action_space", "continuous")
        scale = (
            rtg_scale
            or getattr(config, "rtg_scale", None)
            or default_rtg_scale(getattr(config, "env_id", None))
        )
        dataset = cls(
            episodes,
            context_length,
            state_mean=getattr(config, "state_mean", None),
            state_std=getattr(config, "state_std", None),
            rtg_scale=scale,
            max_ep_len=getattr(config, "max_ep_len", None),
            state_shape=state_shape,
            act_dim=None if action_space == "discrete" else config.act_dim,
            action_space=action_space,
            n_actions=getattr(config, "n_actions", None),
            env_id=getattr(config, "env_id", None),
            **kwargs,
        )
        if record:
            record_normalisation(config, dataset.state_stats, scale)
        return dataset
