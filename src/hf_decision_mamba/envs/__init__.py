"""Environment construction in one place: MuJoCo v5 tasks and Atari games under the Machado et al. protocol."""

from .factory import build_vector_env, make_env, make_vector_env
from .protocols import (
    ATARI_MAX_EPISODE_STEPS,
    MUJOCO_MAX_EPISODE_STEPS,
    AtariProtocol,
    MujocoProtocol,
    Protocol,
    make_protocol,
)
from .registry import MUJOCO_ENV_IDS, atari_rom, env_family, resolve_env_id

__all__ = [
    "ATARI_MAX_EPISODE_STEPS",
    "MUJOCO_ENV_IDS",
    "MUJOCO_MAX_EPISODE_STEPS",
    "AtariProtocol",
    "MujocoProtocol",
    "Protocol",
    "atari_rom",
    "build_vector_env",
    "env_family",
    "make_env",
    "make_protocol",
    "make_vector_env",
    "resolve_env_id",
]
