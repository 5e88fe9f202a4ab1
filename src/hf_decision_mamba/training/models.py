"""The models the recipe trains: a Decision Mamba from a preset, or `transformers`' Decision Transformer of equal size.

`DecisionTransformerModel` has no loss, so the Trainer cannot train it as is; `DecisionTransformerForTraining` is a
subclass that only adds `labels` -> `loss` (the same masked action loss as Decision Mamba), keeps every parameter
name, and saves a plain `DecisionTransformerModel` checkpoint.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    DecisionTransformerConfig,
    DecisionTransformerModel,
    PreTrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.pytorch_utils import Conv1D
from transformers.utils import ModelOutput

from ..configuration_decision_mamba import DecisionMambaConfig
from ..envs import make_env, resolve_env_id
from ..loading import load_config, load_pretrained
from ..modeling_decision_mamba import DecisionMambaModel, masked_action_loss, weight_decay_param_groups
from ..policy_decision_mamba import DecisionMambaPolicy
from ..presets import DEFAULT_TARGET_RETURNS
from ..validation_decision_mamba import check_finite_loss
from .arguments import ModelArguments, parse_overrides

# Attributes a Decision Transformer config carries on top of its own fields, so that it acts like a Decision Mamba.
ACTING_FIELDS = (
    "context_length",
    "env_id",
    "rtg_scale",
    "target_return",
    "state_mean",
    "state_std",
    "preset",
    "env_kwargs",
    "observation_layout",
    "action_low",
    "action_high",
    "ref_min_score",
    "ref_max_score",
)


@dataclass
class DecisionTransformerTrainingOutput(ModelOutput):
    """`DecisionTransformerOutput` plus the action loss."""

    loss: torch.Tensor | None = None
    action_preds: torch.Tensor | None = None
    state_preds: torch.Tensor | None = None
    return_preds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups that decay only linear/conv weights (GPT-2's `Conv1D` included); never norms, biases, embeddings."""
    return weight_decay_param_groups(model, weight_decay, (nn.Linear, nn.Conv1d, nn.Conv2d, Conv1D))


