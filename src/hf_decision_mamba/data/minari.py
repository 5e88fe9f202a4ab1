"""Minari datasets (the maintained successor of D4RL) read in their on-disk layout, local or from the Hub.

A Minari dataset folder holds `data/metadata.json` (with `data_format`, and the observation/action spaces as JSON)
and either `data/main_data.hdf5` (one `episode_<i>` group per episode, observations of length steps + 1) or, for
the arrow/parquet formats, one `data/<i>/` folder per episode whose rows are steps (the final observation included,
the other columns padded by one row). Hosted datasets live in `farama-minari/<namespace>` Hub repos.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, IterableDataset

from .schema import ACTIONS, OBSERVATIONS, REWARDS, TERMINATIONS, TRUNCATIONS, canonical_features

MINARI_HUB_ORGANISATION = "farama-minari"
METADATA_FILE = "metadata.json"
HDF5_FILE = "main_data.hdf5"


def find_minari_data(path: str | os.PathLike) -> Path | None:
    """The `data/` folder of a Minari dataset at `path` (the dataset folder or its `data/`), else `None`."""
    path = Path(path)
    for candidate in (path / "data", path):
        metadata = candidate / METADATA_FILE
        if metadata.is_file() and "data_format" in json.loads(metadata.read_text()):
            return candidate
    return None


def minari_local_path(dataset_id: str) -> Path:
    """Where the `minari` package keeps a downloaded dataset (`$MINARI_DATASETS_PATH` or `~/.minari/datasets`)."""
    root = os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets")
    return Path(root) / dataset_id


def download_minari(dataset_id: str, cache_dir: str | None = None, revision: str | None = None) -> Path:
    """Fetch `namespace/name-vN` (e.g. `mujoco/hopper/medium-v0`) from `farama-minari/<namespace>` on the Hub."""
    local = minari_local_path(dataset_id)
    if find_minari_data(local) is not None:
        return local
    from huggingface_hub import snapshot_download

    namespace, _, path_in_repo = dataset_id.partition("/")
    if not path_in_repo:
        raise ValueError(
            f"Minari dataset id {dataset_id!r}; expected 'namespace/name-vN', e.g. 'mujoco/hopper/medium-v0'."
        )
    root = snapshot_download(
        repo_id=f"{MINARI_HUB_ORGANISATION}/{namespace}",
        repo_type="dataset",
        allow_patterns=f"{path_in_repo}/*",
        cache_dir=cache_dir,
        revision=revision,
    )
    return Path(root) / path_in_repo


def _space(metadata: dict, key: str) -> dict:
    space = metadata.get(key)
    if space is None:
        raise ValueError(f"Minari metadata lacks {key!r}; expected a serialised Gymnasium space.")
    space = json.loads(space) if isinstance(space, str) else space
    if space["type"] not in ("Box", "Discrete"):
        raise ValueError(
            f"Minari {key} of type {space['type']!r} is not supported; expected 'Box' or 'Discrete'."
        )
    return space


def minari_features(data_path: Path) -> Features:
    """Canonical features for a Minari dataset, from its action space."""
    metadata = json.loads((data_path / METADATA_FILE).read_text())
    _space(metadata, "observation_space")
    return canonical_features(atari=False, discrete=_space(metadata, "action_space")["type"] == "Discrete")


def _canonical(index: int, raw: dict[str, Any], action_space: dict) -> dict[str, np.ndarray]:
    """Drop Minari's final observation and fix dtypes; the other fields already have one entry per step."""
    actions = np.asarray(raw[ACTIONS])
    length = len(actions)
    observations = np.asarray(raw[OBSERVATIONS])
    if len(observations) != length + 1:
        raise ValueError(
            f"episode {index}: 'observations' has {len(observations)} entries for {length} actions; "
            "expected steps + 1 (Minari stores the final observation)."
        )
    discrete = action_space["type"] == "Discrete"
    return {
        OBSERVATIONS: observations[:-1].reshape(length, -1).astype(np.float32),
        ACTIONS: actions.astype(np.int64) - action_space.get("start", 0)
        if discrete
        else actions.astype(np.float32),
        REWARDS: np.asarray(raw[REWARDS], dtype=np.float32).reshape(-1),
        TERMINATIONS: np.asarray(raw[TERMINATIONS], dtype=bool).reshape(-1),
        TRUNCATIONS: np.asarray(raw[TRUNCATIONS], dtype=bool).reshape(-1),
    }


