"""`load_trajectories`: every supported source (Hub, Minari, local files, the embedded dataset) in one schema."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, IterableDataset, concatenate_datasets, load_dataset, load_from_disk
from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

from .formats import to_canonical
from .minari import (
    MINARI_HUB_ORGANISATION,
    download_minari,
    find_minari_data,
    load_minari,
    minari_environment,
    minari_fields,
    minari_local_path,
)

logger = logging.getLogger(__name__)

AnyDataset = Dataset | IterableDataset

GYM_REPLAY_REPO = "edbeeching/decision_transformer_gym_replay"
GYM_REPLAY_ENVS = ("halfcheetah", "hopper", "walker2d")
GYM_REPLAY_CONFIGS = tuple(
    f"{env}-{q}-v2" for env in GYM_REPLAY_ENVS for q in ("expert", "medium", "medium-replay")
)
# Built here, as D4RL built it: medium followed by expert.
GYM_REPLAY_COMPOSITES = {
    f"{env}-medium-expert-v2": (f"{env}-medium-v2", f"{env}-expert-v2") for env in GYM_REPLAY_ENVS
}
# The Hub's automatic parquet conversion, used because `datasets` >= 4 refuses the repo's loading script.
PARQUET_EXPORT = "hf://datasets/{repo}@refs%2Fconvert%2Fparquet/{config}/{split}/*.parquet"
JAT_REPO = "jat-project/jat-dataset"
EMBEDDED_DIR = Path(__file__).parent / "embedded"
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json"}


def embedded_datasets() -> list[str]:
    """Names accepted by `load_trajectories("embedded:<name>")`."""
    return sorted(path.stem for path in EMBEDDED_DIR.glob("*.parquet"))


def embedded_path(name: str) -> Path:
    """The parquet file of the embedded dataset `name` (a ValueError listing the others when there is none)."""
    path = EMBEDDED_DIR / f"{name}.parquet"
    if not path.is_file():
        raise ValueError(f"no embedded dataset {name!r}; expected one of {embedded_datasets()}.")
    return path


def _has_rows(path: Path) -> bool:
    """False for a parquet file of 0 rows (`datasets` fails on one: "BatchSize must be greater than 0")."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes); expected a {path.suffix} file of episodes.")
    if path.suffix != ".parquet":
        return True
    try:
        return pq.ParquetFile(path).metadata.num_rows > 0
    except pa.ArrowException as error:
        raise ValueError(
            f"{path}: not a readable parquet file ({error}); expected a parquet file of episodes."
        ) from None


def _files_with_rows(files: list[str], source: Path) -> list[str]:
    """The local data files that hold episodes; raises naming `source` when none does."""
    kept = [name for name in files if _has_rows(Path(name))]
    if not kept:
        raise ValueError(
            f"{source}: has 0 episodes (its data files have 0 rows); expected at least one episode."
        )
    return kept


def _load_file(path: Path, streaming: bool) -> AnyDataset:
    """One parquet/arrow/json file (its rows are the only split)."""
    builder = FILE_BUILDERS.get(path.suffix)
    if builder is None:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix!r}; expected one of {sorted(FILE_BUILDERS)}."
        )
    files = _files_with_rows([str(path)], path)
    return load_dataset(builder, data_files=files, split="train", streaming=streaming)


def _load_local(path: Path, config: str | None, split: str, streaming: bool) -> AnyDataset:
    """A local file or folder: Minari layout, `save_to_disk` output, or parquet/arrow files (Hub-like layouts)."""
    if config is not None and (path / config).is_dir():
        path = path / config
    if path.is_file():
        return _load_file(path, streaming)
    if find_minari_data(path) is not None:
        return load_minari(path, streaming=streaming)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return _load_saved(path, split, streaming)
    return _load_folder(path, split, streaming)