class DecisionTransformerForTraining(DecisionTransformerModel):
    """`DecisionTransformerModel` whose forward also takes `labels` and returns `loss`; weights load into a plain DT."""

    def forward(
        self,
        states: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        rewards: torch.Tensor | None = None,
        returns_to_go: torch.Tensor | None = None,
        timesteps: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DecisionTransformerTrainingOutput | tuple:
        """DT's forward; with `labels` (target actions, like `actions`) also the masked MSE `loss`."""
        output = super().forward(
            states=states,
            actions=actions,
            rewards=rewards,
            returns_to_go=returns_to_go,
            timesteps=timesteps,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        mask = torch.ones_like(labels[..., 0]) if attention_mask is None else attention_mask
        loss = None if labels is None else masked_action_loss(output.action_preds, labels, mask)
        if loss is not None:
            check_finite_loss(loss)  # a diverged run stops here, as Decision Mamba's forward does
        result = DecisionTransformerTrainingOutput(loss=loss, **output)
        return result if return_dict is not False else result.to_tuple()

    def get_optimizer_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups with DT's no-decay rule (see `decay_param_groups`)."""
        return decay_param_groups(self, weight_decay)

    def policy(self, mode: str = "window", **kwargs: Any) -> DecisionMambaPolicy:
        """A batched return-conditioned policy (window mode only: a transformer has no recurrent state)."""
        return DecisionMambaPolicy(self, mode=mode, **kwargs)

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, is_main_process: bool = True, **kwargs: Any
    ):
        """Save as a plain `DecisionTransformerModel` (its `architectures` entry), loadable without this package."""
        result = super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        self.config.architectures = [DecisionTransformerModel.__name__]
        if is_main_process:
            self.config.save_pretrained(save_directory)
        return result


def config_fields() -> set[str]:
    """Names `DecisionMambaConfig` accepts."""
    parameters = inspect.signature(DecisionMambaConfig.__init__).parameters
    return {name for name, p in parameters.items() if name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def _checked_overrides(text: str | None) -> dict[str, Any]:
    overrides = parse_overrides(text)
    unknown = sorted(set(overrides) - config_fields())
    if unknown:
        raise ValueError(
            f"config_overrides has unknown field(s) {unknown}; expected fields of DecisionMambaConfig."
        )
    return overrides


def env_config_fields(env_id: str, env_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`env_id` and the sizes of its environment (under `env_options`): for Atari the action count, for any
    other env `state_dim`, `observation_layout` and the action space with its bounds (see `envs.spaces`)."""
    from ..envs import env_family, make_protocol
    from ..evaluation.compatibility import env_space_fields

    if env_family(env_id) != "atari":
        return {"env_id": env_id, **env_space_fields(env_id, make_protocol(env_id, **(env_options or {})))}
    env = make_env(env_id, **(env_options or {}))
    try:
        return {"env_id": env_id, "action_space": "discrete", "n_actions": int(env.action_space.n)}
    finally:
        env.close()


SIZE_FIELDS = ("state_dim", "action_space", "act_dim", "n_actions", "observation_layout")
"""Fields on which the data, the environment and the config overrides must agree."""


def check_sizes_agree(sides: dict[str, dict[str, Any]]) -> None:
    """Raise a one-line `ValueError` naming both sides and their values for the first size field on which two
    of `sides` (e.g. `{"dataset 'x'": ..., "env_id 'Ant-v5'": ...}`) disagree; absent fields never disagree."""
    named = list(sides.items())
    for field in SIZE_FIELDS:
        for i, (left, a) in enumerate(named):
            for right, b in named[i + 1 :]:
                if field == "act_dim" and "discrete" in (a.get("action_space"), b.get("action_space")):
                    continue
                if a.get(field) is not None and b.get(field) is not None and a[field] != b[field]:
                    raise ValueError(
                        f"{field}: {left} has {a[field]!r} but {right} has {b[field]!r}; expected them to agree "
                        "(data recorded in that environment, or other --env_id / config_overrides)."
                    )


def _check_preset_fits(preset: str, config: DecisionMambaConfig, env_fields: dict[str, Any]) -> None:
    """A frame-stack (Atari) preset needs an Atari env, a state-vector preset any other env."""
    env_atari = "state_dim" not in env_fields
    if env_atari != (config.state_encoder == "atari_cnn"):
        preset_side = "Atari frame stacks" if config.state_encoder == "atari_cnn" else "state vectors"
        env_side = "Atari frame stacks" if env_atari else "state vectors"
        raise ValueError(
            f"preset={preset!r} is for {config.action_space} actions on {preset_side} but "
            f"env_id={env_fields['env_id']!r} has {env_fields['action_space']} actions on {env_side}; expected a "
            "preset of the environment's family."
        )


def _action_tanh(fields: dict[str, Any]) -> dict[str, Any]:
    """tanh squashes predictions into [-1, 1]: off for continuous actions whose bounds reach beyond."""
    low, high = fields.get("action_low"), fields.get("action_high")
    if fields.get("action_space") != "continuous" or low is None or high is None:
        return {}
    return {"action_tanh": bool(min(low) >= -1.0 and max(high) <= 1.0)}


def _target_for(config: DecisionMambaConfig, env_id: str) -> dict[str, Any]:
    """A preset used in another environment than its own conditions on that environment's usual target (or,
    with none known, on the data's best return)."""
    if not config.env_id or resolve_env_id(config.env_id) == resolve_env_id(env_id):
        return {}
    return {"target_return": DEFAULT_TARGET_RETURNS.get(resolve_env_id(env_id))}


def build_config(
    args: ModelArguments,
    env_id: str | None,
    env_options: dict[str, Any] | None = None,
    data_fields: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    dataset: str = "the dataset",
    env_origin: str | None = None,
) -> PreTrainedConfig:
    """The config to train: the preset with `config_overrides`, sized to the data (`data_fields`) and to
    `env_id`'s spaces, which must agree (or a saved config).

    `env_options` are the environment's protocol options (e.g. `full_action_space=True` gives 18 actions);
    `env_kwargs` its `gym.make` kwargs (from Minari metadata), recorded in the config for evaluation;
    `env_origin` says in errors where `env_id` came from (e.g. "dmamba-hopper's default")."""
    overrides = _checked_overrides(args.config_overrides)
    if args.model_name_or_path:
        config = load_config(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
        for key, value in overrides.items():
            setattr(config, key, value)
        return config
    base = DecisionMambaConfig.from_preset(args.preset, **overrides)
    sides = {f"dataset {dataset!r}": dict(data_fields or {})}
    fields = {"env_id": env_id, **(_target_for(base, env_id) if env_id is not None else {})}
    fields.update(data_fields or {})
    if env_id is not None:
        options = {**(env_options or {}), **({"env_kwargs": env_kwargs} if env_kwargs else {})}
        env_fields = env_config_fields(env_id, options)
        _check_preset_fits(args.preset, base, env_fields)
        sides[f"env_id {env_id!r}" + (f" ({env_origin})" if env_origin else "")] = env_fields
        fields.update(env_fields, env_kwargs=env_kwargs or None)
    sides["config_overrides"] = overrides
    check_sizes_agree(sides)
    base = DecisionMambaConfig.from_preset(args.preset, **{**_action_tanh(fields), **fields, **overrides})
    if args.model_type == "decision_transformer":
        return decision_transformer_config(base, args)
    return base


def decision_transformer_config(
    config: DecisionMambaConfig, args: ModelArguments
) -> DecisionTransformerConfig:
    """A `DecisionTransformerConfig` with the Decision Mamba's sizes, context and acting fields."""
    if config.is_discrete or config.state_encoder != "linear":
        raise ValueError(
            f"model_type='decision_transformer' with preset={args.preset!r}: transformers' DecisionTransformerModel "
            "takes continuous actions and state vectors; expected a MuJoCo preset, or for this one "
            "--config_overrides block_type=attention (a DT: GPT-2's attention in this model)."
        )
    return DecisionTransformerConfig(
        state_dim=config.state_dim,
        act_dim=config.act_dim,
        hidden_size=config.hidden_size,
        max_ep_len=config.max_ep_len,
        action_tanh=config.action_tanh,
        n_layer=config.num_hidden_layers,
        n_head=args.dt_num_heads,
        n_inner=config.mlp_ratio * config.hidden_size,
        activation_function=args.dt_activation_function,
        n_positions=max(1024, 3 * config.context_length),
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        initializer_range=config.initializer_range,
        bos_token_id=None,  # GPT-2's 50256 lies outside DT's one-token vocabulary: transformers warns on it
        eos_token_id=None,
        **{name: getattr(config, name) for name in ACTING_FIELDS},
    )


def build_model(config: Any, args: ModelArguments) -> PreTrainedModel:
    """A fresh model for `config` (seed first), or the weights of `args.model_name_or_path`."""
    is_dt = config.model_type == DecisionTransformerConfig.model_type
    model_class = DecisionTransformerForTraining if is_dt else DecisionMambaModel
    if args.model_name_or_path:
        if not is_dt and type(config) is not DecisionMambaConfig:
            model_class = None  # a class of the checkpoint's own code (allowed by --trust_remote_code)
        return load_pretrained(
            args.model_name_or_path,
            config=config,
            model_class=model_class,
            trust_remote_code=args.trust_remote_code,
        )
    return model_class(config)


def build_optimizer(model: PreTrainedModel, args: TrainingArguments) -> torch.optim.Optimizer:
    """The optimizer `--optim` names (AdamW by default) over the model's no-decay-aware parameter groups.

    The plain Trainer would decay `A_log`, `D`, norms, biases and embeddings; these groups do not.
    """
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_class(model.get_optimizer_param_groups(args.weight_decay), **kwargs)


__all__ = [
    "DecisionTransformerForTraining",
    "DecisionTransformerTrainingOutput",
    "build_config",
    "build_model",
    "build_optimizer",
    "decay_param_groups",
    "decision_transformer_config",
    "env_config_fields",
    "masked_action_loss",
]
