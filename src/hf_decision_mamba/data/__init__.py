"""Offline trajectories: loading every supported source into one episode schema, normalisation, windows and the
collator that feeds `DecisionMambaModel` and `transformers.DecisionTransformerModel` alike."""

from .collator import TrajectoryCollator
from .formats import detect_format, to_canonical
from .normalization import (
    StateStats,
    compute_state_stats,
    default_rtg_scale,
    env_family,
    record_normalisation,
)
from .schema import (
    CANONICAL_COLUMNS,
    EpisodeSpec,
    canonical_features,
    check_episode,
    iter_episodes,
    to_training_dtype,
)
from .sources import dataset_environment, dataset_space_fields, embedded_datasets, load_trajectories
from .windows import TrajectoryWindowDataset, returns_to_go

__all__ = [
    "CANONICAL_COLUMNS",
    "EpisodeSpec",
    "StateStats",
    "TrajectoryCollator",
    "TrajectoryWindowDataset",
    "canonical_features",
    "check_episode",
    "compute_state_stats",
    "dataset_environment",
    "dataset_space_fields",
    "default_rtg_scale",
    "detect_format",
    "embedded_datasets",
    "env_family",
    "iter_episodes",
    "load_trajectories",
    "record_normalisation",
    "returns_to_go",
    "to_canonical",
    "to_training_dtype",
]
