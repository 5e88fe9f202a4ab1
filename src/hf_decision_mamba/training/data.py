"""The recipe's data: episodes from any supported source, cut into the map-style windows the Trainer's sampler shards."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..data import (
    EpisodeSpec,
    TrajectoryCollator,
    TrajectoryWindowDataset,
    dataset_environment,
    dataset_space_fields,
    iter_episodes,
    load_trajectories,
    to_training_dtype,
)
from .arguments import DataArguments

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Training (and optional validation) windows, their collator, and every episode's return and length."""

    train: TrajectoryWindowDataset
    validation: TrajectoryWindowDataset | None
    collator: TrajectoryCollator
    episode_returns: np.ndarray
    episode_lengths: np.ndarray

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the whole dataset (returns, lengths) and of the window counts."""
        returns = self.episode_returns
        return {
            "episodes": int(len(returns)),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "episode_length_mean": float(self.episode_lengths.mean()),
            "train_windows": len(self.train),
            "validation_windows": 0 if self.validation is None else len(self.validation),
            "returns": [round(float(value), 3) for value in returns],
        }


def infer_environment(args: DataArguments) -> tuple[str | None, dict[str, Any]]:
    """The environment a dataset was recorded in and its `gym.make` kwargs: from Minari metadata
    (`eval_env_spec`, then `env_spec`), else from the dataset's config or name (`embedded:hopper` -> `Hopper-v5`)."""
    found = dataset_environment(args.dataset, args.dataset_config)
    return (None, {}) if found is None else found


def infer_env_id(args: DataArguments) -> str | None:
    """The environment id of `infer_environment`."""
    return infer_environment(args)[0]


def data_space_fields(args: DataArguments, episodes: Any) -> dict[str, Any]:
    """`state_dim`, the action space (`act_dim`, or `n_actions`) and, for Minari, the observation layout, action
    bounds and reference scores of the data; {} for Atari frames (whose sizes the environment gives)."""
    recorded = dataset_space_fields(args.dataset, args.dataset_config)
    if recorded is not None:
        return recorded
    first = next(iter_episodes(episodes, ["observations", "actions"]), None)
    if first is None or first["observations"].dtype == np.uint8:
        return {}
    fields: dict[str, Any] = {"state_dim": int(np.prod(first["observations"].shape[1:]))}
    if first["actions"].dtype.kind in "iu":
        top = max(int(e["actions"].max(initial=0)) for e in iter_episodes(episodes, ["actions"]))
        return {**fields, "action_space": "discrete", "n_actions": top + 1}
    return {**fields, "action_space": "continuous", "act_dim": int(np.prod(first["actions"].shape[1:]))}


def is_hub_source(source: str) -> bool:
    """Whether `source` names data on the Hub: a short form (`d4rl:...`) or a repo id, not the embedded data,
    an existing local path or anything that looks like a path (`/...`, `./...`, `~/...`)."""
    if (
        source.startswith("embedded:")
        or source.startswith(("/", ".", "~"))
        or Path(source).expanduser().exists()
    ):
        return False
    return ":" in source or source.count("/") == 1


def load_episodes(args: DataArguments) -> Any:
    """Episodes of `args.dataset` in the canonical schema."""
    return load_trajectories(
        args.dataset, args.dataset_config, revision=args.dataset_revision, max_episodes=args.max_episodes
    )


def episode_statistics(episodes: Any) -> tuple[np.ndarray, np.ndarray]:
    """Undiscounted return and length of every episode (rewards checked as `to_training_dtype` checks them)."""
    rewards = [
        to_training_dtype(index, episode, EpisodeSpec())["rewards"]
        for index, episode in enumerate(iter_episodes(episodes, ["rewards"]))
    ]
    return np.array([r.sum(dtype=np.float64) for r in rewards]), np.array([len(r) for r in rewards])


def split_episodes(episodes: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """Hold out `fraction` of the episodes (at least one) for validation; streams cannot be split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction={fraction!r}: expected a number in [0, 1).")
    if fraction == 0.0:
        return episodes, None
    if not isinstance(episodes, Dataset) or len(episodes) < 2:
        logger.warning("No validation split: the dataset is streamed or has fewer than 2 episodes.")
        return episodes, None
    count = max(1, round(fraction * len(episodes)))
    split = episodes.train_test_split(test_size=count, seed=seed, shuffle=True)
    return split["train"], split["test"]


def build_training_data(
    args: DataArguments, config: Any, seed: int, validation: bool, episodes: Any = None
) -> TrainingData:
    """Window datasets for `config` (its normalisation is computed from the training episodes and recorded in it)."""
    episodes = load_episodes(args) if episodes is None else episodes
    returns, lengths = episode_statistics(episodes)
    train_episodes, validation_episodes = split_episodes(
        episodes, args.validation_fraction if validation else 0.0, seed
    )
    options = {"mode": args.window_mode, "short_episodes": args.short_episodes, "rtg_scale": args.rtg_scale}
    train = TrajectoryWindowDataset.from_config(train_episodes, config, record=True, **options)
    held_out = None
    if validation_episodes is not None:
        options["short_episodes"] = "keep"
        held_out = TrajectoryWindowDataset.from_config(validation_episodes, config, record=False, **options)
    return TrainingData(train, held_out, train.collator(), returns, lengths)


__all__ = [
    "TrainingData",
    "build_training_data",
    "episode_statistics",
    "data_space_fields",
    "infer_env_id",
    "infer_environment",
    "is_hub_source",
    "load_episodes",
    "split_episodes",
]
