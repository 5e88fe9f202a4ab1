"""Whether a model can act in the environment it is about to be evaluated in: observations and action set.

A checkpoint trained on one task and evaluated in another (other state or action sizes, another observation
layout), or trained on one Atari game and evaluated on another (or with the full 18-action set instead of the
game's minimal one) would otherwise play silently with the wrong meaning of every action.
"""

from __future__ import annotations

from typing import Any

from ..envs.protocols import AtariProtocol, GymnasiumProtocol, Protocol
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
        _check_gymnasium(config, resolve_env_id(env_id), protocol)


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


def env_space_fields(env_id: str, protocol: GymnasiumProtocol) -> dict[str, Any]:
    """`state_dim`, `observation_layout` and action fields of a Gymnasium env under `protocol` (see `spaces`)."""
    import gymnasium as gym

    from ..envs.spaces import space_fields

    env = gym.make(env_id, **protocol.env_kwargs)
    try:
        return space_fields(env.observation_space, env.action_space)
    finally:
        env.close()


def _check_gymnasium(config: Any, env_id: str, protocol: GymnasiumProtocol) -> None:
    """The model's state vector, observation layout and action space against the env's, naming both sides."""
    env = env_space_fields(env_id, protocol)
    model_kind = "discrete" if _is_discrete(config) else "continuous"
    if model_kind != env["action_space"]:
        raise ValueError(
            f"action_space={model_kind!r}: the model predicts {model_kind} actions but {env_id} takes "
            f"{env['action_space']} ones; expected a model trained on this task"
        )
    if getattr(config, "state_encoder", "linear") != "linear":
        raise ValueError(
            f"state_encoder={config.state_encoder!r}: the model reads Atari frame stacks but {env_id} has "
            "state vectors; expected a model with the linear state encoder"
        )
    expected = {"state_dim": env["state_dim"]}
    expected.update(
        {"n_actions": env["n_actions"]} if model_kind == "discrete" else {"act_dim": env["act_dim"]}
    )
    for field, size in expected.items():
        value = _n_actions(config) if field == "n_actions" else getattr(config, field, size)
        if value != size:
            raise ValueError(
                f"{field}={value}: the model does not fit {env_id}, whose {field} is {size}; "
                "expected a model trained on this task"
            )
    layout = getattr(config, "observation_layout", None)
    if layout is not None and env["observation_layout"] is not None and layout != env["observation_layout"]:
        raise ValueError(
            f"observation_layout={layout}: the model reads observations laid out otherwise than {env_id}'s "
            f"{env['observation_layout']}; expected a model trained on this task"
        )
