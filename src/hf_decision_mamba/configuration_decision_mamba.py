"""Configuration of Decision Mamba: architecture switches for every paper variant plus what acting needs."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from typing import Any

from transformers import GenerationConfig, PreTrainedConfig
from transformers.utils import logging

from .presets import get_preset

logger = logging.get_logger(__name__)

BLOCK_TYPES = ("dmamba", "dema", "gloma", "attention")
TOKEN_LAYOUTS = ("rsa", "ras", "concat")
NORM_TYPES = ("layer_norm", "rms_norm")
STATE_ENCODERS = ("linear", "atari_cnn")
ACTION_SPACES = ("continuous", "discrete")
SCAN_BACKENDS = ("auto", "cuda", "fused_cpu", "torch")
BOOL_FIELDS = (
    "action_tanh",
    "use_mlp",
    "use_timestep_embedding",
    "residual_in_fp32",
    "use_bias",
    "use_conv_bias",
)
# torch.finfo(torch.float32).max: states are normalised and returns scaled in float32.
FLOAT32_MAX = 3.4028234663852886e38


def _check_choice(field: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"DecisionMambaConfig.{field}={value!r}: expected one of {list(choices)}.")


def _is_float32(value: object) -> bool:
    """Whether `value` is a real number that stays finite in float32 (NaN fails the comparison)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT32_MAX


def _check_bool(field: str, value: object) -> None:
    # A string such as "False" would pass every truth test as True.
    if not isinstance(value, bool):
        raise ValueError(f"DecisionMambaConfig.{field}={value!r}: expected true or false (a boolean).")


def _check_positive(field: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"DecisionMambaConfig.{field}={value!r}: expected a positive integer.")


# Keys that transformers itself writes to or reads from a `config.json` (besides the dataclass fields of
# `PreTrainedConfig`, its `to_dict()` and the generation parameters it drops), including v4-era ones.
TRANSFORMERS_KEYS = (
    "auto_map",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "name_or_path",
    "num_labels",
    "attn_implementation",
    "experts_implementation",
    "output_attentions",
    "per_layer_config",
    "rope_scaling",
    "rope_theta",
    "tie_word_embeddings",
    "torchscript",
    "use_bfloat16",
    "pruned_heads",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "tf_legacy_loss",
    "quantization_config",
)
# Fields a saved config must carry: their defaults would silently build another model.
REQUIRED_SAVED_FIELDS = {
    "state_dim": "the size of one (flattened) state, e.g. 11 for Hopper",
    "act_dim": "the size of one continuous action, e.g. 3 for Hopper",
    "hidden_size": "the width of the trained model, e.g. 128",
    "num_hidden_layers": "the number of blocks of the trained model, e.g. 3",
}


@functools.cache
def _transformers_keys() -> frozenset[str]:
    """Every key transformers may pass to a config's `__init__` (never warned about)."""
    keys = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    keys |= set(PreTrainedConfig().to_dict()) | set(GenerationConfig().to_dict()) | set(TRANSFORMERS_KEYS)
    return frozenset(keys)