def _hdf5_episodes(data_path: Path, count: int) -> Iterator[dict[str, Any]]:
    try:
        import h5py
    except ImportError as error:
        raise ImportError("Reading Minari's HDF5 format needs h5py: `pip install h5py`.") from error
    with h5py.File(data_path / HDF5_FILE, "r") as file:
        for index in range(count):
            group = file[f"episode_{index}"]
            yield {
                name: group[name][()] for name in (OBSERVATIONS, ACTIONS, REWARDS, TERMINATIONS, TRUNCATIONS)
            }


def _step_column(table: Any, name: str) -> np.ndarray:
    """One per-step column of a Minari arrow/parquet episode: (rows,) scalars or (rows, size) flattened boxes."""
    column = table.column(name).combine_chunks()
    if hasattr(column.type, "list_size"):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def _columnar_episodes(data_path: Path, count: int, data_format: str) -> Iterator[dict[str, Any]]:
    """Arrow/parquet: rows are steps, every column but observations padded by one row at the end."""
    import pyarrow.dataset as pads

    for index in range(count):
        folder = data_path / str(index)
        table = pads.dataset(folder, format=data_format, ignore_prefixes=["_", ".", METADATA_FILE]).to_table()
        yield {
            OBSERVATIONS: _step_column(table, OBSERVATIONS),
            **{
                name: _step_column(table, name)[:-1] for name in (ACTIONS, REWARDS, TERMINATIONS, TRUNCATIONS)
            },
        }


def iter_minari_episodes(data_path: str | os.PathLike) -> Iterator[dict[str, np.ndarray]]:
    """Every episode of a Minari `data/` folder, in the canonical schema."""
    data_path = Path(data_path)
    metadata = json.loads((data_path / METADATA_FILE).read_text())
    count, data_format = int(metadata["total_episodes"]), metadata["data_format"]
    action_space = _space(metadata, "action_space")
    if data_format == "hdf5":
        raw = _hdf5_episodes(data_path, count)
    elif data_format in ("arrow", "parquet"):
        raw = _columnar_episodes(data_path, count, data_format)
    else:
        raise ValueError(
            f"Minari data_format {data_format!r} is not supported; expected 'hdf5', 'arrow' or 'parquet'."
        )
    for index, episode in enumerate(raw):
        yield _canonical(index, episode, action_space)


def _generate(data_path: str, stamp: str) -> Iterator[dict[str, np.ndarray]]:
    """Generator for `datasets`; `stamp` (file times) only makes its cache key change when the files do."""
    yield from iter_minari_episodes(data_path)


def _stamp(data_path: Path) -> str:
    return ",".join(str(p.stat().st_mtime_ns) for p in sorted(data_path.rglob("*")) if p.is_file())


def load_minari(
    path: str | os.PathLike, streaming: bool = False, cache_dir: str | None = None
) -> Dataset | IterableDataset:
    """A local Minari dataset folder as a canonical `Dataset` (or `IterableDataset` when streaming)."""
    data_path = find_minari_data(path)
    if data_path is None:
        raise ValueError(f"{path} is not a Minari dataset; expected a folder with data/{METADATA_FILE}.")
    features = minari_features(data_path)
    kwargs = {"gen_kwargs": {"data_path": str(data_path), "stamp": _stamp(data_path)}, "features": features}
    if streaming:
        return IterableDataset.from_generator(_generate, **kwargs)
    return Dataset.from_generator(_generate, cache_dir=cache_dir, **kwargs)
