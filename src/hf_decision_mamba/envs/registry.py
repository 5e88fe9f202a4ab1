"""Resolve the names people use for environments (D4RL, ALE, short names, any Gymnasium id) to the ids we run.

Short and D4RL names (`hopper`, `walker2d-medium-v2`) map to the MuJoCo v5 tasks, Atari names to `ALE/<Game>-v5`
(evaluated under the ALE protocol), and any other id registered with Gymnasium is itself. Ids of the optional
`gymnasium-robotics` package (mazes, Adroit, Kitchen) are registered on first need when it is installed.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

EnvFamily = Literal["mujoco", "atari", "gymnasium"]

MUJOCO_ENV_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "walker": "Walker2d-v5",
}
"""Lower-case task name -> the Gymnasium id used for evaluation (the v2/v3 ids no longer exist)."""

_ATARI_PREFIXES = ("ale/", "atari-", "atari_", "atari/")
_ATARI_SUFFIXES = ("noframeskip", "deterministic")


def _squash(name: str) -> str:
    """Lower-case `name` and drop everything that is not a letter or a digit."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@functools.cache
def atari_games() -> dict[str, tuple[str, str]]:
    """Squashed game name -> (Gymnasium id `ALE/<Game>-v5`, ALE ROM name), for every ROM ale-py bundles."""
    import ale_py
    import gymnasium as gym
    from ale_py import roms

    gym.register_envs(ale_py)
    gym_ids = {
        _squash(i[len("ALE/") : -len("-v5")]): i for i in gym.registry if re.fullmatch(r"ALE/\w+-v5", i)
    }
    return {
        _squash(rom): (gym_ids[_squash(rom)], rom)
        for rom in roms.get_all_rom_ids()
        if _squash(rom) in gym_ids
    }


def _mujoco_key(env_id: str) -> str:
    """`Hopper-v5`, `hopper-medium-v2`, `mujoco/hopper/medium-v0`, `half_cheetah` -> `hopper` / `halfcheetah`."""
    name = env_id.strip().lower().removeprefix("mujoco/")
    return re.split(r"[-/]", name, maxsplit=1)[0].replace("_", "")


def _atari_key(env_id: str) -> str:
    """`ALE/Breakout-v5`, `BreakoutNoFrameskip-v4`, `atari-breakout`, `ms_pacman` -> squashed game name."""
    name = env_id.strip().lower()
    for prefix in _ATARI_PREFIXES:
        name = name.removeprefix(prefix)
    name = re.sub(r"-v\d+$", "", name)
    for suffix in _ATARI_SUFFIXES:
        name = name.removesuffix(suffix)
    return _squash(name)


ROBOTICS_HINT = ("Maze", "Adroit", "Kitchen", "Fetch", "Shadow")
"""Words of `gymnasium-robotics` ids: naming one without the package says how to get it."""


def _unknown_env_error(env_id: object) -> ValueError:
    hint = ""
    if (
        isinstance(env_id, str)
        and any(word in env_id for word in ROBOTICS_HINT)
        and not _robotics_installed()
    ):
        hint = " (mazes, Adroit and Kitchen need `pip install 'hf-decision-mamba[robotics]'`)"
    return ValueError(
        f"env_id={env_id!r} is not a registered Gymnasium environment{hint}; expected a Gymnasium id "
        "(e.g. 'CartPole-v1', 'Ant-v5'), a D4RL name such as 'hopper-medium-v2', or an Atari game bundled with "
        "ale-py (e.g. 'ALE/Breakout-v5', 'breakout', 'atari-pong')"
    )


@functools.cache
def _robotics_installed() -> bool:
    """Register `gymnasium-robotics`' environments if the package is installed; whether it is."""
    try:
        import gymnasium as gym
        import gymnasium_robotics
    except ImportError:
        return False
    gym.register_envs(gymnasium_robotics)
    return True


def _registered(env_id: str) -> bool:
    import gymnasium as gym

    return env_id in gym.registry or (_robotics_installed() and env_id in gym.registry)


def resolve_env_id(env_id: str) -> str:
    """Map a user-facing name to the Gymnasium id we evaluate in (`Hopper-v5`, `ALE/Breakout-v5`, `Ant-v5`...)."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise _unknown_env_error(env_id)
    if (key := _mujoco_key(env_id)) in MUJOCO_ENV_IDS:
        return MUJOCO_ENV_IDS[key]
    if (key := _atari_key(env_id)) in atari_games():
        return atari_games()[key][0]
    if _registered(env_id.strip()):
        return env_id.strip()
    raise _unknown_env_error(env_id)


def env_family(env_id: str) -> EnvFamily:
    """`"atari"` (ALE protocol), `"mujoco"` (Gymnasium's MuJoCo tasks) or `"gymnasium"` (any other id)."""
    import gymnasium as gym

    resolved = resolve_env_id(env_id)
    if resolved.startswith("ALE/"):
        return "atari"
    entry_point = str(gym.spec(resolved).entry_point)
    return "mujoco" if entry_point.startswith("gymnasium.envs.mujoco") else "gymnasium"


def atari_rom(env_id: str) -> str:
    """The ALE ROM name (snake_case, e.g. `ms_pacman`) of an Atari `env_id`."""
    resolved = resolve_env_id(env_id)
    if not resolved.startswith("ALE/"):
        raise ValueError(
            f"env_id={env_id!r} is not an Atari game; expected an ALE id such as 'ALE/Breakout-v5'"
        )
    return atari_games()[_atari_key(resolved)][1]
