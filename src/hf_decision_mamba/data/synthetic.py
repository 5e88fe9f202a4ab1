"""Small synthetic episodes in the canonical schema, for tests and examples that must not touch the network."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .schema import (
    ACTIONS,
    FRAME_SHAPE,
    FRAME_STACK,
    INITIAL_FRAMES,
    OBSERVATIONS,
    REWARDS,
    TERMINATIONS,
    TRUNCATIONS,
)


def synthetic_episode(
    length: int,
    *,
    state_dim: int = 11,
    act_dim: int = 3,
    n_actions: int | None = None,
    atari: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One random canonical episode: float32 states (or uint8 frames), continuous (or `n_actions` discrete) actions."""
    rng = np.random.default_rng(seed)
    if atari:
        observations = rng.integers(0, 256, (length, *FRAME_SHAPE), dtype=np.uint8)
    else:
        observations = rng.normal(size=(length, state_dim)).astype(np.float32)
    if n_actions is not None:
        actions = rng.integers(0, n_actions, length).astype(np.int64)
    else:
        actions = rng.uniform(-1, 1, (length, act_dim)).astype(np.float32)
    episode = {
        OBSERVATIONS: observations,
        ACTIONS: actions,
        REWARDS: rng.normal(1.0, 0.5, length).astype(np.float32),
        TERMINATIONS: np.arange(length) == length - 1,
        TRUNCATIONS: np.zeros(length, dtype=bool),
    }
    if atari:
        episode[INITIAL_FRAMES] = rng.integers(0, 256, (FRAME_STACK - 1, *FRAME_SHAPE), dtype=np.uint8)
    return episode


def synthetic_episodes(lengths: Sequence[int], *, seed: int = 0, **kwargs) -> list[dict[str, np.ndarray]]:
    """One `synthetic_episode` per length, with distinct seeds."""
    return [synthetic_episode(length, seed=seed + i, **kwargs) for i, length in enumerate(lengths)]