def _load_saved(path: Path, split: str, streaming: bool) -> AnyDataset:
    """A `save_to_disk` folder (a `Dataset`, or a `DatasetDict` and its `split`)."""
    state = path / split / "state.json" if (path / "dataset_dict.json").is_file() else path / "state.json"
    if state.is_file() and not json.loads(state.read_text()).get("_data_files", True):
        # `load_from_disk` fails on these with an IndexError.
        raise ValueError(f"{state.parent}: has 0 episodes (no data files); expected at least one episode.")
    dataset = load_from_disk(str(path))
    dataset = dataset[split] if isinstance(dataset, DatasetDict) else dataset
    return dataset.to_iterable_dataset() if streaming else dataset


def _load_folder(path: Path, split: str, streaming: bool) -> AnyDataset:
    """The `split` files of a Hub-like folder, found with `datasets`' own split patterns.

    They are passed as explicit data files, so the cache key hashes their paths and modification times: two
    folders with the same name never share a cache entry, and a rewritten folder is read again.
    """
    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except EmptyDatasetError:
        files = DataFilesDict()
    if split not in files:
        raise ValueError(f"{path}: no data files for split {split!r}; found splits {sorted(files)}.")
    builders = {FILE_BUILDERS.get(Path(name).suffix) for name in files[split]}
    if len(builders) != 1 or None in builders:
        suffixes = sorted({Path(name).suffix for name in files[split]})
        raise ValueError(
            f"{path}: split {split!r} has files of types {suffixes}; expected one of {sorted(FILE_BUILDERS)}."
        )
    return load_dataset(
        builders.pop(),
        data_files={split: _files_with_rows(list(files[split]), path)},
        split=split,
        streaming=streaming,
    )


def _gym_replay_config(config: str | None) -> str:
    known = (*GYM_REPLAY_CONFIGS, *GYM_REPLAY_COMPOSITES)
    if config not in known:
        raise ValueError(f"{GYM_REPLAY_REPO} config {config!r}; expected one of {list(known)}.")
    return config


def _load_gym_replay(config: str | None, split: str, streaming: bool, revision: str | None) -> AnyDataset:
    """One D4RL config through its loading script, else through the Hub's parquet export."""
    config = _gym_replay_config(config)
    if config in GYM_REPLAY_COMPOSITES:
        parts = [_load_gym_replay(part, split, streaming, revision) for part in GYM_REPLAY_COMPOSITES[config]]
        return concatenate_datasets(parts)
    try:
        return load_dataset(GYM_REPLAY_REPO, config, split=split, streaming=streaming, revision=revision)
    except Exception as error:  # datasets >= 4: "Dataset scripts are no longer supported"
        logger.info(
            "Loading %s/%s through its script failed (%s); using the parquet export.",
            GYM_REPLAY_REPO,
            config,
            error,
        )
    files = PARQUET_EXPORT.format(repo=GYM_REPLAY_REPO, config=config, split=split)
    return load_dataset("parquet", data_files=files, split="train", streaming=streaming)


def _load_hub(repo: str, config: str | None, split: str, streaming: bool, revision: str | None) -> AnyDataset:
    if repo == GYM_REPLAY_REPO:
        return _load_gym_replay(config, split, streaming, revision)
    if repo.startswith(f"{MINARI_HUB_ORGANISATION}/"):
        if config is None:
            raise ValueError(f"{repo}: give the dataset path as config, e.g. config='hopper/medium-v0'.")
        return load_minari(download_minari(f"{repo.split('/', 1)[1]}/{config}", revision=revision), streaming)
    return load_dataset(repo, config, split=split, streaming=streaming, revision=revision)


def _resolve(source: str, config: str | None) -> tuple[str, str | None]:
    """Expand the short forms `d4rl:<config>`, `jat:<game>` and `minari:<namespace>/<name>` to (repo, config)."""
    scheme, _, rest = source.partition(":")
    if scheme == "d4rl":
        return GYM_REPLAY_REPO, rest
    if scheme == "jat":
        return JAT_REPO, rest if rest.startswith("atari-") else f"atari-{rest}"
    if scheme == "minari":
        namespace, _, name = rest.partition("/")
        return f"{MINARI_HUB_ORGANISATION}/{namespace}", name or config
    return source, config


