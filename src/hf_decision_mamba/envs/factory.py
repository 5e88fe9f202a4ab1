"""`make_env` and `make_vector_env`: every environment of the project is built here."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .protocols import AtariProtocol, Protocol, check_int, make_protocol
from .registry import resolve_env_id


def make_env(env_id: str, render_mode: str | None = None, **protocol: Any) -> gym.Env:
    """One environment for `env_id` (any name `resolve_env_id` accepts) under the validated `protocol`."""
    resolved, settings = resolve_env_id(env_id), make_protocol(env_id, **protocol)
    if isinstance(settings, AtariProtocol):
        from .atari import make_atari_env

        return make_atari_env(resolved, settings, render_mode)
    from .gym_envs import make_gymnasium_env

    return make_gymnasium_env(resolved, settings, render_mode)


def make_vector_env(
    env_id: str, num_envs: int, seed: int | None = None, render: bool = False, **protocol: Any
) -> gym.vector.VectorEnv:
    """`num_envs` environments stepped together (ale-py's native vector env for Atari, `SyncVectorEnv` else).

    `seed`: reset once with seeds `seed, ..., seed + num_envs - 1` (and seed the action space), so even later
    unseeded resets are reproducible. `render`: sub-envs render `rgb_array` frames through `render()`.
    """
    check_int("num_envs", num_envs, 1)
    if seed is not None:
        check_int("seed", seed, 0)
    env = build_vector_env(resolve_env_id(env_id), num_envs, make_protocol(env_id, **protocol), render)
    if seed is not None:
        env.reset(seed=np.arange(seed, seed + num_envs) if env_is_native_atari(env) else seed)
        env.action_space.seed(seed)
    return env


def build_vector_env(
    env_id: str, num_envs: int, protocol: Protocol, render: bool = False
) -> gym.vector.VectorEnv:
    """`make_vector_env` for an already resolved id and validated protocol."""
    render_mode = "rgb_array" if render else None
    if isinstance(protocol, AtariProtocol):
        from .atari import make_atari_vector_env

        return make_atari_vector_env(env_id, num_envs, protocol, render_mode)
    from .gym_envs import make_gymnasium_vector_env

    return make_gymnasium_vector_env(env_id, num_envs, protocol, render_mode)


def env_is_native_atari(env: gym.vector.VectorEnv) -> bool:
    """Whether `env` is ale-py's native vector env (seeded with arrays, not ints or lists)."""
    from ale_py.vector_env import AtariVectorEnv

    return isinstance(env, AtariVectorEnv)
