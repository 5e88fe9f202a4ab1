"""Environment construction in one place: any Gymnasium task (flattened observations) and Atari games under the
Machado et al. protocol."""

from .factory import build_vector_env, make_env, make_vector_env
from .protocols import (
    ATARI_MAX_EPISODE_STEPS,
    MUJOCO_MAX_EPISODE_STEPS,
    AtariProtocol,
    GymnasiumProtocol,
    MujocoProtocol,
    Protocol,
    make_protocol,
)
from .registry import MUJOCO_ENV_IDS, atari_rom, env_family, resolve_env_id
from .spaces import FlattenObservations, flatten_observation, observation_layout, space_fields

__all__ = [
    "ATARI_MAX_EPISODE_STEPS",
    "MUJOCO_ENV_IDS",
    "MUJOCO_MAX_EPISODE_STEPS",
    "AtariProtocol",
    "FlattenObservations",
    "GymnasiumProtocol",
    "MujocoProtocol",
    "Protocol",
    "atari_rom",
    "build_vector_env",
    "env_family",
    "flatten_observation",
    "make_env",
    "make_protocol",
    "make_vector_env",
    "observation_layout",
    "resolve_env_id",
    "space_fields",
]
