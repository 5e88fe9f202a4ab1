"""Evaluation protocols: the validated settings an environment is built with, one dataclass per family."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .registry import env_family, resolve_env_id

MUJOCO_MAX_EPISODE_STEPS = 1000
"""The TimeLimit of Hopper/HalfCheetah/Walker2d, and the D4RL episode length."""
ATARI_MAX_EPISODE_STEPS = 27_000
"""Agent steps per Atari episode (108k frames at frame skip 4, the usual 30-minute cap)."""


def check_int(field: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """Raise a `ValueError` naming `field` unless `value` is an int in [minimum, maximum]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{field}={value!r} is invalid; expected an integer >= {minimum}{upper}")


def check_probability(field: str, value: Any) -> None:
    """Raise a `ValueError` naming `field` unless `value` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{field}={value!r} is invalid; expected a probability in [0, 1]")


def check_bool(field: str, value: Any) -> None:
    """Raise a `ValueError` naming `field` unless `value` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{field}={value!r} is invalid; expected True or False")


@dataclass(frozen=True)
class AtariProtocol:
    """Machado et al. (2018) protocol; `repeat_action_probability=0.0` reproduces Decision Transformer's.

    Rewards are never clipped and episodes end on game over (not on life loss), so returns are game scores.
    """

    repeat_action_probability: float = 0.25
    noop_max: int = 30
    frame_skip: int = 4
    frame_stack: int = 4
    screen_size: int = 84
    full_action_space: bool = False
    use_fire_reset: bool = False
    max_episode_steps: int = ATARI_MAX_EPISODE_STEPS

    def __post_init__(self) -> None:
        check_probability("repeat_action_probability", self.repeat_action_probability)
        check_int("noop_max", self.noop_max, 0)
        check_int("frame_skip", self.frame_skip, 1)
        check_int("frame_stack", self.frame_stack, 1)
        check_int("screen_size", self.screen_size, 8)
        check_bool("full_action_space", self.full_action_space)
        check_bool("use_fire_reset", self.use_fire_reset)
        check_int("max_episode_steps", self.max_episode_steps, 1)

    @property
    def max_num_frames(self) -> int:
        """The ALE's per-episode frame cap matching `max_episode_steps` agent steps."""
        return self.max_episode_steps * self.frame_skip

    @property
    def fps(self) -> float:
        """Agent steps per second of game time (the ALE runs at 60 frames per second)."""
        return 60.0 / self.frame_skip


@dataclass(frozen=True)
class GymnasiumProtocol:
    """Settings of any Gymnasium environment (MuJoCo or not): `gym.make(env_id, **env_kwargs)` under a
    `max_episode_steps` TimeLimit (default: `env_kwargs`' own, else the env spec's, else 1000).

    `render_*` apply to MuJoCo tasks: `render_effects=False` renders replays without shadows and floor
    reflections, 4x faster with software OpenGL (Mesa's llvmpipe, 105 -> 25 ms per 320x320 frame on a loaded
    2-core machine), for the Space. `env_kwargs` (e.g. a maze's `maze_map`, from Minari's `eval_env_spec`)
    take part in equality but not in the hash (they may hold lists).
    """

    max_episode_steps: int = MUJOCO_MAX_EPISODE_STEPS
    render_width: int = 480
    render_height: int = 480
    render_effects: bool = True
    env_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_int("max_episode_steps", self.max_episode_steps, 1)
        check_int("render_width", self.render_width, 16)
        check_int("render_height", self.render_height, 16)
        check_bool("render_effects", self.render_effects)
        if not isinstance(self.env_kwargs, dict) or "max_episode_steps" in self.env_kwargs:
            raise ValueError(
                f"env_kwargs={self.env_kwargs!r} is invalid; expected a dict of gym.make keyword arguments "
                "(max_episode_steps apart)"
            )


MujocoProtocol = GymnasiumProtocol
"""The former name of `GymnasiumProtocol` (the MuJoCo tasks were the only non-Atari ones)."""

Protocol = AtariProtocol | GymnasiumProtocol


def default_max_episode_steps(env_id: str) -> int:
    """The TimeLimit of `env_id`'s Gymnasium spec, else `MUJOCO_MAX_EPISODE_STEPS`."""
    import gymnasium as gym

    return gym.spec(resolve_env_id(env_id)).max_episode_steps or MUJOCO_MAX_EPISODE_STEPS


def make_protocol(env_id: str, **options: Any) -> Protocol:
    """Validate `options` for `env_id`'s family and return its protocol; `None` values mean the default.

    For Gymnasium envs a `max_episode_steps` inside `env_kwargs` (as Minari records it) is the default cap."""
    atari = env_family(env_id) == "atari"
    protocol_cls = AtariProtocol if atari else GymnasiumProtocol
    fields = [f.name for f in dataclasses.fields(protocol_cls)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"{unknown[0]}={options[unknown[0]]!r} is not an option of {resolve_env_id(env_id)!r}; "
            f"expected one of {fields}"
        )
    options = {name: value for name, value in options.items() if value is not None}
    if not atari:
        env_kwargs = dict(options.get("env_kwargs") or {})
        cap = env_kwargs.pop("max_episode_steps", None) or default_max_episode_steps(env_id)
        options = {"max_episode_steps": cap, **options, "env_kwargs": env_kwargs}
    return protocol_cls(**options)
