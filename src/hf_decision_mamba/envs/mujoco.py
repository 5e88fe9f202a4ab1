"""Gymnasium MuJoCo v5 environments (Hopper, HalfCheetah, Walker2d) and headless rendering."""

from __future__ import annotations

import os
import sys

import gymnasium as gym

from .protocols import MujocoProtocol


def configure_headless_rendering() -> str | None:
    """Pick an offscreen OpenGL backend (EGL) for MuJoCo when there is no display and none was chosen.

    Without a display MuJoCo's default GLFW backend cannot create a context; EGL works headless (with Mesa's
    software renderer on machines without a GPU). An explicit `MUJOCO_GL` is always respected.
    """
    if "MUJOCO_GL" not in os.environ and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL")


def make_mujoco_env(env_id: str, protocol: MujocoProtocol, render_mode: str | None = None) -> gym.Env:
    """One MuJoCo env; `render_mode="rgb_array"` renders `render_width` x `render_height` frames."""
    kwargs: dict = {"max_episode_steps": protocol.max_episode_steps}
    if render_mode is not None:
        configure_headless_rendering()
        kwargs.update(render_mode=render_mode, width=protocol.render_width, height=protocol.render_height)
    return gym.make(env_id, **kwargs)


def make_mujoco_vector_env(
    env_id: str, num_envs: int, protocol: MujocoProtocol, render_mode: str | None = None
) -> gym.vector.VectorEnv:
    """`num_envs` MuJoCo envs stepped in this process.

    `SyncVectorEnv` beats `AsyncVectorEnv` here: one Hopper step costs ~80 us, less than the inter-process
    round trip (10 envs x 1000 steps on 2 cores: 0.85 s sync vs 1.35 s async).
    """
    return gym.vector.SyncVectorEnv(
        [lambda: make_mujoco_env(env_id, protocol, render_mode) for _ in range(num_envs)]
    )