def _check_required(config_dict: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Raise naming the first field that a saved config lacks (and that the load's keyword arguments lack too)."""
    present = set(config_dict) | set(overrides)
    for field, meaning in REQUIRED_SAVED_FIELDS.items():
        if field == "state_dim" and config_dict.get("state_shape") is not None:
            continue  # derived from state_shape
        if field == "act_dim" and config_dict.get("action_space") == "discrete":
            continue  # set from n_actions
        if field not in present:
            raise ValueError(
                f"DecisionMambaConfig: the saved config (config.json) has no {field!r}; expected {meaning} "
                f"(save_pretrained always writes it)."
            )


class DecisionMambaConfig(PreTrainedConfig):
    r"""Configuration of [`DecisionMambaModel`].

    Field names follow `DecisionTransformerConfig` and `MambaConfig` where they overlap. A checkpoint carries
    everything needed to act: action space, state encoder, context, normalisation, return scale and env id.

    Args:
        state_dim: Size of a (flattened) state. For `state_encoder="atari_cnn"` it is `prod(state_shape)`.
        act_dim: Size of a continuous action, or the number of discrete actions (set from `n_actions`).
        action_space: `"continuous"` (actions are float vectors, MSE loss) or `"discrete"` (integer actions,
            cross-entropy on logits).
        n_actions: Number of discrete actions (required when `action_space="discrete"`).
        action_tanh: Squash continuous action predictions with tanh (DT's default for MuJoCo).
        state_encoder: `"linear"` for state vectors or `"atari_cnn"` for DT's Nature-CNN over uint8 frame stacks.
        state_shape: Shape of one state, e.g. `[4, 84, 84]` for Atari; defaults to `[state_dim]`.
        hidden_size: Width of the residual stream (Mamba's `d_model`).
        embedding_size: Width of the token embeddings before the projection to `hidden_size` (DeMa embeds at
            128 and runs at 64); `None` means `hidden_size` and no projection.
        num_hidden_layers: Number of blocks.
        block_type: `"dmamba"` (pre-norm Mamba then optional MLP), `"dema"` (norm + Mamba only) or `"gloma"`
            (MambaDM: global Mamba + local Mamba over sub-sequences, added, then a feed-forward network).
            `"attention"` puts GPT-2's causal self-attention where the Mamba mixer is: a Decision Transformer
            trained by the same code, the baseline for inputs `transformers`' DT cannot take (Atari frames,
            discrete actions). It has no recurrent state, so it acts in window mode only.
        num_attention_heads: Heads of the `"attention"` mixer (DT's `n_head`, 1 by default); it must divide
            `hidden_size`. Unused by the Mamba block types.
        token_layout: `"rsa"` (DT: R_t, s_t, a_t, act from the s_t token), `"ras"` (DeMa B3LD: R_t, a_{t-1},
            s_t, act from the last token) or `"concat"` (DeMa BL3D: the three embeddings of (R_t, a_{t-1}, s_t)
            concatenated along features, one token per step).
        norm_type: `"layer_norm"` or `"rms_norm"`.
        use_mlp: Add the 4x GELU MLP after the mixer (DMamba, GLoMa's feed-forward). DeMa has none.
        mlp_ratio: MLP width as a multiple of `hidden_size`.
        use_timestep_embedding: Add a learned embedding of the episode timestep to every token (DT, DMamba). The
            MuJoCo Decision Mamba presets turn it off: with it the model over-fits with longer training.
        residual_in_fp32: Keep the residual stream in float32 under mixed precision (DeMa).
        local_window: GLoMa's local sub-sequence length, in timesteps (1 = one timestep's tokens). Chunks are
            aligned to absolute episode timesteps, so padding and sliding windows do not move them.
        state_size, conv_kernel, expand, time_step_rank, time_step_min, time_step_max, time_step_floor,
        use_bias, use_conv_bias: Mamba mixer settings, as in `MambaConfig`.
        dropout: Dropout on embeddings and block outputs.
        layer_norm_epsilon: Epsilon of the norms.
        initializer_range: Std of the normal init of linear and embedding weights.
        context_length: Number of timesteps K in a window (DT's `max_length`, which v5 configs cannot carry).
        max_ep_len: Number of timestep embeddings (longest episode).
        state_mean, state_std: State normalisation statistics, applied by the policy when acting.
        rtg_scale: Returns-to-go are divided by this (1000 for MuJoCo, 1 for Atari).
        target_return: Default return to condition on when acting (in environment units).
        env_id: Gymnasium / ALE id of the environment the policy acts in.
        env_kwargs: `gym.make` keyword arguments of that environment (e.g. a maze's `maze_map`, or
            `max_episode_steps`), as Minari's `eval_env_spec` records them.
        observation_layout: How Dict/Tuple/image observations are flattened into `state_dim` entries: a list of
            `[path, shape]` (Dict keys sorted, recursively); `None` for flat vector observations.
        action_low, action_high: Bounds of continuous actions (the environment clips to them).
        ref_min_score, ref_max_score: Returns mapped to normalised scores 0 and 100 (Minari's references);
            `None` where the dataset has none.
        scan_backend: `"auto"`, `"cuda"` (mamba-ssm kernels), `"fused_cpu"` or `"torch"`.
        preset: Name of the preset this config was built from, if any.
    """

    model_type = "decision_mamba"

    def __init__(
        self,
        state_dim: int = 17,
        act_dim: int = 6,
        action_space: str = "continuous",
        n_actions: int | None = None,
        action_tanh: bool = True,
        state_encoder: str = "linear",
        state_shape: list[int] | None = None,
        hidden_size: int = 128,
        embedding_size: int | None = None,
        num_hidden_layers: int = 3,
        block_type: str = "dmamba",
        num_attention_heads: int = 1,
        token_layout: str = "rsa",
        norm_type: str = "layer_norm",
        use_mlp: bool = True,
        mlp_ratio: int = 4,
        use_timestep_embedding: bool = True,
        residual_in_fp32: bool = False,
        local_window: int = 1,
        state_size: int = 16,
        conv_kernel: int = 4,
        expand: int = 2,
        time_step_rank: int | str = "auto",
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        dropout: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        context_length: int = 20,
        max_ep_len: int = 4096,
        state_mean: list[float] | None = None,
        state_std: list[float] | None = None,
        rtg_scale: float = 1000.0,
        target_return: float | None = None,
        env_id: str | None = None,
        env_kwargs: dict | None = None,
        observation_layout: list | None = None,
        action_low: list[float] | None = None,
        action_high: list[float] | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        scan_backend: str = "auto",
        preset: str | None = None,
        **kwargs,
    ):
        self.action_space = action_space
        self.n_actions = n_actions
        self.state_encoder = state_encoder
        self.state_shape = list(state_shape) if state_shape is not None else None
        if self.state_shape is not None:
            state_dim = math.prod(self.state_shape)
        self.state_dim = state_dim
        self.act_dim = n_actions if action_space == "discrete" and n_actions is not None else act_dim
        self.action_tanh = action_tanh
        self.hidden_size = hidden_size
        self.embedding_size = embedding_size
        self.num_hidden_layers = num_hidden_layers
        self.block_type = block_type
        self.num_attention_heads = num_attention_heads
        self.token_layout = token_layout
        self.norm_type = norm_type
        self.use_mlp = use_mlp
        self.mlp_ratio = mlp_ratio
        self.use_timestep_embedding = use_timestep_embedding
        self.residual_in_fp32 = residual_in_fp32
        self.local_window = local_window
        self.state_size = state_size
        self.conv_kernel = conv_kernel
        self.expand = expand
        self.time_step_rank = math.ceil(hidden_size / 16) if time_step_rank == "auto" else time_step_rank
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.use_bias = use_bias
        self.use_conv_bias = use_conv_bias
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.context_length = context_length
        self.max_ep_len = max_ep_len
        self.state_mean = list(state_mean) if state_mean is not None else None
        self.state_std = list(state_std) if state_std is not None else None
        self.rtg_scale = rtg_scale
        self.target_return = target_return
        self.env_id = env_id
        self.env_kwargs = env_kwargs
        self.observation_layout = observation_layout
        self.action_low = action_low
        self.action_high = action_high
        self.ref_min_score = ref_min_score
        self.ref_max_score = ref_max_score
        self.scan_backend = scan_backend
        self.preset = preset
        self._warn_unknown(kwargs)
        super().__init__(**kwargs)
        self.validate_fields()

    @classmethod
    def _field_names(cls) -> list[str]:
        """The fields of this config: its `__init__` parameters, without `self` and `**kwargs`."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @classmethod
    def _warn_unknown(cls, kwargs: dict[str, Any]) -> None:
        """Log a warning for each keyword that is neither a field nor a transformers key (a likely typo)."""
        known = _transformers_keys()
        for key in kwargs:
            if key.startswith("_") or key in known:
                continue
            closest = difflib.get_close_matches(key, cls._field_names(), n=1)
            hint = f"did you mean {closest[0]!r}?" if closest else f"expected one of {cls._field_names()}."
            logger.warning(f"DecisionMambaConfig: unknown field {key!r} is ignored by the model; {hint}")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> DecisionMambaConfig:
        """`PreTrainedConfig.from_dict`, after checking that the saved config has the fields that size the model."""
        _check_required(config_dict, kwargs)
        return super().from_dict(config_dict, **kwargs)

    @property
    def intermediate_size(self) -> int:
        """Inner width of each Mamba mixer (`expand * hidden_size`)."""
        return self.expand * self.hidden_size

    @property
    def token_embedding_size(self) -> int:
        """Width of the per-modality embeddings (before any projection to `hidden_size`)."""
        return self.embedding_size or self.hidden_size

    @property
    def tokens_per_step(self) -> int:
        """Tokens the sequence model sees per timestep: 3 for the interleaved layouts, 1 for `concat`."""
        return 1 if self.token_layout == "concat" else 3

    @property
    def is_discrete(self) -> bool:
        return self.action_space == "discrete"

    def validate_fields(self) -> None:
        """Raise a `ValueError` naming the field, the value and what is expected for any inconsistent field."""
        _check_choice("block_type", self.block_type, BLOCK_TYPES)
        _check_choice("token_layout", self.token_layout, TOKEN_LAYOUTS)
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("state_encoder", self.state_encoder, STATE_ENCODERS)
        _check_choice("action_space", self.action_space, ACTION_SPACES)
        _check_choice("scan_backend", self.scan_backend, SCAN_BACKENDS)
        for field in (
            "state_dim",
            "act_dim",
            "hidden_size",
            "num_hidden_layers",
            "state_size",
            "conv_kernel",
        ):
            _check_positive(field, getattr(self, field))
        for field in ("expand", "context_length", "max_ep_len", "local_window", "mlp_ratio"):
            _check_positive(field, getattr(self, field))
        _check_positive("num_attention_heads", self.num_attention_heads)
        for field in BOOL_FIELDS:
            _check_bool(field, getattr(self, field))
        if self.block_type == "attention" and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DecisionMambaConfig.num_attention_heads={self.num_attention_heads}: expected a divisor of "
                f"hidden_size={self.hidden_size} (block_type='attention' splits it into equal heads)."
            )
        if self.is_discrete:
            _check_positive("n_actions", self.n_actions)
        if self.state_encoder == "atari_cnn" and self.state_shape != [4, 84, 84]:
            raise ValueError(
                f"DecisionMambaConfig.state_shape={self.state_shape!r}: the atari_cnn encoder expects [4, 84, 84]."
            )
        for field in ("state_mean", "state_std"):
            value = getattr(self, field)
            if value is None:
                continue
            if len(value) != self.state_dim:
                raise ValueError(
                    f"DecisionMambaConfig.{field} has {len(value)} entries: expected state_dim={self.state_dim}."
                )
            bad = next((i for i, entry in enumerate(value) if not _is_float32(entry)), None)
            if bad is not None:
                raise ValueError(
                    f"DecisionMambaConfig.{field}[{bad}]={value[bad]!r}: expected a finite number within float32's "
                    f"range (|x| <= {FLOAT32_MAX:.3g})."
                )
        for field in ("action_low", "action_high"):
            value = getattr(self, field)
            if value is not None and not self.is_discrete and len(value) != self.act_dim:
                raise ValueError(
                    f"DecisionMambaConfig.{field} has {len(value)} entries: expected act_dim={self.act_dim}."
                )
        if self.state_std is not None and min(self.state_std) <= 0:
            raise ValueError(
                f"DecisionMambaConfig.state_std has a non-positive entry: {min(self.state_std)}."
            )
        if not (_is_float32(self.rtg_scale) and self.rtg_scale > 0):
            raise ValueError(
                f"DecisionMambaConfig.rtg_scale={self.rtg_scale!r}: expected a positive number within float32's range."
            )
        if self.target_return is not None and not _is_float32(self.target_return):
            raise ValueError(
                f"DecisionMambaConfig.target_return={self.target_return!r}: expected a finite number within "
                "float32's range."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DecisionMambaConfig:
        """Build the config of a named paper preset (see `hf_decision_mamba.presets.PRESETS`), then apply overrides."""
        fields = get_preset(name)["config"]
        fields.update(overrides)
        return cls(preset=name, **fields)


__all__ = ["DecisionMambaConfig"]
