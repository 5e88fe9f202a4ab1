"""Whether a model can act in the environment it is about to be evaluated in: observations and action set.

A checkpoint trained on one Atari game and evaluated on another (or with the full 18-action set instead of the
game's minimal one) would otherwise play silently with the wrong meaning of every action.
"""

from __future__ import annotations

from typing import Any

from ..envs.protocols import AtariProtocol, MujocoProtocol, Protocol
from ..envs.registry import env_family, resolve_env_id


def model_config(model_or_policy: Any) -> Any | None:
    """The config of a model, or of the model behind a policy; None for plain policies."""
    model = getattr(model_or_policy, "model", model_or_policy)
    return getattr(model, "config", None)


def check_model_fits_env(model_or_policy: Any, env_id: str, protocol: Protocol) -> None:
    """Raise a `ValueError` naming the field when the model's states or actions do not fit `env_id`.

    Models whose config does not declare `act_dim` (plain policies, stand-ins) are not checked.
    """
    config = model_config(model_or_policy)
    if getattr(config, "act_dim", None) is None:
        return
    if isinstance(protocol, AtariProtocol):
        _check_atari(config, resolve_env_id(env_id), protocol)
    else:
        _check_mujoco(config, resolve_env_id(env_id), protocol)


def _is_discrete(config: Any) -> bool:
    return getattr(config, "action_space", "continuous") == "discrete"


def _n_actions(config: Any) -> int:
    return int(getattr(config, "n_actions", None) or config.act_dim)


def _model_game(config: Any) -> str | None:
    """The Atari game the model was trained on, from `config.env_id`, if it names one."""
    try:
        game = getattr(config, "env_id", None)
        return resolve_env_id(game) if game and env_family(game) == "atari" else None
    except ValueError:
        return None


def _model_action_set(config: Any) -> tuple[tuple[str, ...], str] | None:
    """The action names the model was trained with and a description, when its game is known."""
    from ..envs.atari import atari_action_meanings

    game, count = _model_game(config), _n_actions(config)
    if game is None:
        return None
    for full, kind in ((False, "minimal"), (True, "full")):
        names = atari_action_meanings(game, full)
        if len(names) == count:
            return names, f"{game}'s {kind} action set"
    return None


def _describe(names: tuple[str, ...]) -> str:
    return f"{len(names)} actions ({', '.join(names)})"


def _check_atari(config: Any, env_id: str, protocol: AtariProtocol) -> None:
    from ..envs.atari import atari_action_meanings

    if not _is_discrete(config):
        raise ValueError(
            f"action_space={getattr(config, 'action_space', 'continuous')!r}: the model predicts continuous "
            f"actions (act_dim={config.act_dim}) but {env_id} takes discrete ones; expected a model trained "
            "on an Atari game"
        )
    frames = (protocol.frame_stack, protocol.screen_size, protocol.screen_size)
    shape = getattr(config, "state_shape", None)
    if shape is None or tuple(shape) != frames:
        raise ValueError(
            f"state_shape={shape!r}: the model reads other observations than {env_id}'s {frames} uint8 frame "
            "stacks; expected a model with the atari_cnn state encoder"
        )
    env_actions = atari_action_meanings(env_id, protocol.full_action_space)
    trained = _model_action_set(config)
    count = _n_actions(config)
    if (trained is None and count == len(env_actions)) or (trained is not None and trained[0] == env_actions):
        return
    model_side = f"{count} actions" if trained is None else f"{trained[1]} of {_describe(trained[0])}"
    hint = " (pass full_action_space=True / --full_action_space)" if count == 18 else ""
    raise ValueError(
        f"n_actions={count}: the model acts in {model_side} but {env_id} with "
        f"full_action_space={protocol.full_action_space} has {_describe(env_actions)}; expected the game and "
        f"action set the model was trained on{hint}"
    )


def _check_mujoco(config: Any, env_id: str, protocol: MujocoProtocol) -> None:
    from ..envs.mujoco import make_mujoco_env

    if _is_discrete(config) or getattr(config, "state_encoder", "linear") != "linear":
        raise ValueError(
            f"action_space={getattr(config, 'action_space', None)!r}, state_encoder="
            f"{getattr(config, 'state_encoder', None)!r}: the model is an Atari model but {env_id} has "
            "continuous actions and state vectors; expected a model trained on a MuJoCo task"
        )
    env = make_mujoco_env(env_id, protocol)
    expected = {"state_dim": env.observation_space.shape[0], "act_dim": env.action_space.shape[0]}
    env.close()
    for field, size in expected.items():
        if getattr(config, field, size) != size:
            raise ValueError(
                f"{field}={getattr(config, field)}: the model does not fit {env_id}, whose {field} is {size}; "
                "expected a model trained on this task"
            )
