"""Headless rendering of Gymnasium's MuJoCo tasks: the OpenGL backend, the following camera, render effects."""

from __future__ import annotations

import os
import sys

import gymnasium as gym
import mujoco

from .gym_envs import make_gymnasium_env, make_gymnasium_vector_env

FOLLOW_CAMERA = "track"
"""The camera of the Gymnasium locomotion models that follows the agent's centre of mass (`mode="trackcom"`)."""
LOCOMOTION_TASKS = ("Ant", "HalfCheetah", "Hopper", "Humanoid", "Swimmer", "Walker2d")
"""Tasks whose agent walks away from where it starts: their replays use `FOLLOW_CAMERA`."""


def configure_headless_rendering() -> str | None:
    """Pick an offscreen OpenGL backend (EGL) for MuJoCo when there is no display and none was chosen.

    Without a display MuJoCo's default GLFW backend cannot create a context; EGL works headless (with Mesa's
    software renderer on machines without a GPU). An explicit `MUJOCO_GL` is always respected.
    """
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (classic control) renders off-screen
    return os.environ.get("MUJOCO_GL")


def render_camera(env_id: str) -> dict[str, str]:
    """The camera to render `env_id` with: the model's following camera for locomotion tasks, else the default.

    Gymnasium 1.4 renders its free camera unless a camera is named, and that camera stays where the episode
    started (its `trackbodyid` is ignored while the camera is free): a hopper leaves the frame after about
    a second and the rest of the replay shows an empty floor.
    """
    task = env_id.split("/")[-1].split("-")[0]
    return {"camera_name": FOLLOW_CAMERA} if task in LOCOMOTION_TASKS else {}


make_mujoco_env = make_gymnasium_env
"""The former name of `make_gymnasium_env`."""
make_mujoco_vector_env = make_gymnasium_vector_env
"""The former name of `make_gymnasium_vector_env`."""


def set_render_effects(env: gym.Env, enabled: bool) -> None:
    """Turn shadows and floor reflections of `env`'s `rgb_array` renderer on or off (builds the renderer)."""
    viewer = env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
        viewer.scn.flags[flag] = int(enabled)