def _check_not_empty(dataset: AnyDataset, source: str) -> None:
    """A loaded dataset of 0 rows raises naming its source (a stream is checked when the windows are built)."""
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"{source}: has 0 episodes (0 rows); expected at least one episode.")


def _first(dataset: AnyDataset, count: int | None) -> AnyDataset:
    if count is None:
        return dataset
    return (
        dataset.take(count)
        if isinstance(dataset, IterableDataset)
        else dataset.select(range(min(count, len(dataset))))
    )


def _local_path(source: str) -> Path | None:
    """`source` as a local file or folder, or as the id of a Minari dataset in `MINARI_DATASETS_PATH`."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if ":" not in source and find_minari_data(minari_local_path(source)) is not None:
        return minari_local_path(source)
    return None


def _minari_data(source: str, config: str | None) -> Path | None:
    """The Minari `data/` folder behind `source` (local, a Minari id, or a Hub Minari dataset), else None."""
    path = _local_path(str(source))
    if path is not None:
        return find_minari_data(path / config if config and (path / config).is_dir() else path)
    repo, config = _resolve(str(source), config)
    if repo.startswith(f"{MINARI_HUB_ORGANISATION}/") and config:
        return find_minari_data(download_minari(f"{repo.split('/', 1)[1]}/{config}"))
    return None


def dataset_environment(source: str | os.PathLike, config: str | None = None) -> tuple[str, dict] | None:
    """The environment a dataset was recorded in: (env id, `gym.make` kwargs with `max_episode_steps`).

    From a Minari dataset's metadata (`eval_env_spec`, then `env_spec`), the `env_id` of a local folder's dataset
    card (as `dmamba collect` writes it), else from the names of the source (`d4rl:hopper-medium-v2`,
    `embedded:hopper` -> `Hopper-v5`); None when none names one.
    """
    from ..envs import resolve_env_id
    from .collection import card_environment

    data = _minari_data(str(source), config)
    if data is not None:
        return minari_environment(data)
    path = _local_path(str(source))
    name = str(source).split(":", 1)[-1]
    card = card_environment(path) if path is not None and path.is_dir() else None
    for candidate in filter(None, (card, config, name, Path(name).name)):
        try:
            return resolve_env_id(candidate), {}
        except ValueError:
            continue
    return None


def dataset_space_fields(source: str | os.PathLike, config: str | None = None) -> dict | None:
    """Sizes, observation layout, action space and reference scores a Minari dataset's metadata records
    (see `minari_fields`); None for other sources, whose sizes come from their episodes."""
    data = _minari_data(str(source), config)
    return None if data is None else minari_fields(data)


def load_trajectories(
    source: str | os.PathLike,
    config: str | None = None,
    *,
    split: str = "train",
    streaming: bool | None = None,
    revision: str | None = None,
    max_episodes: int | None = None,
) -> AnyDataset:
    """Load offline episodes from any supported source into the canonical schema (see `schema`).

    `source` is a local file/folder (canonical, D4RL, JAT or Minari layout, detected from columns), a Hub dataset
    repo (`edbeeching/decision_transformer_gym_replay` with a config such as `hopper-medium-expert-v2`,
    `jat-project/jat-dataset` with `atari-breakout`, `farama-minari/mujoco` with `hopper/medium-v0`, or any repo in
    a supported format), a short form (`d4rl:hopper-medium-v2`, `jat:breakout`, `minari:mujoco/hopper/medium-v0`)
    or `embedded:hopper`. `streaming=None` streams JAT (episodes are large) and loads everything else.
    """
    source = str(source)
    if source.startswith("embedded:"):
        dataset = _load_file(embedded_path(source.partition(":")[2]), bool(streaming))
        return to_canonical(_first(dataset, max_episodes), where=source)
    path = _local_path(source)
    if path is not None:
        dataset = _load_local(path, config, split, bool(streaming))
    else:
        repo, config = _resolve(source, config)
        streaming = repo == JAT_REPO if streaming is None else streaming
        dataset = _load_hub(repo, config, split, streaming, revision)
    _check_not_empty(dataset, source)
    return to_canonical(_first(dataset, max_episodes), where=source)
