"""The training recipe: `HfArgumentParser` argument groups, model/data/optimizer builders, the Trainer with atomic
checkpoints and allow-listed pushes, and `run_training`, which `dmamba train` and `dmamba quickstart` call."""

from .arguments import (
    MODEL_TYPES,
    DataArguments,
    EnvEvaluationArguments,
    ModelArguments,
    RecipeArguments,
    parse_overrides,
    parse_train_args,
)
from .data import TrainingData, build_training_data, infer_env_id
from .models import (
    DecisionTransformerForTraining,
    build_config,
    build_model,
    build_optimizer,
    decay_param_groups,
    decision_transformer_config,
)
from .recipe import (
    SIGTERM_EXIT_CODE,
    Run,
    TrainingResult,
    build_trainer,
    prepare_run,
    resolve_resume,
    run_training,
    seed_everything,
    train_and_finish,
)
from .trainer import DecisionTrainer, is_complete_checkpoint, last_complete_checkpoint

__all__ = [
    "MODEL_TYPES",
    "SIGTERM_EXIT_CODE",
    "DataArguments",
    "DecisionTrainer",
    "DecisionTransformerForTraining",
    "EnvEvaluationArguments",
    "ModelArguments",
    "RecipeArguments",
    "Run",
    "TrainingData",
    "TrainingResult",
    "build_config",
    "build_model",
    "build_optimizer",
    "build_trainer",
    "build_training_data",
    "decay_param_groups",
    "decision_transformer_config",
    "infer_env_id",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "parse_overrides",
    "parse_train_args",
    "prepare_run",
    "resolve_resume",
    "run_training",
    "seed_everything",
    "train_and_finish",
]
