"""State statistics in one streaming-safe pass, the return-to-go scale per environment family, and recording both
into a model config."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from datasets import Dataset, IterableDataset
from tqdm.auto import tqdm

from .schema import OBSERVATIONS, iter_episodes

# DT's epsilon, added to the standard deviation so that constant state features do not divide by zero.
STD_EPSILON = 1e-6
MUJOCO_WORDS = {
    "hopper",
    "halfcheetah",
    "walker2d",
    "ant",
    "humanoid",
    "swimmer",
    "reacher",
    "mujoco",
    "d4rl",
}
ATARI_WORDS = {
    "ale",
    "atari",
    "dqn",
    "breakout",
    "pong",
    "qbert",
    "seaquest",
    "asterix",
    "frostbite",
    "assault",
    "gopher",
}
RTG_SCALES = {"mujoco": 1000.0, "atari": 1.0}


@dataclasses.dataclass
class StateStats:
    """Per-feature mean and standard deviation of the states, and how many states they summarise."""

    mean: np.ndarray
    std: np.ndarray
    count: int

    def normalise(self, states: np.ndarray) -> np.ndarray:
        """(states - mean) / std as float32."""
        return ((states - self.mean) / self.std).astype(np.float32)


class _RunningMoments:
    """Chan et al.'s parallel update of count, mean and sum of squared deviations, in float64."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, batch: np.ndarray) -> None:
        batch = batch.reshape(len(batch), -1).astype(np.float64)
        count, mean = len(batch), batch.mean(axis=0)
        m2 = ((batch - mean) ** 2).sum(axis=0)
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * count / total
        self.count = total


def stats_from_states(batches: Iterable[np.ndarray]) -> StateStats:
    """Mean and std (+1e-6, as DT) of all states in an iterable of (steps, ...) arrays, in one pass."""
    moments = _RunningMoments()
    for states in batches:
        if len(states):
            moments.update(states)
    if moments.count == 0:
        raise ValueError(
            "cannot compute state statistics: the dataset has no steps; expected at least one episode."
        )
    std = np.sqrt(moments.m2 / moments.count) + STD_EPSILON
    return StateStats(moments.mean.astype(np.float32), std.astype(np.float32), moments.count)


def compute_state_stats(
    episodes: Dataset | IterableDataset | Iterable[Mapping[str, Any]], progress: bool = True
) -> StateStats | None:
    """State mean/std over every episode in one streaming-safe pass; `None` for uint8 frames (the model scales)."""
    episodes = tqdm(iter_episodes(episodes, [OBSERVATIONS]), desc="state statistics", disable=not progress)
    states = (episode[OBSERVATIONS] for episode in episodes)
    first = next(states, None)
    if first is not None and first.dtype == np.uint8:
        return None
    return stats_from_states(itertools.chain([] if first is None else [first], states))


def env_family(name: str | None) -> str | None:
    """`"mujoco"` or `"atari"` from the words of an env id, dataset name or source string, else `None`."""
    name = (name or "").lower()
    words = set(re.split(r"[^a-z0-9]+", name))
    if words & ATARI_WORDS or "noframeskip" in name:
        return "atari"
    if words & MUJOCO_WORDS:
        return "mujoco"
    return None


def default_rtg_scale(name: str | None, override: float | None = None) -> float:
    """Return-to-go divisor: `override` if given, else 1000 for MuJoCo, 1 for Atari, 1 when unknown."""
    if override is not None:
        return float(override)
    return RTG_SCALES.get(env_family(name), 1.0)


def record_normalisation(config: Any, stats: StateStats | None, rtg_scale: float | None = None) -> Any:
    """Write `state_mean`/`state_std` (and `rtg_scale` if given) into any config object; return it."""
    if stats is not None:
        config.state_mean = [float(x) for x in stats.mean]
        config.state_std = [float(x) for x in stats.std]
    if rtg_scale is not None:
        config.rtg_scale = float(rtg_scale)
    return config
