"""Observation and action spaces described once, for datasets and environments alike.

A policy reads one float vector per step. Box observations of any shape are flattened (C order); Dict and Tuple
observations are flattened leaf by leaf in one documented order: Dict keys sorted, Tuple entries in order,
recursively, each leaf flattened in C order, the leaves concatenated. The order is recorded as an
*observation layout* (a list of `[path, shape]`, path the keys joined by "/", e.g. `["achieved_goal", [2]]`),
stored in the config as `observation_layout`, and applied identically to Minari data and to environment
observations, so a goal-conditioned maze reads its goal in training and in evaluation at the same positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

Layout = list[list[Any]]
"""`[[path, shape], ...]`: where each leaf of an observation lands in the flat state vector, in order."""


def observation_layout(space: gym.Space, path: str = "") -> Layout:
    """The flattening order of `space` (see the module docstring); a plain Box gives `[["", shape]]`."""
    if isinstance(space, gym.spaces.Dict):
        return [
            leaf for key in sorted(space.spaces) for leaf in observation_layout(space[key], _join(path, key))
        ]
    if isinstance(space, gym.spaces.Tuple):
        return [
            leaf for i, sub in enumerate(space.spaces) for leaf in observation_layout(sub, _join(path, i))
        ]
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary, gym.spaces.MultiDiscrete)):
        return [[path, [int(size) for size in space.shape]]]
    if isinstance(space, gym.spaces.Discrete):
        return [[path, []]]
    raise ValueError(
        f"observation space {path or 'of the environment'!r} is a {type(space).__name__}; expected Box, "
        "Discrete, MultiBinary, MultiDiscrete, or Dict/Tuple of them"
    )


def _join(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def layout_size(layout: Layout) -> int:
    """Entries of the flat state vector (`state_dim`)."""
    return sum(math.prod(shape) for _, shape in layout)


def is_flat(layout: Layout) -> bool:
    """Whether observations already are 1-D vectors (nothing to flatten)."""
    return len(layout) == 1 and layout[0][0] == "" and len(layout[0][1]) == 1


def _leaf(observation: Any, path: str) -> np.ndarray:
    for key in filter(None, path.split("/")):
        observation = observation[key] if isinstance(observation, Mapping) else observation[int(key)]
    return np.asarray(observation)


def flatten_observation(observation: Any, layout: Layout) -> np.ndarray:
    """`observation` (one, or a batch / an episode with leading dimensions) as float32 vectors in `layout` order."""
    parts = []
    for path, shape in layout:
        leaf = _leaf(observation, path)
        lead = leaf.shape[: leaf.ndim - len(shape)]
        if tuple(leaf.shape[len(lead) :]) != tuple(shape):
            raise ValueError(
                f"observation {path or 'box'!r} has shape {leaf.shape[len(lead) :]}; expected {tuple(shape)}"
            )
        parts.append(leaf.reshape(*lead, math.prod(shape)).astype(np.float32))
    return np.concatenate(parts, axis=-1)


def action_fields(space: gym.Space) -> dict[str, Any]:
    """Config fields for an action space: `n_actions` for Discrete, `act_dim` and bounds for a 1-D Box."""
    if isinstance(space, gym.spaces.Discrete):
        return {"action_space": "discrete", "n_actions": int(space.n)}
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return {
            "action_space": "continuous",
            "act_dim": int(space.shape[0]),
            "action_low": [float(v) for v in space.low],
            "action_high": [float(v) for v in space.high],
        }
    raise ValueError(
        f"action space {space} is not supported; expected Discrete or a 1-D Box (flat continuous actions)"
    )


def action_start(space: gym.Space) -> int:
    """The env's first discrete action: `Discrete(n, start=s)` takes s..s+n-1 where models and datasets count
    0..n-1, so acting adds it and recording subtracts it (0 for every other space)."""
    return int(space.start) if isinstance(space, gym.spaces.Discrete) else 0


def space_fields(observation_space: gym.Space, action_space: gym.Space) -> dict[str, Any]:
    """`state_dim`, `observation_layout` (None when observations are flat) and the action fields of two spaces."""
    layout = observation_layout(observation_space)
    return {
        "state_dim": layout_size(layout),
        "observation_layout": None if is_flat(layout) else layout,
        **action_fields(action_space),
    }


class FlattenObservations(gym.ObservationWrapper):
    """Observations of any layout as the float32 vectors a policy reads (see `flatten_observation`)."""

    def __init__(self, env: gym.Env, layout: Layout | None = None):
        super().__init__(env)
        self.layout = layout or observation_layout(env.observation_space)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (layout_size(self.layout),), np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        return flatten_observation(observation, self.layout)


__all__ = [
    "FlattenObservations",
    "Layout",
    "action_fields",
    "flatten_observation",
    "is_flat",
    "layout_size",
    "observation_layout",
    "space_fields",
]
