"""The episode formats found on the Hub, detected from their columns and converted to the canonical schema."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from datasets import Dataset, Features, IterableDataset

from .atari import decode_stack, split_stacks
from .schema import (
    ACTIONS,
    CANONICAL_COLUMNS,
    OBSERVATIONS,
    REWARDS,
    TERMINATIONS,
    TRUNCATIONS,
    canonical_features,
)

AnyDataset = Dataset | IterableDataset


def _last_step(length: int) -> np.ndarray:
    return np.arange(length) == length - 1


def _truncations_from_terminations(terminations: list[list[bool]]) -> dict[str, list[np.ndarray]]:
    """D4RL marks only true terminals; an episode that ends without one was cut (a timeout)."""
    out = []
    for done in terminations:
        done = np.asarray(done, dtype=bool)
        out.append(_last_step(len(done)) & ~done[-1:] if len(done) else done)
    return {TRUNCATIONS: out}


def convert_gym_replay(dataset: AnyDataset) -> AnyDataset:
    """D4RL as hosted by `edbeeching/decision_transformer_gym_replay`: `dones` -> terminations (+ truncations)."""
    dataset = dataset.rename_column("dones", TERMINATIONS)
    features = None
    if dataset.features is not None:
        features = Features(
            {**dataset.features, TRUNCATIONS: canonical_features(atari=False, discrete=False)[TRUNCATIONS]}
        )
    return dataset.map(
        _truncations_from_terminations, input_columns=[TERMINATIONS], batched=True, features=features
    )


def jat_atari_episode(row: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
    """One `jat-project/jat-dataset` Atari episode (PNG 4-frame stacks) in the canonical Atari form."""
    if not len(row["image_observations"]):
        raise ValueError(f"episode {index}: 'image_observations' is empty; expected at least one step.")
    stacks = np.stack([decode_stack(image) for image in row["image_observations"]])
    length = len(row["discrete_actions"])
    return {
        **split_stacks(stacks, index),
        ACTIONS: np.asarray(row["discrete_actions"], dtype=np.int64),
        REWARDS: np.asarray(row["rewards"], dtype=np.float32),
        TERMINATIONS: _last_step(length),  # JAT episodes run to game over
        TRUNCATIONS: np.zeros(length, dtype=bool),
    }


def convert_jat_atari(dataset: AnyDataset) -> AnyDataset:
    """Decode JAT's PNG stacks (lazily when streaming) into frames stored once."""
    return dataset.map(
        jat_atari_episode,
        with_indices=True,
        remove_columns=["image_observations", "discrete_actions"],
        features=canonical_features(atari=True, discrete=True),
    )


@dataclasses.dataclass(frozen=True)
class EpisodeFormat:
    """A known on-Hub episode layout: the columns that identify it and its converter to the canonical schema."""

    name: str
    columns: tuple[str, ...]
    convert: Callable[[AnyDataset], AnyDataset] | None

    def matches(self, columns: Iterable[str]) -> bool:
        return set(self.columns) <= set(columns)


FORMATS = (
    EpisodeFormat("canonical", CANONICAL_COLUMNS, None),
    EpisodeFormat(
        "gym_replay (D4RL, edbeeching/decision_transformer_gym_replay)",
        (OBSERVATIONS, ACTIONS, REWARDS, "dones"),
        convert_gym_replay,
    ),
    EpisodeFormat(
        "jat_atari (jat-project/jat-dataset)",
        ("image_observations", "discrete_actions", REWARDS),
        convert_jat_atari,
    ),
)


def detect_format(columns: Iterable[str], where: str = "dataset") -> EpisodeFormat:
    """The format whose columns are all present; otherwise a `ValueError` naming what the closest one lacks."""
    columns = list(columns)
    for episode_format in FORMATS:
        if episode_format.matches(columns):
            return episode_format
    closest = max(FORMATS, key=lambda f: len(set(f.columns) & set(columns)))
    missing = [name for name in closest.columns if name not in columns]
    known = "; ".join(f"{f.name}: {list(f.columns)}" for f in FORMATS)
    raise ValueError(
        f"{where} has columns {columns}, missing {missing} for the {closest.name} format; expected one of: {known}."
    )


def _column_names(dataset: AnyDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())  # a stream without declared features


def to_canonical(dataset: AnyDataset, where: str = "dataset") -> AnyDataset:
    """Convert a dataset in any known format to the canonical schema (a no-op for canonical data)."""
    episode_format = detect_format(_column_names(dataset), where)
    if episode_format.convert is None:
        return dataset
    converted = episode_format.convert(dataset)
    extra = [
        name for name in (converted.column_names or []) if name not in (*CANONICAL_COLUMNS, "initial_frames")
    ]
    return converted.remove_columns(extra) if extra else converted
