"""Argument groups of the training recipe, parsed with `HfArgumentParser` so that every Trainer option works.

`dmamba train` has four groups: `ModelArguments`, `DataArguments`, `EnvEvaluationArguments` and
`transformers.TrainingArguments`. The chosen preset's `training` section (and a few recipe defaults such as
TensorBoard logging and SIGTERM checkpoints) become the parser's defaults, so the command line overrides them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.integrations import is_tensorboard_available

from ..presets import PRESETS, get_preset

MODEL_TYPES = ("decision_mamba", "decision_transformer")

# Defaults of the recipe that differ from `TrainingArguments`' own; the preset and the command line win.
RECIPE_DEFAULTS: dict[str, Any] = {
    "report_to": ["tensorboard"] if is_tensorboard_available() else "none",
    "logging_steps": 50,
    "save_steps": 500,
    "save_total_limit": 3,
    "enable_jit_checkpoint": True,  # SIGTERM saves a checkpoint before the process exits
    "dataloader_pin_memory": torch.cuda.is_available(),
}


@dataclass
class ModelArguments:
    """Which model to train: a Decision Mamba preset (optionally resized), or a Decision Transformer of the same size."""

    model_type: Literal["decision_mamba", "decision_transformer"] = field(
        default="decision_mamba",
        metadata={
            "help": "decision_mamba, or decision_transformer: transformers' DT with the preset's sizes."
        },
    )
    preset: str = field(
        default="dmamba-hopper",
        metadata={"help": "Architecture and training recipe of a paper.", "choices": sorted(PRESETS)},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated DecisionMambaConfig fields, e.g. 'hidden_size=64,num_hidden_layers=2'."
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from the weights (and config) of a saved model: fine-tuning."}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Let --model_name_or_path run its own code (config.json auto_map); only for sources you trust."
        },
    )
    dt_num_heads: int = field(
        default=1, metadata={"help": "Attention heads of the Decision Transformer (DT: 1)."}
    )
    dt_activation_function: str = field(
        default="relu", metadata={"help": "MLP activation of the Decision Transformer."}
    )


@dataclass
class DataArguments:
    """Where the offline trajectories come from and how they are cut into training windows."""

    dataset: str = field(
        default="embedded:hopper",
        metadata={
            "help": "embedded:hopper, a Hub dataset (with --dataset_config), a short form such as "
            "d4rl:hopper-medium-v2, jat:breakout or minari:mujoco/hopper/medium-v0, or a local folder/file."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Git revision of a Hub dataset."})
    max_episodes: int | None = field(default=None, metadata={"help": "Use only the first N episodes."})
    window_mode: Literal["window", "trajectory"] = field(
        default="window",
        metadata={
            "help": "window: one window per step (DT); trajectory: consecutive chunks (DeMa RNN-like)."
        },
    )
    short_episodes: Literal["skip", "keep", "error"] = field(
        default="skip", metadata={"help": "What to do with episodes shorter than the context (window mode)."}
    )
    rtg_scale: float | None = field(
        default=None,
        metadata={"help": "Divide returns-to-go by this (default: the preset's, 1000 MuJoCo, 1 Atari)."},
    )
    validation_fraction: float = field(
        default=0.05,
        metadata={"help": "Episodes held out for eval_loss, used only when --eval_strategy is not 'no'."},
    )


@dataclass
class EnvEvaluationArguments:
    """Scoring the policy in its real environment during and after training (rank 0 only, same seeds each time)."""

    env_id: str | None = field(
        default=None,
        metadata={"help": "Environment (default: the preset's env_id, else inferred from --dataset)."},
    )
    target_return: list[float] | None = field(
        default=None,
        metadata={
            "help": "Return(s) to condition on (default: config.target_return, else the dataset's best return)."
        },
    )
    env_eval: bool = field(
        default=True,
        metadata={
            "help": "Evaluate in the environment (--no_env_eval: never, not even the final model; to evaluate "
            "only at the end use --env_eval_steps 0)."
        },
    )
    env_eval_episodes: int = field(default=10, metadata={"help": "Episodes per evaluation, run in parallel."})
    env_eval_seed: int = field(default=0, metadata={"help": "Episode i starts from seed env_eval_seed + i."})
    env_eval_mode: Literal["window", "recurrent"] = field(
        default="window", metadata={"help": "Inference mode."}
    )
    env_eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate every N steps; 0: only the final model, at the end (default: with "
            "--eval_strategy/--eval_steps). The final model is always evaluated, once."
        },
    )
    env_eval_max_episode_steps: int | None = field(
        default=None, metadata={"help": "Cap on episode length (default: 1000 MuJoCo, 27000 Atari)."}
    )
    record_replay: bool = field(default=True, metadata={"help": "Record replay.mp4 of the final evaluation."})
    repeat_action_probability: float | None = field(
        default=None,
        metadata={"help": "Atari: sticky actions when evaluating (default 0.25; DT's protocol: 0)."},
    )
    full_action_space: bool = field(
        default=False,
        metadata={"help": "Atari: act in all 18 ALE actions instead of the game's minimal set."},
    )

    def env_options(self) -> dict[str, Any]:
        """The environment protocol options that were set (Atari only; a MuJoCo env rejects them by name)."""
        options = {"repeat_action_probability": self.repeat_action_probability}
        options["full_action_space"] = self.full_action_space or None
        return {name: value for name, value in options.items() if value is not None}


@dataclass
class RecipeTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` plus what the recipe does with an output folder that holds a run."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Remove the run already in --output_dir (model, checkpoints, records) and start clean; "
            "without it a rerun must use the same data and architecture (run_record.json)."
        },
    )


@dataclass
class RecipeArguments:
    """All four groups of one training run."""

    model: ModelArguments
    data: DataArguments
    evaluation: EnvEvaluationArguments
    training: TrainingArguments

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the run (hub tokens redacted by `TrainingArguments.to_dict`)."""
        return {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "evaluation": dataclasses.asdict(self.evaluation),
            "training": json.loads(self.training.to_json_string()),
        }


