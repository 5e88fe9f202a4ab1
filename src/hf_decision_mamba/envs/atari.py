"""Atari through ale-py (never atari-py): single Gymnasium envs and ale-py's native vector env."""

from __future__ import annotations

import functools
import os

import ale_py
import gymnasium as gym
from ale_py import roms
from ale_py.vector_env import AtariVectorEnv
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

from .protocols import AtariProtocol
from .registry import atari_rom

gym.register_envs(ale_py)

ATARI_SCREEN_SHAPE = (210, 160)
"""Height and width of a raw Atari frame."""


def default_num_threads(num_envs: int) -> int:
    """One emulator thread per usable core (more threads than cores only slows the ALE down)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(num_envs, cores))


class ProtocolAtariVectorEnv(AtariVectorEnv):
    """ale-py's native, multi-threaded `AtariVectorEnv`, remembering the id and protocol it was built with."""

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        protocol: AtariProtocol,
        rgb: bool = False,
        num_threads: int | None = None,
    ):
        """`rgb=True` emits full-size RGB screens (for videos) instead of the stacked grayscale observations."""
        height, width = ATARI_SCREEN_SHAPE if rgb else (protocol.screen_size, protocol.screen_size)
        super().__init__(
            atari_rom(env_id),
            num_envs,
            num_threads=num_threads or default_num_threads(num_envs),
            max_num_frames_per_episode=protocol.max_num_frames,
            repeat_action_probability=float(protocol.repeat_action_probability),
            full_action_space=protocol.full_action_space,
            img_height=height,
            img_width=width,
            grayscale=not rgb,
            stack_num=1 if rgb else protocol.frame_stack,
            frameskip=protocol.frame_skip,
            maxpool=True,
            noop_max=protocol.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=protocol.use_fire_reset,
        )
        self.env_id = env_id
        self.protocol = protocol


@functools.cache
def atari_action_meanings(env_id: str, full_action_space: bool = False) -> tuple[str, ...]:
    """Names of the actions of `env_id` (its minimal set, or all 18 with `full_action_space`), e.g. NOOP, FIRE."""
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(roms.get_rom_path(atari_rom(env_id)))
    actions = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
    return tuple(action.name for action in actions)


def make_atari_env(env_id: str, protocol: AtariProtocol, render_mode: str | None = None) -> gym.Env:
    """One Atari env with Gymnasium's wrappers: obs (frame_stack, 84, 84) uint8, raw rewards, game-over ends.

    Its frames equal those of `ProtocolAtariVectorEnv` (same pooling, resizing and zero-padded first stack, as
    in DQN-replay), but its random stream differs, so sticky actions and no-op starts of equal seeds differ.
    """
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=float(protocol.repeat_action_probability),
        full_action_space=protocol.full_action_space,
        max_num_frames_per_episode=protocol.max_num_frames,
        render_mode=render_mode,
        max_episode_steps=None,
    )
    env = AtariPreprocessing(
        env,
        noop_max=protocol.noop_max,
        frame_skip=protocol.frame_skip,
        screen_size=protocol.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
    return FrameStackObservation(env, protocol.frame_stack, padding_type="zero")


def make_atari_vector_env(
    env_id: str, num_envs: int, protocol: AtariProtocol, render_mode: str | None = None
) -> gym.vector.VectorEnv:
    """The native vector env, or Gymnasium's `SyncVectorEnv` when frames must be rendered (the native can't)."""
    if render_mode is None:
        return ProtocolAtariVectorEnv(env_id, num_envs, protocol)
    return gym.vector.SyncVectorEnv(
        [lambda: make_atari_env(env_id, protocol, render_mode) for _ in range(num_envs)]
    )