GROUPS = (ModelArguments, DataArguments, EnvEvaluationArguments, RecipeTrainingArguments)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower()


def default_output_dir(model: str, preset: str, dataset: str, dataset_config: str | None) -> str:
    """`outputs/<model or preset>-<dataset>`: a readable, ignored-by-git home for one run."""
    name = preset if model == "decision_mamba" else f"dt-{preset}"
    data = Path(dataset.split(":", 1)[-1]).name + (f"-{dataset_config}" if dataset_config else "")
    return str(Path("outputs") / _slug(f"{name}-{data}"))


def _training_fields() -> set[str]:
    return {item.name for item in dataclasses.fields(TrainingArguments) if item.init}


def parser_defaults(preset: str, model_type: str, dataset: str, dataset_config: str | None) -> dict[str, Any]:
    """Recipe defaults, overridden by the preset's `training` section, plus the default output folder."""
    training = {
        key: value for key, value in get_preset(preset)["training"].items() if key in _training_fields()
    }
    return {
        **RECIPE_DEFAULTS,
        **training,
        "output_dir": default_output_dir(model_type, preset, dataset, dataset_config),
    }


def build_parser() -> HfArgumentParser:
    """The `HfArgumentParser` over the four argument groups (without preset defaults)."""
    return HfArgumentParser(GROUPS, prog="dmamba train", description=__doc__.split("\n\n")[0])


def _read_arguments_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def _defaults_for(values: dict[str, Any]) -> dict[str, Any]:
    """`parser_defaults` for the preset, model type and dataset named in `values` (else the field defaults)."""
    return parser_defaults(
        values.get("preset", ModelArguments.preset),
        values.get("model_type", ModelArguments.model_type),
        values.get("dataset", DataArguments.dataset),
        values.get("dataset_config"),
    )


def parse_train_args(
    argv: list[str] | None = None, defaults: dict[str, Any] | None = None
) -> RecipeArguments:
    """Parse `dmamba train` arguments (or one .json/.yaml file of them); preset values become defaults.

    `defaults` are applied on top of the preset's (the quick start uses them); the command line wins over both.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = defaults or {}
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        values = {**defaults, **_read_arguments_file(argv[0])}
        return RecipeArguments(*parser.parse_dict({**_defaults_for(values), **values}))
    parser.set_defaults(**defaults)
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(**{**_defaults_for(vars(known)), **defaults})
    return RecipeArguments(*parser.parse_args_into_dataclasses(argv))


def parse_overrides(text: str | None) -> dict[str, Any]:
    """`"hidden_size=64,state_shape=[4,84,84],embedding_size=null"` -> a dict of JSON values (else strings);
    `True` / `False` in any case are booleans, as transformers' `update_from_string` reads them."""
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in re.split(r",(?=\s*\w+\s*=)", text or ""))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config_overrides item {item!r}: expected key=value.")
        if raw.strip().lower() in ("true", "false"):
            overrides[key.strip()] = raw.strip().lower() == "true"
            continue
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw.strip()
    return overrides


__all__ = [
    "MODEL_TYPES",
    "DataArguments",
    "EnvEvaluationArguments",
    "ModelArguments",
    "RecipeArguments",
    "RecipeTrainingArguments",
    "build_parser",
    "default_output_dir",
    "parse_overrides",
    "parse_train_args",
]
